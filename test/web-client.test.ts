import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildAccountLinkMessage, personalSign } from '../shared/identity/index.js';
import { ApiRequestError, createClient, type SwarmgradClient } from '../shared/protocol/api-client.js';
import { encodeDataset } from '../shared/train/dataset-format.js';
import { mnistCnnModel, mnistMlpModel } from '../shared/train/templates.js';
import { planEviction } from '../web/lib/blob-cache.js';
import { wasmFeatures } from '../web/lib/capabilities.js';
import { benchmarkIsDecided, chooseBackend, fasterAlternative, MIN_USEFUL_EPS } from '../web/lib/choose-backend.js';
import { DutyCycle } from '../web/lib/duty-cycle.js';
import { addressFromPrivateKey, generateKey, parsePrivateKey } from '../web/lib/local-key.js';
import { mnistCnnJson, mnistMlpJson } from '../web/lib/model-templates.js';
import { DEFAULT_SETTINGS, sanitizeSettings } from '../web/lib/settings.js';
import { sparklinePath } from '../web/lib/sparkline.js';
import { DEFAULT_VALUES, FormError, fieldForPointer, parseModelJson, specFromForm } from '../web/requester/fields.js';
import { parseRoute } from '../web/requester/routes.js';
import { frameParams } from '../web/widget/frame-params.js';
import { startTestCoordinator, type TestCoordinator, testStore } from './helpers/cluster.js';

