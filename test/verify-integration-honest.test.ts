import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runHeadlessWorker } from '../bin/headless-worker.js';
import { getTrust, verificationCost } from '../coordinator/verify/store.js';
import { mnistCnnModel } from '../shared/train/templates.js';
import { encodeWeights } from '../shared/train/weights-format.js';
import { DEFAULT_TOLERANCE } from '../shared/verify/tolerance.js';
import {
  postJob,
  spawnWorker,
  startTestCoordinator,
  stopWorkers,
  testStore,
  waitFor,
  waitForJob,
} from './helpers/cluster.js';
import { signedWorker, testIdentity } from './helpers/identities.js';
import { RawWorker } from './helpers/raw-worker.js';
import { auditedJob, events, resultsOf } from './helpers/verify-fixtures.js';

/**
 * Honest work through the live coordinator: two workers on different tfjs backends audit each other and are
 * accepted; a worker keeps its checkpoint states exactly until the coordinator says the unit is settled; cheap checks
 * catch a made-up loss trace on every result.
 */

beforeAll(async () => {
  await tf.setBackend('wasm');
  await tf.ready();
});

afterAll(() => {
  tf.disposeVariables();
});

describe('two honest workers on different backends', () => {
  it('audit each other blind; both copies are valid, one counts, both keep their states until settled', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    c.scheduler.verification.configure({ revealTimeoutMs: 20_000, selfAuditAfterMs: null });
    // A worker process on the cpu backend, and a WorkerLoop on wasm in this process (so the test can look inside).
    const cpu = spawnWorker(c.url, 'verify-honest-cpu', 'cpu');
    const wasmId = testIdentity('verify-honest-wasm');
    const wasm = await runHeadlessWorker({ coordinator: c.url, privateKey: wasmId.privateKey, backend: 'wasm' });
    const keptAfterAck: number[] = [];
    let wasmRevealed = 0;
    wasm.loop.on((e) => {
      if (e.type === 'receipt' && e.receipt.status === 'accepted') keptAfterAck.push(wasm.loop.keptLeases.length);
      if (e.type === 'log' && /^revealed checkpoint/.test(e.message)) wasmRevealed++;
    });
    try {
      const job = await postJob(c.url, auditedJob({ rounds: 2 }));
      const done = await waitForJob(c.url, job.id, 75_000);
      expect(done.unitsDone).toBe(2);
      const rs = await resultsOf(c, job.id);
      for (const round of [0, 1]) {
        const unit = rs.filter((r) => r.round === round);
        expect(unit.map((r) => r.status).sort()).toEqual(['accepted', 'confirmed']);
        expect(unit.map((r) => r.backend).sort()).toEqual(['cpu', 'wasm']);
        expect(unit.map((r) => r.role).sort()).toEqual(['audit', 'primary']);
      }
      const audits = await events(c, job.id, 'audit');
      expect(audits).toHaveLength(2);
      for (const a of audits) {
        // Different backends: not bit-identical, but far inside the tolerance.
        expect(a.detail.compare).toMatchObject({ verdict: 'match', how: 'within-tolerance' });
        expect(a.detail.compare.deltaDistance).toBeGreaterThan(0);
        expect(a.detail.compare.deltaDistance).toBeLessThan(DEFAULT_TOLERANCE / 10);
        expect(a.detail.dispute).toBeNull();
        const spot = Object.values(a.detail.spotChecks) as { ok: boolean; refereeSteps: number }[];
        expect(spot).toEqual([expect.objectContaining({ ok: true, refereeSteps: 2 })]);
        expect(a.detail.parties.a.verdict).toBe('valid');
        expect(a.detail.parties.b.verdict).toBe('valid');
      }
      const cost = await verificationCost(c.db, job.id);
      expect(cost).toMatchObject({ audits: 2, disputes: 0, refereeSteps: 4, primarySteps: 32, auditSteps: 32 });
      expect(cost.cheapExamples).toBeGreaterThanOrEqual(4 * 2 * 16);
      for (const account of [cpu.account, wasm.account]) {
        expect(await getTrust(c.db, account)).toEqual({ consecutiveValid: 2, totalValid: 2, failures: 0 });
      }
      // The wasm worker kept its states after each ack (its unit was not settled yet) and dropped them once the
      // round was aggregated.
      expect(keptAfterAck.length).toBe(2);
      expect(keptAfterAck.every((n) => n >= 1)).toBe(true);
      await waitFor('states dropped after settled', async () => wasm.loop.keptLeases.length === 0, 10_000);
      // Spot checks asked one party of each audit for its states over the socket (2-3 states each), and the worker
      // loops answered every request.
      const cpuRevealed = cpu.output.join('').match(/revealed checkpoint/g)?.length ?? 0;
      expect(cost.reveals).toBeGreaterThanOrEqual(4);
      expect(cpuRevealed + wasmRevealed).toBe(cost.reveals);
    } finally {
      await wasm.stop();
      await stopWorkers([cpu]);
      await c.destroy();
    }
  });
});

