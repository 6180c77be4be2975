// Browser test of the auditor's journal search: the demo auditor (no structure) signs in
// with e-mail + TOTP code and the link printed by the broker → /espace → the "Journal" tile
// → /audit, which lists the entries of the demo data (structure, aidant, mandats). Filtered
// on the action "Mandat créé", the table has one row per demo mandat and nothing else. The
// "Exporter en JSON Lines" link gives the filtered entries, one JSON object a line, ending
// with the signed checkpoint (a C2SP signed note) that covers them. axe-core finds no
// serious or critical violation on /audit before and after filtering.
//
// Run with: node --test tests/browser/audit.test.mjs
// Env: BROKER_BIN (default target/debug/broker), CHROMIUM_PATH (default /usr/bin/chromium).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { assertNoProblems, axe, demoAuditor, newPage, setUp, signIn, tearDown } from './support.mjs';

/** What setUp started, for tearDown. */
let run;
let broker;
let baseUrl;
let browser;
/** The demo auditor: { email, secret, totp }. */
let auditor;
/** How many demo usagers the broker printed, each with a demo mandat. */
let demoMandats;

before(async () => {
  run = await setUp('ac-audit-');
  ({ broker, baseUrl, browser } = run);
  auditor = await demoAuditor(broker);
  // "Usagers         : <first>" then one line indented by 18 spaces per further usager
  // (the next block, "Cartes à code   : …", starts unindented).
  const [, usagers] = await broker.waitForLog(/^Usagers\s*: .*\n((?: {18}\S.*\n)*)/m);
  demoMandats = 1 + usagers.split('\n').filter((l) => l.trim()).length;
  console.log(`demo auditor ${auditor.email}, ${demoMandats} demo usagers with a mandat`);
});

after(() => tearDown(run));

/** The texts of the "Action" column (the third: N° is a row header, then Date, Action). */
async function actionCells(table) {
  const rows = table.locator('tbody tr');
  const n = await rows.count();
  const out = [];
  for (let i = 0; i < n; i++) out.push((await rows.nth(i).locator('th, td').nth(2).innerText()).trim());
  return out;
}

