import http from 'node:http';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Coordinator } from '../coordinator/app.js';
import { toMicro } from '../coordinator/credits/money.js';
import { getTrust } from '../coordinator/verify/store.js';
import { encodeWeights } from '../shared/train/weights-format.js';
import {
  getJob,
  postJob,
  smallMnistJob,
  spawnWorker,
  startTestCoordinator,
  stopWorkers,
  TEST_REQUESTER_CREDITS,
  testStore,
  waitFor,
  waitForJob,
} from './helpers/cluster.js';
import { bearer, signedWorker, testIdentity } from './helpers/identities.js';
import { RawWorker } from './helpers/raw-worker.js';
import { events } from './helpers/verify-fixtures.js';

beforeAll(async () => {
  await tf.setBackend('wasm');
  await tf.ready();
});

/** Every unit of every completed round has exactly one accepted result, and the metrics count each once. */
async function expectExactlyOnce(c: Coordinator, jobId: string): Promise<void> {
  const job = await getJob(c.url, jobId);
  const dup = await c.db.query<{ n: number }>(
    `SELECT count(*) AS n FROM (SELECT round, idx FROM results WHERE job_id = $1 AND status = 'accepted'
       GROUP BY round, idx HAVING count(*) > 1) d`,
    [jobId],
  );
  expect(Number(dup.rows[0].n)).toBe(0);
  const accepted = await c.db.query<{ n: number }>(
    `SELECT count(*) AS n FROM results WHERE job_id = $1 AND status = 'accepted' AND round < $2`,
    [jobId, job.round],
  );
  const perRound = 3;
  expect(Number(accepted.rows[0].n)).toBe(job.round * perRound);
  expect(job.metrics.map((m) => m.units)).toEqual(job.metrics.map(() => perRound));
  expect(job.metrics.map((m) => m.round)).toEqual(job.metrics.map((_, i) => i + 1));
}

describe('worker dies mid-unit', () => {
  it('reissues the unit, completes the job, refuses the late result and counts every unit once', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    const workers: ReturnType<typeof spawnWorker>[] = [];
    try {
      const job = await postJob(c.url, smallMnistJob({ rounds: 4, targetAccuracy: undefined }));
      const doomed = await signedWorker(c.url, '0xdead');
      const lease = await doomed.lease();
      // It trains the unit, then its connection dies before it can upload.
      const { out } = await doomed.train(lease);
      doomed.vanish();

      workers.push(spawnWorker(c.url, '0xb1'), spawnWorker(c.url, '0xb2'));
      // New accounts are audited on every unit (twice the work) until they are trusted: allow for a loaded machine.
      const done = await waitForJob(c.url, job.id, 200_000);
      expect(done.round).toBe(4);
      const reissued = await c.db.query<{ attempts: number }>(
        'SELECT attempts FROM units WHERE job_id = $1 AND round = $2 AND idx = $3',
        [job.id, 0, 0],
      );
      expect(reissued.rows[0].attempts).toBeGreaterThanOrEqual(2);

      // The late result arrives after the reissued unit was accepted.
      const late = await signedWorker(c.url, '0xdead');
      const payload = encodeWeights(out.delta);
      const answer = await late.submit(RawWorker.header(lease, out, payload), payload);
      expect(answer.type).toBe('reject');
      expect(answer.type === 'reject' && answer.code).toMatch(/job_not_running|unit_already_completed/);
      late.close();

      const mine = await c.db.query<{ n: number }>(
        `SELECT count(*) AS n FROM results WHERE job_id = $1 AND account = $2 AND status = 'accepted'`,
        [job.id, testIdentity('0xdead').address],
      );
      expect(Number(mine.rows[0].n)).toBe(0);
      await expectExactlyOnce(c, job.id);
    } finally {
      await stopWorkers(workers);
      await c.destroy();
    }
  }, 330_000);
});

