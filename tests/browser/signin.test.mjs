// Browser tests of the aidant sign-in (docs/authentication.md): e-mail + TOTP code then
// the e-mailed link, security key (Chromium virtual authenticator), generic error and
// keyboard order, accessibility (axe-core) of the sign-in and espace pages.
//
// Run with: node --test tests/browser/
// Env: BROKER_BIN (default target/debug/broker), CHROMIUM_PATH (default /usr/bin/chromium),
//      SCREENSHOT_DIR (default <tmp>/ac-signin-…/screenshots, kept after the run).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { assertNoProblems, base32Decode, checkAxe, demoAidant, fontsReady, hotp, newPage as newRecordedPage, setUp, tearDown } from './support.mjs';

const AIDANT_NAME = 'Marie Aidante';
const KEY_NAME = 'Clé bleue du bureau';
const TOTP_STEP = 30;

/** What setUp started, for tearDown. */
let run;
let broker;
let baseUrl;
let browser;
let screenshotDir;
/** `screenshot(page, name)`: saves signin-<name>.png in screenshotDir. */
let screenshot;
/** The demo référent: { email, secret, totp }. */
let aidant;
/** Shared by the e-mail + code test and the security-key test: same context, same page. */
let flow;

// ---------------------------------------------------------------------------- TOTP

const currentCounter = () => Math.floor(Date.now() / 1000 / TOTP_STEP);

/** A 6-digit code accepted by no step near now. */
function wrongCode() {
  const key = base32Decode(aidant.secret);
  const c = currentCounter();
  const near = new Set([-3, -2, -1, 0, 1, 2, 3].map((d) => hotp(key, c + d)));
  for (let n = 123456; ; n = (n + 1) % 1_000_000) {
    const code = String(n).padStart(6, '0');
    if (!near.has(code)) return code;
  }
}

// --------------------------------------------------------------------------- helpers

/** A page that records console errors, page errors and failed requests. */
function newPage(contextOptions = {}) {
  // A navigation cancels what the previous page was still loading (e.g. its favicon).
  return newRecordedPage(browser, contextOptions, {
    ignoreAborted: true,
    pageErrorText: (err) => `${err.stack ?? err}`,
  });
}



/** E-mail + code, then the e-mailed link, in `page`; returns on /espace. */
async function signInWithCode(page, shots = false) {
  await page.goto(`${baseUrl}/connexion`, { waitUntil: 'load' });
  await fontsReady(page);
  assert.equal((await page.locator('h1').innerText()).trim(), 'Se connecter');
  if (shots) await screenshot(page, '1-connexion');

  await page.getByLabel('Adresse e-mail professionnelle').fill(aidant.email);
  await page.getByLabel('Code à 6 chiffres').fill(await aidant.totp.fresh());
  const logFrom = broker.log.length;
  await page.getByRole('button', { name: 'Recevoir mon lien de connexion' }).click();
  await page.waitForURL(`${baseUrl}/connexion`);
  await page.getByRole('heading', { level: 1, name: 'Consultez votre messagerie' }).waitFor();
  if (shots) await screenshot(page, '2-lien-envoye');

  const [, link] = await broker.waitForLog(/Lien de connexion \(développement\) : (\S+)/, logFrom);
  assert.ok(link.startsWith(`${baseUrl}/connexion/lien?jeton=`), `unexpected link ${link}`);
  await page.goto(link, { waitUntil: 'load' });
  await page.getByRole('heading', { level: 1, name: 'Confirmer la connexion' }).waitFor();
  if (shots) await screenshot(page, '3-confirmation');

  await page.getByRole('button', { name: 'Me connecter' }).click();
  await page.waitForURL(`${baseUrl}/espace`);
  await page.getByRole('heading', { level: 1, name: 'Mon espace' }).waitFor();
}

// ----------------------------------------------------------------------- lifecycle

before(async () => {
  run = await setUp('ac-signin-', { shots: 'signin' });
  ({ broker, baseUrl, browser, screenshotDir, screenshot } = run);
  aidant = await demoAidant(broker);
});

after(async () => {
  await tearDown(run);
  console.log(`screenshots kept in ${screenshotDir}`);
});

// --------------------------------------------------------------------------- tests

test('e-mail + code, then the e-mailed link, opens "Mon espace"', { timeout: 60_000 }, async () => {
  flow = await newPage();
  const { context, page, problems } = flow;
  await signInWithCode(page, true);
  await fontsReady(page);
  await screenshot(page, '4-espace');
  assert.match(await page.locator('main').innerText(), new RegExp(`Bonjour ${AIDANT_NAME}`));
  assert.ok(await page.getByRole('button', { name: 'Se déconnecter' }).isVisible(), 'sign-out button visible');
  assertNoProblems(problems, 'sign-in with code');

  await checkAxe(browser, `${baseUrl}/connexion`);
  await checkAxe(browser, `${baseUrl}/espace`, context);
});

