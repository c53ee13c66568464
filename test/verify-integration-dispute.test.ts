import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import type { ForfeitRecord } from '../coordinator/verify/store.js';
import { getTrust, verificationCost } from '../coordinator/verify/store.js';
import { trainUnit } from '../shared/train/train-unit.js';
import { encodeWeights } from '../shared/train/weights-format.js';
import { DEFAULT_TOLERANCE } from '../shared/verify/tolerance.js';
import { getJob, postJob, startTestCoordinator, testStore, waitFor, waitForJob } from './helpers/cluster.js';
import { signedWorker } from './helpers/identities.js';
import { RawWorker } from './helpers/raw-worker.js';
import { auditedJob, events, keyShape, poisonedRun, resultsOf, withoutSecrets } from './helpers/verify-fixtures.js';

/**
 * Disputes through the live coordinator: RawWorkers on loopback, every unit audited (new accounts, and
 * minAuditProbability 1), reveals over the real WebSocket, the referee in the coordinator process. Units of 16 steps
 * with a checkpoint every 2 steps (8 segments).
 */

beforeAll(async () => {
  await tf.setBackend('wasm');
  await tf.ready();
});

/**
 * The cheater's side of the silence tests: leases the unit, trains it with a poison after step 8 and submits it
 * (acked: held for its audit). keepStates: it can answer reveals from its forged, self-consistent states.
 */
async function submitPoisoned(w: RawWorker, opts: { keepStates: boolean }): Promise<void> {
  const lease = await w.lease();
  const cheat = await poisonedRun(await w.unitInputs(lease), 8, 1e-2);
  if (opts.keepStates) w.states.set(lease.leaseId, cheat.checkpointStates);
  expect(await w.submitRun(lease, cheat)).toMatchObject({ type: 'ack' });
}