describe('coordinator restarts mid-job', () => {
  it('resumes on the same store without losing or double-counting accepted results', async () => {
    const store = testStore('pglite');
    let c = await startTestCoordinator(store);
    const port = Number(new URL(c.url).port);
    const workers = [spawnWorker(c.url, '0xc1'), spawnWorker(c.url, '0xc2')];
    try {
      const job = await postJob(c.url, smallMnistJob({ rounds: 5, targetAccuracy: undefined }));
      // Stop once at least one round is done and some of the next round is accepted. New accounts are audited on
      // every unit (twice the work) until they are trusted: allow for a loaded machine.
      await waitFor(
        'progress before restart',
        async () => {
          const r = await c.db.query<{ n: number }>(
            `SELECT count(*) AS n FROM results WHERE job_id = $1 AND status = 'accepted'`,
            [job.id],
          );
          return Number(r.rows[0].n) >= 4;
        },
        150_000,
      );
      const before = (
        await c.db.query<{ id: string; round: number; idx: number }>(
          `SELECT id, round, idx FROM results WHERE job_id = $1 AND status = 'accepted' ORDER BY id`,
          [job.id],
        )
      ).rows;
      await c.close();
      await new Promise((r) => setTimeout(r, 500));
      c = await startTestCoordinator(store, { port });

      const done = await waitForJob(c.url, job.id, 150_000);
      expect(done.round).toBe(5);
      const after = (
        await c.db.query<{ id: string }>(`SELECT id FROM results WHERE job_id = $1 AND status = 'accepted'`, [job.id])
      ).rows.map((r) => r.id);
      for (const r of before) expect(after).toContain(r.id);
      await expectExactlyOnce(c, job.id);
    } finally {
      await stopWorkers(workers);
      await c.destroy();
    }
  }, 330_000);
});

describe('a job whose training diverges', () => {
  it('fails with the reason and is refunded; the volunteers whose results were NaN are not held to account', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    const workers = [spawnWorker(c.url, '0xd1'), spawnWorker(c.url, '0xd2')];
    try {
      // A linear network under mean squared error at learning rate 10: gradient descent on a quadratic with a step far
      // past 2/curvature, so every honest run reaches Infinity, then NaN, within a few steps.
      const model = structuredClone(smallMnistJob().model) as {
        config: { layers: { config: { activation?: string } }[] };
      };
      for (const l of model.config.layers) if (l.config.activation) l.config.activation = 'linear';
      const job = await postJob(
        c.url,
        smallMnistJob({ model, loss: 'meanSquaredError', optimizer: { type: 'sgd', learningRate: 10 }, rounds: 2 }),
      );
      const failed = await waitFor(
        'the job to fail',
        async () => {
          const j = await getJob(c.url, job.id);
          return j.status === 'failed' ? j : null;
        },
        60_000,
      );
      expect(failed.error).toMatch(
        /^training diverged in round 1: unit \d gives non-finite values .* on the coordinator too/,
      );
      const [check] = await events(c, job.id, 'divergence-check');
      expect(check.outcome).toBe('diverged');
      const refused = await c.db.query<{ account: string; reason: string }>(
        `SELECT DISTINCT account, split_part(reason, ':', 1) AS reason FROM results WHERE job_id = $1`,
        [job.id],
      );
      expect(refused.rows.map((r) => r.reason)).toEqual(refused.rows.map(() => 'non_finite'));
      expect(new Set(refused.rows.map((r) => r.account)).size).toBeGreaterThanOrEqual(2);
      // Honest training diverged for everyone: no forfeit, no failure on anyone's trust.
      expect(await events(c, job.id, 'forfeit')).toEqual([]);
      for (const w of workers) expect(await getTrust(c.db, w.account)).toMatchObject({ failures: 0 });
      // The whole budget goes back to the requester.
      await waitFor('the refund', async () => (await c.ledger.balances(c.requester.address)).escrow === 0, 15_000);
      expect(await c.ledger.balances(c.requester.address)).toMatchObject({
        available: toMicro(TEST_REQUESTER_CREDITS),
        escrow: 0,
      });
    } finally {
      await stopWorkers(workers);
      await c.destroy();
    }
  }, 120_000);
});

describe('coordinator shutdown', () => {
  it('does not wait for the keep-alive socket of a request that was in flight when close began', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    const { port } = new URL(c.url);
    const agent = new http.Agent({ keepAlive: true });
    try {
      // An upload whose body is still arriving when close() is called: its response goes out on a keep-alive socket.
      const answered = new Promise<number>((resolve, reject) => {
        const req = http.request(
          {
            host: '127.0.0.1',
            port,
            path: '/api/v1/datasets',
            method: 'POST',
            agent,
            headers: { ...bearer(c.requester.apiKey), 'content-type': 'application/octet-stream', 'content-length': 8 },
          },
          (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          },
        );
        req.on('error', reject);
        req.write(Buffer.alloc(4));
        setTimeout(() => req.end(Buffer.alloc(4)), 1_300);
      });
      // Time for the server to take the request in (seconds, on a loaded 2-core machine) before close() begins.
      await new Promise((r) => setTimeout(r, 1_000));
      const t0 = Date.now();
      // Without the fix Node holds the socket, and so close(), for Fastify's keepAliveTimeout (72 s).
      const closed = await Promise.race([
        c.close().then(() => true),
        new Promise<false>((r) => setTimeout(() => r(false), 15_000)),
      ]);
      expect(closed, `close() still waiting after ${Date.now() - t0} ms`).toBe(true);
      // The request in flight was answered, not cut off: 400 (the upload is not a dataset), or 503 if a very slow
      // machine had not taken the request in before close() began.
      expect([400, 503]).toContain(await answered);
    } finally {
      agent.destroy();
      await c.destroy();
    }
  }, 60_000);
});

