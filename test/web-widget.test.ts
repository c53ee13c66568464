import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureWebBuilt, WEB_DIR } from './helpers/build-web.js';
import {
  getJob,
  postJob,
  smallMnistJob,
  startTestCoordinator,
  type TestCoordinator,
  testStore,
} from './helpers/cluster.js';
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
 * The embed tag on a page of another origin: before consent nothing but the tag is fetched and nothing connects;
 * after consent the coordinator-origin iframe trains real units, credited to data-account; Stop ends it.
 */
const ACCOUNT = '0x7e57000000000000000000000000000000000a11';
const TAG_LIMIT_GZIP = 15 * 1024;

describe('embed widget', () => {
  let c: TestCoordinator;
  let host: Server;
  let hostOrigin: string;
  let origin: string;
  let browser: Browser;
  let w: WatchedPage;
  let jobId: string;
  const requests: string[] = [];
  const sockets: string[] = [];

  beforeAll(async () => {
    await ensureWebBuilt();
    c = await startTestCoordinator(testStore('pglite'));
    origin = c.url.replace('127.0.0.1', 'localhost');
    // The host page lives on another origin (127.0.0.1 and another port), like a blog embedding the tag.
    host = createServer((req, res) => {
      if (req.url === '/') {
        res.setHeader('content-type', 'text/html; charset=utf-8');
        res.end(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>A host blog</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<style>p { color: red !important; font-size: 40px; } button { display: none !important; }</style></head>
<body><h1>A host blog</h1><p>Posts about gardening.</p>
<script src="${origin}/widget.js" data-account="${ACCOUNT}" async></script></body></html>`);
      } else {
        res.statusCode = 404;
        res.end();
      }
    });
    await new Promise<void>((r) => host.listen(0, '127.0.0.1', r));
    hostOrigin = `http://127.0.0.1:${(host.address() as AddressInfo).port}`;
    const job = await postJob(
      c.url,
      smallMnistJob({
        name: 'widget job',
        localSteps: 8,
        batchSize: 16,
        unitsPerRound: 2,
        rounds: 100,
        budget: 1,
      } as never),
    );
    jobId = job.id;
    browser = await launchChromium();
  });

  afterAll(async () => {
    await browser?.close();
    await new Promise((r) => host?.close(r));
    await c?.destroy();
  });

  it('keeps the tag script under 15 KB gzipped', async () => {
    const built = readFileSync(join(WEB_DIR, 'widget.js'));
    expect(gzipSync(built, { level: 9 }).length).toBeLessThanOrEqual(TAG_LIMIT_GZIP);
    const served = await fetch(`${c.url}/widget.js`);
    expect(served.status).toBe(200);
    expect(served.headers.get('content-type')).toMatch(/javascript/);
    expect(gzipSync(Buffer.from(await served.arrayBuffer()), { level: 9 }).length).toBeLessThanOrEqual(TAG_LIMIT_GZIP);
  });

  it('before consent: a card in shadow DOM, nothing fetched beyond the tag, no socket, no tfjs', async () => {
    w = await openPage(browser, 'about:blank');
    const { page } = w;
    page.on('request', (r) => requests.push(r.url()));
    page.on('websocket', (s) => sockets.push(s.url()));
    await page.goto(`${hostOrigin}/`);
    const consent = page.getByRole('button', { name: 'Contribute' });
    await consent.waitFor();
    // The host's CSS hides every button and restyles paragraphs; inside the shadow root neither applies.
    expect(await consent.isVisible()).toBe(true);
    expect(await page.getByRole('region', { name: 'swarmgrad compute sharing' }).textContent()).toMatch(
      /about 50% of one/,
    );
    await page.waitForTimeout(1500);
    const fromCoordinator = requests.filter((u) => u.startsWith(origin));
    expect(fromCoordinator).toEqual([`${origin}/widget.js`]);
    expect(requests.filter((u) => /tfjs|\.wasm|train\.worker|\/assets\//.test(u))).toEqual([]);
    expect(sockets).toEqual([]);
    expect(page.frames()).toHaveLength(1);
    expect(await unnamedControls(page)).toEqual([]);
    await screenshot(page, 'widget-before-consent');
    expect(w.errors).toEqual([]);
  });

  it('after consent: trains in a coordinator-origin iframe, units credited to data-account; Stop ends it', async () => {
    const { page } = w;
    await page.getByRole('button', { name: 'Contribute' }).click();
    const frame = page.frameLocator('iframe[title="swarmgrad training status"]');
    await frame.getByTestId('worker-state').waitFor();
    const frameUrl = new URL(page.frames()[1].url());
    expect(frameUrl.origin).toBe(origin);
    expect(frameUrl.pathname).toBe('/widget/frame');
    expect(frameUrl.searchParams.get('account')).toBe(ACCOUNT);
    expect(frameUrl.searchParams.get('intensity')).toBe('50');
    // The visible stop button of the card, outside the iframe, from the start.
    expect(await page.getByRole('button', { name: 'Stop' }).first().isVisible()).toBe(true);

    await waitUntil('a unit accepted', async () => (await getJob(c.url, jobId)).unitsDone >= 1, 120_000, 500);
    await expect.poll(() => textOf(page.frames()[1] as never, 'units-accepted'), { timeout: 15_000 }).not.toBe('0');
    expect(sockets.some((u) => u.startsWith(origin.replace('http', 'ws')) && u.endsWith('/api/v1/worker'))).toBe(true);
    // tfjs and its kernels came from the coordinator's origin, never from the host's.
    expect(requests.filter((u) => u.startsWith(hostOrigin) && /assets|wasm/.test(u))).toEqual([]);

    // Credits: the frame's own key signed the hello with payTo = data-account, so the credit rows are data-account's.
    const credits = await waitUntil(
      'credit rows for data-account',
      async () => {
        const res = await fetch(`${c.url}/api/v1/accounts/${ACCOUNT}/credits`);
        expect(res.status).toBe(200);
        const body = (await res.json()) as { items: { leaseId: string | null; state: string }[] };
        return body.items.length > 0 ? body.items : null;
      },
      30_000,
      500,
    );
    expect(credits[0].leaseId).toBeTruthy();
    // The frame shows data-account's credit from the ledger: pending until the challenge window passes, then vested.
    const frame1 = page.frames()[1] as never;
    await expect
      .poll(
        async () => Number(await textOf(frame1, 'credit-pending')) + Number(await textOf(frame1, 'credit-vested')),
        { timeout: 15_000 },
      )
      .toBeGreaterThan(0);
    // The worker that ran the units acts as the frame's own signing key (trust, forfeits, reveals follow it);
    // data-account is only the payee of their credit.
    const { rows } = await c.db.query<{ account: string; payee: string }>(
      `SELECT r.account, lc.payee FROM results r JOIN ledger_credits lc ON lc.result_id = r.id
       WHERE r.job_id = $1 AND r.status = 'accepted'`,
      [jobId],
    );
    expect(rows.length).toBeGreaterThanOrEqual(1);
    for (const row of rows) {
      expect(row.payee.toLowerCase()).toBe(ACCOUNT.toLowerCase());
      expect(row.account.toLowerCase()).not.toBe(ACCOUNT.toLowerCase());
    }
    await screenshot(page, 'widget-after-consent');
    // On a phone-width host page the card and its frame fit the viewport.
    await page.setViewportSize({ width: 375, height: 800 });
    expect(await horizontalOverflow(page)).toBeLessThanOrEqual(0);
    const card = page.getByRole('region', { name: 'swarmgrad compute sharing' });
    expect(await card.evaluate((el) => el.getBoundingClientRect().right)).toBeLessThanOrEqual(375);
    await screenshot(page, 'widget-after-consent-375');
    await page.setViewportSize({ width: 1280, height: 900 });

    await page.getByRole('button', { name: 'Stop' }).first().click();
    await page.getByText('Thank you. Nothing runs any more.').waitFor();
    await expect.poll(() => page.frames().length).toBe(1);
    expect(await page.getByRole('button', { name: 'Start again' }).isVisible()).toBe(true);
    expect(w.errors).toEqual([]);
  });
});
