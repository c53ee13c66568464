import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { encodeWeights } from '../shared/train/weights-format.js';
import { postJob, startTestCoordinator, testStore, waitFor } from './helpers/cluster.js';
import { signedWorker } from './helpers/identities.js';
import { RawWorker } from './helpers/raw-worker.js';
import { STORE_KINDS } from './helpers/stores.js';
import { auditedJob, poisonedRun } from './helpers/verify-fixtures.js';

/**
 * The whole forfeit path, live: a worker earns pending credit with honest, audited units on two jobs, then cheats in
 * the second job's next round, loses the dispute (verification: bisection and the referee), and the scheduler's
 * 'forfeit' event takes its unvested credit of that job back through the credits layer: to the requester, less the
 * treasury's fee. Its credit from the other job, and the honest auditor's credit, are untouched.
 */

beforeAll(async () => {
  await tf.setBackend('wasm');
  await tf.ready();
});

async function honestUnit(w: RawWorker): Promise<void> {
  const lease = await w.lease();
  const { out } = await w.train(lease);
  const payload = encodeWeights(out.delta);
  expect(await w.submit(RawWorker.header(lease, out, payload), payload)).toMatchObject({ type: 'ack' });
}

describe.each(STORE_KINDS)('a dispute loser on %s', (kind) => {
  it('ends with its unvested credit forfeited; the winner keeps its credit', async () => {
    const c = await startTestCoordinator(testStore(kind), { challengeWindowMs: 600_000, forfeitFeeRate: 0.1 });
    c.scheduler.verification.configure({ revealTimeoutMs: 10_000, selfAuditAfterMs: null });
    const workers: RawWorker[] = [];
    try {
      const mallory = await signedWorker(c.url, `dispute-mallory-${kind}`);
      const bob = await signedWorker(c.url, `dispute-bob-${kind}`);
      workers.push(mallory, bob);
      const M = mallory.identity.address;
      const B = bob.identity.address;

      // An honest unit by Mallory, audited by Bob: both are paid (pending, the window is 10 minutes).
      const honest = await postJob(c.url, auditedJob({ name: 'honest', budget: 1 }));
      await honestUnit(mallory);
      await honestUnit(bob);
      await waitFor(
        'both credited',
        async () => (await c.ledger.balances(M)).pending > 0 && (await c.ledger.balances(B)).pending > 0,
        30_000,
      );
      const earned = (await c.ledger.balances(M)).pending;
      const bobEarned = (await c.ledger.balances(B)).pending;
      expect((await c.ledger.credits({ worker: M })).map((x) => [x.jobId, x.status])).toEqual([[honest.id, 'pending']]);

      // The next job: an honest first round by Mallory (audited by Bob), credited too.
      const cheated = await postJob(c.url, auditedJob({ name: 'cheated', budget: 1, rounds: 2 }));
      await honestUnit(mallory);
      await honestUnit(bob);
      await waitFor(
        'Mallory credited on the second job',
        async () => (await c.ledger.balances(M)).pending > earned,
        30_000,
      );
      const earnedHere = (await c.ledger.balances(M)).pending - earned;

      // In its second round Mallory cheats; Bob's audit copy disagrees; the referee finds Mallory's bad segment.
      const lease = await mallory.lease();
      const cheat = await poisonedRun(await mallory.unitInputs(lease), 6, 1e-2);
      mallory.states.set(lease.leaseId, cheat.checkpointStates);
      const payload = encodeWeights(cheat.delta);
      expect(await mallory.submit(RawWorker.header(lease, cheat, payload), payload)).toMatchObject({ type: 'ack' });
      await honestUnit(bob);

      // The forfeit takes the credit of the disputed job only: Mallory's credit from the first job stays pending.
      await waitFor('the forfeit', async () => (await c.ledger.balances(M)).pending === earned, 60_000);
      const credits = await c.ledger.credits({ worker: M });
      const byJob = Object.fromEntries(credits.map((x) => [x.jobId, x.status]));
      expect(byJob).toEqual({ [honest.id]: 'pending', [cheated.id]: 'forfeited' });
      const forfeited = credits.find((x) => x.jobId === cheated.id)!;
      expect(forfeited.settleEvent).toBe(`forfeit:${lease.leaseId}`);
      expect(await c.ledger.balances(M)).toMatchObject({ pending: earned, vested: 0 });
      const fee = Math.floor(earnedHere * 0.1);
      expect((await c.ledger.systemBalances()).treasury).toBe(fee);
      // The forfeit event and the verification record agree, and the record is marked delivered.
      const ev = await c.ledger.postingsForEvent(`forfeit:${lease.leaseId}`);
      expect(ev?.kind).toBe('forfeit');
      expect(ev?.postings.reduce((s, p) => s + p.amount, 0)).toBe(0);
      const rec = await c.db.query<{ delivered_at: number | null }>(
        `SELECT delivered_at FROM verification_events WHERE id = $1`,
        [`forfeit:${lease.leaseId}`],
      );
      expect(rec.rows[0].delivered_at).not.toBeNull();
      // Bob's credit (his audit of the honest job, and nothing for the cheated one yet) is untouched.
      expect((await c.ledger.balances(B)).pending).toBeGreaterThanOrEqual(bobEarned);
      expect((await c.ledger.checkIntegrity()).ok).toBe(true);
      expect(cheated.id).not.toBe(honest.id);
    } finally {
      for (const w of workers) w.close();
      await c.destroy();
    }
  });
});
