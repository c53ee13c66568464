import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { getTrust } from '../coordinator/verify/store.js';
import type { WeightSet } from '../shared/train/types.js';
import { hashWeights } from '../shared/train/weights-format.js';
import { postJob, startTestCoordinator, testStore, waitFor, waitForJob } from './helpers/cluster.js';
import { signedWorker } from './helpers/identities.js';
import type { RawWorker } from './helpers/raw-worker.js';
import { auditedJob, events, poisonedRun, resultsOf } from './helpers/verify-fixtures.js';

/**
 * Dishonest parties in a settlement, over real sockets (issue 9): malformed reveals, identical poisoned twins.
 * Units of 16 steps, a checkpoint every 2 (8 segments), every unit audited.
 */

beforeAll(async () => {
  await tf.setBackend('wasm');
  await tf.ready();
});

/** A scripted [0, 1) source: the given values in order, then `rest` forever. */
function script(values: number[], rest: number): () => number {
  let i = 0;
  return () => (i < values.length ? values[i++] : rest);
}

describe('a malformed reveal is its sender proven fault', () => {
  it('a party that commits to and reveals states of the wrong layout loses at once; the honest result is accepted and the round completes', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    c.scheduler.verification.configure({ revealTimeoutMs: 10_000, selfAuditAfterMs: null });
    const workers: RawWorker[] = [];
    try {
      const job = await postJob(c.url, auditedJob());
      const mallory = await signedWorker(c.url, 'hostile-malformed');
      const bob = await signedWorker(c.url, 'hostile-bob');
      const carol = await signedWorker(c.url, 'hostile-carol');
      workers.push(mallory, bob, carol);

      // Mallory's states carry one tensor too many; its commitments hash those states, so every reveal matches them.
      const lease = await mallory.lease();
      const cheat = await poisonedRun(await mallory.unitInputs(lease), 8, 1e-2);
      const odd: WeightSet[] = cheat.checkpointStates.map((s) => ({
        names: [...s.names, '@opt/extra'],
        shapes: [...s.shapes, [3]],
        data: [...s.data, new Float32Array(3)],
      }));
      mallory.states.set(lease.leaseId, odd);
      expect(await mallory.submitRun(lease, { ...cheat, checkpoints: odd.map(hashWeights) })).toMatchObject({
        type: 'ack',
      });
      expect((await bob.trainAndSubmit()).answer).toMatchObject({ type: 'ack' });

      const audit = await waitFor('the dispute', async () => (await events(c, job.id, 'audit'))[0], 30_000);
      expect(audit.detail.dispute).toMatchObject({ by: 'forfeit', losers: [mallory.account], refereeSteps: 0 });
      expect(audit.detail.dispute.faults).toEqual([
        expect.objectContaining({ party: 'a', code: 'reveal-bad-shape', reason: expect.stringMatching(/malformed/) }),
      ]);
      const rs = await resultsOf(c, job.id);
      expect(rs.map((r) => [r.account, r.status])).toEqual([
        [mallory.account, 'rejected'],
        [bob.account, 'pending'],
      ]);
      expect(rs[0].reason).toMatch(/malformed/);
      expect(await getTrust(c.db, mallory.account)).toMatchObject({ failures: 1 });

      // Bob's win needs one more independent match: Carol does the unit honestly, and the round completes.
      expect((await carol.trainAndSubmit()).answer).toMatchObject({ type: 'ack' });
      const done = await waitForJob(c.url, job.id, 30_000);
      expect(done.unitsDone).toBe(1);
      expect((await resultsOf(c, job.id)).map((r) => [r.account, r.status])).toEqual([
        [mallory.account, 'rejected'],
        [bob.account, 'accepted'],
        [carol.account, 'confirmed'],
      ]);
      expect(await getTrust(c.db, bob.account)).toMatchObject({ failures: 0, consecutiveValid: 1 });
    } finally {
      for (const w of workers) w.close();
      await c.destroy();
    }
  });
});

