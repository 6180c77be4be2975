// Browser test of the making of a mandat with the FranceConnect simulator of the embedded
// default: the demo aidant signs in → /espace → "Créer un mandat" → démarches (argent and
// logement) and "6 mois" → the simulator's identity page → Hélène Lefèvre → the recap →
// consent and a fresh TOTP code → the attestation (identity, démarches, duration, QR code),
// printed to PDF → its verification page → /usagers and the usager's page. Then a second
// attempt cancelled on the simulator: back on the form with the choices kept and a message.
// Accessibility (axe-core) of every page of the journey.
//
// The whole journey runs in a context that bypasses the CSP so axe runs on the live pages
// (re-loading the simulator or the recap would not show the same page).
//
// Run with: node --test tests/browser/mandat.test.mjs
// Env: BROKER_BIN (default target/debug/broker), CHROMIUM_PATH (default /usr/bin/chromium),
//      SCREENSHOT_DIR (default <tmp>/ac-mandat-…/screenshots, kept after the run).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { assertNoProblems, axe, demoAidant, newPage as newRecordedPage, setUp, signIn, tearDown, tick } from './support.mjs';

/** What setUp started, for tearDown. */
let run;
let broker;
let baseUrl;
let browser;
let screenshotDir;
/** `screenshot(page, name)`: saves mandat-<name>.png in screenshotDir. */
let screenshot;
/** The demo référent: { email, secret, totp }. */
let aidant;
/** The signed-in context of the first test, reused by the second. */
let signedIn;

const pathOf = (page) => new URL(page.url()).pathname;

/** On the form: argent and logement, 6 months, then on to the simulator's identity page. */
async function chooseAndIdentify(page, { shots = false } = {}) {
  await page.getByRole('heading', { level: 1, name: 'Créer un mandat' }).waitFor();
  await tick(page, 'demarche-argent');
  await tick(page, 'demarche-logement');
  assert.equal((await page.locator('label[for="duree-182"]').innerText()).trim(), '6 mois');
  await tick(page, 'duree-182');
  const argentHint = await page.locator('#demarche-argent-detail').innerText();
  assert.match(argentHint, /surendettement/i, `warning about over-indebtedness: ${argentHint}`);
  if (shots) await screenshot(page, '2-formulaire');
  await page.getByRole('button', { name: 'Identifier la personne avec FranceConnect' }).click();
  await page.waitForURL((u) => u.pathname.startsWith('/simulateur-franceconnect/'));
  await page.getByRole('heading', { level: 1, name: 'Choisissez une identité de test' }).waitFor();
}

before(async () => {
  run = await setUp('ac-mandat-', { shots: 'mandat' });
  ({ broker, baseUrl, browser, screenshotDir, screenshot } = run);
  aidant = await demoAidant(broker);
});

after(async () => {
  if (signedIn) await signedIn.context.close().catch(() => {});
  await tearDown(run);
  console.log(`screenshots and PDF kept in ${screenshotDir}`);
});

