/**
 * The directory: the shared list of operators, their EPS addresses, certificate pins, permissions
 * and proxy settings (docs/settings.md, "Directory"). Loaded from YAML files that deep-merge (the
 * pins written by `tls-pass certs` merge into the hand-written operators file).
 * @module
 */
import type { HostPort } from "../role.ts";
import * as check from "../settings/check.ts";
import { checkReadable, loadSettings } from "../settings/loader.ts";

/** Who may call one method of an operator. */
export interface Permission {
  method: string;
  from: string[];
}

/** One operator of the directory. */
export interface OperatorEntry {
  name: string;
  /** Where its EPS listens for links; absent for an operator behind NAT (it dials in). */
  address?: HostPort;
  /** SHA-256 pins of its certificates (lowercase hex of the DER); empty = any CA-issued one. */
  fingerprints: string[];
  /** Who may call `<name>.<method>`; anything not listed is denied. */
  permissions: Permission[];
  proxy: {
    /** Private operators: the domains it may announce (".x" = any name under x). */
    allowedDomains: string[];
    /** Public operators: the private port, as the private proxies dial it back. */
    privateEndpoint?: HostPort;
  };
}

export interface Directory {
  caCertificateFiles: string[];
  operators: Map<string, OperatorEntry>;
}

const TOP_KEYS = ["ca_certificate_files", "operators"] as const;
const OPERATOR_KEYS = ["address", "fingerprints", "permissions", "proxy"] as const;
const PERMISSION_KEYS = ["method", "from"] as const;
const PROXY_KEYS = ["allowed_domains", "private_endpoint"] as const;
const METHOD = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** An operator name: a lower-case DNS name, since it must appear as a DNS SAN. */
function operatorName(v: unknown, path: string, problems: check.Problems): string {
  if (typeof v === "string" && check.normalizeHostName(v) === v) return v;
  problems.push(
    `${path}: must be a lower-case host name (an operator name), got ${JSON.stringify(v)}`,
  );
  return "";
}

function fingerprint(v: unknown, path: string, problems: check.Problems): string {
  if (typeof v === "string") {
    const hex = v.replaceAll(":", "").toLowerCase();
    if (/^[0-9a-f]{64}$/.test(hex)) return hex;
  }
  problems.push(`${path}: must be a SHA-256 fingerprint (64 hex digits), got ${JSON.stringify(v)}`);
  return "";
}

function method(v: unknown, path: string, problems: check.Problems): string {
  if (typeof v === "string" && METHOD.test(v)) return v;
  problems.push(`${path}: must be a method name (letters, digits, _), got ${JSON.stringify(v)}`);
  return "";
}

/** An allowed-domain rule: "name" (exactly it) or ".name" (any name under it). */
function domainRule(v: unknown, path: string, problems: check.Problems): string {
  if (typeof v === "string") {
    const dot = v.startsWith(".");
    const n = check.normalizeHostName(dot ? v.slice(1) : v);
    if (n !== null) return dot ? `.${n}` : n;
  }
  problems.push(
    `${path}: must be a host name or ".name" (any name under it), got ${JSON.stringify(v)}`,
  );
  return "";
}

