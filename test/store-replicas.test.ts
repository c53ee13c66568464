import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { unitPrice } from '../coordinator/ledger/price.js';
import { sha256Hex } from '../shared/hash.js';
import type { JobView } from '../shared/protocol/job-spec.js';
import {
  getJob,
  postJob,
  smallMnistJob,
  spawnWorker,
  startReplicaPair,
  startTestCoordinator,
  stopWorkers,
  type TestCoordinator,
  testStore,
  waitFor,
  waitForJob,
} from './helpers/cluster.js';
import { signedWorker } from './helpers/identities.js';
import { TEST_DATABASE_URL } from './helpers/stores.js';

/**
 * Two coordinator replicas on one PostgreSQL schema, each with its own DATA_DIR: a job submitted to replica A is
 * trained by workers connected only to replica B, and both replicas serve the same model, job view and ledger.
 */

// smallMnistJob: a 784-32-10 MLP, 24 local steps of 32 examples (as counted in credits-e2e.test.ts).
const UNIT_FLOPS = 6 * (784 * 32 + 32 + 32 * 10 + 10) * 24 * 32;
const MICRO = 1_000_000;
const ROUNDS = 2;
const UNITS_PER_ROUND = 3;

beforeAll(async () => {
  await tf.setBackend('wasm');
  await tf.ready();
});
afterAll(() => {
  tf.disposeVariables();
});

/** Drops a test schema (when a replica failed to start, nothing else would). */
async function dropSchema(schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await client.connect();
  try {
    await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  } finally {
    await client.end();
  }
}

