// Browser test of the référent's statistics: the demo référent signs in and opens
// /referent/statistiques from the référent space. The SVG chart has an accessible name and
// a description with the totals, the table gives the démarches of the four demo mandats,
// and axe-core finds no serious or critical violation there nor on /referent.
//
// Run with: node --test tests/browser/referent_stats.test.mjs
// Env: BROKER_BIN (default target/debug/broker), CHROMIUM_PATH (default /usr/bin/chromium).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { assertNoProblems, checkAxe, demoAidant, newPage, setUp, signIn, tearDown } from './support.mjs';

/** What setUp started, for tearDown. */
let run;
let broker;
let baseUrl;
let browser;
/** The demo référent: { email, secret, totp }. */
let aidant;

before(async () => {
  run = await setUp('ac-stats-');
  ({ broker, baseUrl, browser } = run);
  aidant = await demoAidant(broker);
});

after(() => tearDown(run));

test('référent: statistics chart and table of the demo mandats, accessible', { timeout: 120_000 }, async () => {
  const { context, page, problems } = await newPage(browser, {}, { ignoreAborted: true });
  try {
    await signIn(page, { broker, ...aidant });
    await page.goto(`${baseUrl}/referent/statistiques`, { waitUntil: 'load' });
    await page.getByRole('heading', { level: 1, name: 'Statistiques de Structure de démonstration' }).waitFor();

    // The chart is one image, named by its title and described by its totals.
    const chart = page.getByRole('img', { name: /^Démarches des mandats créés, de .+ à .+ \d{4}/ });
    assert.equal(await chart.count(), 1, 'one chart of the mandats');
    const description = await chart.getAttribute('aria-labelledby').then((ids) =>
      page.evaluate((list) => list.split(' ').map((id) => document.getElementById(id).textContent).join(' '), ids),
    );
    // Four demo mandats: social + logement + argent, social, argent, papiers + famille.
    assert.match(description, /7 démarches couvertes au total\./, description);
    assert.match(description, /Social - Santé : 2/, description);
    assert.equal(await chart.evaluate((svg) => svg.tagName.toLowerCase()), 'svg');

    // The table alternative: one column per démarche, the totals in the footer.
    const table = page.getByRole('table', { name: /^Mandats créés par mois et par démarche/ });
    const headers = (await table.locator('thead th').allInnerTexts()).map((t) => t.trim());
    assert.deepEqual(headers, [
      'Mois',
      'Papiers - Citoyenneté - Élections',
      'Famille - Scolarité',
      'Social - Santé',
      'Logement',
      'Argent - Impôts - Consommation',
      'Toutes démarches',
    ]);
    const totals = (await table.locator('tfoot tr td').allInnerTexts()).map((t) => t.trim());
    assert.deepEqual(totals, ['1', '1', '2', '1', '2', '7']);
    assert.equal(await table.locator('tbody tr').count(), 12, 'twelve months');
    // No use yet on the demo data: a sentence instead of an empty chart.
    await page.getByText("n'ont réalisé aucune démarche pour un usager ces 12 derniers mois").waitFor();
    assert.equal(await page.getByRole('img', { name: /^Démarches réalisées/ }).count(), 0);

    await page.getByRole('link', { name: 'Espace référent', exact: true }).click();
    await page.waitForURL(`${baseUrl}/referent`);
    assertNoProblems(problems, 'statistics');

    await checkAxe(browser, `${baseUrl}/referent/statistiques`, context);
    await checkAxe(browser, `${baseUrl}/referent`, context);
  } finally {
    await context.close();
  }
});
