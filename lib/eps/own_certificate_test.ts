import "reflect-metadata"; // @peculiar/x509 needs it first
import assert from "node:assert/strict";
import * as x509 from "@peculiar/x509";
import { SettingsError } from "../errors.ts";
import { checkOwnCertificate, type Usage } from "./own_certificate.ts";

const ALG = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" };

/** A self-signed certificate with the given CN, DNS SANs and extended key usages. */
async function cert(
  cn: string,
  dns: string[],
  ekus: string[] | undefined,
  critical = false,
): Promise<string> {
  const keys = await crypto.subtle.generateKey(ALG, true, ["sign", "verify"]);
  const extensions: x509.Extension[] = [];
  if (dns.length > 0) {
    extensions.push(
      new x509.SubjectAlternativeNameExtension(
        dns.map((value) => ({ type: "dns" as const, value })),
      ),
    );
  }
  if (ekus) extensions.push(new x509.ExtendedKeyUsageExtension(ekus, critical));
  const c = await x509.X509CertificateGenerator.createSelfSigned({
    name: cn === "" ? "O=no cn" : `CN=${cn}`,
    keys,
    signingAlgorithm: ALG,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 86_400_000),
    extensions,
  });
  return c.toString("pem");
}

const BOTH: Usage[] = ["serverAuth", "clientAuth"];
const { serverAuth, clientAuth, codeSigning } = x509.ExtendedKeyUsage;

function problems(pem: string, usages: Usage[] = BOTH): string[] {
  try {
    checkOwnCertificate(pem, { operator: "edge.example.net", key: "k", file: "f.crt", usages });
    return [];
  } catch (err) {
    assert.ok(err instanceof SettingsError);
    assert.equal(err.file, "f.crt");
    return [...err.problems];
  }
}

Deno.test("checkOwnCertificate() takes CN and DNS SAN of the operator with both usages", async () => {
  assert.deepEqual(
    problems(await cert("edge.example.net", ["edge.example.net"], [serverAuth, clientAuth])),
    [],
  );
  // a critical extension, and other usages beside, are fine
  assert.deepEqual(
    problems(
      await cert("edge.example.net", ["x.example", "edge.example.net"], [
        codeSigning,
        clientAuth,
        serverAuth,
      ], true),
    ),
    [],
  );
});

Deno.test("checkOwnCertificate() takes a certificate without extendedKeyUsage (any use)", async () => {
  assert.deepEqual(problems(await cert("edge.example.net", ["edge.example.net"], undefined)), []);
});

Deno.test("checkOwnCertificate() names another operator's CN", async () => {
  assert.deepEqual(
    problems(await cert("office.example.org", ["office.example.org"], [serverAuth, clientAuth])),
    [
      'k: certificate CN is "office.example.org", expected the operator "edge.example.net"',
      'k: certificate "f.crt" has no DNS SAN "edge.example.net" (peers refuse a link without it)',
    ],
  );
});

Deno.test("checkOwnCertificate() refuses a certificate without the DNS SAN or without a CN", async () => {
  assert.deepEqual(problems(await cert("edge.example.net", [], [serverAuth, clientAuth])), [
    'k: certificate "f.crt" has no DNS SAN "edge.example.net" (peers refuse a link without it)',
  ]);
  assert.deepEqual(problems(await cert("", ["edge.example.net"], [serverAuth, clientAuth])), [
    'k: certificate "f.crt" has no subject CN, expected the operator "edge.example.net"',
  ]);
});

Deno.test("checkOwnCertificate() names a missing key usage: a web server certificate has no clientAuth", async () => {
  const web = await cert("edge.example.net", ["edge.example.net"], [serverAuth]);
  assert.deepEqual(problems(web), [
    'k: certificate "f.crt" lacks the extended key usage clientAuth (EPS links need serverAuth and clientAuth)',
  ]);
  assert.deepEqual(problems(web, ["clientAuth"]).length, 1);
  const client = await cert("edge.example.net", ["edge.example.net"], [clientAuth]);
  assert.deepEqual(problems(client, ["clientAuth"]), []);
  assert.match(problems(client)[0]!, /lacks the extended key usage serverAuth \(/);
});

Deno.test("checkOwnCertificate() refuses text that is not a certificate", () => {
  assert.deepEqual(
    problems("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").length,
    1,
  );
  assert.match(problems("nope")[0]!, /^k: cannot read the certificate: /);
});