describe('cheap checks on every result', () => {
  it('reject a made-up loss trace before any audit, and reset the account', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    c.scheduler.verification.configure({ selfAuditAfterMs: null });
    const w = await signedWorker(c.url, 'verify-faker');
    try {
      const job = await postJob(c.url, auditedJob());
      const lease = await w.lease();
      const { out } = await w.train(lease);
      const payload = encodeWeights(out.delta);
      // Claims a loss curve it never saw: the coordinator's forward pass of the round's weights on batch 0 disagrees.
      const header = { ...RawWorker.header(lease, out, payload), losses: out.losses.map((l) => l * 0.5) };
      const answer = await w.submit(header, payload);
      expect(answer).toMatchObject({ type: 'reject', code: 'first_loss_mismatch' });
      const [check] = await events(c, job.id, 'cheap-check');
      expect(check).toMatchObject({ account: w.account, outcome: 'first_loss_mismatch' });
      expect(await events(c, job.id, 'forfeit')).toHaveLength(1);
      expect(await getTrust(c.db, w.account)).toMatchObject({ failures: 1, consecutiveValid: 0 });
      // No audit was spent on it, and the unit is on offer again.
      expect(await events(c, job.id, 'audit')).toHaveLength(0);
      expect((await resultsOf(c, job.id)).map((r) => r.status)).toEqual(['rejected']);
      const again = await w.lease();
      expect(again.unit).toEqual(lease.unit);
    } finally {
      w.close();
      await c.destroy();
    }
  });
});