test('security key: add one on /espace/securite, sign out, sign in with it', { timeout: 75_000 }, async () => {
  if (!flow) flow = await newPage();
  const { page, problems } = flow;
  // The virtual authenticator lives in this page's target: keep the same page throughout.
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  const { authenticatorId } = await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2',
      transport: 'usb',
      hasResidentKey: true,
      hasUserVerification: true,
      isUserVerified: true,
      automaticPresenceSimulation: true,
    },
  });

  await page.goto(`${baseUrl}/espace/securite`, { waitUntil: 'load' });
  if (new URL(page.url()).pathname !== '/espace/securite') {
    // Not signed in (the previous test failed): sign in again with a new code.
    await signInWithCode(page);
    await page.goto(`${baseUrl}/espace/securite`, { waitUntil: 'load' });
  }
  await page.getByRole('heading', { level: 1, name: 'Mes moyens de connexion' }).waitFor();
  await page.getByLabel('Nom de la clé').fill(KEY_NAME);
  await page.getByRole('button', { name: 'Ajouter la clé' }).click();
  await page.waitForURL((u) => u.pathname !== '/espace/securite' || u.search === '?ok=ajout', { timeout: 15_000 }).catch(() => {});
  const keyError = page.locator('#cle-erreur');
  if (await keyError.isVisible()) assert.fail(`adding the key shows an error: ${await keyError.innerText()}`);
  assert.equal(
    new URL(page.url()).pathname + new URL(page.url()).search,
    '/espace/securite?ok=ajout',
    `after "Ajouter la clé", landed on ${page.url()} (a /reauthentification redirect right after sign-in would be a bug)`,
  );
  await page.getByRole('status').filter({ hasText: 'La clé de sécurité a été ajoutée.' }).waitFor();
  const table = page.getByRole('table', { name: 'Vos clés de sécurité' });
  await table.getByRole('cell', { name: KEY_NAME, exact: true }).waitFor();
  const { credentials } = await cdp.send('WebAuthn.getCredentials', { authenticatorId });
  assert.equal(credentials.length, 1, 'one credential in the virtual authenticator');
  assert.equal(credentials[0].isResidentCredential, true, 'the credential is discoverable');
  await screenshot(page, '5-cle-ajoutee');

  await page.getByRole('button', { name: 'Se déconnecter' }).click();
  await page.waitForURL(`${baseUrl}/`);
  assert.ok(await page.getByRole('link', { name: 'Se connecter' }).isVisible(), 'signed out');
  const espace = await page.goto(`${baseUrl}/espace`, { waitUntil: 'load' });
  assert.notEqual(new URL(page.url()).pathname, '/espace', `still signed in after sign-out (HTTP ${espace.status()})`);

  await page.goto(`${baseUrl}/connexion`, { waitUntil: 'load' });
  await page.getByRole('button', { name: 'Utiliser ma clé de sécurité' }).click();
  await page.waitForURL(`${baseUrl}/espace`, { timeout: 15_000 }).catch(() => {});
  if (await keyError.isVisible().catch(() => false)) assert.fail(`sign-in with the key shows an error: ${await keyError.innerText()}`);
  assert.equal(new URL(page.url()).pathname, '/espace', `after "Utiliser ma clé de sécurité", landed on ${page.url()}`);
  await page.getByRole('heading', { level: 1, name: 'Mon espace' }).waitFor();
  assert.match(await page.locator('main').innerText(), new RegExp(`Bonjour ${AIDANT_NAME}`));
  await fontsReady(page);
  await screenshot(page, '6-espace-par-cle');

  // The key's "last used" column is filled in.
  await page.goto(`${baseUrl}/espace/securite`, { waitUntil: 'load' });
  const row = page.getByRole('row').filter({ has: page.getByRole('cell', { name: KEY_NAME, exact: true }) });
  assert.doesNotMatch(await row.innerText(), /jamais/, 'last use of the key recorded');
  assertNoProblems(problems, 'security key');
  await cdp.detach();
  await flow.context.close();
});

test('wrong code: generic error in role=alert; keyboard order key button, e-mail, code, submit', { timeout: 30_000 }, async () => {
  const { context, page, problems } = await newPage();
  try {
    await page.goto(`${baseUrl}/connexion`, { waitUntil: 'load' });

    // Keyboard: Tab from the top until the e-mail field; the security-key button comes
    // just before it, then the code field and the submit button.
    const order = [];
    const focused = () =>
      page.evaluate(() => {
        const el = document.activeElement;
        return el.id || `${el.tagName.toLowerCase()}:${el.textContent.trim().replace(/\s+/g, ' ')}`;
      });
    for (let i = 0; i < 20 && order.at(-1) !== 'email'; i++) {
      await page.keyboard.press('Tab');
      order.push(await focused());
    }
    assert.equal(order.at(-1), 'email', `Tab never reached the e-mail field: ${order.join(' → ')}`);
    assert.equal(order.at(-2), 'connexion-cle', `focus before the e-mail field: ${order.join(' → ')}`);
    await page.keyboard.type(aidant.email);
    await page.keyboard.press('Tab');
    assert.equal(await focused(), 'code');
    await page.keyboard.type(wrongCode());
    await page.keyboard.press('Tab');
    assert.equal(await focused(), 'button:Recevoir mon lien de connexion');
    console.log(`keyboard order: ${order.join(' → ')} → code → submit`);

    // Submit with the keyboard.
    await Promise.all([page.waitForURL(`${baseUrl}/connexion`), page.keyboard.press('Enter')]);
    const alert = page.getByRole('alert');
    await alert.filter({ hasText: "L'adresse e-mail ou le code est incorrect" }).waitFor();
    assert.equal(await alert.count(), 1, 'one visible alert');
    assert.equal(await page.getByLabel('Adresse e-mail professionnelle').inputValue(), aidant.email, 'e-mail kept');
    assert.equal(await page.getByLabel('Code à 6 chiffres').inputValue(), '', 'code cleared');
    await screenshot(page, '7-code-incorrect');

    // The same text for an unknown e-mail.
    await page.getByLabel('Adresse e-mail professionnelle').fill('personne@inconnu.test');
    await page.getByLabel('Code à 6 chiffres').fill('000000');
    await page.getByRole('button', { name: 'Recevoir mon lien de connexion' }).click();
    await page.getByRole('alert').filter({ hasText: "L'adresse e-mail ou le code est incorrect" }).waitFor();
    assertNoProblems(problems, 'wrong code');
  } finally {
    await context.close();
  }
});
