import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type HeadlessWorker, runHeadlessWorker } from '../bin/headless-worker.js';
import type { JobView } from '../shared/protocol/job-spec.js';
import { mnistMlpJson } from '../web/lib/model-templates.js';
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
  openPage,
  screenshot,
  textOf,
  unnamedControls,
  type WatchedPage,
  waitUntil,
} from './helpers/web-browser.js';

/**
 * The requester dashboard in headless Chromium against a real coordinator: a job created through the form (with
 * API validation errors shown at the field they name), trained by a real headless worker, its charts and rounds,
 * the model download loaded by tfjs, the report, cancel; layouts and accessibility.
 */
describe('requester dashboard', () => {
  let c: TestCoordinator;
  let browser: Browser;
  let w: WatchedPage;
  let origin: string;
  let worker: HeadlessWorker | null = null;
  let jobId = '';
  /** The session token the dashboard got by signing in; REST checks use it, since jobs belong to that account. */
  let token = '';
  let signedIn = '';

  beforeAll(async () => {
    await ensureWebBuilt();
    c = await startTestCoordinator(testStore('pglite'));
    origin = c.url.replace('127.0.0.1', 'localhost');
    browser = await launchChromium();
  });

  afterAll(async () => {
    await worker?.stop();
    await browser?.close();
    await c?.destroy();
  });

  it('shows API validation errors next to the field they name', async () => {
    w = await openPage(browser, `${origin}/requester`);
    const { page } = w;
    await page.getByRole('heading', { name: 'Jobs' }).waitFor();
    // Without a key the job routes refuse; signing in with the browser's local key (no wallet here) fixes that.
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByTestId('signed-in-as').waitFor();
    ({ token, signedIn } = await page.evaluate(() => ({
      token: localStorage.getItem('swarmgrad.apiKey') ?? '',
      signedIn: localStorage.getItem('swarmgrad.signedInAs') ?? '',
    })));
    expect(signedIn).toMatch(/^0x[0-9a-fA-F]{40}$/);
    expect(await textOf(page, 'signed-in-as')).toContain(signedIn.slice(0, 6));
    const who = await fetch(`${c.url}/api/v1/jobs`, { headers: { authorization: `Bearer ${token}` } });
    expect(who.status).toBe(200);
    await page.getByText('No jobs yet').waitFor();
    await page.getByRole('navigation', { name: 'Dashboard' }).getByRole('link', { name: 'New job' }).click();
    expect(new URL(page.url()).pathname).toBe('/requester/new');
    await page.getByRole('heading', { name: 'New training job' }).waitFor();

    // Out of range for the schema (maximum 10): the API names /optimizer/learningRate.
    await page.getByRole('textbox', { name: 'Learning rate', exact: true }).fill('20');
    await page.getByRole('button', { name: 'Create job' }).click();
    const lrError = page.locator('#e-learningRate');
    await lrError.waitFor();
    expect(await lrError.textContent()).toMatch(/learningRate/);
    expect(await page.getByRole('textbox', { name: 'Learning rate', exact: true }).getAttribute('aria-invalid')).toBe(
      'true',
    );
    expect(
      await page.getByRole('textbox', { name: 'Learning rate', exact: true }).getAttribute('aria-describedby'),
    ).toBe('e-learningRate');
    await page.getByRole('textbox', { name: 'Learning rate', exact: true }).fill('0.1');

    // A layer outside the allow-list: the API names /model/config/layers/1/class_name; it shows at the model.
    const bad = mnistMlpJson(8) as { config: { layers: { class_name: string }[] } };
    bad.config.layers[1].class_name = 'Lambda';
    await page.getByRole('radio', { name: 'Paste model.toJSON()' }).check();
    await page.getByRole('textbox', { name: 'Model JSON' }).fill(JSON.stringify(bad));
    await page.getByRole('button', { name: 'Create job' }).click();
    await page.locator('#e-modelJson').waitFor();
    expect(await page.locator('#e-modelJson').textContent()).toMatch(/\/model\/config\/layers\/1\/class_name.*Lambda/);
    expect(await page.locator('#e-learningRate').count()).toBe(0);

    // A file that is not a dataset: the upload's error shows at the file input.
    await page.getByRole('radio', { name: 'Template' }).check();
    await page.getByRole('radio', { name: 'Upload a file' }).check();
    await page
      .getByLabel('Dataset file')
      .setInputFiles({ name: 'junk.bin', mimeType: 'application/octet-stream', buffer: Buffer.from('not a dataset') });
    await page.getByRole('button', { name: 'Create job' }).click();
    await page.locator('#e-datasetFile').waitFor();
    expect(await page.locator('#e-datasetFile').textContent()).toMatch(/not a valid dataset/);
    await page.getByRole('radio', { name: /Built-in/ }).check();

    expect(w.errors.filter((e) => !/status of 4\d\d/.test(e))).toEqual([]);
    // The 4xx answers above are logged by the browser as failed resources; they are the only errors so far.
    w.errors.length = 0;
  });

  it('creates a job through the form that a headless worker trains; charts show its rounds', async () => {
    const { page } = w;
    await page.getByRole('textbox', { name: 'Job name' }).fill('form job');
    await page.getByRole('textbox', { name: 'Hidden units' }).fill('16');
    await page.getByRole('combobox', { name: 'Inner optimizer' }).selectOption('adam');
    await page.getByRole('textbox', { name: 'Learning rate', exact: true }).fill('0.003');
    await page.getByRole('textbox', { name: 'Batch size' }).fill('16');
    await page.getByRole('textbox', { name: 'Local steps per unit (H)' }).fill('8');
    await page.getByRole('textbox', { name: 'Units per round' }).fill('2');
    await page.getByRole('textbox', { name: 'Rounds', exact: true }).fill('3');
    expect(await unnamedControls(page)).toEqual([]);
    expect(await horizontalOverflow(page)).toBeLessThanOrEqual(0);
    await screenshot(page, 'requester-new-1280');
    await page.getByRole('button', { name: 'Create job' }).click();
    await page.waitForURL(/\/requester\/jobs\/[^/]+$/);
    jobId = decodeURIComponent(new URL(page.url()).pathname.split('/').pop()!);
    const created = await getJob(c.url, jobId, token);
    expect(created.name).toBe('form job');
    expect(created.rounds).toBe(3);
    expect((created.spec as { localSteps: number; optimizer: { type: string } }).localSteps).toBe(8);
    expect((created.spec as { optimizer: { type: string } }).optimizer.type).toBe('adam');
    await page.getByRole('heading', { name: 'form job' }).waitFor();

    worker = await runHeadlessWorker({
      coordinator: c.url,
      privateKey: testIdentity('requester test worker').privateKey,
      backend: 'wasm',
    });
    const done = await waitUntil(
      'the job to complete',
      async () => {
        const j = await getJob(c.url, jobId, token);
        if (j.status === 'failed' || j.status === 'cancelled') throw new Error(`job ${j.status}: ${j.error}`);
        return j.status === 'completed' ? j : null;
      },
      90_000,
      250,
    );
    expect(done.round).toBe(3);
    // The page polls: it shows the finished job, its 3 rounds in both charts and in the table.
    await expect.poll(() => textOf(page, 'job-status'), { timeout: 10_000 }).toBe('completed');
    expect(await textOf(page, 'units-done')).toBe(String(done.unitsDone));
    expect(await page.getByRole('img', { name: /^Loss over 3 rounds/ }).getAttribute('data-points')).toBe('3');
    expect(await page.getByRole('img', { name: /^Accuracy over 3 rounds/ }).getAttribute('data-points')).toBe('3');
    expect(await page.getByTestId('rounds-table').locator('tbody tr').count()).toBe(3);
    expect(await unnamedControls(page)).toEqual([]);
    expect(await horizontalOverflow(page)).toBeLessThanOrEqual(0);
    await screenshot(page, 'requester-job-1280');
    await page.setViewportSize({ width: 375, height: 800 });
    await page.waitForTimeout(200);
    expect(await horizontalOverflow(page)).toBeLessThanOrEqual(0);
    await screenshot(page, 'requester-job-375');
    await page.setViewportSize({ width: 1280, height: 900 });
    expect(w.errors).toEqual([]);
  });

  it('downloads a model that tf.loadLayersModel loads, and the report of the job', async () => {
    const { page } = w;
    // The model route needs the key: the button fetches with it and saves the Blob.
    const [modelDownload] = await Promise.all([
      page.waitForEvent('download'),
      page.getByRole('button', { name: 'Download model' }).click(),
    ]);
    expect(modelDownload.suggestedFilename()).toBe('model.json');
    const saved = JSON.parse(readFileSync((await modelDownload.path())!, 'utf8')) as { modelTopology?: unknown };
    expect(saved.modelTopology).toBeTruthy();
    const url = `${c.url}/api/v1/jobs/${encodeURIComponent(jobId)}/model/model.json`;
    expect((await fetch(url)).status).toBe(401);
    const model = await tf.loadLayersModel(
      tf.io.http(url, { requestInit: { headers: { authorization: `Bearer ${token}` } } }),
    );
    const out = model.predict(tf.zeros([2, 784])) as tf.Tensor;
    expect(out.shape).toEqual([2, 10]);
    const sums = (await out.sum(1).data()) as Float32Array;
    for (const s of sums) expect(s).toBeCloseTo(1, 4);
    model.dispose();

    const [download] = await Promise.all([
      page.waitForEvent('download'),
      page.getByRole('link', { name: 'Download report' }).click(),
    ]);
    const report = JSON.parse(readFileSync((await download.path())!, 'utf8')) as JobView;
    expect(report.id).toBe(jobId);
    expect(report.status).toBe('completed');
    expect(report.metrics).toHaveLength(3);
    expect(w.errors).toEqual([]);
  });

  it('lists jobs with status and progress, cancels a running job, and serves deep links (SPA fallback)', async () => {
    const { page } = w;
    await worker?.stop();
    worker = null;
    const other = await postJob(c.url, smallMnistJob({ name: 'to cancel', rounds: 50 } as never), token);
    await page.goto(`${origin}/requester`);
    const row = page.getByRole('row', { name: /to cancel/ });
    await row.waitFor();
    expect(await row.textContent()).toMatch(/queued|running/);
    expect(await page.getByRole('row', { name: /form job/ }).textContent()).toMatch(/completed/);
    expect(await page.getByRole('progressbar', { name: 'Progress of form job' }).getAttribute('value')).toBe('1');
    await screenshot(page, 'requester-jobs-1280');
    await page.setViewportSize({ width: 375, height: 800 });
    expect(await horizontalOverflow(page)).toBeLessThanOrEqual(0);
    await page.setViewportSize({ width: 1280, height: 900 });

    // A deep link loads straight from the server.
    await page.goto(`${origin}/requester/jobs/${encodeURIComponent(other.id)}`);
    await page.getByRole('heading', { name: 'to cancel' }).waitFor();
    page.once('dialog', (d) => void d.accept());
    await page.getByRole('button', { name: 'Cancel job' }).click();
    await expect.poll(() => textOf(page, 'job-status')).toBe('cancelled');
    expect((await getJob(c.url, other.id, token)).status).toBe('cancelled');
    expect(await page.getByRole('button', { name: 'Cancel job' }).count()).toBe(0);
    expect(w.errors).toEqual([]);
  });
});