describe('a cheated unit, detected over the wire', () => {
  it('names the first bad segment, recomputes only it, rejects the cheater and accepts the honest result after one more audit', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    c.scheduler.verification.configure({ revealTimeoutMs: 10_000, selfAuditAfterMs: null });
    const forfeits: ForfeitRecord[] = [];
    c.scheduler.on('forfeit', (f: ForfeitRecord) => forfeits.push(f));
    const workers: RawWorker[] = [];
    try {
      const job = await postJob(c.url, auditedJob());
      const mallory = await signedWorker(c.url, 'verify-mallory');
      const bob = await signedWorker(c.url, 'verify-bob');
      const carol = await signedWorker(c.url, 'verify-carol');
      workers.push(mallory, bob, carol);

      // Mallory trains honestly, poisons the state after step 6, trains on from there and keeps its forged states.
      const leaseM = await mallory.lease();
      const cheat = await poisonedRun(await mallory.unitInputs(leaseM), 6, 1e-2);
      mallory.states.set(leaseM.leaseId, cheat.checkpointStates);
      const payloadM = encodeWeights(cheat.delta);
      expect(await mallory.submit(RawWorker.header(leaseM, cheat, payloadM), payloadM)).toMatchObject({ type: 'ack' });

      // The audit copy is an ordinary lease: same message type, same fields, same unit; only its secrets differ.
      const leaseB = await bob.lease();
      expect(leaseB.type).toBe('lease');
      expect(keyShape(leaseB)).toEqual(keyShape(leaseM));
      expect(withoutSecrets(leaseB)).toEqual(withoutSecrets(leaseM));
      expect(leaseB.leaseId).not.toBe(leaseM.leaseId);
      expect(leaseB.token).not.toBe(leaseM.token);
      const { out } = await bob.train(leaseB);
      const payloadB = encodeWeights(out.delta);
      expect(await bob.submit(RawWorker.header(leaseB, out, payloadB), payloadB)).toMatchObject({ type: 'ack' });

      const audit = await waitFor('the dispute', async () => (await events(c, job.id, 'audit'))[0], 30_000);
      expect(audit.detail.compare.verdict).toBe('mismatch');
      expect(audit.detail.dispute).toMatchObject({ by: 'referee', segment: [4, 6], losers: [mallory.account] });
      // The referee recomputed exactly one segment (k = 2 steps of 16).
      expect(audit.detail.dispute.refereeSteps).toBe(2);
      expect(audit.detail.parties.a).toMatchObject({ account: mallory.account, verdict: 'invalid' });
      expect(audit.detail.parties.b).toMatchObject({ account: bob.account, verdict: 'reaudit' });
      // Both were asked over the WebSocket: the final states, then ~log2(8) probes, then the segment's ends.
      expect(mallory.revealRequests.length).toBeGreaterThanOrEqual(3);
      expect(bob.revealRequests.length).toBeGreaterThanOrEqual(3);
      expect(mallory.revealRequests.length + bob.revealRequests.length).toBeLessThanOrEqual(2 * (1 + 3 + 2));
      expect((await verificationCost(c.db, job.id)).refereeSteps).toBe(2);

      // Consequences: Mallory's result is rejected, its trust reset, a forfeit recorded; it may drop its states.
      let rs = await resultsOf(c, job.id);
      expect(rs.find((r) => r.account === mallory.account)).toMatchObject({ status: 'rejected', role: 'primary' });
      expect(rs.find((r) => r.account === mallory.account)?.reason).toMatch(/steps \[4, 6\) do not reproduce/);
      expect(rs.find((r) => r.account === bob.account)).toMatchObject({ status: 'pending', role: 'audit' });
      expect(await getTrust(c.db, mallory.account)).toEqual({ consecutiveValid: 0, totalValid: 0, failures: 1 });
      expect(forfeits).toEqual([
        expect.objectContaining({ worker: mallory.account, eventKey: `forfeit:${leaseM.leaseId}`, jobId: job.id }),
      ]);
      expect(await events(c, job.id, 'forfeit')).toHaveLength(1);
      await waitFor('settled notice to the loser', async () => mallory.settledLeases.includes(leaseM.leaseId));
      expect((await getJob(c.url, job.id)).round).toBe(0);

      // The winner's result needs one more independent match: Carol gets the same unit, blind, and agrees.
      const leaseC = await carol.lease();
      expect(withoutSecrets(leaseC)).toEqual(withoutSecrets(leaseM));
      const second = await carol.train(leaseC);
      const payloadC = encodeWeights(second.out.delta);
      expect(await carol.submit(RawWorker.header(leaseC, second.out, payloadC), payloadC)).toMatchObject({
        type: 'ack',
      });
      const done = await waitForJob(c.url, job.id, 30_000);
      expect(done.unitsDone).toBe(1);
      rs = await resultsOf(c, job.id);
      expect(rs.map((r) => [r.account, r.status])).toEqual([
        [mallory.account, 'rejected'],
        [bob.account, 'accepted'],
        [carol.account, 'confirmed'],
      ]);
      const audits = await events(c, job.id, 'audit');
      expect(audits).toHaveLength(2);
      expect(audits[1].detail.compare.verdict).toBe('match');
      expect(audits[1].detail.parties.a.verdict).toBe('valid');
      expect(audits[1].detail.parties.b.verdict).toBe('valid');
      const cost = await verificationCost(c.db, job.id);
      // One segment for the dispute, one for the spot check of the match.
      expect(cost).toMatchObject({ refereeSteps: 4, disputes: 1, audits: 2, primarySteps: 16, auditSteps: 32 });
      expect(await getTrust(c.db, bob.account)).toMatchObject({ consecutiveValid: 1, failures: 0 });
      expect(await getTrust(c.db, carol.account)).toMatchObject({ consecutiveValid: 1, failures: 0 });
      // The round is aggregated: the winners may drop their states too.
      await waitFor('settled notices', async () => bob.settledLeases.includes(leaseB.leaseId));
      expect(forfeits).toHaveLength(1);
    } finally {
      for (const w of workers) w.close();
      await c.destroy();
    }
  });
});

