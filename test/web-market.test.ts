import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClient } from '../shared/protocol/api-client.js';
import { parseRoute } from '../web/requester/routes.js';
import { ensureWebBuilt } from './helpers/build-web.js';
import { startTestCoordinator, type TestCoordinator, testStore } from './helpers/cluster.js';
import { apiKeyFor, bearer, signedWorker, type TestIdentity, testIdentity } from './helpers/identities.js';
import type { RawWorker } from './helpers/raw-worker.js';
import {
  horizontalOverflow,
  launchChromium,
  openPage,
  screenshot,
  textOf,
  unnamedControls,
  type WatchedPage,
  waitUntil,
} from './helpers/web-browser.js';

/**
 * The dashboard's market page in headless Chromium against a real coordinator: offers posted through REST show as
 * rows, the price distribution as a histogram with its quantiles, the capacity figures; layouts at 1280 and 375 px.
 */
describe('requester dashboard: market page', () => {
  let c: TestCoordinator;
  let browser: Browser;
  let w: WatchedPage;
  let origin: string;
  const workers: RawWorker[] = [];
  const cheap = testIdentity('market-page-cheap');
  const pricey = testIdentity('market-page-pricey');

  async function postOffer(who: TestIdentity, body: Record<string, unknown>): Promise<void> {
    const r = await fetch(`${c.url}/api/v1/offers`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...bearer(await apiKeyFor(c.url, who)) },
      body: JSON.stringify(body),
    });
    expect(r.status).toBe(201);
  }

  beforeAll(async () => {
    await ensureWebBuilt();
    c = await startTestCoordinator(testStore('pglite'));
    origin = c.url.replace('127.0.0.1', 'localhost');
    browser = await launchChromium();
  });

  afterAll(async () => {
    for (const x of workers) x.close();
    await browser?.close();
    await c?.destroy();
  });

  it('routes /requester/market to the market page', () => {
    expect(parseRoute('/requester/market')).toEqual({ name: 'market' });
    expect(parseRoute('/requester/market/')).toEqual({ name: 'market' });
    expect(parseRoute('/requester/marketplace')).toEqual({ name: 'notFound' });
  });

  it('shows an empty market, then offers posted through REST with their distribution and capacity', async () => {
    w = await openPage(browser, `${origin}/requester`);
    const { page } = w;
    // Reached from the dashboard's navigation, without a key (the market is public).
    await page.getByRole('navigation', { name: 'Dashboard' }).getByRole('link', { name: 'Market' }).click();
    expect(new URL(page.url()).pathname).toBe('/requester/market');
    await page.getByRole('heading', { name: 'Market', level: 2 }).waitFor();
    expect(await page.title()).toBe('Market · swarmgrad');
    expect(
      await page
        .getByRole('navigation', { name: 'Dashboard' })
        .getByRole('link', { name: 'Market' })
        .getAttribute('aria-current'),
    ).toBe('page');
    // The jobs page asked for /api/v1/jobs without a key first (401, logged by the browser); nothing else failed.
    expect(w.errors.filter((e) => !/status of 401 .*\/api\/v1\/jobs/.test(e))).toEqual([]);
    w.errors.length = 0;
    await page.getByText('No active offers.').waitFor();
    expect(await textOf(page, 'capacity-offers')).toBe('0');

    await postOffer(cheap, {
      minPricePerTflop: 1.25,
      deviceClass: 'webgpu-discrete',
      benchmark: { examplesPerSecond: 4200, backend: 'webgpu' },
      hoursAvailable: 6,
    });
    await postOffer(pricey, {
      minPricePerTflop: 4,
      deviceClass: 'wasm-cpu',
      benchmark: { examplesPerSecond: 300 },
      hoursAvailable: 24,
    });
    // One worker of the cheap provider online.
    workers.push(await signedWorker(c.url, cheap));

    // The page refreshes itself every 5 s; a reload shows the offers at once.
    await page.reload();
    const rows = page.getByTestId('offer-row');
    await waitUntil('two offer rows', async () => (await rows.count()) === 2, 20_000);
    // Cheapest first, as the API orders them; every column filled.
    expect(await rows.nth(0).getAttribute('data-provider')).toBe(cheap.address);
    expect(await rows.nth(1).getAttribute('data-provider')).toBe(pricey.address);
    const cells = async (i: number) =>
      (await rows.nth(i).locator('th, td').allTextContents()).map((t) => t.replace(/\s+/g, ' ').trim());
    expect(await cells(0)).toEqual([
      `${cheap.address.slice(0, 6)}…${cheap.address.slice(-4)}`,
      '1.25',
      'webgpu-discrete',
      '4,200 ex/s · webgpu',
      '6',
      'not yet',
      'new (0/0)',
      'no audits yet',
      '1',
    ]);
    expect((await cells(1)).slice(1, 5)).toEqual(['4', 'wasm-cpu', '300 ex/s', '24']);
    // The row header names the provider in full for assistive technology (abbr title).
    expect(await rows.nth(0).locator('abbr').getAttribute('title')).toBe(cheap.address);
    expect(await page.getByRole('table').getByRole('row').count()).toBe(3);

    // Price distribution: the histogram (5 bands between 1.25 and 4) and its quantiles.
    const histogram = page.getByRole('img', { name: /Price distribution/ });
    await histogram.waitFor();
    expect(await histogram.getAttribute('data-buckets')).toBe('5');
    expect(await histogram.getAttribute('aria-label')).toMatch(/1\.25–1\.8: 1;.*3\.45–4: 1$/);
    expect(await textOf(page, 'price-min')).toBe('1.25');
    expect(await textOf(page, 'price-max')).toBe('4');
    expect(await textOf(page, 'price-median')).toBe('1.25');
    // The chart really drew: some canvas pixels are not transparent.
    const painted = await page
      .getByTestId('price-histogram')
      .locator('canvas')
      .evaluate((cv: HTMLCanvasElement) => {
        const d = cv.getContext('2d')!.getImageData(0, 0, cv.width, cv.height).data;
        let n = 0;
        for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
        return n;
      });
    expect(painted).toBeGreaterThan(100);

    // Capacity: offers, hours and benchmark summed; the online worker counted.
    expect(await textOf(page, 'capacity-offers')).toBe('2');
    expect(await textOf(page, 'capacity-hours')).toBe('30');
    expect(await textOf(page, 'capacity-benchmark')).toBe('4,500');
    expect(await textOf(page, 'capacity-workers')).toBe('1');
    expect(await textOf(page, 'default-price')).toBe('1');

    // The page shows what the typed client returns.
    const view = await createClient({ baseUrl: c.url }).market();
    expect(view.offers.map((o) => o.provider)).toEqual([cheap.address, pricey.address]);
    expect(view.capacity.hoursAvailable).toBe(30);

    expect(await unnamedControls(page)).toEqual([]);
    expect(await horizontalOverflow(page)).toBeLessThanOrEqual(0);
    await screenshot(page, 'requester-market-1280');
    await page.setViewportSize({ width: 375, height: 800 });
    await page.waitForTimeout(200);
    expect(await horizontalOverflow(page)).toBeLessThanOrEqual(0);
    // Still all there at phone width: the table scrolls inside its own region, which the keyboard can reach.
    const region = page.getByRole('region', { name: 'Offers table' });
    expect(await region.getAttribute('tabindex')).toBe('0');
    expect(await region.evaluate((el) => el.scrollWidth > el.clientWidth)).toBe(true);
    expect(await histogram.isVisible()).toBe(true);
    expect(await histogram.evaluate((el) => el.getBoundingClientRect().right)).toBeLessThanOrEqual(375);
    await screenshot(page, 'requester-market-375');
    await page.setViewportSize({ width: 1280, height: 900 });

    expect(w.errors).toEqual([]);
  });
});
