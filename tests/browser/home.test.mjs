// Browser tests of the broker home page (DSFR): rendering, accessibility (axe-core),
// keyboard navigation and asset loading.
//
// Run with: node --test tests/browser/
// Env: BROKER_BIN (default target/debug/broker), CHROMIUM_PATH (default /usr/bin/chromium).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { assertAxe, fontsReady, newPage, setUp, tearDown } from './support.mjs';

/** What setUp started, for tearDown. */
let run;
let baseUrl;
let browser;

before(async () => {
  run = await setUp('ac-browser-', { outbox: false });
  ({ baseUrl, browser } = run);
});

after(() => tearDown(run));

/** Opens the home page in a fresh context; collects console errors and failed requests. */
async function openHome(contextOptions = {}) {
  const { context, page, problems } = await newPage(browser, contextOptions);
  const response = await page.goto(`${baseUrl}/`, { waitUntil: 'load' });
  // Let web fonts and the DSFR module settle.
  await fontsReady(page);
  return { context, page, response, problems };
}

test('home page renders in French with the DSFR applied and the ten démarches', async () => {
  const { context, page, response } = await openHome();
  try {
    assert.equal(response.status(), 200);
    assert.equal(await page.getAttribute('html', 'lang'), 'fr');
    assert.match(await page.title(), /Aidants Connect/);
    const h1 = page.locator('h1');
    assert.equal(await h1.count(), 1, 'exactly one h1');
    assert.equal((await h1.innerText()).trim(), 'Aidants Connect');

    const styles = await page.evaluate(() => {
      const header = document.querySelector('.fr-header');
      const hs = getComputedStyle(header);
      return {
        bodyFont: getComputedStyle(document.body).fontFamily,
        headerFilter: hs.filter,
        headerPosition: hs.position,
        marianneLoaded: document.fonts.check('1rem Marianne'),
      };
    });
    assert.match(styles.bodyFont, /Marianne/, `body font-family is "${styles.bodyFont}": DSFR stylesheet not applied`);
    // .fr-header { position: relative; filter: drop-shadow(var(--raised-shadow)) } in dsfr.min.css.
    assert.equal(styles.headerPosition, 'relative', 'DSFR .fr-header style not applied');
    assert.match(styles.headerFilter, /drop-shadow/, `DSFR .fr-header filter is "${styles.headerFilter}"`);
    assert.ok(styles.marianneLoaded, 'Marianne web font not loaded');

    const demarches = page.locator('li[id^="demarche-"]');
    assert.equal(await demarches.count(), 10, 'ten démarches listed');
    const ids = await demarches.evaluateAll((els) => els.map((e) => e.id));
    assert.equal(new Set(ids).size, 10, `démarche ids must be unique: ${ids.join(', ')}`);
  } finally {
    await context.close();
  }
});

test('axe-core: no serious or critical WCAG 2.1 A/AA violation', async () => {
  // The page CSP (script-src 'self') blocks an inline injected script: bypass it in this context only.
  const { context, page } = await openHome({ bypassCSP: true });
  try {
    await assertAxe(page);
  } finally {
    await context.close();
  }
});

test('keyboard: first Tab focuses the "Contenu" skip link, which moves to #contenu', async () => {
  const { context, page } = await openHome();
  try {
    await page.keyboard.press('Tab');
    const focused = await page.evaluate(() => {
      const el = document.activeElement;
      return { tag: el.tagName, text: el.textContent.trim(), href: el.getAttribute('href') };
    });
    assert.deepEqual(focused, { tag: 'A', text: 'Contenu', href: '#contenu' });
    // The focused skip link must be visible (DSFR reveals it on focus).
    assert.ok(await page.locator('.fr-skiplinks a[href="#contenu"]').isVisible(), 'skip link not visible when focused');

    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.activeElement?.id === 'contenu', null, { timeout: 5_000 });
    assert.equal(new URL(page.url()).hash, '#contenu');
    assert.equal(await page.evaluate(() => document.activeElement.tagName), 'MAIN');
  } finally {
    await context.close();
  }
});

test('no console error and no failed request while loading the page', async () => {
  const { context, page, problems } = await openHome();
  try {
    await page.waitForLoadState('networkidle');
    assert.deepEqual(problems.failedRequests, [], `failed requests:\n${problems.failedRequests.join('\n')}`);
    assert.deepEqual(problems.consoleErrors, [], `console errors:\n${problems.consoleErrors.join('\n')}`);
    assert.deepEqual(problems.pageErrors, [], `page errors:\n${problems.pageErrors.join('\n')}`);
  } finally {
    await context.close();
  }
});
