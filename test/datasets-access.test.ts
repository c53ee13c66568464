import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { toMicro } from '../coordinator/credits/money.js';
import { encodeDataset } from '../shared/train/dataset-format.js';
import type { Dataset } from '../shared/train/types.js';
import { postJob, smallMnistJob, startTestCoordinator, type TestCoordinator, testStore } from './helpers/cluster.js';
import { bearer, signedWorker, testIdentity } from './helpers/identities.js';

/**
 * Findings #16 and #9 (issue 9): datasets and blobs belong to their owners (workers read a unit's blobs with their
 * lease, nothing else), uploads have a daily quota per account, and decoded datasets in memory have a byte budget.
 */

beforeAll(async () => {
  await tf.setBackend('wasm');
  await tf.ready();
});

afterAll(() => {
  tf.disposeVariables();
});

/** A tiny 4-feature, 3-class dataset; `seed` makes its bytes (and so its id) differ. */
function tinyDataset(name: string, seed: number, examples = 40): Uint8Array {
  const features = Float32Array.from({ length: examples * 4 }, (_, i) => Math.sin(i * 0.7 + seed));
  const labels = Int32Array.from({ length: examples }, (_, i) => (i + seed) % 3);
  const ds: Dataset = {
    name,
    featureShape: [4],
    numClasses: 3,
    examples,
    trainExamples: examples - 8,
    features,
    labels,
  };
  return encodeDataset(ds);
}

function tinyModel(): object {
  const m = tf.sequential();
  m.add(tf.layers.dense({ inputShape: [4], units: 3, activation: 'softmax' }));
  const json = m.toJSON(null, false) as object;
  m.dispose();
  return json;
}

async function upload(c: TestCoordinator, key: string | null, bytes: Uint8Array): Promise<Response> {
  return fetch(`${c.url}/api/v1/datasets`, {
    method: 'POST',
    headers: { 'content-type': 'application/octet-stream', ...(key ? bearer(key) : {}) },
    body: Buffer.from(bytes),
  });
}

const blob = (c: TestCoordinator, hash: string, headers: Record<string, string> = {}) =>
  fetch(`${c.url}/api/v1/blobs/${hash}`, { headers }).then((r) => r.status);

/** A second funded requester with a key. */
async function otherRequester(c: TestCoordinator, label: string): Promise<{ address: string; apiKey: string }> {
  const id = testIdentity(label);
  const apiKey = (await c.accounts.createApiKey(id.address, label)).key;
  await c.ledger.deposit(id.address, toMicro(1000), `test-funding:${id.address}:${Date.now()}`);
  return { address: id.address, apiKey };
}

