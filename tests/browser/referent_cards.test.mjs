// Browser test of the référent's TOTP pages: the demo référent signs in → /referent → their
// own aidant page → "Cartes à code" → associates the demo card DEMO-0001 by its serial →
// validates it with the code the card shows now (computed from its printed seed, 60 s
// step) → sees the confirmation. Then the app page: "Ajouter une application à code" shows
// a QR code. axe-core finds no serious or critical violation on the card and app pages.
//
// Run with: node --test tests/browser/referent_cards.test.mjs
// Env: BROKER_BIN (default target/debug/broker), CHROMIUM_PATH (default /usr/bin/chromium).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { assertNoProblems, base32Decode, checkAxe, demoAidant, hotp, newPage, setUp, signIn, tearDown } from './support.mjs';

/** What setUp started, for tearDown. */
let run;
let broker;
let baseUrl;
let browser;
/** The demo référent: { email, secret, totp }. */
let aidant;
let card;

before(async () => {
  run = await setUp('ac-cartes-');
  ({ broker, baseUrl, browser } = run);
  aidant = await demoAidant(broker);
  const [, serial, cardSecret, step] = await broker.waitForLog(/Cartes à code\s*: (\S+) \(secret : ([A-Z2-7=]+), un code toutes les (\d+) s\)/);
  card = { serial, key: base32Decode(cardSecret), step: Number(step) };
});

after(() => tearDown(run));

test('référent: associate a demo card by serial, validate it with its code, then start an app', { timeout: 120_000 }, async () => {
  const { context, page, problems } = await newPage(browser, {}, { ignoreAborted: true });
  try {
    assert.equal(card.step, 60, 'demo cards show a code every minute');
    await signIn(page, { broker, ...aidant });

    await page.goto(`${baseUrl}/referent`, { waitUntil: 'load' });
    await page.getByRole('link', { name: 'Marie Aidante', exact: true }).click();
    await page.getByRole('heading', { level: 1, name: 'Marie Aidante' }).waitFor();
    const memberPath = new URL(page.url()).pathname;
    await page.getByRole('link', { name: 'Cartes à code', exact: true }).click();
    await page.getByRole('heading', { level: 1, name: 'Cartes à code de Marie Aidante' }).waitFor();
    assert.equal(new URL(page.url()).pathname, `${memberPath}/carte`);

    await page.getByLabel('Numéro de série de la carte').fill(card.serial);
    await page.getByRole('button', { name: 'Associer la carte à Marie Aidante' }).click();
    await page.waitForURL((u) => u.search === '?ok=associee');
    await page.getByText('La carte est associée.').waitFor();
    await page.getByRole('heading', { level: 2, name: `Carte n° ${card.serial}` }).waitFor();
    await checkAxe(browser, page.url(), context);

    const code = hotp(card.key, Math.floor(Date.now() / 1000 / card.step));
    await page.getByLabel(`Code affiché en ce moment sur la carte n° ${card.serial}`).fill(code);
    await page.getByRole('button', { name: `Valider la carte n° ${card.serial}` }).click();
    await page.waitForURL((u) => u.search === '?ok=validee');
    const status = await page.getByRole('status').innerText();
    assert.match(status, /La carte est validée/);
    assert.equal(await page.getByLabel(`Code affiché en ce moment sur la carte n° ${card.serial}`).count(), 0, 'no validation form once validated');
    await checkAxe(browser, page.url(), context);

    await page.goto(`${baseUrl}${memberPath}`, { waitUntil: 'load' });
    assert.match(await page.locator('main').innerText(), /1 carte à code/);

    await page.getByRole('link', { name: 'Application à code', exact: true }).click();
    await page.getByRole('heading', { level: 1, name: 'Application à code de Marie Aidante' }).waitFor();
    await checkAxe(browser, page.url(), context);
    await page.getByRole('button', { name: 'Ajouter une application à code' }).click();
    await page.waitForURL((u) => u.search === '?ok=demarree');
    await page.getByRole('img', { name: "QR code à scanner avec l'application à code" }).waitFor();
    assert.match(await page.locator('#cle-secrete').innerText(), /^[A-Z2-7]{4}( [A-Z2-7]{1,4})+$/);
    await checkAxe(browser, page.url(), context);

    assertNoProblems(problems, 'référent card and app pages');
  } finally {
    await context.close();
  }
});
