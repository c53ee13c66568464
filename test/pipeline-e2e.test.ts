import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mnistDatasetBytes } from '../coordinator/store/builtin/mnist.js';
import { decodeDataset } from '../shared/train/dataset-format.js';
import {
  postJob,
  smallMnistJob,
  spawnWorker,
  startTestCoordinator,
  stopWorkers,
  testStore,
  waitForJob,
} from './helpers/cluster.js';
import { STORE_KINDS } from './helpers/stores.js';

beforeAll(async () => {
  await tf.setBackend('wasm');
  await tf.ready();
});

/** Accuracy of a tfjs model on the 1,000 held-out MNIST digits. */
function heldOutAccuracy(model: tf.LayersModel): number {
  const ds = decodeDataset(mnistDatasetBytes());
  const n = ds.examples - ds.trainExamples;
  const width = ds.features.length / ds.examples;
  return tf.tidy(() => {
    const x = tf.tensor2d(ds.features.subarray(ds.trainExamples * width), [n, width]);
    const pred = (model.predict(x) as tf.Tensor).argMax(-1).dataSync();
    let right = 0;
    for (let i = 0; i < n; i++) if (pred[i] === ds.labels[ds.trainExamples + i]) right++;
    return right / n;
  });
}

describe.each(STORE_KINDS)('end to end on %s', (kind) => {
  it('3 wasm workers train a small MNIST job to completion; the model loads and scores >= 90%', async () => {
    const c = await startTestCoordinator(testStore(kind));
    const workers = ['0xa1', '0xa2', '0xa3'].map((a) => spawnWorker(c.url, a, 'wasm'));
    try {
      const job = await postJob(c.url, smallMnistJob());
      expect(job.status).toBe('queued');
      const done = await waitForJob(c.url, job.id, 240_000);
      expect(done.round).toBeGreaterThan(0);
      expect(done.metrics).toHaveLength(done.round);
      expect(done.unitsDone).toBe(done.round * 3);
      // More than one worker did the work.
      const { rows } = await c.db.query<{ n: number }>(
        `SELECT count(DISTINCT account) AS n FROM results WHERE job_id = $1 AND status = 'accepted'`,
        [job.id],
      );
      expect(Number(rows[0].n)).toBeGreaterThan(1);

      // The model route is owner-only: the key rides on both the model.json and the weights requests.
      const model = await tf.loadLayersModel(
        tf.io.http(`${c.url}/api/v1/jobs/${job.id}/model/model.json`, {
          requestInit: { headers: { authorization: `Bearer ${c.requester.apiKey}` } },
        }),
      );
      const acc = heldOutAccuracy(model);
      expect(acc).toBeGreaterThanOrEqual(0.9);
      // The coordinator's own evaluation of the final round agrees with ours.
      expect(Math.abs(acc - done.metrics[done.metrics.length - 1].accuracy)).toBeLessThan(0.005);
      model.dispose();
    } finally {
      await stopWorkers(workers);
      await c.destroy();
    }
  }, 300_000);
});

afterAll(() => {
  tf.disposeVariables();
});