test('mandat: form → FranceConnect simulator → recap → attestation (PDF) → verification → usagers', { timeout: 180_000 }, async () => {
  signedIn = await newRecordedPage(browser, { bypassCSP: true }, { ignoreAborted: true, pageErrorText: (err) => `${err.stack ?? err}` });
  const { page, problems } = signedIn;
  await signIn(page, { broker, ...aidant });
  await screenshot(page, '1-espace');

  await page.getByRole('link', { name: 'Créer un mandat' }).click();
  await page.waitForURL(`${baseUrl}/mandats/nouveau`);
  await axe(page);
  await chooseAndIdentify(page, { shots: true });
  await screenshot(page, '3-simulateur-identites');
  await axe(page);

  await tick(page, 'identite-helene-lefevre');
  await page.getByRole('button', { name: 'Continuer avec cette identité' }).click();
  await page.waitForURL(`${baseUrl}/mandats/nouveau/recapitulatif`);
  await page.getByRole('heading', { level: 1, name: 'Récapitulatif du mandat' }).waitFor();
  const recap = await page.locator('main').innerText();
  assert.match(recap, /Hélène/);
  assert.match(recap, /Lefèvre/);
  assert.match(recap, /Ménard/);
  assert.match(recap, /Argent/);
  assert.match(recap, /Logement/);
  assert.match(recap, /6 mois/);
  await screenshot(page, '4-recapitulatif');
  await axe(page);

  await tick(page, 'consentement');
  await page.getByLabel(/^Code à 6 chiffres/).fill(await aidant.totp.fresh());
  await page.getByRole('button', { name: 'Créer le mandat' }).click();
  await page.waitForURL((u) => /^\/mandats\/\d+\/attestation$/.test(u.pathname) || u.pathname === '/reauthentification');
  if (pathOf(page) === '/reauthentification') {
    await page.getByLabel('Code à 6 chiffres').fill(await aidant.totp.fresh());
    await page.getByRole('button', { name: /^Confirmer/ }).click();
    await page.waitForURL(`${baseUrl}/mandats/nouveau/recapitulatif`);
    await tick(page, 'consentement');
    await page.getByRole('button', { name: 'Créer le mandat' }).click();
    await page.waitForURL((u) => /^\/mandats\/\d+\/attestation$/.test(u.pathname));
  }

  // The attestation.
  const main = await page.locator('main').innerText();
  assert.match(main, /Hélène/);
  assert.match(main, /Lefèvre/);
  assert.match(main, /Argent/);
  assert.match(main, /Logement/);
  assert.match(main, /6 mois/);
  assert.equal(await page.locator('main svg').count() >= 1, true, 'the QR code svg');
  const qr = await page.locator('main svg').first().innerHTML();
  assert.ok(qr.length > 500, 'the QR code svg has content');
  const fingerprint = (await page.locator('#empreinte').innerText()).trim();
  assert.match(fingerprint, /^[0-9a-f]{64}$/, `fingerprint ${fingerprint}`);
  const verifyUrl = `${baseUrl}/attestations/verifier/${fingerprint}`;
  assert.ok(main.includes(verifyUrl), `the page shows the verification URL ${verifyUrl}`);
  await screenshot(page, '5-attestation');
  await axe(page);
  const attestationUrl = page.url();

  await page.emulateMedia({ media: 'print' });
  const pdfFile = path.join(screenshotDir, 'mandat-attestation.pdf');
  await page.pdf({ path: pdfFile, format: 'A4', printBackground: true });
  await page.emulateMedia({ media: 'screen' });
  const pdf = readFileSync(pdfFile);
  assert.equal(pdf.subarray(0, 4).toString('latin1'), '%PDF', 'a PDF file');
  assert.ok(statSync(pdfFile).size > 10_000, `PDF of ${statSync(pdfFile).size} bytes`);
  console.log(`PDF: ${pdfFile}`);

  // The verification page.
  const res = await page.goto(verifyUrl, { waitUntil: 'load' });
  assert.equal(res.status(), 200);
  await page.getByRole('heading', { level: 2, name: 'Attestation connue' }).waitFor();
  const mandatId = attestationUrl.match(/\/mandats\/(\d+)\/attestation$/)[1];
  assert.match(await page.locator('main').innerText(), new RegExp(`n° ${mandatId}\\b`));
  await screenshot(page, '6-verification');
  await axe(page);

  // The usagers of the organisation, and Hélène's page.
  await page.goto(`${baseUrl}/usagers`, { waitUntil: 'load' });
  await page.getByRole('heading', { level: 1, name: 'Mes usagers' }).waitFor();
  const link = page.locator('main table').getByRole('link', { name: /Hélène/ });
  assert.equal(await link.count(), 1, 'Hélène in the list');
  await screenshot(page, '7-usagers');
  await axe(page);
  await link.click();
  await page.waitForURL((u) => /^\/usagers\/\d+$/.test(u.pathname));
  await page.getByRole('heading', { level: 1, name: /Hélène/ }).waitFor();
  const detail = await page.locator('main').innerText();
  assert.match(detail, new RegExp(`mandat n° ${mandatId}\\b`, 'i'));
  assert.match(detail, /Argent/);
  assert.match(detail, /Logement/);
  await screenshot(page, '8-usager');
  await axe(page);

  assertNoProblems(problems, 'mandat journey');
});

