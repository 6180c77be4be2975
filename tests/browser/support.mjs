// Shared scaffolding of the browser tests: the `broker serve` process and its demo accounts,
// Debian Chromium via playwright-core, page problem recording, axe-core checks, screenshots
// and the aidant sign-in. Not a test file itself
// (`node --test tests/browser/` runs only *.test.mjs).
//
// Env: BROKER_BIN (default target/debug/broker), CHROMIUM_PATH (default /usr/bin/chromium).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const require = createRequire(import.meta.url);
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BROKER_BIN = process.env.BROKER_BIN || path.join(repoRoot, 'target', 'debug', 'broker');
const CHROMIUM_PATH = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ASSETS_DIR = path.join(repoRoot, 'node_modules', '@gouvfr', 'dsfr', 'dist');

export const sleep = (ms) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

// ---------------------------------------------------------------------------- TOTP

export function base32Decode(input) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  const clean = input.replace(/[\s=-]/g, '').toUpperCase();
  let bits = 0;
  let value = 0;
  const out = [];
  for (const ch of clean) {
    const idx = alphabet.indexOf(ch);
    if (idx < 0) throw new Error(`invalid base32 character "${ch}"`);
    value = (value << 5) | idx;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

/** RFC 4226 HOTP, HMAC-SHA-1, 6 digits. */
export function hotp(key, counter) {
  const msg = Buffer.alloc(8);
  msg.writeBigUInt64BE(BigInt(counter));
  const mac = createHmac('sha1', key).update(msg).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  const bin = ((mac[offset] & 0x7f) << 24) | (mac[offset + 1] << 16) | (mac[offset + 2] << 8) | mac[offset + 3];
  return String(bin % 1_000_000).padStart(6, '0');
}

/**
 * The codes of a TOTP app (SHA-1, 6 digits, 30 s) for the base32 `secret`. `fresh()` gives a
 * code the broker has not seen from this helper yet: a code is accepted once and only if
 * newer than the last accepted one, so it waits for the next step when needed.
 */
export function totpApp(secret, step = 30) {
  const key = base32Decode(secret);
  let lastUsed = -1;
  return {
    async fresh() {
      let counter = Math.floor(Date.now() / 1000 / step);
      if (counter <= lastUsed) {
        const wait = (lastUsed + 1) * step * 1000 - Date.now() + 250;
        console.log(`TOTP: waiting ${Math.ceil(wait / 1000)} s for the next step`);
        await sleep(wait);
        counter = Math.floor(Date.now() / 1000 / step);
      }
      lastUsed = counter;
      return hotp(key, counter);
    },
  };
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Starts `broker serve` on a free port with its database and keys in `workDir` (plus
 * `env`), and waits for /healthz. Returns { baseUrl, log, waitForLog, stop }: `log` is
 * everything the broker printed so far. If it never gets healthy, it is stopped and the
 * error (with its output) thrown.
 */
export async function startBroker({ workDir, env = {} }) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startBrokerOnce({ workDir, env, port: await freePort() });
    } catch (err) {
      // Another process took the port between its choice and the broker's bind.
      if (!(err.portTaken && attempt < 5)) throw err;
    }
  }
}