/** A blob over HTTP with the key of the job's owner (blobs are not public: api/blobs.ts). */
async function blob(url: string, hash: string, key: string): Promise<Uint8Array> {
  const res = await fetch(`${url}/api/v1/blobs/${hash}`, { headers: { authorization: `Bearer ${key}` } });
  if (res.status !== 200) throw new Error(`GET blob ${hash} from ${url}: ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

async function loadModel(c: TestCoordinator, jobId: string, apiKey: string): Promise<tf.LayersModel> {
  return tf.loadLayersModel(
    tf.io.http(`${c.url}/api/v1/jobs/${jobId}/model/model.json`, {
      requestInit: { headers: { authorization: `Bearer ${apiKey}` } },
    }),
  );
}

describe('two replicas on one PostgreSQL', () => {
  it('a job posted on A, trained by workers on B only, is complete and identical on both', async () => {
    // Replicas share the payout signing key (README: COORDINATOR_PRIVATE_KEY, same on every replica).
    const { a, b, stop } = await startReplicaPair();
    const workers: ReturnType<typeof spawnWorker>[] = [];
    try {
      expect(a.config.databaseSchema).toBe(b.config.databaseSchema);
      expect(a.dataDir).not.toBe(b.dataDir);
      expect(a.signerAddress).toBe(b.signerAddress);
      // The requester's key lives in the shared database: A's key works on B.
      const key = a.requester.apiKey;

      const job = await postJob(
        a.url,
        smallMnistJob({
          rounds: ROUNDS,
          unitsPerRound: UNITS_PER_ROUND,
          targetAccuracy: undefined,
          budget: 1,
        } as never),
        key,
      );
      expect(job.status).toBe('queued');
      expect((await getJob(b.url, job.id, key)).id).toBe(job.id);

      // The model JSON and first weights were stored by A; B's workers fetch them from B.
      workers.push(spawnWorker(b.url, 'replica-w1'), spawnWorker(b.url, 'replica-w2'));
      await waitForJob(a.url, job.id, 120_000, key);
      await stopWorkers(workers);

      // Only B ever had workers.
      const seen = await a.db.query<{ replica: string }>('SELECT DISTINCT replica FROM workers');
      expect(seen.rows.map((r) => r.replica)).toEqual(['replica-b']);

      // Every unit was counted once: one accepted result per unit, and one credit per creditable result.
      const accepted = await a.db.query<{ round: number; idx: number; n: number }>(
        `SELECT round, idx, count(*)::int AS n FROM results WHERE job_id = $1 AND status = 'accepted'
         GROUP BY round, idx ORDER BY round, idx`,
        [job.id],
      );
      expect(accepted.rows).toHaveLength(ROUNDS * UNITS_PER_ROUND);
      expect(accepted.rows.every((r) => r.n === 1)).toBe(true);
      const creditable = await a.db.query<{ id: string }>(
        `SELECT id FROM results WHERE job_id = $1 AND status IN ('accepted', 'confirmed') ORDER BY id`,
        [job.id],
      );
      const price = unitPrice(UNIT_FLOPS, MICRO);

      // Both replicas run the credit sweeper; wait until the escrow is settled (credits posted, rest refunded).
      const settled = await waitFor(
        'credits and refund',
        async () => {
          const j = await getJob(b.url, job.id, key);
          return j.billing?.closed && j.billing.spent === creditable.rows.length * price ? j : null;
        },
        30_000,
      );
      const credits = await a.db.query<{ result_id: string; n: number }>(
        `SELECT result_id, count(*)::int AS n FROM ledger_events WHERE job_id = $1 AND kind = 'credit'
         GROUP BY result_id ORDER BY result_id`,
        [job.id],
      );
      expect(credits.rows).toEqual(creditable.rows.map((r) => ({ result_id: r.id, n: 1 })));
      expect(settled.billing).toMatchObject({ budget: MICRO, refunded: MICRO - creditable.rows.length * price });

      // The job view is the same on both replicas.
      const viewA: JobView = await getJob(a.url, job.id, key);
      const viewB: JobView = await getJob(b.url, job.id, key);
      expect(viewA).toEqual(viewB);
      expect(viewA).toMatchObject({ status: 'completed', round: ROUNDS, unitsDone: ROUNDS * UNITS_PER_ROUND });
      expect(viewA.metrics).toHaveLength(ROUNDS);

      // Blobs cross replicas both ways: result deltas uploaded to B are served by A, the model JSON stored by A by B.
      const deltas = await a.db.query<{ delta_hash: string }>(
        `SELECT delta_hash FROM results WHERE job_id = $1 AND status = 'accepted'`,
        [job.id],
      );
      // Deltas are nobody's download: A's store reads them.
      for (const { delta_hash } of deltas.rows) expect(sha256Hex((await a.blobs.get(delta_hash))!)).toBe(delta_hash);
      const { rows: jobRows } = await a.db.query<{ model_hash: string; weights_hash: string }>(
        'SELECT model_hash, weights_hash FROM jobs WHERE id = $1',
        [job.id],
      );
      for (const hash of [jobRows[0].model_hash, jobRows[0].weights_hash]) {
        expect(Buffer.from(await blob(a.url, hash, key)).equals(Buffer.from(await blob(b.url, hash, key)))).toBe(true);
      }
      // No replica wrote blob files: the blobs are in PostgreSQL.
      expect(existsSync(join(a.dataDir, 'blobs'))).toBe(false);
      expect(existsSync(join(b.dataDir, 'blobs'))).toBe(false);

      // The trained model downloads and loads from either replica, with the same weights.
      const modelA = await loadModel(a, job.id, key);
      const modelB = await loadModel(b, job.id, key);
      const wa = modelA.getWeights().map((t) => Array.from(t.dataSync()));
      const wb = modelB.getWeights().map((t) => Array.from(t.dataSync()));
      expect(wa.length).toBeGreaterThan(0);
      expect(wb).toEqual(wa);
      modelA.dispose();
      modelB.dispose();
    } finally {
      await stopWorkers(workers);
      await stop();
    }
  }, 300_000);

  it('replicas start together; work made on A reaches an idle worker on B at once; a lease revoked on A is revoked on B', async () => {
    const store = testStore('postgres');
    // Both start at once on a fresh schema: creating the schema and migrating must not race (it did, in the catalog).
    // B's idle workers would poll again only after a minute: anything sooner came through the relay.
    const started = await Promise.allSettled([
      startTestCoordinator(store, { replicaId: 'replica-a' }),
      startTestCoordinator(
        { ...store, dataDir: mkdtempSync(join(tmpdir(), 'swarmgrad-')) },
        { replicaId: 'replica-b', idleRetryMs: 60_000 },
      ),
    ]);
    const up = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    if (up.length < 2) {
      for (const c of up) await c.destroy();
      await dropSchema(store.databaseSchema as string);
      throw (started.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason;
    }
    const [a, b] = up;
    const w = await signedWorker(b.url, 'relay-worker');
    try {
      w.send({ type: 'request' });
      expect((await w.next()).type).toBe('idle');

      const job = await postJob(a.url, smallMnistJob({ rounds: 1, unitsPerRound: 1, targetAccuracy: undefined }));
      const lease = await w.nextOf('lease', 10_000);
      const held = await a.db.query<{ job_id: string }>('SELECT job_id FROM leases WHERE id = $1', [lease.leaseId]);
      expect(held.rows[0]?.job_id).toBe(job.id);

      const res = await fetch(`${a.url}/api/v1/jobs/${job.id}/cancel`, {
        method: 'POST',
        headers: { authorization: `Bearer ${a.requester.apiKey}` },
      });
      expect(res.status).toBe(200);
      const revoke = await w.nextOf('revoke', 10_000);
      expect(revoke).toMatchObject({ leaseId: lease.leaseId, reason: 'job cancelled' });
    } finally {
      w.close();
      await Promise.all([a.close(), b.close()]);
      await b.destroy();
      await a.destroy();
    }
  }, 60_000);

  it("a replica that goes silent: its workers' units reach an idle worker on another replica at the next sweep", async () => {
    // B's idle workers would poll again only after a minute: a lease sooner means the sweep announced the unit.
    const { a, b, stop } = await startReplicaPair({ b: { idleRetryMs: 60_000 } });
    const workers: { close(): void }[] = [];
    try {
      await postJob(a.url, smallMnistJob({ rounds: 1, unitsPerRound: 1, targetAccuracy: undefined }));
      const onA = await signedWorker(a.url, 'silent-replica-worker');
      workers.push(onA);
      onA.send({ type: 'request' });
      const first = await onA.nextOf('lease', 10_000);
      const onB = await signedWorker(b.url, 'waiting-worker');
      workers.push(onB);
      onB.send({ type: 'request' });
      expect((await onB.next()).type).toBe('idle');
      // A's heartbeat stops, as when its process dies without closing: the sweep detaches the lease (it stays
      // resumable) and puts the unit back on offer.
      await a.db.query('UPDATE workers SET last_seen = 0 WHERE lower(account) = lower($1)', [onA.identity.address]);
      const second = await onB.nextOf('lease', 15_000);
      const units = await a.db.query<{ id: string; unit: string }>(
        `SELECT id, job_id || '/' || round || '/' || idx AS unit FROM leases WHERE id = ANY($1::text[])`,
        [[first.leaseId, second.leaseId]],
      );
      expect(units.rows).toHaveLength(2);
      expect(units.rows[0].unit).toBe(units.rows[1].unit);
    } finally {
      for (const w of workers) w.close();
      await stop();
    }
  }, 60_000);
});