describe('identical twins share one verdict', () => {
  it('a pair submitting the same poisoned bytes is convicted together when one spot check fails', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    // Engine draws in order: the audit draw (0.4 < 1), the party spot-checked first (0.4: the original), its segment
    // (0.4: the 4th, steps [6, 8), whose end is the poisoned state); then 0: a fresh draw for the twin would be the
    // 1st segment, which the poisoned run reproduces.
    c.scheduler.verification.configure({
      revealTimeoutMs: 10_000,
      selfAuditAfterMs: null,
      rng: script([0.4, 0.4, 0.4], 0),
    });
    const workers: RawWorker[] = [];
    try {
      const job = await postJob(c.url, auditedJob());
      const m1 = await signedWorker(c.url, 'hostile-twin-1');
      const m2 = await signedWorker(c.url, 'hostile-twin-2');
      workers.push(m1, m2);
      const lease1 = await m1.lease();
      const cheat = await poisonedRun(await m1.unitInputs(lease1), 8, 1e-2);
      m1.states.set(lease1.leaseId, cheat.checkpointStates);
      expect(await m1.submitRun(lease1, cheat)).toMatchObject({ type: 'ack' });
      // The partner takes the audit copy and hands in the same bytes, answering reveals with the same states.
      const lease2 = await m2.lease();
      m2.states.set(lease2.leaseId, cheat.checkpointStates);
      expect(await m2.submitRun(lease2, cheat)).toMatchObject({ type: 'ack' });

      const audit = await waitFor('the settlement', async () => (await events(c, job.id, 'audit'))[0], 30_000);
      expect(audit.detail.compare).toMatchObject({ verdict: 'match', how: 'identical' });
      expect(audit.detail.parties.a).toMatchObject({ account: m1.account, verdict: 'invalid' });
      expect(audit.detail.parties.b).toMatchObject({ account: m2.account, verdict: 'invalid' });
      const rs = await resultsOf(c, job.id);
      expect(rs.map((r) => [r.account, r.status])).toEqual([
        [m1.account, 'rejected'],
        [m2.account, 'rejected'],
      ]);
      expect(rs[1].reason).toMatch(/identical to a result proven wrong/);
      expect(await getTrust(c.db, m1.account)).toMatchObject({ failures: 1, totalValid: 0 });
      expect(await getTrust(c.db, m2.account)).toMatchObject({ failures: 1, totalValid: 0 });
      expect((await events(c, job.id, 'forfeit')).map((e) => e.account).sort()).toEqual(
        [m1.account, m2.account].sort(),
      );
    } finally {
      for (const w of workers) w.close();
      await c.destroy();
    }
  });

  it('an honest twin of a party whose revealed states are false is cleared by the whole-unit run', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    c.scheduler.verification.configure({ revealTimeoutMs: 10_000, selfAuditAfterMs: null, rng: script([0.4, 0.4], 0) });
    const workers: RawWorker[] = [];
    try {
      const job = await postJob(c.url, auditedJob());
      const mallory = await signedWorker(c.url, 'hostile-framer');
      const bob = await signedWorker(c.url, 'hostile-bob-twin');
      workers.push(mallory, bob);
      // Mallory computes the honest delta but reveals a forged first state: it tries to drag Bob's identical bytes down.
      const lease = await mallory.lease();
      const { out } = await mallory.train(lease);
      const states = mallory.states.get(lease.leaseId)!;
      const forged = { ...states[0], data: states[0].data.map((d) => d.map((v) => v + 0.01)) };
      const lying = [forged, ...states.slice(1)];
      mallory.states.set(lease.leaseId, lying);
      expect(await mallory.submitRun(lease, { ...out, checkpoints: lying.map(hashWeights) })).toMatchObject({
        type: 'ack',
      });
      expect((await bob.trainAndSubmit()).answer).toMatchObject({ type: 'ack' });

      const audit = await waitFor('the settlement', async () => (await events(c, job.id, 'audit'))[0], 30_000);
      expect(audit.detail.compare).toMatchObject({ how: 'identical' });
      expect(audit.detail.parties.a).toMatchObject({ account: mallory.account, verdict: 'invalid' });
      expect(audit.detail.parties.b).toMatchObject({ account: bob.account, verdict: 'valid' });
      await waitForJob(c.url, job.id, 30_000);
      expect((await resultsOf(c, job.id)).map((r) => [r.account, r.status])).toEqual([
        [mallory.account, 'rejected'],
        [bob.account, 'accepted'],
      ]);
      expect(await getTrust(c.db, bob.account)).toMatchObject({ failures: 0 });
    } finally {
      for (const w of workers) w.close();
      await c.destroy();
    }
  });
});