/** Parses merged directory data; the loader prefixes each problem with its file. */
export function parseDirectory(data: Record<string, unknown>, problems: check.Problems): Directory {
  check.onlyKeys(data, TOP_KEYS, "", problems);
  const caCertificateFiles = check.required(
      data.ca_certificate_files,
      "ca_certificate_files",
      problems,
    )
    ? check.list(data.ca_certificate_files, "ca_certificate_files", problems, check.string)
    : [];
  caCertificateFiles.forEach((f, i) => checkReadable(f, `ca_certificate_files[${i}]`, problems));
  const operators = new Map<string, OperatorEntry>();
  const raw = check.mapping(data.operators, "operators", problems);
  for (const [name, value] of Object.entries(raw)) {
    const p = check.join("operators", name);
    operatorName(name, p, problems);
    const m = check.mapping(value, p, problems);
    check.onlyKeys(m, OPERATOR_KEYS, p, problems);
    const entry: OperatorEntry = {
      name,
      fingerprints: m.fingerprints === undefined
        ? []
        : check.list(m.fingerprints, check.join(p, "fingerprints"), problems, fingerprint),
      permissions: m.permissions === undefined
        ? []
        : check.list(m.permissions, check.join(p, "permissions"), problems, (v, path, pr) => {
          const perm = check.mapping(v, path, pr);
          check.onlyKeys(perm, PERMISSION_KEYS, path, pr);
          return {
            method: check.required(perm.method, check.join(path, "method"), pr)
              ? method(perm.method, check.join(path, "method"), pr)
              : "",
            from: check.required(perm.from, check.join(path, "from"), pr)
              ? check.list(perm.from, check.join(path, "from"), pr, operatorName)
              : [],
          };
        }),
      proxy: { allowedDomains: [] },
    };
    if (m.address !== undefined) {
      entry.address = check.address(m.address, check.join(p, "address"), problems);
    }
    const px = check.mapping(m.proxy, check.join(p, "proxy"), problems);
    check.onlyKeys(px, PROXY_KEYS, check.join(p, "proxy"), problems);
    if (px.allowed_domains !== undefined) {
      entry.proxy.allowedDomains = check.list(
        px.allowed_domains,
        check.join(p, "proxy.allowed_domains"),
        problems,
        domainRule,
      );
    }
    if (px.private_endpoint !== undefined) {
      entry.proxy.privateEndpoint = check.address(
        px.private_endpoint,
        check.join(p, "proxy.private_endpoint"),
        problems,
      );
    }
    operators.set(name, entry);
  }
  // a permission naming an operator the directory does not know is a typo, not a rule
  for (const entry of operators.values()) {
    entry.permissions.forEach((perm, i) =>
      perm.from.forEach((from, j) => {
        if (from !== "" && !operators.has(from)) {
          problems.push(
            `operators.${entry.name}.permissions[${i}].from[${j}]: operator "${from}" is not in the directory`,
          );
        }
      })
    );
  }
  return { caCertificateFiles, operators };
}

/** Loads the directory from files and folders (a folder contributes its files in name order). */
export function loadDirectory(sources: string[]): Promise<Directory> {
  return loadSettings(sources, parseDirectory);
}

/** Whether operator `from` may call `<operator>.<method>` (deny by default). */
/** A directory as a plain value, to compare two of them (a reload: did it change?). */
export function directoryValue(d: Directory): unknown {
  return { ca: d.caCertificateFiles, operators: Object.fromEntries(d.operators) };
}

export function mayCall(dir: Directory, from: string, operator: string, method: string): boolean {
  const entry = dir.operators.get(operator);
  if (!entry) return false;
  return entry.permissions.some((p) => p.method === method && p.from.includes(from));
}

/** The operators whose methods `from` may call: the peers it has a reason to dial. */
export function calleesOf(dir: Directory, from: string): string[] {
  const out: string[] = [];
  for (const entry of dir.operators.values()) {
    if (entry.name !== from && entry.permissions.some((p) => p.from.includes(from))) {
      out.push(entry.name);
    }
  }
  return out;
}

/**
 * Whether `operator` may announce `domain`: a rule "x" allows exactly x, a rule ".x" any name
 * under x (as the original iris-connect proxy). Case and a trailing dot are ignored.
 */
export function domainAllowed(dir: Directory, operator: string, domain: string): boolean {
  const entry = dir.operators.get(operator);
  if (!entry) return false;
  let d = domain.toLowerCase();
  if (d.endsWith(".")) d = d.slice(0, -1);
  if (d.startsWith("*.")) d = d.slice(1); // a wildcard announcement "*.x" is checked as ".x"
  return entry.proxy.allowedDomains.some((rule) =>
    rule.startsWith(".") ? d.endsWith(rule) && d.length > rule.length || d === rule : d === rule
  );
}