describe('reveal rules', () => {
  it('a party whose revealed state does not hash to its commitment loses without any recomputation', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    c.scheduler.verification.configure({ revealTimeoutMs: 10_000, selfAuditAfterMs: null });
    const workers: RawWorker[] = [];
    try {
      const job = await postJob(c.url, auditedJob());
      const liar = await signedWorker(c.url, 'verify-liar');
      const bob = await signedWorker(c.url, 'verify-bob2');
      workers.push(liar, bob);
      const lease = await liar.lease();
      const inputs = await liar.unitInputs(lease);
      const cheat = await poisonedRun(inputs, 10, 1e-2);
      // It commits to its poisoned run but reveals honest states (which it hopes the referee would reproduce).
      const honest = await trainUnit({ ...inputs, keepCheckpointStates: true });
      liar.states.set(lease.leaseId, honest.checkpointStates!);
      const payload = encodeWeights(cheat.delta);
      expect(await liar.submit(RawWorker.header(lease, cheat, payload), payload)).toMatchObject({ type: 'ack' });
      const leaseB = await bob.lease();
      const { out } = await bob.train(leaseB);
      const payloadB = encodeWeights(out.delta);
      await bob.submit(RawWorker.header(leaseB, out, payloadB), payloadB);

      const audit = await waitFor('the dispute', async () => (await events(c, job.id, 'audit'))[0], 30_000);
      expect(audit.detail.dispute).toMatchObject({ by: 'forfeit', losers: [liar.account], refereeSteps: 0 });
      expect(audit.detail.dispute.faults).toEqual([
        expect.objectContaining({ party: 'a', code: 'reveal-hash-mismatch' }),
      ]);
      expect((await verificationCost(c.db, job.id)).refereeSteps).toBe(0);
      expect((await resultsOf(c, job.id))[0]).toMatchObject({ account: liar.account, status: 'rejected' });
    } finally {
      for (const w of workers) w.close();
      await c.destroy();
    }
  });

  it('a cheater that vanishes during the dispute loses once its reveal deadline passes, by a run of the whole unit', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    const deadline = 1_500;
    c.scheduler.verification.configure({ revealTimeoutMs: deadline, selfAuditAfterMs: null });
    const workers: RawWorker[] = [];
    try {
      const job = await postJob(c.url, auditedJob());
      const ghost = await signedWorker(c.url, 'verify-ghost');
      const bob = await signedWorker(c.url, 'verify-bob3');
      workers.push(ghost, bob);
      await submitPoisoned(ghost, { keepStates: false });
      // Gone before anyone can ask it anything: like a closed tab.
      ghost.vanish();

      const t0 = Date.now();
      await bob.trainAndSubmit();
      const audit = await waitFor('the dispute', async () => (await events(c, job.id, 'audit'))[0], 30_000);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(deadline);
      // Silence alone proves nothing: the referee ran the whole unit (16 steps) and the ghost's delta is not it.
      expect(audit.detail.dispute).toMatchObject({ by: 'recompute', losers: [ghost.account], refereeSteps: 16 });
      expect(audit.detail.dispute.faults).toEqual([expect.objectContaining({ party: 'a', code: 'reveal-timeout' })]);
      // Bob's delta is the whole run's: accepted outright, no re-audit.
      expect(audit.detail.parties.b).toMatchObject({ account: bob.account, verdict: 'valid' });
      const rs = await resultsOf(c, job.id);
      expect(rs.map((r) => r.status)).toEqual(['rejected', 'accepted']);
      expect(await getTrust(c.db, ghost.account)).toMatchObject({ failures: 1, consecutiveValid: 0 });
      expect(await getTrust(c.db, bob.account)).toMatchObject({ failures: 0 });
    } finally {
      for (const w of workers) w.close();
      await c.destroy();
    }
  });
  it('an honest volunteer that closes its tab during the dispute is not accused: the whole-unit run clears it', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    const deadline = 1_500;
    c.scheduler.verification.configure({ revealTimeoutMs: deadline, selfAuditAfterMs: null });
    const workers: RawWorker[] = [];
    try {
      const job = await postJob(c.url, auditedJob());
      const mallory = await signedWorker(c.url, 'verify-mallory-tab');
      const bob = await signedWorker(c.url, 'verify-bob-tab');
      workers.push(mallory, bob);
      // Mallory stays and answers every reveal from its forged (self-consistent) states.
      await submitPoisoned(mallory, { keepStates: true });

      // Bob does the audit copy honestly, uploads it, and closes the tab before anyone asks for his states.
      expect((await bob.trainAndSubmit()).answer).toMatchObject({ type: 'ack' });
      bob.vanish();

      const audit = await waitFor('the dispute', async () => (await events(c, job.id, 'audit'))[0], 30_000);
      expect(audit.detail.dispute).toMatchObject({ by: 'recompute', losers: [mallory.account], refereeSteps: 16 });
      expect(audit.detail.dispute.faults).toEqual([expect.objectContaining({ party: 'b', code: 'reveal-timeout' })]);
      expect(audit.detail.dispute.distances.b).toBeLessThan(DEFAULT_TOLERANCE);
      expect(audit.detail.parties.b).toMatchObject({ account: bob.account, verdict: 'valid' });
      expect(audit.detail.parties.a).toMatchObject({ account: mallory.account, verdict: 'invalid' });
      const rs = await resultsOf(c, job.id);
      expect(rs.map((r) => [r.account, r.status])).toEqual([
        [mallory.account, 'rejected'],
        [bob.account, 'accepted'],
      ]);
      expect((await events(c, job.id, 'forfeit')).map((e) => e.account)).toEqual([mallory.account]);
      expect(await getTrust(c.db, bob.account)).toMatchObject({ failures: 0, consecutiveValid: 1 });
      expect(await getTrust(c.db, mallory.account)).toMatchObject({ failures: 1 });
      await waitForJob(c.url, job.id, 30_000);
    } finally {
      for (const w of workers) w.close();
      await c.destroy();
    }
  });
});