async function startBrokerOnce({ workDir, env, port }) {
  const baseUrl = `http://localhost:${port}`;
  const child = spawn(BROKER_BIN, ['serve'], {
    cwd: repoRoot,
    env: {
      ...process.env,
      AC_LISTEN: `127.0.0.1:${port}`,
      AC_ISSUER: baseUrl,
      DATABASE_URL: `sqlite://${path.join(workDir, 'b.sqlite3')}`,
      AC_KEYS_DIR: path.join(workDir, 'keys'),
      AC_ASSETS_DIR: ASSETS_DIR,
      NO_COLOR: '1',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const running = () => child.exitCode === null && child.signalCode === null;

  const broker = {
    baseUrl,
    log: '',

    /** Waits for a line of the broker output matching `re`, looking only after `from`. */
    async waitForLog(re, from = 0, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const m = broker.log.slice(from).match(re);
        if (m) return m;
        if (Date.now() > deadline) throw new Error(`no broker output matching ${re} within ${timeoutMs} ms:\n${broker.log.slice(from)}`);
        await sleep(50);
      }
    },

    /** SIGTERM, then SIGKILL after 5 s; resolves once the process has exited. */
    async stop() {
      if (!running()) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
  child.stdout.on('data', (d) => { broker.log += d; });
  child.stderr.on('data', (d) => { broker.log += d; });

  try {
    await waitForHealthy(`${baseUrl}/healthz`, 30_000);
  } catch (err) {
    await broker.stop();
    throw err;
  }
  return broker;

  // Healthy means this process announced its bound socket, then answered /healthz.
  async function waitForHealthy(url, timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    const announcement = `écoute sur http://127.0.0.1:${port}`;
    let lastErr;
    while (Date.now() < deadline) {
      if (!running()) {
        await new Promise((r) => setTimeout(r, 100));
        const err = new Error(`broker exited early (code ${child.exitCode}, signal ${child.signalCode}):\n${broker.log}`);
        err.portTaken = broker.log.includes('os error 98');
        throw err;
      }
      if (!broker.log.includes(announcement)) {
        lastErr = new Error('not listening yet');
        await sleep(50);
        continue;
      }
      try {
        const res = await fetch(url);
        if (res.status === 200) return;
        lastErr = new Error(`status ${res.status}`);
      } catch (err) {
        lastErr = err;
      }
      await sleep(100);
    }
    throw new Error(`broker not healthy after ${timeoutMs} ms (${lastErr?.message}):\n${broker.log}`);
  }
}

/** Headless Debian Chromium, without sandbox, GPU or background network traffic. */
export function launchChromium() {
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-quic',
      '--no-first-run',
      '--disable-sync',
    ],
  });
}

/** Closes the browser and stops the broker, whichever of them was started. */
export async function shutDown(browser, broker) {
  if (browser) await browser.close().catch(() => {});
  if (broker) await broker.stop();
}

/**
 * A page in a new fr-FR context that records console errors, page errors and failed
 * requests (HTTP status >= 400 included) in `problems`. With `ignoreAborted`, requests
 * failing with net::ERR_ABORTED are not recorded.
 */
export async function newPage(browser, contextOptions = {}, { ignoreAborted = false, pageErrorText = String } = {}) {
  const context = await browser.newContext({ locale: 'fr-FR', ...contextOptions });
  const page = await context.newPage();
  const problems = { consoleErrors: [], pageErrors: [], failedRequests: [] };
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.consoleErrors.push(`${msg.text()} (${msg.location()?.url ?? ''})`);
  });
  page.on('pageerror', (err) => problems.pageErrors.push(pageErrorText(err)));
  page.on('requestfailed', (req) => {
    if (ignoreAborted && req.failure()?.errorText === 'net::ERR_ABORTED') return;
    problems.failedRequests.push(`${req.method()} ${req.url()}: ${req.failure()?.errorText}`);
  });
  page.on('response', (res) => {
    if (res.status() >= 400) problems.failedRequests.push(`${res.request().method()} ${res.url()}: HTTP ${res.status()}`);
  });
  return { context, page, problems };
}

/**
 * Runs axe-core (WCAG 2.1 A and AA rules) on the page as loaded; fails on any serious or
 * critical violation and logs the others. The page's context must bypass the CSP, which
 * blocks the injected inline script. `label` (e.g. the URL) prefixes the messages.
 */
