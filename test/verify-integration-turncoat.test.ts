import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { getTrust } from '../coordinator/verify/store.js';
import { encodeWeights } from '../shared/train/weights-format.js';
import { getJob, postJob, startTestCoordinator, testStore, waitFor } from './helpers/cluster.js';
import { signedWorker } from './helpers/identities.js';
import { RawWorker } from './helpers/raw-worker.js';
import { auditedJob, events, poisonedRun, resultsOf } from './helpers/verify-fixtures.js';

/**
 * A turncoat: a trusted account (audited with p = 0.1) that had two results accepted without an audit, then cheats
 * and is caught. Its results not yet aggregated are dropped and their units reissued; the round cannot complete
 * while a unit is under audit, and completes later without any of its results.
 */

beforeAll(async () => {
  await tf.setBackend('wasm');
  await tf.ready();
});

/** Leases, trains honestly and submits until `stop` says so. */
async function honestLoop(w: RawWorker, stop: () => Promise<boolean>): Promise<number> {
  let submitted = 0;
  while (!(await stop())) {
    let lease: Awaited<ReturnType<RawWorker['lease']>>;
    try {
      lease = await w.lease(2_000);
    } catch {
      continue;
    }
    const { out } = await w.train(lease);
    const payload = encodeWeights(out.delta);
    const answer = await w.submit(RawWorker.header(lease, out, payload), payload);
    if (answer.type === 'ack') submitted++;
  }
  return submitted;
}

describe('a turncoat caught cheating', () => {
  it('loses its unaggregated results: their units are reissued and the round completes without them', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    // Audit draws are scripted: 0.99 never audits a trusted account (p = 0.1), 0 always does.
    let auditNext = false;
    c.scheduler.verification.configure({
      revealTimeoutMs: 10_000,
      selfAuditAfterMs: null,
      rng: () => (auditNext ? 0 : 0.99),
    });
    const workers: RawWorker[] = [];
    try {
      const job = await postJob(
        c.url,
        auditedJob({ unitsPerRound: 3, verification: { minAuditProbability: 0, checkpointEvery: 2, tolerance: 0 } }),
      );
      // Alone online, the turncoat may take the whole round (with others online it gets its share only:
      // lease-terms.test.ts); the honest workers connect once its three units are in.
      const turncoat = await signedWorker(c.url, 'verify-turncoat');
      workers.push(turncoat);
      // 100 valid results in a row: audited with the floor probability only.
      await c.db.query(
        `INSERT INTO account_trust (account, consecutive_valid, total_valid, failures, updated_at)
         VALUES ($1, 100, 100, 0, $2)`,
        [turncoat.account, Date.now()],
      );

      // Two honest units, accepted without an audit.
      const honestLeases: string[] = [];
      for (let i = 0; i < 2; i++) {
        const lease = await turncoat.lease();
        honestLeases.push(lease.leaseId);
        const { out } = await turncoat.train(lease);
        const payload = encodeWeights(out.delta);
        expect(await turncoat.submit(RawWorker.header(lease, out, payload), payload)).toMatchObject({ type: 'ack' });
      }
      let rs = await resultsOf(c, job.id);
      expect(rs.map((r) => [r.idx, r.status])).toEqual([
        [0, 'accepted'],
        [1, 'accepted'],
      ]);
      expect(await getTrust(c.db, turncoat.account)).toMatchObject({ consecutiveValid: 102 });

      // Then it cheats, and this one is drawn for an audit.
      auditNext = true;
      const lease = await turncoat.lease();
      const cheat = await poisonedRun(await turncoat.unitInputs(lease), 4, 1e-2);
      turncoat.states.set(lease.leaseId, cheat.checkpointStates);
      const payload = encodeWeights(cheat.delta);
      expect(await turncoat.submit(RawWorker.header(lease, cheat, payload), payload)).toMatchObject({ type: 'ack' });
      auditNext = false;
      const h1 = await signedWorker(c.url, 'verify-h1');
      const h2 = await signedWorker(c.url, 'verify-h2');
      workers.push(h1, h2);
      // Two of three units are done, the third is under audit: the round must wait.
      await new Promise((r) => setTimeout(r, 600));
      expect((await getJob(c.url, job.id)).round).toBe(0);

      const finished = async () => (await getJob(c.url, job.id)).status === 'completed';
      const [n1, n2] = await Promise.all([honestLoop(h1, finished), honestLoop(h2, finished)]);
      expect(n1 + n2).toBeGreaterThanOrEqual(4);

      const audits = await events(c, job.id, 'audit');
      const caught = audits.find((a) => a.detail.dispute?.losers?.includes(turncoat.account));
      expect(caught?.detail.dispute).toMatchObject({ by: 'referee', segment: [2, 4], refereeSteps: 2 });
      const reissues = await events(c, job.id, 'reissue');
      expect(reissues.map((e) => [e.idx, e.outcome]).sort()).toEqual([
        [0, 'unit reissued'],
        [1, 'unit reissued'],
      ]);
      expect(await events(c, job.id, 'forfeit')).toHaveLength(1);

      rs = await resultsOf(c, job.id);
      const mine = rs.filter((r) => r.account === turncoat.account);
      expect(mine.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected']);
      expect(mine.slice(0, 2).every((r) => /^reissued: /.test(r.reason ?? ''))).toBe(true);
      const accepted = rs.filter((r) => r.status === 'accepted');
      expect(accepted.map((r) => r.idx).sort()).toEqual([0, 1, 2]);
      expect(accepted.every((r) => r.account !== turncoat.account)).toBe(true);
      const done = await getJob(c.url, job.id);
      expect(done).toMatchObject({ status: 'completed', round: 1, unitsDone: 3 });
      expect(done.metrics[0].units).toBe(3);

      // The turncoat is back to being audited on every unit; the honest accounts were not touched.
      expect(await getTrust(c.db, turncoat.account)).toMatchObject({ consecutiveValid: 0, failures: 1 });
      for (const w of [h1, h2]) expect((await getTrust(c.db, w.account)).failures).toBe(0);
      // It was told it may drop the states of every result it lost.
      await waitFor('settled notices', async () =>
        [...honestLeases, lease.leaseId].every((l) => turncoat.settledLeases.includes(l)),
      );
    } finally {
      for (const w of workers) w.close();
      await c.destroy();
    }
  });
});