test('auditeur: journal search, filter on "Mandat créé", JSON Lines export with its checkpoint', { timeout: 120_000 }, async () => {
  const { context, page, problems } = await newPage(browser, { bypassCSP: true }, { ignoreAborted: true, pageErrorText: (err) => `${err.stack ?? err}` });
  try {
    await signIn(page, { broker, ...auditor });

    // The auditor's space has the "Journal" tile.
    const tile = page.getByRole('link', { name: 'Journal', exact: true });
    assert.equal(await tile.count(), 1, 'one "Journal" tile on /espace');
    await tile.click();
    await page.waitForURL(`${baseUrl}/audit`);
    await page.getByRole('heading', { level: 1, name: 'Journal' }).waitFor();

    // Every entry of the demo data so far.
    const table = page.getByRole('table', { name: 'Entrées du journal' });
    assert.equal(await table.count(), 1, 'the table of the entries');
    const headers = (await table.locator('thead th').allInnerTexts()).map((t) => t.trim());
    assert.equal(headers[2], 'Action', `third column: ${headers.join(' | ')}`);
    const all = await actionCells(table);
    assert.ok(all.length > demoMandats, `more entries than the demo mandats: ${all.length}`);
    assert.ok(all.includes('Aidant créé'), `an "Aidant créé" entry: ${all.join(', ')}`);
    assert.ok(all.includes('Mandat créé'), `a "Mandat créé" entry: ${all.join(', ')}`);
    assert.ok(all.some((a) => a !== 'Mandat créé'), 'other actions than "Mandat créé" before filtering');
    await axe(page);

    // Filter on the action "Mandat créé".
    await page.getByLabel('Action', { exact: true }).selectOption({ label: 'Mandat créé' });
    await page.getByRole('button', { name: 'Rechercher' }).click();
    await page.waitForURL((u) => u.pathname === '/audit' && u.searchParams.get('action') === 'mandat_created');
    await page.getByRole('heading', { level: 1, name: 'Journal' }).waitFor();
    assert.equal(await page.getByRole('alert').count(), 0, 'no error about the criteria');
    const selected = await page.getByLabel('Action', { exact: true }).evaluate((s) => s.options[s.selectedIndex].text);
    assert.equal(selected, 'Mandat créé', 'the chosen action stays selected');
    const filtered = await actionCells(table);
    assert.equal(filtered.length, demoMandats, `one row per demo mandat: ${filtered.join(', ')}`);
    assert.deepEqual(filtered, Array(demoMandats).fill('Mandat créé'));
    await axe(page);

    // The JSON Lines export of these criteria, fetched with the page's cookies.
    const exportLink = page.getByRole('link', { name: 'Exporter en JSON Lines' });
    assert.equal(await exportLink.count(), 1, 'one JSON Lines export link');
    const href = await exportLink.getAttribute('href');
    const url = new URL(href, page.url());
    assert.equal(url.pathname, '/audit/export.jsonl');
    assert.equal(url.searchParams.get('action'), 'mandat_created', `the export keeps the criteria: ${href}`);
    const res = await page.request.get(url.href);
    assert.equal(res.status(), 200, `GET ${url.href}`);
    const body = await res.text();
    const lines = body.split('\n');
    if (lines.at(-1) === '') lines.pop();
    assert.ok(lines.length >= 2, `entries and a checkpoint:\n${body}`);

    const last = JSON.parse(lines.at(-1));
    assert.equal(typeof last.checkpoint, 'string', `the last line has a checkpoint: ${lines.at(-1)}`);
    const note = last.checkpoint;
    const origin = `${new URL(baseUrl).host}/journal`;
    assert.ok(note.startsWith(`${origin}\n`), `the checkpoint starts with its origin line "${origin}":\n${note}`);
    const noteLines = note.split('\n');
    assert.match(noteLines[1], /^\d+$/, `tree size on the second line:\n${note}`);
    assert.match(noteLines[2], /^[A-Za-z0-9+/]{43}=$/, `base64 root hash on the third line:\n${note}`);
    assert.ok(noteLines.some((l) => l.startsWith('— ')), `a signature line "— …":\n${note}`);
    assert.ok(noteLines.some((l) => l.startsWith(`— ${origin} `)), `a signature by the journal key "${origin}":\n${note}`);
    const size = Number(noteLines[1]);

    const entries = lines.slice(0, -1).map((l, i) => {
      let o;
      assert.doesNotThrow(() => { o = JSON.parse(l); }, `line ${i + 1} is JSON: ${l}`);
      assert.ok(o && typeof o === 'object' && !Array.isArray(o), `line ${i + 1} is an object: ${l}`);
      assert.ok('seq' in o && 'leaf_hash' in o, `line ${i + 1} has "seq" and "leaf_hash": ${l}`);
      assert.ok(Number.isInteger(o.seq) && o.seq >= 1 && o.seq <= size, `line ${i + 1}: seq ${o.seq} within the checkpoint's ${size} entries`);
      assert.match(o.leaf_hash, /\S/, `line ${i + 1}: leaf_hash`);
      return o;
    });
    assert.equal(entries.length, demoMandats, `one exported entry per demo mandat:\n${body}`);
    assert.deepEqual(entries.map((e) => e.action), Array(demoMandats).fill('mandat_created'));
    const seqs = entries.map((e) => e.seq);
    assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), 'entries in journal order');
    // The same entries as the table, by their numbers (the row headers).
    const tableSeqs = (await table.locator('tbody tr th').allInnerTexts()).map((t) => Number(t.trim()));
    assert.deepEqual([...tableSeqs].sort((a, b) => a - b), seqs, 'the export has the entries the table lists');

    assertNoProblems(problems, 'journal');
  } finally {
    await context.close();
  }
});