export async function assertAxe(page, label = '') {
  await page.addScriptTag({ content: readFileSync(require.resolve('axe-core'), 'utf8') });
  const results = await page.evaluate(() =>
    window.axe.run(document, {
      runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] },
    }),
  );
  const blocking = results.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  const others = results.violations.filter((v) => !blocking.includes(v));
  const describe = (v) =>
    `  [${v.impact}] ${v.id}: ${v.help} (${v.helpUrl})\n` +
    v.nodes
      .map((n) => `      - ${n.target.join(' ')}\n        ${n.failureSummary?.replace(/\n/g, '\n        ')}`)
      .join('\n');
  const axe = label ? `axe ${label}` : 'axe';
  if (others.length) {
    console.log(`${axe}: ${others.length} minor/moderate violation(s) (not failing):\n${others.map(describe).join('\n')}`);
  }
  console.log(`${axe}: ${results.passes.length} rules passed, ${results.violations.length} violated, ${results.incomplete.length} incomplete`);
  assert.equal(
    blocking.length,
    0,
    `${label ? `${label}: ` : ''}serious/critical accessibility violations:\n${blocking.map(describe).join('\n')}`,
  );
}

/** Fails with the page errors, console errors and failed requests a recorded page saw. */
export function assertNoProblems(problems, what) {
  const all = [...problems.pageErrors, ...problems.consoleErrors, ...problems.failedRequests];
  assert.deepEqual(all, [], `${what}: page errors, console errors or failed requests:\n${all.join('\n')}`);
}

/**
 * Runs axe-core on `url` in a throw-away context that bypasses the CSP (which blocks the
 * injected script) and, when `fromContext` is given, shares its cookies so a signed-in
 * page stays signed in. The flows under test keep the real CSP.
 */
export async function checkAxe(browser, url, fromContext = null) {
  const storageState = fromContext ? await fromContext.storageState() : undefined;
  const axeContext = await browser.newContext({ locale: 'fr-FR', bypassCSP: true, storageState });
  try {
    const page = await axeContext.newPage();
    const response = await page.goto(url, { waitUntil: 'load' });
    assert.equal(response.status(), 200, `axe: GET ${url}`);
    assert.equal(new URL(page.url()).pathname, new URL(url).pathname, `axe: ${url} redirected to ${page.url()}`);
    await fontsReady(page);
    await assertAxe(page, url);
  } finally {
    await axeContext.close();
  }
}

// ---------------------------------------------------------------- demo accounts, sign-in

/**
 * The demo référent aidant `broker serve` prints at start-up: { email, secret, totp }, with
 * `totp` a totpApp of the secret.
 */
export async function demoAidant(broker) {
  const [, email] = await broker.waitForLog(/Aidant référent : (\S+)/);
  const [, secret] = await broker.waitForLog(/Secret TOTP\s*: ([A-Z2-7=]+)/);
  return { email, secret, totp: totpApp(secret) };
}

