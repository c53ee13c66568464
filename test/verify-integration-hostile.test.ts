import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { getTrust, verificationCost } from '../coordinator/verify/store.js';
import type { WeightSet } from '../shared/train/types.js';
import { encodeWeights, hashWeights } from '../shared/train/weights-format.js';
import { postJob, startTestCoordinator, testStore, waitFor, waitForJob } from './helpers/cluster.js';
import { signedWorker } from './helpers/identities.js';
import { RawWorker } from './helpers/raw-worker.js';
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

describe('a settlement that keeps failing is not retried forever', () => {
  it('after repeated errors the referee run of the whole unit settles it without any reveal', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    c.scheduler.verification.configure({ revealTimeoutMs: 10_000, selfAuditAfterMs: null, settleRetryMs: 100 });
    // Whatever a comparison of party data might still throw: every ordinary attempt fails.
    const engine = c.scheduler.verification.engine;
    const settle = engine.settleAudit.bind(engine);
    let failures = 0;
    engine.settleAudit = async (input) => {
      if (input.reexecute === 'settlement-errors') return settle(input);
      failures++;
      throw new Error('a comparison threw');
    };
    const workers: RawWorker[] = [];
    try {
      const job = await postJob(c.url, auditedJob());
      const mallory = await signedWorker(c.url, 'errors-mallory');
      const bob = await signedWorker(c.url, 'errors-bob');
      workers.push(mallory, bob);
      const lease = await mallory.lease();
      const cheat = await poisonedRun(await mallory.unitInputs(lease), 8, 1e-2);
      mallory.states.set(lease.leaseId, cheat.checkpointStates);
      expect(await mallory.submitRun(lease, cheat)).toMatchObject({ type: 'ack' });
      expect((await bob.trainAndSubmit()).answer).toMatchObject({ type: 'ack' });

      const audit = await waitFor('the settlement', async () => (await events(c, job.id, 'audit'))[0], 30_000);
      expect(failures).toBe(3);
      expect(audit.detail).toMatchObject({ reexecuted: 'settlement-errors', refereeSteps: 16 });
      expect(audit.detail.parties.a).toMatchObject({ account: mallory.account, verdict: 'invalid' });
      expect(audit.detail.parties.b).toMatchObject({ account: bob.account, verdict: 'valid' });
      await waitForJob(c.url, job.id, 30_000);
      expect((await resultsOf(c, job.id)).map((r) => r.status)).toEqual(['rejected', 'accepted']);
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

describe('the audit draw does not leak', () => {
  it('right after the ack, the public account views of an audited and an unaudited result look the same', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    // The first result is drawn for an audit, the second is not (both accounts are trusted: p = 0.1).
    c.scheduler.verification.configure({
      revealTimeoutMs: 10_000,
      selfAuditAfterMs: null,
      rng: script([0, 0.99], 0.5),
    });
    const workers: RawWorker[] = [];
    try {
      const job = await postJob(
        c.url,
        auditedJob({ budget: 1, unitsPerRound: 2, verification: { minAuditProbability: 0, checkpointEvery: 2 } }),
      );
      const alice = await signedWorker(c.url, 'leak-alice');
      const bob = await signedWorker(c.url, 'leak-bob');
      workers.push(alice, bob);
      for (const w of [alice, bob]) {
        await c.db.query(
          `INSERT INTO account_trust (account, consecutive_valid, total_valid, failures, updated_at)
           VALUES ($1, 20, 20, 0, $2)`,
          [w.account, Date.now()],
        );
      }
      const [la, lb] = [await alice.lease(), await bob.lease()];
      expect(await alice.submitRun(la, (await alice.train(la)).out)).toMatchObject({ type: 'ack' });
      expect(await bob.submitRun(lb, (await bob.train(lb)).out)).toMatchObject({ type: 'ack' });
      const rs = await resultsOf(c, job.id);
      expect(rs.map((r) => [r.account, r.status])).toEqual([
        [alice.account, 'pending'],
        [bob.account, 'accepted'],
      ]);
      await c.credits.sweeper.sweep();

      const view = async (w: RawWorker) => {
        const account = (await (await fetch(`${c.url}/api/v1/accounts/${w.account}`)).json()) as Record<
          string,
          unknown
        >;
        const credits = await (await fetch(`${c.url}/api/v1/accounts/${w.account}/credits`)).json();
        const { address: _a, ...rest } = account;
        const trust = rest.trust as Record<string, unknown> | null;
        return { ...rest, trust: trust ? { ...trust, account: 'x' } : trust, credits };
      };
      const [va, vb] = [await view(alice), await view(bob)];
      expect(vb).toEqual(va);
      expect(va.trust).toMatchObject({ total_valid: 20 });

      // Once the job ends every acceptance is published: both results are paid and counted.
      await fetch(`${c.url}/api/v1/jobs/${job.id}/cancel`, {
        method: 'POST',
        headers: { authorization: `Bearer ${c.requester.apiKey}` },
      });
      await waitFor('both published', async () => {
        await c.credits.sweeper.sweep();
        const [a, b] = [await view(alice), await view(bob)];
        const paid = (v: Record<string, unknown>) => (v.balances as { pending: number }).pending > 0;
        return paid(a) && paid(b) ? [a, b] : null;
      });
      expect((await view(alice)).trust).toMatchObject({ total_valid: 21 });
      expect((await view(bob)).trust).toMatchObject({ total_valid: 21 });
    } finally {
      for (const w of workers) w.close();
      await c.destroy();
    }
  });
});

describe('a pair that copies one result', () => {
  /** m1 submits a poisoned run (keeping its states); m2, handed the audit copy, submits m1's bytes and states. */
  async function copyPoisoned(m1: RawWorker, m2: RawWorker): Promise<void> {
    const lease1 = await m1.lease();
    const cheat = await poisonedRun(await m1.unitInputs(lease1), 8, 1e-2);
    m1.states.set(lease1.leaseId, cheat.checkpointStates);
    expect(await m1.submitRun(lease1, cheat)).toMatchObject({ type: 'ack' });
    const lease2 = await m2.lease();
    m2.states.set(lease2.leaseId, cheat.checkpointStates);
    expect(await m2.submitRun(lease2, cheat)).toMatchObject({ type: 'ack' });
  }

  it('a re-executed match convicts both copies; neither is credited', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    // rng 0: the spot check would pick the first segment, which the poisoned run reproduces.
    c.scheduler.verification.configure({
      revealTimeoutMs: 10_000,
      selfAuditAfterMs: null,
      rng: () => 0,
      reexecuteProbability: 1,
    });
    const workers: RawWorker[] = [];
    try {
      const job = await postJob(c.url, auditedJob({ budget: 1 }));
      const m1 = await signedWorker(c.url, 'copy-1');
      const m2 = await signedWorker(c.url, 'copy-2');
      workers.push(m1, m2);
      await copyPoisoned(m1, m2);
      const audit = await waitFor('the settlement', async () => (await events(c, job.id, 'audit'))[0], 30_000);
      expect(audit.detail).toMatchObject({ reexecuted: 'drawn', refereeSteps: 16 });
      expect(audit.detail.parties.a).toMatchObject({ account: m1.account, verdict: 'invalid' });
      expect(audit.detail.parties.b).toMatchObject({ account: m2.account, verdict: 'invalid' });
      expect((await resultsOf(c, job.id)).map((r) => r.status)).toEqual(['rejected', 'rejected']);
      await c.credits.sweeper.sweep();
      for (const m of [m1, m2]) {
        expect(await c.ledger.balances(m.account)).toMatchObject({ pending: 0, vested: 0 });
        expect(await getTrust(c.db, m.account)).toMatchObject({ failures: 1, totalValid: 0 });
      }
      const intents = await c.db.query('SELECT 1 FROM credit_intents WHERE job_id = $1', [job.id]);
      expect(intents.rows).toHaveLength(0);
    } finally {
      for (const w of workers) w.close();
      await c.destroy();
    }
  });

  it('a pair that meets too often has its matches re-executed', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    c.scheduler.verification.configure({
      revealTimeoutMs: 10_000,
      selfAuditAfterMs: null,
      rng: () => 0,
      reexecuteProbability: 0,
      pairWatch: { minMatches: 1, maxShare: 0.5 },
    });
    const workers: RawWorker[] = [];
    try {
      const job = await postJob(c.url, auditedJob({ rounds: 2 }));
      const m1 = await signedWorker(c.url, 'often-1');
      const m2 = await signedWorker(c.url, 'often-2');
      workers.push(m1, m2);
      // Round 0: an honest match, spot-checked as usual.
      await m1.trainAndSubmit();
      await m2.trainAndSubmit();
      const first = await waitFor('round 0', async () => (await events(c, job.id, 'audit'))[0], 30_000);
      expect(first.detail).toMatchObject({ reexecuted: null, refereeSteps: 2 });
      // Round 1: the same pair meets again, with one copied poisoned result.
      await copyPoisoned(m1, m2);
      const second = await waitFor('round 1', async () => (await events(c, job.id, 'audit'))[1], 30_000);
      expect(second.detail).toMatchObject({ reexecuted: 'watched-pair', refereeSteps: 16 });
      expect(second.detail.parties.a.verdict).toBe('invalid');
      expect(second.detail.parties.b.verdict).toBe('invalid');
      expect((await resultsOf(c, job.id)).filter((r) => r.round === 1).map((r) => r.status)).toEqual([
        'rejected',
        'rejected',
      ]);
    } finally {
      for (const w of workers) w.close();
      await c.destroy();
    }
  });
});

describe("the coordinator's work for others is bounded", () => {
  it('two accounts sending non-finite deltas get one whole-unit check within their budget; the next one waits', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    // Each account may cause one piece of coordinator work per window (a unit here is 16 x 16 = 256 example-steps).
    c.scheduler.verification.configure({ workBudget: { perJob: 1e12, perAccount: 1, windowMs: 3_600_000 } });
    const workers: RawWorker[] = [];
    try {
      const job = await postJob(c.url, auditedJob({ unitsPerRound: 2 }));
      const m1 = await signedWorker(c.url, 'nan-1');
      const m2 = await signedWorker(c.url, 'nan-2');
      workers.push(m1, m2);
      const first = await m1.lease();
      const { out } = await m1.train(first);
      const nan = structuredClone(out.delta);
      nan.data[0][0] = Number.NaN;
      const sendNan = async (w: RawWorker, lease: Awaited<ReturnType<RawWorker['lease']>>) => {
        const payload = encodeWeights(nan);
        expect(await w.submit(RawWorker.header(lease, out, payload), payload)).toMatchObject({
          type: 'reject',
          code: 'non_finite',
        });
      };
      // Round one: m1 has unit 0, m2 unit 1. Round two, swapped: each unit now has two non-finite witnesses.
      const second = await m2.lease();
      await sendNan(m1, first);
      await sendNan(m2, second);
      const [u0, u1] = [await m2.lease(), await m1.lease()];
      expect([u0.unit.dataSeed, u1.unit.dataSeed]).toEqual([first.unit.dataSeed, second.unit.dataSeed]);
      await sendNan(m2, u0);
      await sendNan(m1, u1);

      const checks = await waitFor(
        'both divergence decisions',
        async () => {
          const e = await events(c, job.id, 'divergence-check');
          return e.length >= 2 ? e : null;
        },
        30_000,
      );
      expect(checks.map((e) => e.outcome).sort()).toEqual(['deferred', 'finite']);
      expect(checks.find((e) => e.outcome === 'deferred')?.reason).toMatch(/work budget: account .* has caused 256/);
      // One unit trained by the coordinator, charged in the cost records; the job keeps running.
      expect((await verificationCost(c.db, job.id)).selfAuditSteps).toBe(16);
      expect(c.scheduler.verification.budget.accountUsed(m1.account)).toBe(256);
      expect(c.scheduler.verification.budget.jobUsed(job.id)).toBe(256);
    } finally {
      for (const w of workers) w.close();
      await c.destroy();
    }
  });

  it('a silent party whose whole-unit run would exceed its budget makes the settlement wait, not the coordinator work', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    c.scheduler.verification.configure({
      revealTimeoutMs: 1_000,
      selfAuditAfterMs: null,
      workBudget: { perJob: 1e12, perAccount: 1, windowMs: 3_600_000 },
    });
    const workers: RawWorker[] = [];
    try {
      const job = await postJob(c.url, auditedJob());
      const ghost = await signedWorker(c.url, 'budget-ghost');
      const bob = await signedWorker(c.url, 'budget-bob');
      workers.push(ghost, bob);
      // The ghost already caused its window's worth of coordinator work.
      c.scheduler.verification.budget.charge('elsewhere', 1_000, [ghost.account]);
      const lease = await ghost.lease();
      const cheat = await poisonedRun(await ghost.unitInputs(lease), 8, 1e-2);
      expect(await ghost.submitRun(lease, cheat)).toMatchObject({ type: 'ack' });
      ghost.revealer = () => 'silent';
      expect((await bob.trainAndSubmit()).answer).toMatchObject({ type: 'ack' });
      // The reveal deadline passes; the whole-unit run is not started: the unit is released for a later retry.
      await waitFor(
        'the deferral',
        async () => {
          const u = await c.db.query<{ status: string; settle_claimed_at: number | null }>(
            'SELECT status, settle_claimed_at FROM units WHERE job_id = $1',
            [job.id],
          );
          return ghost.revealRequests.length > 0 && u.rows[0].settle_claimed_at !== null ? u.rows[0] : null;
        },
        30_000,
      );
      await new Promise((r) => setTimeout(r, 2_500));
      expect(await events(c, job.id, 'audit')).toHaveLength(0);
      expect((await verificationCost(c.db, job.id)).refereeSteps).toBe(0);
      expect(c.scheduler.verification.budget.jobUsed(job.id)).toBe(0);
      expect((await resultsOf(c, job.id)).map((r) => r.status)).toEqual(['pending', 'pending']);
    } finally {
      for (const w of workers) w.close();
      await c.destroy();
    }
  });
});

