// Browser test of the demonstration e-service (development only, /demo): FranceConnect's
// core played by the broker itself. "Se connecter avec FranceConnect" → "Aidants Connect"
// → the broker's sign-in (e-mail + TOTP code, e-mailed link) → choice of the usager and
// of the démarche → back on /demo/retour with the identity and the démarche received.
// Then a second connection cancelled by the aidant ("Connexion annulée"), the confirmation
// asked for a logout without id_token_hint, and the logout through the broker's
// end_session_endpoint. Accessibility (axe-core) of every demo page.
//
// Run with: node --test tests/browser/
// Env: BROKER_BIN (default target/debug/broker), CHROMIUM_PATH (default /usr/bin/chromium),
//      SCREENSHOT_DIR (default <tmp>/ac-demo-…/screenshots, kept after the run).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { assertNoProblems, axe, checkAxe, demoAidant, newPage as newRecordedPage, setUp, signIn, tearDown } from './support.mjs';

/** What setUp started, for tearDown. */
let run;
let broker;
let baseUrl;
let browser;
let screenshotDir;
/** `screenshot(page, name)`: saves demo-<name>.png in screenshotDir. */
let screenshot;
/** The demo référent: { email, secret, totp }. */
let aidant;
/** The context signed in by the first test, reused by the next ones. */
let signedIn;

function newPage(contextOptions = {}) {
  return newRecordedPage(browser, contextOptions, { ignoreAborted: true, pageErrorText: (err) => `${err.stack ?? err}` });
}

const pathOf = (page) => new URL(page.url()).pathname;