describe('bad input', () => {
  it('rejects malformed specs, unknown layers, unknown datasets and oversize uploads with clear errors', async () => {
    const c = await startTestCoordinator(testStore('pglite'), { maxUploadBytes: 64 * 1024 });
    const headers = bearer(c.requester.apiKey);
    try {
      const badLayer = smallMnistJob();
      const model = structuredClone(badLayer.model) as { config: { layers: { class_name: string }[] } };
      model.config.layers[1].class_name = 'Lambda';
      let res = await c.app.inject({ method: 'POST', url: '/api/v1/jobs', headers, payload: { ...badLayer, model } });
      expect(res.statusCode).toBe(400);
      expect(res.json().field).toBe('/model/config/layers/1/class_name');
      expect(res.json().message).toMatch(/Lambda/);

      res = await c.app.inject({
        method: 'POST',
        url: '/api/v1/jobs',
        headers,
        payload: { ...smallMnistJob(), optimizer: { type: 'adam', learningRate: -1 } },
      });
      expect(res.statusCode).toBe(400);
      expect(res.json().field).toBe('/optimizer/learningRate');

      res = await c.app.inject({
        method: 'POST',
        url: '/api/v1/jobs',
        headers,
        payload: { ...smallMnistJob(), batchSize: 'many' },
      });
      expect(res.statusCode).toBe(400);
      expect(res.json().field).toBe('/batchSize');

      const { dataset: _d, ...noDataset } = smallMnistJob();
      res = await c.app.inject({ method: 'POST', url: '/api/v1/jobs', headers, payload: noDataset });
      expect(res.statusCode).toBe(400);
      expect(res.json().field).toBe('/dataset');

      res = await c.app.inject({
        method: 'POST',
        url: '/api/v1/jobs',
        headers,
        payload: { ...smallMnistJob(), colour: 'red' },
      });
      expect(res.statusCode).toBe(400);
      expect(res.json().field).toBe('/colour');

      res = await c.app.inject({
        method: 'POST',
        url: '/api/v1/jobs',
        headers,
        payload: { ...smallMnistJob(), dataset: 'imagenet' },
      });
      expect(res.statusCode).toBe(404);
      expect(res.json().field).toBe('/dataset');

      res = await c.app.inject({ method: 'GET', url: '/api/v1/jobs/job_nope', headers });
      expect(res.statusCode).toBe(404);

      res = await c.app.inject({
        method: 'POST',
        url: '/api/v1/datasets',
        headers: { ...headers, 'content-type': 'application/octet-stream' },
        payload: Buffer.alloc(65 * 1024),
      });
      expect(res.statusCode).toBe(413);

      res = await c.app.inject({
        method: 'POST',
        url: '/api/v1/datasets',
        headers: { ...headers, 'content-type': 'application/octet-stream' },
        payload: Buffer.from('not a dataset at all'),
      });
      expect(res.statusCode).toBe(400);
      expect(res.json().message).toMatch(/dataset/);

      // The OpenAPI document describes the same schema the validator enforces.
      res = await c.app.inject({ method: 'GET', url: '/api/v1/openapi.json' });
      expect(res.statusCode).toBe(200);
      const doc = res.json();
      expect(doc.paths['/api/v1/jobs'].post).toBeDefined();
      expect(JSON.stringify(doc)).toContain('unitsPerRound');
    } finally {
      await c.destroy();
    }
  });

  it('rejects NaN, wrong-shape and hash-mismatched results with a reason; the job carries on', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    try {
      const job = await postJob(c.url, smallMnistJob({ rounds: 1, unitsPerRound: 1, targetAccuracy: undefined }));
      const w = await signedWorker(c.url, '0xbad');
      // The worker takes the unit again right after each refusal (the cool-down on units given back is what
      // test/lease-terms.test.ts checks).
      c.scheduler.givenBackCooldownMs = 0;
      const lease = await w.lease();
      const { out } = await w.train(lease);

      const nan = structuredClone(out.delta);
      nan.data[0][0] = Number.NaN;
      let payload = encodeWeights(nan);
      let answer = await w.submit(RawWorker.header(lease, out, payload), payload);
      expect(answer).toMatchObject({ type: 'reject', code: 'non_finite' });

      // A rejected lease is closed; the unit goes back on offer and the worker can take it again.
      const lease2 = await w.lease();
      expect(lease2.leaseId).not.toBe(lease.leaseId);
      const wrong = structuredClone(out.delta);
      wrong.shapes[0] = [wrong.shapes[0][0] / 2, wrong.shapes[0][1] * 2];
      payload = encodeWeights(wrong);
      answer = await w.submit(RawWorker.header(lease2, out, payload), payload);
      expect(answer).toMatchObject({ type: 'reject', code: 'wrong_shape' });

      const lease3 = await w.lease();
      payload = encodeWeights(out.delta);
      const header = { ...RawWorker.header(lease3, out, payload), deltaHash: 'f'.repeat(64) };
      answer = await w.submit(header, payload);
      expect(answer).toMatchObject({ type: 'reject', code: 'hash_mismatch' });

      // A copycat presenting someone else's lease without its token gets nothing. (It holds no lease, so its frames
      // are bounded small: it sends a small payload; a full-size one closes its socket, test/hold-limits.test.ts.)
      const lease4 = await w.lease();
      const thief = await signedWorker(c.url, '0xthief');
      const small = new Uint8Array(64);
      answer = await thief.submit({ ...RawWorker.header(lease4, out, payload), token: 'x' }, small);
      expect(answer).toMatchObject({ type: 'reject', code: 'bad_token' });
      answer = await thief.submit(RawWorker.header(lease4, out, payload), small);
      expect(answer).toMatchObject({ type: 'reject', code: 'not_your_lease' });
      thief.close();

      let j = await getJob(c.url, job.id);
      expect(j.status).toBe('running');
      expect(j.unitsDone).toBe(0);
      const reasons = await c.db.query<{ reason: string }>(
        `SELECT reason FROM results WHERE job_id = $1 AND status = 'rejected' ORDER BY created_at`,
        [job.id],
      );
      expect(reasons.rows.map((r) => r.reason.split(':')[0])).toEqual(['non_finite', 'wrong_shape', 'hash_mismatch']);

      // The honest result for the same unit is still accepted and the job completes. (A new account's result is
      // audited; with no other worker around, the coordinator recomputes the unit itself after a while.)
      c.scheduler.verification.configure({ selfAuditAfterMs: 1_000 });
      answer = await w.submit(RawWorker.header(lease4, out, payload), payload);
      expect(answer.type).toBe('ack');
      j = await waitFor('completion', async () => {
        const v = await getJob(c.url, job.id);
        return v.status === 'completed' ? v : null;
      });
      expect(j.unitsDone).toBe(1);
      w.close();
    } finally {
      await c.destroy();
    }
  });

  it('closes a connection that sends garbage with 4400 while other workers keep working', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    try {
      await postJob(c.url, smallMnistJob({ rounds: 1, unitsPerRound: 2, targetAccuracy: undefined }));
      const good = await signedWorker(c.url, '0x900d');
      const goodLease = await good.lease();

      const noisy = await signedWorker(c.url, '0x4015');
      noisy.send('{this is not json');
      const closed = await noisy.closed;
      expect(closed.code).toBe(4400);

      const schemaBreaker = await signedWorker(c.url, '0x4016');
      schemaBreaker.send({ type: 'progress', leaseId: 5 });
      expect((await schemaBreaker.closed).code).toBe(4400);

      const garbageBinary = await signedWorker(c.url, '0x4017');
      garbageBinary.ws.send(Buffer.from([1, 2, 3, 4, 5, 6, 7, 8, 9]));
      expect((await garbageBinary.closed).code).toBe(4400);

      // The well-behaved worker is unaffected: its result is accepted.
      const { out } = await good.train(goodLease);
      const payload = encodeWeights(out.delta);
      const answer = await good.submit(RawWorker.header(goodLease, out, payload), payload);
      expect(answer.type).toBe('ack');
      good.close();
    } finally {
      await c.destroy();
    }
  });
});