describe('a statistical cheap check that honest work fails', () => {
  it('makes the result suspect: audited whatever the draw, never refused or punished, accepted once the audit matches', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    // Draws never ask for an audit of a trusted account; the progress check is off for the control unit.
    c.scheduler.verification.configure({
      selfAuditAfterMs: null,
      rng: () => 0.999,
      cheapCheckBounds: { minQuarterSteps: 10_000 },
    });
    const alice = await signedWorker(c.url, 'suspect-alice');
    const bob = await signedWorker(c.url, 'suspect-bob');
    try {
      await c.db.query(
        `INSERT INTO account_trust (account, consecutive_valid, total_valid, failures, updated_at)
         VALUES ($1, 100, 100, 0, $2)`,
        [alice.account, Date.now()],
      );
      const job = await postJob(
        c.url,
        auditedJob({ unitsPerRound: 2, verification: { minAuditProbability: 0, checkpointEvery: 2, tolerance: 0 } }),
      );
      const submitHonest = async (w: RawWorker) => {
        const { lease, answer } = await w.trainAndSubmit();
        // Leases are blind (no unit index); the coordinator's unit row is found by its data seed.
        const unit = await c.db.query<{ idx: number }>('SELECT idx FROM units WHERE job_id = $1 AND data_seed = $2', [
          job.id,
          lease.unit.dataSeed,
        ]);
        return { answer, idx: unit.rows[0].idx };
      };
      // Control: nothing suspect, a trusted account, a draw that says no: accepted at once, no audit.
      const first = await submitHonest(alice);
      expect(first.answer).toMatchObject({ type: 'ack' });
      expect((await resultsOf(c, job.id)).map((r) => [r.idx, r.status])).toEqual([[first.idx, 'accepted']]);

      // Now the progress check fails for any work at all (improvement must exceed 100%), as it rarely does for
      // honest units with the real bounds.
      c.scheduler.verification.configure({
        cheapCheckBounds: {
          claimedProgress: -1,
          claimedProgressAbs: Number.NEGATIVE_INFINITY,
          minQuarterSteps: 1,
          minRelativeImprovement: 2,
          progressSlack: 0,
        },
      });
      const second = await submitHonest(alice);
      expect(second.answer).toMatchObject({ type: 'ack' });
      const idx = second.idx;
      expect(idx).not.toBe(first.idx);
      const held = (await resultsOf(c, job.id)).find((r) => r.idx === idx)!;
      expect(held).toMatchObject({ account: alice.account, status: 'pending' });
      const unit = await c.db.query<{ status: string; audit_of: string }>(
        'SELECT status, audit_of FROM units WHERE job_id = $1 AND idx = $2',
        [job.id, idx],
      );
      expect(unit.rows[0]).toEqual({ status: 'pending', audit_of: held.id });
      const [suspect] = await events(c, job.id, 'cheap-check');
      expect(suspect).toMatchObject({ account: alice.account, result_id: held.id, outcome: 'suspect: no_progress' });
      expect(await getTrust(c.db, alice.account)).toMatchObject({ failures: 0 });

      // Bob gets the audit copy (blind), his honest copy is suspect too: the audit's exact comparison decides.
      const copy = await submitHonest(bob);
      expect(copy.idx).toBe(idx);
      expect(copy.answer).toMatchObject({ type: 'ack' });
      const done = await waitForJob(c.url, job.id, 60_000);
      expect(done.unitsDone).toBe(2);
      const rs = (await resultsOf(c, job.id)).filter((r) => r.idx === idx);
      expect(rs.map((r) => [r.account, r.status])).toEqual([
        [alice.account, 'accepted'],
        [bob.account, 'confirmed'],
      ]);
      const [audit] = await events(c, job.id, 'audit');
      expect(audit.detail.parties.a.verdict).toBe('valid');
      expect(audit.detail.parties.b.verdict).toBe('valid');
      expect(await events(c, job.id, 'forfeit')).toHaveLength(0);
      expect(await getTrust(c.db, alice.account)).toMatchObject({ failures: 0, consecutiveValid: 102 });
      expect(await getTrust(c.db, bob.account)).toMatchObject({ failures: 0 });
    } finally {
      alice.close();
      bob.close();
      await c.destroy();
    }
  });
});

describe('a convolutional job, audited, with every party on wasm', () => {
  it('is trained, audited and spot-checked by the referee on the coordinator (conv gradients bridged on wasm)', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    c.scheduler.verification.configure({ selfAuditAfterMs: null });
    const alice = await signedWorker(c.url, 'cnn-alice');
    const bob = await signedWorker(c.url, 'cnn-bob');
    try {
      const job = await postJob(c.url, auditedJob({ model: mnistCnnModel(), localSteps: 4, batchSize: 8 }));
      for (const w of [alice, bob]) {
        const { out, answer } = await w.trainAndSubmit();
        expect(out.backend).toBe('wasm');
        expect(answer).toMatchObject({ type: 'ack' });
      }
      const done = await waitForJob(c.url, job.id, 60_000);
      expect(done.unitsDone).toBe(1);
      const [audit] = await events(c, job.id, 'audit');
      // The match was spot-checked: the coordinator recomputed a segment of a CNN unit on wasm.
      const spot = Object.values(audit.detail.spotChecks) as { ok: boolean; refereeSteps: number }[];
      expect(spot).toEqual([expect.objectContaining({ ok: true, refereeSteps: 2 })]);
      expect((await resultsOf(c, job.id)).map((r) => r.status).sort()).toEqual(['accepted', 'confirmed']);
    } finally {
      alice.close();
      bob.close();
      await c.destroy();
    }
  });
});