test('mandat: "Annuler" on the simulator → back on the form, choices kept, message', { timeout: 90_000 }, async () => {
  assert.ok(signedIn, 'the first test signed in');
  const { page, problems } = signedIn;
  await page.goto(`${baseUrl}/mandats/nouveau`, { waitUntil: 'load' });
  await chooseAndIdentify(page);
  await page.getByRole('button', { name: 'Annuler et revenir au service' }).click();
  await page.waitForURL(`${baseUrl}/mandats/nouveau`);
  const alert = page.locator('main [role="alert"]');
  await alert.waitFor();
  assert.match(await alert.innerText(), /Identification annulée/);
  assert.ok(await page.locator('#demarche-argent').isChecked(), 'argent kept');
  assert.ok(await page.locator('#demarche-logement').isChecked(), 'logement kept');
  assert.ok(await page.locator('#duree-182').isChecked(), '6 months kept');
  await screenshot(page, '9-annulation');
  await axe(page);
  // The callback's ?error=access_denied is expected to be handled, not reported as failing.
  assertNoProblems(problems, 'cancelled identification');
});

test('usager space: Hélène identifies with the simulator, sees her mandat and stops one démarche', { timeout: 120_000 }, async () => {
  assert.ok(signedIn, 'the first test made a mandat for Hélène');
  // Another browser context: the usager, not the aidant.
  const { page, problems, context } = await newRecordedPage(browser, { bypassCSP: true }, { ignoreAborted: true, pageErrorText: (err) => `${err.stack ?? err}` });
  try {
    await page.goto(`${baseUrl}/`, { waitUntil: 'load' });
    await page.getByRole('link', { name: 'Voir mes mandats' }).click();
    await page.waitForURL(`${baseUrl}/espace-usager`);
    await page.getByRole('heading', { level: 1, name: 'Mes mandats Aidants Connect' }).waitFor();
    await axe(page);
    await page.getByRole('button', { name: /S'identifier avec\s*FranceConnect/ }).click();
    await page.waitForURL((u) => u.pathname.startsWith('/simulateur-franceconnect/'));
    await tick(page, 'identite-helene-lefevre');
    await page.getByRole('button', { name: 'Continuer avec cette identité' }).click();
    await page.waitForURL(`${baseUrl}/espace-usager`);
    const main = await page.locator('main').innerText();
    assert.match(main, /Mandat n° \d+ avec /);
    assert.match(main, /Argent/);
    assert.match(main, /Logement/);
    assert.doesNotMatch(main, /S'identifier avec/, 'identified');
    await screenshot(page, '10-espace-usager');
    await axe(page);

    await page.getByRole('button', { name: /^Arrêter la démarche Argent/ }).click();
    await page.getByRole('heading', { level: 2, name: 'La révocation est enregistrée' }).waitFor();
    const rows = await page.locator('main table').first().innerText();
    assert.match(rows, /Argent - Impôts - Consommation\s+révoqué/i, rows);
    await axe(page);
    await page.getByRole('link', { name: "Voir et imprimer l'attestation de révocation" }).click();
    await page.waitForURL((u) => u.pathname.startsWith('/espace-usager/revocations/'));
    assert.match(await page.locator('main').innerText(), /la personne elle-même/);
    await screenshot(page, '11-revocation-usager');
    await axe(page);

    // The e-mail notices of use: turned off with the keyboard-reachable radio group.
    await page.goto(`${baseUrl}/espace-usager`, { waitUntil: 'load' });
    assert.ok(await page.getByLabel('Oui, me prévenir').isChecked(), 'notices are on by default');
    await page.getByLabel('Oui, me prévenir').focus();
    await page.keyboard.press('ArrowDown');
    assert.ok(await page.getByLabel('Non, ne pas me prévenir').isChecked(), 'the arrow key moves the choice');
    await page.keyboard.press('Tab');
    assert.equal(await page.evaluate(() => document.activeElement?.textContent?.trim()), 'Enregistrer mon choix');
    await page.keyboard.press('Enter');
    await page.getByText('Votre choix est enregistré').waitFor();
    assert.ok(await page.getByLabel('Non, ne pas me prévenir').isChecked(), 'the choice is kept');
    await axe(page);
    assertNoProblems(problems, 'usager space');
  } finally {
    await context.close().catch(() => {});
  }
});