describe('datasets and blobs belong to their owners', () => {
  it('lists and serves a dataset to its owner only; a lease opens exactly its own unit blobs', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    const bob = await otherRequester(c, 'bob-requester');
    const alice = c.requester.apiKey;
    const w = await signedWorker(c.url, 'blob-worker');
    try {
      expect(await upload(c, null, tinyDataset('anon', 9))).toHaveProperty('status', 401);
      const dsA = (await (await upload(c, alice, tinyDataset('alice data', 1))).json()) as { id: string };
      const dsB = (await (await upload(c, bob.apiKey, tinyDataset('bob data', 2))).json()) as { id: string };

      // Listing: anonymous callers see the built-ins only, each account its own besides.
      const names = async (headers: Record<string, string>) =>
        ((await (await fetch(`${c.url}/api/v1/datasets`, { headers })).json()) as { name: string }[]).map(
          (d) => d.name,
        );
      expect(await names({})).toEqual(['mnist']);
      expect(await names(bearer(alice))).toEqual(['mnist', 'alice data']);
      expect(await names(bearer(bob.apiKey))).toEqual(['mnist', 'bob data']);
      const peek = await fetch(`${c.url}/api/v1/datasets/${dsB.id}`, { headers: bearer(alice) });
      expect(peek.status).toBe(404);

      // Blobs: nobody reads a dataset without a right to it; the built-in one stays public.
      expect(await blob(c, dsA.id)).toBe(404);
      expect(await blob(c, dsA.id, bearer(bob.apiKey))).toBe(404);
      expect(await blob(c, dsA.id, bearer(alice))).toBe(200);
      const mnist = ((await (await fetch(`${c.url}/api/v1/datasets/mnist`)).json()) as { id: string }).id;
      expect(await blob(c, mnist)).toBe(200);

      // Alice cannot train on Bob's dataset, even knowing its id.
      const spec = {
        ...smallMnistJob({ unitsPerRound: 1, rounds: 1, batchSize: 4, localSteps: 2 }),
        model: tinyModel(),
        budget: 5,
      };
      const onB = await fetch(`${c.url}/api/v1/jobs`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...bearer(alice) },
        body: JSON.stringify({ ...spec, dataset: dsB.id }),
      });
      expect(onB.status).toBe(404);
      const jobA = await postJob(c.url, { ...spec, dataset: dsA.id }, alice);
      const jobB = await postJob(c.url, { ...spec, dataset: dsB.id }, bob.apiKey);

      // A worker's lease opens the model, weights and dataset of its own unit, and nothing else.
      const lease = await w.lease();
      expect(lease.unit.datasetHash).toBe(dsA.id);
      const mine = { authorization: `Lease ${lease.leaseId}:${lease.token}` };
      for (const h of [lease.unit.modelHash, lease.unit.weightsHash, lease.unit.datasetHash]) {
        expect(await blob(c, h, mine)).toBe(200);
        expect(await blob(c, h)).toBe(404);
      }
      expect(await blob(c, dsB.id, mine)).toBe(404);
      expect(await blob(c, lease.unit.datasetHash, { authorization: `Lease ${lease.leaseId}:${'0'.repeat(48)}` })).toBe(
        404,
      );
      // The honest path works end to end (RawWorker fetches with its lease), and a released lease opens nothing.
      await w.unitInputs(lease);
      w.send({ type: 'release', leaseId: lease.leaseId });
      await expect.poll(() => blob(c, lease.unit.datasetHash, mine), { timeout: 10_000, interval: 100 }).toBe(404);

      // Weights are no more shared than datasets: Bob cannot start from Alice's job's weights; Alice can.
      const fromA = { ...spec, dataset: dsA.id, initialWeights: lease.unit.weightsHash };
      const bobFromA = await fetch(`${c.url}/api/v1/jobs`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...bearer(bob.apiKey) },
        body: JSON.stringify({ ...fromA, dataset: dsB.id }),
      });
      expect(bobFromA.status).toBe(404);
      expect(((await bobFromA.json()) as { field: string }).field).toBe('/initialWeights');
      expect((await postJob(c.url, fromA, alice)).status).toBe('queued');

      // The requester's own model download still works.
      const model = await fetch(`${c.url}/api/v1/jobs/${jobA.id}/model/model.json`, { headers: bearer(alice) });
      expect(model.status).toBe(200);
      const path = ((await model.json()) as { weightsManifest: { paths: string[] }[] }).weightsManifest[0].paths[0];
      const weightsOf = (jobId: string, file: string) =>
        fetch(`${c.url}/api/v1/jobs/${jobId}/model/${file}`, { headers: bearer(alice) }).then((r) => r.status);
      expect(await weightsOf(jobA.id, path)).toBe(200);
      // ...but her job's download route is no back door to other blobs by hash (Bob's weights).
      const { rows } = await c.db.query<{ weights_hash: string }>('SELECT weights_hash FROM jobs WHERE id = $1', [
        jobB.id,
      ]);
      expect(await weightsOf(jobA.id, `weights-${rows[0].weights_hash}.bin`)).toBe(404);
    } finally {
      w.close();
      await c.destroy();
    }
  });
});

describe('dataset uploads and memory', () => {
  it('caps each account at its daily upload quota with 429, and keeps decoded datasets within the cache budget', async () => {
    const one = tinyDataset('q', 0).length;
    const c = await startTestCoordinator(testStore('pglite'), {
      datasetUploadQuotaBytes: Math.floor(one * 2.5),
      datasetCacheBytes: 40 * 4 * 4 * 2 + 40 * 4 * 2,
    });
    const bob = await otherRequester(c, 'bob-quota');
    try {
      const key = c.requester.apiKey;
      expect((await upload(c, key, tinyDataset('q1', 11))).status).toBe(201);
      expect((await upload(c, key, tinyDataset('q2', 12))).status).toBe(201);
      const over = await upload(c, key, tinyDataset('q3', 13));
      expect(over.status).toBe(429);
      expect(over.headers.get('retry-after')).toMatch(/^\d+$/);
      const body = (await over.json()) as { message: string; field: string };
      expect(body.message).toMatch(/upload quota exceeded/);
      expect(body.field).toBe('/body');
      // Another account's quota is its own.
      expect((await upload(c, bob.apiKey, tinyDataset('b1', 14))).status).toBe(201);
      // Decoded datasets: the cache holds at most two of these (plus mnist never fits), however many are used.
      const ids = (await c.datasets.list(c.requester.address)).map((d) => d.id);
      for (const id of ids) await c.datasets.load(id);
      expect(c.datasets.cachedBytes).toBeGreaterThan(0);
      expect(c.datasets.cachedBytes).toBeLessThanOrEqual(40 * 4 * 4 * 2 + 40 * 4 * 2);
    } finally {
      await c.destroy();
    }
  });
});