describe('the self-audit slot is shared fairly', () => {
  it('goes round-robin over jobs: a later job is not queued behind all units of an earlier one', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    c.scheduler.verification.configure({ selfAuditAfterMs: null });
    const workers: RawWorker[] = [];
    try {
      const big = await postJob(c.url, auditedJob({ name: 'big', unitsPerRound: 3 }));
      const w = await signedWorker(c.url, 'rr-worker');
      workers.push(w);
      for (let i = 0; i < 3; i++) expect((await w.trainAndSubmit()).answer).toMatchObject({ type: 'ack' });
      const small = await postJob(c.url, auditedJob({ name: 'small' }));
      expect((await w.trainAndSubmit()).answer).toMatchObject({ type: 'ack' });
      // Four results held, nobody else to audit them: once all are due (twice the time their unit took), the
      // coordinator self-audits them one at a time.
      await waitFor(
        'all four due',
        async () => {
          const { rows } = await c.db.query<{ n: number }>(
            `SELECT count(*)::int AS n FROM units u JOIN results r ON r.id = u.audit_of JOIN leases l ON l.id = r.lease_id
             WHERE u.status = 'pending' AND u.audit_since < $1 - 2 * (r.created_at - l.created_at) - 10`,
            [Date.now()],
          );
          return rows[0].n === 4;
        },
        30_000,
      );
      c.scheduler.verification.configure({ selfAuditAfterMs: 1 });
      const order = await waitFor(
        'every self-audit',
        async () => {
          const { rows } = await c.db.query<{ job_id: string }>(
            `SELECT job_id FROM verification_events WHERE kind = 'self-audit' ORDER BY at, id`,
          );
          return rows.length >= 4 ? rows.map((r) => r.job_id) : null;
        },
        60_000,
      );
      expect(order.slice(0, 2).sort()).toEqual([big.id, small.id].sort());
    } finally {
      for (const x of workers) x.close();
      await c.destroy();
    }
  });
});