/** The demo auditor (no structure) `broker serve` prints at start-up: { email, secret, totp }. */
export async function demoAuditor(broker) {
  const [, email] = await broker.waitForLog(/^Auditeur\s*: (\S+)/m);
  const [, secret] = await broker.waitForLog(/^Secret TOTP de l'auditeur : ([A-Z2-7=]+)/m);
  return { email, secret, totp: totpApp(secret) };
}

/**
 * Signs in on `broker` with the e-mail and a fresh code of `totp` (a totpApp), then the
 * sign-in link the broker prints (development mailer), and returns on /espace once its
 * "Mon espace" heading shows. With `open` false, starts on the sign-in page `page` is
 * already on (e.g. reached from /authorize) instead of opening /connexion; `arriveAt` (a
 * URL or URL predicate, as for waitForURL) replaces /espace and its heading.
 */
export async function signIn(page, { broker, email, totp, open = true, arriveAt = null }) {
  if (open) await page.goto(`${broker.baseUrl}/connexion`, { waitUntil: 'load' });
  await page.getByLabel('Adresse e-mail professionnelle').fill(email);
  await page.getByLabel('Code à 6 chiffres').fill(await totp.fresh());
  const logFrom = broker.log.length;
  await page.getByRole('button', { name: 'Recevoir mon lien de connexion' }).click();
  await page.getByRole('heading', { level: 1, name: 'Consultez votre messagerie' }).waitFor();
  const [, link] = await broker.waitForLog(/Lien de connexion \(développement\) : (\S+)/, logFrom);
  await page.goto(link, { waitUntil: 'load' });
  await page.getByRole('heading', { level: 1, name: 'Confirmer la connexion' }).waitFor();
  await page.getByRole('button', { name: 'Me connecter' }).click();
  if (arriveAt) {
    await page.waitForURL(arriveAt);
  } else {
    await page.waitForURL(`${broker.baseUrl}/espace`);
    await page.getByRole('heading', { level: 1, name: 'Mon espace' }).waitFor();
  }
}

// -------------------------------------------------------------------------- page helpers

/** Waits for the page's web fonts (before a screenshot or an axe run). */
export function fontsReady(page) {
  return page.evaluate(() => document.fonts.ready.then(() => undefined));
}

/** assertAxe on the page as it is now (the context must bypass the CSP), labelled by its URL. */
export async function axe(page) {
  await fontsReady(page);
  await assertAxe(page, page.url());
}

/** Ticks a DSFR checkbox or radio (the input is drawn by its label) and checks it took. */
export async function tick(page, id) {
  await page.locator(`label[for="${id}"]`).click();
  assert.ok(await page.locator(`#${id}`).isChecked(), `#${id} checked`);
}

/**
 * The screenshots of a test file: in SCREENSHOT_DIR, else `<workDir>/screenshots`
 * (created). Returns { screenshotDir, screenshot }: `screenshot(page, name)` waits for the
 * web fonts, saves the full page as `<prefix>-<name>.png`, logs and returns the file.
 */
function screenshots(workDir, prefix) {
  const dir = process.env.SCREENSHOT_DIR || path.join(workDir, 'screenshots');
  mkdirSync(dir, { recursive: true });
  return {
    screenshotDir: dir,
    async screenshot(page, name) {
      const file = path.join(dir, `${prefix}-${name}.png`);
      await fontsReady(page);
      await page.screenshot({ path: file, fullPage: true });
      console.log(`screenshot: ${file}`);
      return file;
    },
  };
}

// ------------------------------------------------------------------ test file lifecycle

/**
 * What a test file's `before` starts, in a new work directory `<tmp>/<prefix>…`: with
 * `shots` (a file name prefix), the screenshots (see screenshots()); `broker serve`, its
 * e-mails written to `<workDir>/outbox` when `outbox`; then Chromium. Returns { workDir,
 * broker, baseUrl, browser } (plus { screenshotDir, screenshot } with `shots`), for
 * tearDown. On a failure, tears down what it started and throws.
 */
export async function setUp(prefix, { outbox = true, shots = null } = {}) {
  const workDir = mkdtempSync(path.join(tmpdir(), prefix));
  const run = { workDir };
  try {
    if (shots) Object.assign(run, screenshots(workDir, shots));
    run.broker = await startBroker({ workDir, env: outbox ? { AC_OUTBOX_DIR: path.join(workDir, 'outbox') } : {} });
    run.baseUrl = run.broker.baseUrl;
    run.browser = await launchChromium();
    return run;
  } catch (err) {
    await tearDown(run);
    throw err;
  }
}

/**
 * Closes the browser and stops the broker of a setUp `run` (nothing when undefined), then
 * removes its work directory; with screenshots, only the broker's database, keys and
 * outbox, keeping the screenshots (and whatever else the test saved there).
 */
export async function tearDown(run) {
  if (!run) return;
  await shutDown(run.browser, run.broker);
  if (!run.screenshotDir) {
    rmSync(run.workDir, { recursive: true, force: true });
    return;
  }
  for (const entry of ['b.sqlite3', 'b.sqlite3-wal', 'b.sqlite3-shm', 'keys', 'outbox']) {
    rmSync(path.join(run.workDir, entry), { recursive: true, force: true });
  }
}
