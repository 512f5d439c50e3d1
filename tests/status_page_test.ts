/**
 * The status page of the admin endpoint (docs/architecture.md, "The admin endpoint") loaded in a
 * real headless Chromium, driven by playwright-core: the public proxy's page names the role and
 * the operator, says ready, lists the announcement with its operator, shows one live connection
 * while a TLS connection through the tunnel is held and refreshes itself to 0 once it is closed;
 * the private proxy's page lists the announced name. A full-page screenshot of the public page
 * (with the live connection) is taken; it is kept where `TLS_PASS_SCREENSHOT` says (e.g.
 * bench/results/status-page.png, the one in the repo), else in a temporary file removed after.
 */
import assert from "node:assert/strict";
import { type Browser, chromium, type Page } from "playwright-core";
import { Cluster, DOMAIN, LOOPBACK } from "./_cluster.ts";
import { formatHostPort, type HostPort } from "../lib/role.ts";

/** Debian's chromium; CI installs it when missing. */
const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
];
/** Every playwright wait (navigation, locator, launch) is bounded by this. */
const WAIT_MS = 10_000;
/**
 * Chromium's start: on a 2-core machine running the other test modules in parallel, a cold first
 * launch took over 10 s once (a fresh clone's CI run); the page's own waits stay at WAIT_MS.
 */
const LAUNCH_MS = 60_000;

/** The page refreshes every 2 s: a change shows within a few refreshes. */
const REFRESH_WAIT_MS = 15_000;

function adminOf(h: { addrs: object }): HostPort {
  const a = (h.addrs as { admin?: HostPort }).admin;
  if (a === undefined) throw new Error("no admin address in the handle's addrs");
  return a;
}

async function launchChromium(): Promise<Browser> {
  try {
    await Deno.stat(CHROMIUM);
  } catch (err) {
    throw new Error(
      `Cannot find Chromium at ${CHROMIUM} (${
        err instanceof Error ? err.message : String(err)
      }): the status page test needs it; install Debian's "chromium" package`,
    );
  }
  return await chromium.launch({
    executablePath: CHROMIUM,
    args: CHROMIUM_ARGS,
    timeout: LAUNCH_MS,
  });
}

/** Opens the status page of `admin` and collects the page's script errors into `errors`. */
async function openStatusPage(browser: Browser, admin: HostPort, errors: string[]): Promise<Page> {
  const page = await browser.newPage({ viewport: { width: 1100, height: 800 } });
  page.setDefaultTimeout(WAIT_MS);
  page.setDefaultNavigationTimeout(WAIT_MS);
  page.on("pageerror", (err) => errors.push(`${formatHostPort(admin)}: ${err.message}`));
  await page.goto(`http://${formatHostPort(admin)}/`, { waitUntil: "load", timeout: WAIT_MS });
  // the first /status rendered: the summary starts with #ready
  await page.locator("#ready").waitFor({ state: "visible", timeout: WAIT_MS });
  return page;
}

/** The cells of the row of `table` whose first cell is `first`. */
async function rowOf(page: Page, table: string, first: string): Promise<string[]> {
  const row = page.locator(`table[data-table="${table}"] tr`).filter({
    has: page.locator("td:first-child", {
      hasText: new RegExp(`^${first.replaceAll(".", "\\.")}$`),
    }),
  });
  await row.first().waitFor({ state: "visible", timeout: WAIT_MS });
  assert.deepEqual(await row.count(), 1, `one ${table} row for ${first}`);
  return (await row.locator("td").allTextContents()).map((t) => t.trim());
}

/** Waits until the page's script has set the document's title to `title`. */
async function waitTitle(page: Page, title: string): Promise<void> {
  await page.waitForFunction(`document.title === ${JSON.stringify(title)}`, undefined, {
    timeout: WAIT_MS,
  });
  assert.deepEqual(await page.title(), title);
}

/** Waits until the page shows `live connections` equal to `n` (the page refreshes itself). */
async function waitLive(page: Page, n: number): Promise<void> {
  const live = page.locator('#summary b[data-key="live connections"]');
  try {
    await live.filter({ hasText: new RegExp(`^${n}$`) }).waitFor({
      state: "visible",
      timeout: REFRESH_WAIT_MS,
    });
  } catch (err) {
    const shown = await live.textContent({ timeout: 1000 }).catch(() => "(absent)");
    throw new Error(
      `The status page does not show live connections ${n} within ${REFRESH_WAIT_MS} ms ` +
        `(it shows ${shown})`,
      { cause: err },
    );
  }
}

Deno.test("status page: headless Chromium shows the announcement and live connections", async () => {
  await using c = await Cluster.start({
    public: { adminListen: LOOPBACK },
    private: { adminListen: LOOPBACK },
  });
  const errors: string[] = [];
  const browser = await launchChromium();
  let held: Deno.TlsConn | undefined;
  try {
    const pub = await openStatusPage(browser, adminOf(c.pub), errors);
    const title = "tls-pass public public-proxy-1";
    await waitTitle(pub, title);
    assert.deepEqual(
      (await pub.locator("#title").textContent())?.trim(),
      "tls-pass public · public-proxy-1",
    );
    assert.deepEqual((await pub.locator("#ready").textContent())?.trim(), "ready");
    const ann = await rowOf(pub, "Announcements", DOMAIN);
    assert.deepEqual(ann[0], DOMAIN);
    assert.deepEqual(ann[1], "private-proxy-1", `operator column of ${JSON.stringify(ann)}`);
    await waitLive(pub, 0);

    // a live splice: a TLS connection through both proxies to the internal server, held open
    held = await c.connectTls();
    await waitLive(pub, 1);
    assert.deepEqual(await pub.locator("#error").textContent(), "");
    const keep = Deno.env.get("TLS_PASS_SCREENSHOT");
    const path = keep ?? await Deno.makeTempFile({ suffix: ".png" });
    try {
      await pub.screenshot({ path, fullPage: true, timeout: WAIT_MS });
      assert.ok((await Deno.stat(path)).size > 0, `screenshot at ${path}`);
    } finally {
      if (keep === undefined) await Deno.remove(path).catch(() => {});
    }

    held.close();
    held = undefined;
    await waitLive(pub, 0);

    const priv = await openStatusPage(browser, adminOf(c.priv!), errors);
    await waitTitle(priv, "tls-pass private private-proxy-1");
    assert.deepEqual((await priv.locator("#ready").textContent())?.trim(), "ready");
    const pann = await rowOf(priv, "Announcements", DOMAIN);
    assert.deepEqual(pann[0], DOMAIN);
    assert.deepEqual(errors, [], "no script error on the status pages");
  } finally {
    try {
      held?.close();
    } catch { /* already closed */ }
    await browser.close();
  }
});