describe('api-client against a real coordinator', () => {
  let c: TestCoordinator;
  let api: SwarmgradClient;

  beforeAll(async () => {
    c = await startTestCoordinator(testStore('pglite'));
    api = createClient({ baseUrl: `${c.url}/`, apiKey: c.requester.apiKey });
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it('creates, lists, reads and cancels jobs', async () => {
    expect(await api.listJobs()).toEqual([]);
    const job = await api.createJob({ name: 'sdk job', model: mnistMlpJson(8), dataset: 'mnist', rounds: 2 });
    expect(job.status).toBe('queued');
    expect(job.rounds).toBe(2);
    expect((await api.getJob(job.id)).name).toBe('sdk job');
    expect((await api.listJobs()).map((j) => j.id)).toEqual([job.id]);
    expect((await api.cancelJob(job.id)).status).toBe('cancelled');
    const again = await api.cancelJob(job.id).catch((e: unknown) => e);
    expect(again).toBeInstanceOf(ApiRequestError);
    expect((again as ApiRequestError).statusCode).toBe(409);
    expect(api.modelUrl(job.id)).toBe(`${c.url}/api/v1/jobs/${job.id}/model/model.json`);
  });

  it('surfaces validation errors with the JSON pointer of the field', async () => {
    const lr = await api
      .createJob({ model: mnistMlpJson(8), dataset: 'mnist', optimizer: { learningRate: 20 } })
      .catch((e: unknown) => e);
    expect(lr).toBeInstanceOf(ApiRequestError);
    expect(lr).toMatchObject({ statusCode: 400, error: 'Bad Request', field: '/optimizer/learningRate' });
    expect(fieldForPointer((lr as ApiRequestError).field)).toBe('learningRate');

    const model = mnistMlpJson(8) as { config: { layers: { class_name: string }[] } };
    model.config.layers[1].class_name = 'Lambda';
    const layer = await api.createJob({ model, dataset: 'mnist' }).catch((e: unknown) => e);
    expect(layer).toMatchObject({ statusCode: 400, field: '/model/config/layers/1/class_name' });
    expect(fieldForPointer((layer as ApiRequestError).field)).toBe('modelJson');

    const ds = await api.createJob({ model: mnistMlpJson(8), dataset: 'nope' }).catch((e: unknown) => e);
    expect(ds).toMatchObject({ statusCode: 404, field: '/dataset' });
    const missing = await api.getJob('job_missing').catch((e: unknown) => e);
    expect(missing).toMatchObject({ statusCode: 404 });
  });

  it('uploads datasets, rejects files that are not datasets, and reads the OpenAPI document', async () => {
    const n = 20;
    const bytes = encodeDataset({
      name: 'tiny',
      featureShape: [4],
      numClasses: 2,
      examples: n,
      trainExamples: 16,
      features: Float32Array.from({ length: n * 4 }, (_, i) => (i % 7) / 7),
      labels: Int32Array.from({ length: n }, (_, i) => i % 2),
    });
    const view = await api.uploadDataset(bytes);
    expect(view).toMatchObject({ name: 'tiny', examples: n, trainExamples: 16, numClasses: 2, featureShape: [4] });
    expect((await api.listDatasets()).map((d) => d.id)).toContain(view.id);
    const blobView = await api.uploadDataset(new Blob([bytes as Uint8Array<ArrayBuffer>]));
    expect(blobView.id).toBe(view.id);

    const junk = await api.uploadDataset(new Uint8Array([1, 2, 3])).catch((e: unknown) => e);
    expect(junk).toMatchObject({ statusCode: 400, field: '/body' });
    expect(fieldForPointer((junk as ApiRequestError).field)).toBe('datasetFile');

    const doc = await api.openapi();
    expect(Object.keys(doc.paths as object)).toEqual(expect.arrayContaining(['/api/v1/jobs', '/api/v1/datasets']));
  });

  it('turns an unreachable coordinator into an ApiRequestError with status 0', async () => {
    const dead = createClient({ baseUrl: 'http://127.0.0.1:1' });
    await expect(dead.listJobs()).rejects.toMatchObject({ statusCode: 0, error: 'Network Error' });
  });

  it('sends the API key as a bearer token through the injected fetch', async () => {
    const seen: Headers[] = [];
    const spy = createClient({
      baseUrl: c.url,
      apiKey: c.requester.apiKey,
      fetch: (input, init) => {
        seen.push(new Headers(init?.headers));
        return fetch(input, init);
      },
    });
    await spy.listJobs();
    expect(seen[0].get('authorization')).toBe(`Bearer ${c.requester.apiKey}`);
    // A wrong key is refused with 401, and the model download carries the key too.
    const wrong = createClient({ baseUrl: c.url, apiKey: 'sg_wrong' });
    await expect(wrong.listJobs()).rejects.toMatchObject({ statusCode: 401 });
    expect(spy.authHeaders()).toEqual({ authorization: `Bearer ${c.requester.apiKey}` });
    await expect(createClient({ baseUrl: c.url }).downloadModel('nope')).rejects.toMatchObject({ statusCode: 401 });
  });

  it('reads accounts and credits, and links a local key to a wallet with both signatures', async () => {
    const pub = createClient({ baseUrl: c.url });
    const local = generateKey();
    const wallet = generateKey();
    const [from, to] = [addressFromPrivateKey(local), addressFromPrivateKey(wallet)];
    const fresh = await pub.account(from);
    expect(fresh).toMatchObject({ address: from, unit: 'micro-credits', linkedTo: null, linkedFrom: [] });
    expect(fresh.balances).toMatchObject({ pending: 0, vested: 0 });
    expect(await pub.credits(from)).toEqual({ items: [], nextCursor: null });
    await expect(pub.account('0x123')).rejects.toMatchObject({ statusCode: 400 });

    const n = await pub.linkNonce();
    const message = buildAccountLinkMessage({
      domain: n.domain,
      from,
      to,
      uri: n.uri,
      chainId: n.chainId,
      nonce: n.nonce,
      issuedAt: new Date(),
      expirationTime: new Date(n.expiresAt),
    });
    // The wallet's signature made by the wrong key is refused, naming the field; the nonce survives the refusal.
    const forged = await pub
      .linkAccounts({
        message,
        localSignature: personalSign(message, local),
        walletSignature: personalSign(message, local),
      })
      .catch((e: unknown) => e);
    expect(forged).toBeInstanceOf(ApiRequestError);
    expect(forged).toMatchObject({ statusCode: 400, field: '/walletSignature' });
    const link = await pub.linkAccounts({
      message,
      localSignature: personalSign(message, local),
      walletSignature: personalSign(message, wallet),
    });
    expect(link).toMatchObject({ from, to, created: true, eventKey: `link:${from}` });
    expect((await pub.account(from)).linkedTo?.address).toBe(to);
    expect((await pub.account(to)).linkedFrom.map((l) => l.address)).toEqual([from]);
  });
});

describe('dashboard helpers', () => {
  it('model templates equal the tfjs-built ones of shared/train, without tfjs', () => {
    expect(mnistMlpJson(128)).toEqual(mnistMlpModel(128));
    expect(mnistMlpJson(16)).toEqual(mnistMlpModel(16));
    expect(mnistCnnJson()).toEqual(mnistCnnModel());
  });

  it('maps API error pointers to the form field to show them at', () => {
    expect(fieldForPointer('/optimizer/learningRate')).toBe('learningRate');
    expect(fieldForPointer('/model/config/layers/2/class_name')).toBe('modelJson');
    expect(fieldForPointer('/model')).toBe('modelJson');
    expect(fieldForPointer('/optimizer')).toBe('optimizerType');
    expect(fieldForPointer('/outer/nesterov')).toBe('nesterov');
    expect(fieldForPointer('/body/localSteps')).toBe('localSteps');
    expect(fieldForPointer('/aggregation')).toBe('aggregation');
    expect(fieldForPointer('/unknown')).toBe('form');
    expect(fieldForPointer(undefined)).toBe('form');
  });

  it('builds the job spec from the form, leaving empty fields to the API defaults', () => {
    const spec = specFromForm(
      { ...DEFAULT_VALUES, momentum: '', targetAccuracy: '', rounds: ' 7 ', seed: 'x' },
      { a: 1 },
      'mnist',
    );
    expect(spec).toMatchObject({
      model: { a: 1 },
      dataset: 'mnist',
      rounds: 7,
      optimizer: { type: 'sgd', learningRate: 0.1 },
    });
    expect('targetAccuracy' in spec).toBe(false);
    expect('momentum' in (spec.optimizer as object)).toBe(false);
    // Unparsable numbers go to the API as typed, so its validation names the field.
    expect((spec as unknown as { seed: unknown }).seed).toBe('x');
  });

  it('parses pasted model JSON, also the string model.toJSON() returns', () => {
    const m = mnistMlpJson(4);
    expect(parseModelJson(JSON.stringify(m))).toEqual(m);
    expect(parseModelJson(JSON.stringify(JSON.stringify(m)))).toEqual(m);
    expect(() => parseModelJson('{nope')).toThrow(FormError);
    expect(() => parseModelJson('[1]')).toThrow(/object/);
    expect(() => parseModelJson('  ')).toThrow(/paste/);
  });

  it('routes dashboard paths', () => {
    expect(parseRoute('/requester')).toEqual({ name: 'jobs' });
    expect(parseRoute('/requester/')).toEqual({ name: 'jobs' });
    expect(parseRoute('/requester/new')).toEqual({ name: 'new' });
    expect(parseRoute('/requester/jobs/job_a%2Fb')).toEqual({ name: 'job', id: 'job_a/b' });
    expect(parseRoute('/requester/elsewhere')).toEqual({ name: 'notFound' });
  });
});

describe('volunteer helpers', () => {
  it('prefers webgpu when it works at a useful speed, else the fastest', () => {
    const r = (backend: 'webgpu' | 'wasm' | 'cpu', examplesPerSecond: number, error?: string) => ({
      backend,
      examplesPerSecond,
      error,
    });
    const all = ['webgpu', 'wasm', 'cpu'] as const;
    expect(chooseBackend([r('webgpu', 240), r('wasm', 4000), r('cpu', 500)], [...all])).toBe('webgpu');
    expect(chooseBackend([r('webgpu', MIN_USEFUL_EPS - 1), r('wasm', 4000), r('cpu', 500)], [...all])).toBe('wasm');
    expect(chooseBackend([r('webgpu', 0, 'no adapter'), r('wasm', 40), r('cpu', 45)], [...all])).toBe('cpu');
    expect(chooseBackend([], ['wasm', 'cpu'])).toBe('wasm');
    expect(chooseBackend([r('webgpu', 900)], ['wasm', 'cpu'])).toBe('wasm');
    expect(benchmarkIsDecided([r('webgpu', 240)])).toBe(true);
    expect(benchmarkIsDecided([r('webgpu', 0, 'failed')])).toBe(false);
    expect(fasterAlternative([r('webgpu', 240), r('wasm', 4000)], 'webgpu')).toMatchObject({ backend: 'wasm' });
    expect(fasterAlternative([r('webgpu', 3000), r('wasm', 4000)], 'webgpu')).toBeNull();
  });

  it('throttles to the duty cycle: idle time = busy x (1 - d) / d, capped', async () => {
    const d = new DutyCycle(50);
    expect(d.idleFor(100)).toBeCloseTo(100);
    d.set(25);
    expect(d.idleFor(100)).toBeCloseTo(300);
    d.set(100);
    expect(d.idleFor(100)).toBe(0);
    d.set(5);
    expect(d.percent).toBe(10);

    const slept: number[] = [];
    const gated = new DutyCycle(50, async (ms) => {
      slept.push(ms);
    });
    const t0 = performance.now();
    while (performance.now() - t0 < 40) {
      // busy for ~40 ms
    }
    await gated.gate();
    expect(slept).toHaveLength(1);
    expect(slept[0]).toBeGreaterThanOrEqual(38);
    expect(slept[0]).toBeLessThan(200);
  });

  it('evicts least recently used blobs to fit the cap, and never caches a blob over the cap', () => {
    const metas = [
      { hash: 'a', size: 40, lastUsed: 3 },
      { hash: 'b', size: 30, lastUsed: 1 },
      { hash: 'c', size: 20, lastUsed: 2 },
    ];
    expect(planEviction(metas, { hash: 'd', size: 10 }, 100)).toEqual([]);
    expect(planEviction(metas, { hash: 'd', size: 30 }, 100)).toEqual(['b']);
    expect(planEviction(metas, { hash: 'd', size: 60 }, 100)).toEqual(['b', 'c']);
    expect(planEviction(metas, { hash: 'a', size: 50 }, 100)).toEqual([]);
    expect(planEviction(metas, { hash: 'd', size: 101 }, 100)).toBeNull();
  });

  it('keeps stored settings sane', () => {
    expect(sanitizeSettings(undefined)).toEqual(DEFAULT_SETTINGS);
    expect(sanitizeSettings({ intensity: 3, backend: 'tpu', batteryThreshold: 'x', pauseWhenHidden: false })).toEqual({
      ...DEFAULT_SETTINGS,
      intensity: 10,
      pauseWhenHidden: false,
    });
  });

  it('makes local keys, parses pasted ones and reads the widget frame parameters', () => {
    const k = generateKey();
    expect(parsePrivateKey(k)).toBe(k.toLowerCase());
    expect(parsePrivateKey(` ${k.slice(2).toUpperCase()} `)).toBe(k.toLowerCase());
    expect(generateKey()).not.toBe(k);
    expect(parsePrivateKey('0x123')).toBeNull();
    // Zero is not a valid secp256k1 scalar.
    expect(parsePrivateKey(`0x${'0'.repeat(64)}`)).toBeNull();
    const a = addressFromPrivateKey(k);
    expect(a).toMatch(/^0x[0-9a-fA-F]{40}$/);
    expect(frameParams(`?account=${a}&intensity=500`)).toEqual({ account: a, intensity: 100 });
    expect(frameParams('?account=bob')).toEqual({ account: null, intensity: 50 });
  });

  it('draws sparklines and detects wasm SIMD', () => {
    expect(sparklinePath([], 100, 20)).toBe('');
    const d = sparklinePath([1, 2, Number.NaN, 0], 100, 20, 0);
    expect(d).toBe('M0.0 10.0L33.3 0.0M100.0 20.0');
    // Node's V8 supports SIMD; threads need a cross-origin isolated page, which Node is not.
    expect(wasmFeatures()).toEqual({ wasm: true, simd: true, threads: false });
  });
});
