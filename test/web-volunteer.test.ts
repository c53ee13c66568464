import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type HeadlessWorker, runHeadlessWorker } from '../bin/headless-worker.js';
import type { WorkerEvent } from '../shared/worker-client/worker-loop.js';
import { ensureWebBuilt } from './helpers/build-web.js';
import {
  getJob,
  postJob,
  smallMnistJob,
  startTestCoordinator,
  type TestCoordinator,
  testStore,
} from './helpers/cluster.js';
import { testIdentity } from './helpers/identities.js';
import {
  horizontalOverflow,
  launchChromium,
  numberOf,
  openPage,
  screenshot,
  textOf,
  unnamedControls,
  type WatchedPage,
  waitUntil,
} from './helpers/web-browser.js';

/**
 * The volunteer page in headless Chromium against a real coordinator: WebGPU (SwiftShader) detection and choice,
 * real units trained and accepted, pause, stop releasing the lease, offline and recovery.
 * One unit per round, so while the browser holds the unit nobody else can have it.
 */
describe('volunteer page', () => {
  const store = testStore('pglite');
  let c: TestCoordinator;
  let browser: Browser;
  let w: WatchedPage;
  let jobId: string;
  let origin: string;
  const sockets: string[] = [];
  const requests: string[] = [];

  beforeAll(async () => {
    await ensureWebBuilt();
    c = await startTestCoordinator(store);
    origin = c.url.replace('127.0.0.1', 'localhost');
    const job = await postJob(
      c.url,
      smallMnistJob({
        name: 'browser job',
        localSteps: 48,
        batchSize: 16,
        unitsPerRound: 1,
        rounds: 200,
        // Short enough that a unit stranded by a dropped connection does not stall the test for long, long enough
        // that a reissue within a few seconds can only come from an explicit release.
        unitDeadlineMs: 20_000,
      } as never),
    );
    jobId = job.id;
    browser = await launchChromium();
  });

  afterAll(async () => {
    await browser?.close();
    await c?.destroy();
  });

  it('detects the WebGPU adapter, picks webgpu, runs nothing before Start; accessible at 1280 and 375 px', async () => {
    w = await openPage(browser, `${origin}/`);
    const { page } = w;
    page.on('websocket', (ws) => sockets.push(ws.url()));
    page.on('request', (r) => requests.push(r.url()));
    await page.getByTestId('webgpu-adapter').waitFor();
    expect(await textOf(page, 'webgpu-adapter')).toMatch(/swiftshader/i);
    expect(await textOf(page, 'wasm-features')).toMatch(/SIMD yes/);
    expect(await textOf(page, 'chosen-backend')).toBe('webgpu');
    expect(await textOf(page, 'worker-state')).toBe('idle');

    await expect.poll(() => page.getByRole('button', { name: 'Start contributing' }).isEnabled()).toBe(true);
    for (const [role, name] of [
      ['heading', 'Contribute'],
      ['heading', 'Your device'],
      ['slider', /Intensity/],
      ['checkbox', 'Pause while this tab is hidden'],
      ['checkbox', /Pause on battery/],
      ['checkbox', /Reconnect automatically/],
      ['textbox', 'Wallet address credits go to'],
      ['button', 'Clear cache'],
      ['progressbar', /Unit progress/],
      ['status', undefined],
    ] as const) {
      expect(await page.getByRole(role, { name }).count(), `${role} ${String(name)}`).toBeGreaterThan(0);
    }
    expect(await unnamedControls(page)).toEqual([]);
    expect(await page.getByRole('checkbox', { name: 'Pause while this tab is hidden' }).isChecked()).toBe(true);
    expect(await page.getByRole('textbox', { name: 'Wallet address credits go to' }).inputValue()).toMatch(
      /^0x[0-9a-fA-F]{40}$/,
    );
    expect(await horizontalOverflow(page)).toBeLessThanOrEqual(0);
    await screenshot(page, 'volunteer-1280');
    await page.setViewportSize({ width: 375, height: 800 });
    expect(await horizontalOverflow(page)).toBeLessThanOrEqual(0);
    await screenshot(page, 'volunteer-375');
    await page.setViewportSize({ width: 1280, height: 900 });

    // Nothing has run: no socket, no training worker, no tfjs, no blob downloads.
    await page.waitForTimeout(500);
    expect(sockets).toEqual([]);
    expect(requests.filter((u) => /train\.worker|tfjs|\/api\/v1\/blobs/.test(u))).toEqual([]);
    expect(w.errors).toEqual([]);
  });

  it('after Start trains real units on WebGPU that the coordinator accepts', async () => {
    const { page } = w;
    await page.getByRole('button', { name: 'Start contributing' }).click();
    const job = await waitUntil(
      'a unit accepted',
      async () => {
        const j = await getJob(c.url, jobId);
        return j.unitsDone >= 1 ? j : null;
      },
      90_000,
    );
    expect(job.unitsDone).toBeGreaterThanOrEqual(1);
    await expect.poll(() => numberOf(page, 'units-accepted'), { timeout: 10_000 }).toBeGreaterThanOrEqual(1);
    expect(await page.getByRole('status').first().textContent()).toMatch(/on webgpu/);
    expect(await textOf(page, 'job-name')).toBe('browser job');
    expect(await page.getByTestId('receipts').getByText('accepted').count()).toBeGreaterThan(0);
    expect(sockets.some((u) => u.endsWith('/api/v1/worker'))).toBe(true);
    // The benchmark that made the choice ran on WebGPU and is shown.
    expect(await textOf(page, 'chosen-backend')).toBe('webgpu');
    expect(await page.getByTestId('benchmark').textContent()).toMatch(/webgpu/);
    await screenshot(page, 'volunteer-training');
    // The local key signed the hello, so the accepted unit is credited to the address the page shows.
    const address = await page.getByRole('textbox', { name: 'Wallet address credits go to' }).inputValue();
    await waitUntil(
      'credit for the browser',
      async () => {
        const r = await fetch(`${c.url}/api/v1/accounts/${address}/credits`);
        return ((await r.json()) as { items: unknown[] }).items.length > 0;
      },
      30_000,
    );
    // The page polls the same account: its receipts list shows the credit rows, each linked to its ledger event.
    await page.getByTestId('credit-receipts').getByRole('link').first().waitFor({ timeout: 15_000 });
    expect(await page.getByTestId('credit-receipts').getByRole('link').first().getAttribute('href')).toMatch(
      /\/api\/v1\/ledger\/events\/credit/,
    );
    expect(await textOf(page, 'credit-pending')).toMatch(/^\d+\.\d{6}$/);
    expect(w.errors).toEqual([]);
  });

  let second: HeadlessWorker | null = null;
  const secondEvents: { at: number; e: WorkerEvent }[] = [];

  it('Pause stops progress, so does a hidden tab; Stop releases the unit so another worker gets it at once', async () => {
    const { page } = w;
    // Mid-unit: some steps done, so there is progress to freeze.
    await waitUntil(
      'training mid-unit',
      async () => (await textOf(page, 'worker-state')) === 'training' && (await numberOf(page, 'unit-step')) > 0,
      60_000,
      50,
    );
    await page.getByRole('button', { name: 'Pause' }).click();
    await expect.poll(() => textOf(page, 'worker-state'), { timeout: 20_000 }).toBe('paused');
    // The loop holds at its next step boundary (GPU steps are read in groups): let that group land first.
    await page.waitForTimeout(2000);
    const step = await numberOf(page, 'unit-step');
    const done = (await getJob(c.url, jobId)).unitsDone;
    await page.waitForTimeout(3000);
    expect(await numberOf(page, 'unit-step')).toBe(step);
    expect((await getJob(c.url, jobId)).unitsDone).toBe(done);
    expect(await page.getByRole('button', { name: 'Resume' }).count()).toBe(1);

    // Resume, then the tab goes hidden: the default policy pauses until it is visible again.
    await page.getByRole('button', { name: 'Resume' }).click();
    await expect.poll(() => textOf(page, 'worker-state'), { timeout: 20_000 }).not.toBe('paused');
    const setHidden = (hidden: boolean) =>
      page.evaluate((h) => {
        Object.defineProperty(document, 'visibilityState', { value: h ? 'hidden' : 'visible', configurable: true });
        document.dispatchEvent(new Event('visibilitychange'));
      }, hidden);
    await setHidden(true);
    await expect.poll(() => textOf(page, 'worker-state'), { timeout: 20_000 }).toBe('paused');
    expect(await page.getByRole('status').first().textContent()).toMatch(/tab hidden/);
    await setHidden(false);
    await expect.poll(() => textOf(page, 'worker-state'), { timeout: 20_000 }).not.toBe('paused');
    await waitUntil(
      'training mid-unit again',
      async () => (await textOf(page, 'worker-state')) === 'training' && (await numberOf(page, 'unit-step')) > 0,
      60_000,
      50,
    );
    await page.getByRole('button', { name: 'Pause' }).click();
    await expect.poll(() => textOf(page, 'worker-state'), { timeout: 20_000 }).toBe('paused');

    // A second worker connects while the browser holds the round's only unit: it gets nothing.
    second = await runHeadlessWorker({
      coordinator: c.url,
      privateKey: testIdentity('second worker').privateKey,
      backend: 'wasm',
      onEvent: (e) => secondEvents.push({ at: Date.now(), e }),
    });
    await waitUntil('second worker welcomed', async () => secondEvents.some((x) => x.e.type === 'welcome'));
    await new Promise((r) => setTimeout(r, 1500));
    expect(secondEvents.filter((x) => x.e.type === 'lease')).toEqual([]);

    const stopAt = Date.now();
    await page.getByRole('button', { name: 'Stop' }).click();
    const lease = await waitUntil(
      'the released unit reissued',
      async () => secondEvents.find((x) => x.e.type === 'lease'),
      10_000,
      50,
    );
    // The unit's deadline is 20 s: getting it within seconds means the browser released it.
    expect(lease.at - stopAt).toBeLessThan(5_000);
    await expect.poll(() => textOf(page, 'worker-state')).toBe('stopped');
    expect(await page.getByRole('button', { name: 'Start contributing' }).count()).toBe(1);
    await second.stop();
    second = null;
    expect(w.errors).toEqual([]);
  });

  it('shows offline when the coordinator goes away and recovers by itself when it is back', async () => {
    const { page } = w;
    await page.getByRole('button', { name: 'Start contributing' }).click();
    await waitUntil(
      'connected again',
      async () => ['idle', 'training', 'downloading'].includes(await textOf(page, 'worker-state')),
      60_000,
    );
    const port = Number(new URL(c.url).port);
    // Refused connections are expected while the coordinator is down; they are the only errors allowed.
    w.tolerate.push(/WebSocket connection to .* failed|ERR_CONNECTION_REFUSED|Failed to load resource/);
    const t0 = Date.now();
    const log = (m: string) => process.env.WEB_TEST_DEBUG && console.log(`${Date.now() - t0} ms: ${m}`);
    await c.close();
    log('closed');
    await expect.poll(() => textOf(page, 'worker-state'), { timeout: 15_000 }).toBe('offline');
    await screenshot(page, 'volunteer-offline');
    const before = await numberOf(page, 'units-accepted');
    log('offline shown');
    c = await startTestCoordinator(store, { port });
    log('restarted');
    await waitUntil('back online', async () => (await textOf(page, 'worker-state')) !== 'offline', 30_000);
    log(`online: ${await textOf(page, 'worker-state')}`);
    await waitUntil('training again', async () => (await numberOf(page, 'units-accepted')) > before, 90_000, 500);
    log('accepted again');
    expect((await getJob(c.url, jobId)).status).toBe('running');
    w.tolerate.length = 0;
    await page.getByRole('button', { name: 'Stop' }).click();
    await expect.poll(() => textOf(page, 'worker-state')).toBe('stopped');

    // The dataset, model and weights were cached in IndexedDB by content hash; Clear empties the cache.
    await expect.poll(() => textOf(page, 'cache-usage'), { timeout: 10_000 }).toMatch(/^[1-9]\d* items?, \d/);
    await page.getByRole('button', { name: 'Clear cache' }).click();
    await expect.poll(() => textOf(page, 'cache-usage')).toBe('0 items, 0 B');
    expect(w.errors).toEqual([]);
  });
});