/** From the broker's sign-in page (reached from /authorize): e-mail + code, then the link. */
async function signInFromFlow(page) {
  assert.equal(pathOf(page), '/connexion', `expected the broker's sign-in page, got ${page.url()}`);
  const suite = new URL(page.url()).searchParams.get('suite') ?? '';
  assert.match(suite, /^\/autorisation\//, `suite=${suite}`);
  await signIn(page, {
    broker,
    ...aidant,
    open: false,
    arriveAt: (u) => u.pathname.startsWith('/autorisation/') || u.pathname === '/reauthentification',
  });
}

/** On /reauthentification (prompt=login with a live session): a new code. */
async function reauthenticate(page) {
  await page.getByRole('heading', { level: 1, name: 'Confirmer votre identité' }).waitFor();
  await page.getByLabel('Code à 6 chiffres').fill(await aidant.totp.fresh());
  await page.getByRole('button', { name: 'Confirmer et continuer' }).click();
  await page.waitForURL((u) => u.pathname.startsWith('/autorisation/'));
}

/**
 * /demo → "Se connecter avec FranceConnect" → "Aidants Connect": lands on the broker. With
 * `fromHome` false, starts on the choice of the account (/demo shows no button while a
 * connection is live).
 */
async function startConnection(page, { shots = false, fromHome = true } = {}) {
  if (fromHome) {
    const res = await page.goto(`${baseUrl}/demo`, { waitUntil: 'load' });
    assert.equal(res.status(), 200);
    await page.getByRole('heading', { level: 1, name: 'Service en ligne de démonstration' }).waitFor();
    if (shots) await screenshot(page, '1-accueil');
    await page.getByRole('link', { name: 'Se connecter avec FranceConnect' }).click();
    await page.waitForURL(`${baseUrl}/demo/connexion`);
  } else {
    await page.goto(`${baseUrl}/demo/connexion`, { waitUntil: 'load' });
  }
  await page.getByRole('heading', { level: 1, name: 'Choisissez un compte pour vous connecter' }).waitFor();
  if (shots) await screenshot(page, '2-choix-du-compte');

  // The 303 to /authorize carries exactly the core's parameters.
  const [authorize] = await Promise.all([
    page.waitForRequest((r) => new URL(r.url()).pathname === '/authorize'),
    page.locator('main').getByRole('link', { name: 'Aidants Connect' }).click(),
  ]);
  const p = new URL(authorize.url()).searchParams;
  assert.equal(p.get('response_type'), 'code');
  assert.equal(p.get('client_id'), 'demo-service');
  assert.equal(p.get('redirect_uri'), `${baseUrl}/demo/retour`);
  assert.equal(p.get('scope'), 'openid profile email birth');
  assert.equal(p.get('acr_values'), 'eidas1');
  assert.equal(p.get('prompt'), 'login');
  assert.match(p.get('state'), /^[0-9a-f]{64}$/);
  assert.match(p.get('nonce'), /^[0-9a-f]{64}$/);
  assert.deepEqual(JSON.parse(p.get('claims')), {
    id_token: {
      rep_scope: {
        essential: true,
        values: ['papiers', 'famille', 'social', 'travail', 'logement', 'transports', 'argent', 'justice', 'etranger', 'loisirs'],
      },
    },
  });
  await page.waitForURL((u) => ['/connexion', '/reauthentification'].includes(u.pathname) || u.pathname.startsWith('/autorisation/'));
}

/** The identity table of the result page, as { claim: value }. */
async function receivedClaims(page) {
  const rows = page.getByRole('table', { name: 'Identité transmise par Aidants Connect' }).locator('tbody tr');
  const out = {};
  for (const row of await rows.all()) {
    const cells = await row.locator('td').allInnerTexts();
    out[cells[0].trim()] = cells[1].trim();
  }
  return out;
}

before(async () => {
  run = await setUp('ac-demo-', { shots: 'demo' });
  ({ broker, baseUrl, browser, screenshotDir, screenshot } = run);
  aidant = await demoAidant(broker);
});

after(async () => {
  await tearDown(run);
  console.log(`screenshots kept in ${screenshotDir}`);
});

test('demo: FranceConnect → Aidants Connect → usager and démarche → identity received', { timeout: 90_000 }, async () => {
  await checkAxe(browser, `${baseUrl}/demo`);
  await checkAxe(browser, `${baseUrl}/demo/connexion`);

  signedIn = await newPage();
  const { context, page, problems } = signedIn;
  await startConnection(page, { shots: true });
  await screenshot(page, '3-connexion-aidant');
  await signInFromFlow(page);
  if (pathOf(page) === '/reauthentification') await reauthenticate(page);

  await page.getByRole('heading', { level: 1, name: 'Pour qui faites-vous cette démarche ?' }).waitFor();
  assert.match(await page.locator('main').innerText(), /Service en ligne de démonstration/, 'the client is named');
  await screenshot(page, '4-choix-usager');
  await checkAxe(browser, page.url(), context);
  await page.getByRole('button', { name: /^Jean Pierre LEF/ }).click();
  await page.getByRole('heading', { level: 1, name: /Quelle démarche faites-vous pour Jean Pierre/ }).waitFor();
  await screenshot(page, '5-choix-demarche');
  await checkAxe(browser, page.url(), context);
  await page.getByRole('button', { name: 'Argent - Impôts - Consommation' }).click();

  await page.waitForURL((u) => u.pathname === '/demo/retour');
  const back = new URL(page.url());
  assert.match(back.searchParams.get('code') ?? '', /.+/, 'code in the callback');
  assert.equal(back.searchParams.get('iss'), baseUrl);
  await page.getByRole('heading', { level: 1, name: 'Connexion réussie' }).waitFor();
  await screenshot(page, '6-identite-recue');
  const claims = await receivedClaims(page);
  assert.equal(claims.given_name, 'Jean Pierre');
  assert.equal(claims.family_name, 'Lefèvre');
  assert.equal(claims.birthdate, '1948-05-12');
  assert.equal(claims.gender, 'male (homme)');
  assert.equal(claims.birthplace, '59350');
  assert.equal(claims.birthcountry, '99100');
  assert.equal(claims.email, 'jean-pierre.lefevre@usager-demo.test');
  assert.equal(claims.acr, 'eidas1');
  assert.match(claims.sub, /.+/);
  const demarches = await page.locator('#demarches li').allInnerTexts();
  assert.deepEqual(demarches.map((t) => t.trim()), ['Argent - Impôts - Consommation (argent)']);
  assertNoProblems(problems, 'demo flow');

  // Reloading the result page shows it again (the code is not redeemed twice).
  await checkAxe(browser, page.url(), context);
  // The home page now shows the connection.
  await page.goto(`${baseUrl}/demo`, { waitUntil: 'load' });
  assert.match(await page.locator('main').innerText(), /Vous êtes connecté pour le compte de Jean Pierre Lefèvre/);
  await checkAxe(browser, `${baseUrl}/demo`, context);
});

test('demo: the aidant cancels → "Connexion annulée" on the e-service', { timeout: 90_000 }, async () => {
  // Same browser session as the first test (the aidant is signed in), CSP bypassed to run axe
  // on the result.
  const storageState = signedIn ? await signedIn.context.storageState() : undefined;
  const { context, page, problems } = await newPage({ storageState, bypassCSP: true });
  try {
    await startConnection(page, { fromHome: false });
    if (pathOf(page) === '/connexion') await signInFromFlow(page);
    if (pathOf(page) === '/reauthentification') await reauthenticate(page);
    await page.getByRole('heading', { level: 1, name: 'Pour qui faites-vous cette démarche ?' }).waitFor();
    await page.getByRole('button', { name: 'Annuler et revenir au service en ligne' }).click();
    await page.waitForURL((u) => u.pathname === '/demo/retour');
    assert.equal(new URL(page.url()).searchParams.get('error'), 'access_denied');
    await page.getByRole('heading', { level: 1, name: 'Connexion annulée' }).waitFor();
    assert.ok(await page.getByRole('link', { name: 'Revenir au service' }).isVisible(), 'link back to the e-service');
    await screenshot(page, '7-connexion-annulee');
    await axe(page);
    assertNoProblems(problems, 'cancelled flow');
  } finally {
    await context.close();
  }
});

test('demo: "Se déconnecter" goes through the broker end_session_endpoint and back', { timeout: 30_000 }, async () => {
  assert.ok(signedIn, 'the first test signed in');
  const { context, page, problems } = signedIn;
  // Without an id_token_hint (any page could link there), the broker asks first and the
  // session goes on.
  await page.goto(`${baseUrl}/logout`, { waitUntil: 'load' });
  await page.getByRole('heading', { level: 1, name: "Se déconnecter d'Aidants Connect ?" }).waitFor();
  assert.ok(await page.getByRole('button', { name: 'Me déconnecter' }).isVisible());
  await checkAxe(browser, `${baseUrl}/logout`, context);
  await page.goto(`${baseUrl}/espace`, { waitUntil: 'load' });
  assert.equal(pathOf(page), '/espace', 'still signed in after the unconfirmed logout');
  await page.goto(`${baseUrl}/demo`, { waitUntil: 'load' });
  const [logout] = await Promise.all([
    page.waitForRequest((r) => new URL(r.url()).pathname === '/logout'),
    page.getByRole('button', { name: 'Se déconnecter' }).click(),
  ]);
  const p = new URL(logout.url()).searchParams;
  assert.equal(p.get('post_logout_redirect_uri'), `${baseUrl}/demo`);
  assert.match(p.get('id_token_hint') ?? '', /^[\w-]+\.[\w-]+\.[\w-]+$/);
  assert.match(p.get('state') ?? '', /^[0-9a-f]{64}$/);
  await page.waitForURL((u) => u.pathname === '/demo' && u.searchParams.get('state') === p.get('state'));
  await page.getByRole('status').filter({ hasText: 'Vous êtes déconnecté' }).waitFor();
  assert.ok(await page.getByRole('link', { name: 'Se connecter avec FranceConnect' }).isVisible());
  await screenshot(page, '8-deconnecte');
  // The aidant's session at the broker has ended too.
  await page.goto(`${baseUrl}/espace`, { waitUntil: 'load' });
  assert.notEqual(pathOf(page), '/espace', 'aidant still signed in after the logout');
  assertNoProblems(problems, 'logout');
  await context.close();
});
