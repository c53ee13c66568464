import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { JobRow } from '../coordinator/scheduler/job-repo.js';
import type { LeaseMsg } from '../shared/protocol/messages.js';
import { encodeWeights } from '../shared/train/weights-format.js';
import {
  getJob,
  postJob,
  smallMnistJob,
  startTestCoordinator,
  type TestCoordinator,
  testStore,
  waitFor,
} from './helpers/cluster.js';
import { postOffer, signedWorker, type TestIdentity, testIdentity } from './helpers/identities.js';
import { RawWorker } from './helpers/raw-worker.js';

/**
 * Lease terms are the coordinator's (issue 9): a result counts only on a live lease, in the role it was issued for,
 * at the price fixed when it was issued; the numbers a result claims are never stored or summed; the escrow is
 * reserved for everything a job may still owe.
 */

beforeAll(async () => {
  await tf.setBackend('wasm');
  await tf.ready();
});

const oneRound = (over: Record<string, unknown>) =>
  smallMnistJob({ rounds: 1, unitsPerRound: 1, targetAccuracy: undefined, ...over } as never);

let c: TestCoordinator | undefined;
const workers: RawWorker[] = [];
afterEach(async () => {
  for (const w of workers.splice(0)) w.close();
  await c?.destroy();
  c = undefined;
});

async function worker(coord: TestCoordinator, label: string | TestIdentity) {
  const w = await signedWorker(coord.url, label);
  workers.push(w);
  return w;
}

async function leaseRow(coord: TestCoordinator, leaseId: string) {
  const r = await coord.db.query<{ status: string; role: string; audit_of: string | null; price_per_tflop: unknown }>(
    'SELECT * FROM leases WHERE id = $1',
    [leaseId],
  );
  return r.rows[0];
}

async function unitRow(coord: TestCoordinator, jobId: string, idx = 0) {
  const r = await coord.db.query<{ status: string; audit_of: string | null }>(
    'SELECT status, audit_of FROM units WHERE job_id = $1 AND round = 0 AND idx = $2',
    [jobId, idx],
  );
  return r.rows[0];
}

async function intents(coord: TestCoordinator, jobId: string) {
  return (
    await coord.db.query<{ worker: string; price: number; price_per_tflop: number; state: string; reason: string }>(
      'SELECT worker, price, price_per_tflop, state, reason FROM credit_intents WHERE job_id = $1 ORDER BY worker',
      [jobId],
    )
  ).rows.map((r) => ({ ...r, price: Number(r.price), price_per_tflop: Number(r.price_per_tflop) }));
}

describe('a result counts only on a live lease, in the role the coordinator issued it for', () => {
  it('a sybil holding an expired primary lease cannot become the audit copy of its partner (finding #2)', async () => {
    c = await startTestCoordinator(testStore('pglite'));
    // The coordinator's own audit stays out of the way: the audit copy must go to a worker.
    c.scheduler.verification.configure({ selfAuditAfterMs: 600_000 });
    const job = await postJob(c.url, oneRound({ name: 'sybil', unitDeadlineMs: 8_000, budget: 1 }));
    const a = testIdentity('sybil-a');
    const b = testIdentity('sybil-b');

    // B takes the unit and sits on it until its lease expires.
    const wb = await worker(c, 'sybil-b');
    const lb = await wb.lease();
    await waitFor('B lease to expire', async () => (await leaseRow(c!, lb.leaseId)).status === 'expired', 30_000);

    // A takes the unit again, trains it and submits: a new account, so its result is held for an audit copy.
    const wa = await worker(c, 'sybil-a');
    const la = await wa.lease();
    const { out } = await wa.train(la);
    expect((await wa.submitRun(la, out)).type).toBe('ack');
    const held = await unitRow(c, job.id);
    expect(held.status).toBe('pending');
    expect(held.audit_of).not.toBeNull();

    // B presents A's training on its stale primary lease, hoping to be taken as the blind audit copy.
    const answer = await wb.submitRun(lb, out);
    expect(answer).toMatchObject({ type: 'reject', code: 'lease_expired' });
    expect((await leaseRow(c, la.leaseId)).role).toBe('primary');
    expect(await unitRow(c, job.id)).toEqual(held);
    const bResults = await c.db.query('SELECT 1 FROM results WHERE job_id = $1 AND account = $2', [job.id, b.address]);
    expect(bResults.rows).toHaveLength(0);

    // The coordinator picks the auditor: an honest worker gets a lease issued as the audit of A's result.
    const wc = await worker(c, 'sybil-honest-auditor');
    const lc = await wc.lease();
    expect(await leaseRow(c, lc.leaseId)).toMatchObject({ role: 'audit', audit_of: held.audit_of });
    const trained = await wc.train(lc);
    expect((await wc.submitRun(lc, trained.out)).type).toBe('ack');
    await waitFor('job to complete', async () => (await getJob(c!.url, job.id)).status === 'completed', 120_000);
    await waitFor('both credits', async () => (await intents(c!, job.id)).length === 2, 30_000);
    const paid = (await intents(c, job.id)).map((i) => i.worker);
    expect(paid).toContain(a.address);
    expect(paid).toContain(testIdentity('sybil-honest-auditor').address);
    expect(paid).not.toContain(b.address);
  }, 180_000);

  it('an honest worker that reconnects within its deadline resumes its lease and is paid', async () => {
    c = await startTestCoordinator(testStore('pglite'));
    c.scheduler.verification.configure({ selfAuditAfterMs: 1_000 });
    const job = await postJob(c.url, oneRound({ name: 'resume', budget: 1 }));
    const first = await worker(c, 'resumer');
    const lease = await first.lease();
    const { out } = await first.train(lease);
    first.vanish();
    const again = await signedWorker(c.url, 'resumer', [{ leaseId: lease.leaseId, token: lease.token }]);
    workers.push(again);
    expect((await again.submitRun(lease, out)).type).toBe('ack');
    await waitFor('job to complete', async () => (await getJob(c!.url, job.id)).status === 'completed', 60_000);
    await waitFor('credit', async () => (await intents(c!, job.id)).length === 1, 30_000);
  }, 120_000);
});

describe('the price is fixed when the lease is issued (finding #3)', () => {
  it('re-offering a huge price between lease and result changes nothing; uncapped jobs have a default maximum', async () => {
    c = await startTestCoordinator(testStore('pglite'));
    c.scheduler.verification.configure({ selfAuditAfterMs: 1_000 });
    const switcher = testIdentity('price-switcher');
    expect((await postOffer(c.url, switcher, 0)).status).toBe(201);
    const job = await postJob(c.url, oneRound({ name: 'switch', unitsPerRound: 2, budget: 10 }));
    const w = await worker(c, switcher);
    const lease = await w.lease();
    const { out } = await w.train(lease);

    // Before submitting, the worker raises its offer to the most the API allows.
    expect((await postOffer(c.url, switcher, 1_000_000)).status).toBe(201);
    expect((await w.submitRun(lease, out)).type).toBe('ack');
    await waitFor('the credit intent', async () => (await intents(c!, job.id)).length === 1, 60_000);
    expect(await intents(c, job.id)).toMatchObject([{ worker: switcher.address, price_per_tflop: 0, price: 0 }]);
    expect(Number((await leaseRow(c, lease.leaseId)).price_per_tflop)).toBe(0);

    // At its new price the job (no maxPricePerTflop of its own) is not leased to it: every job has a maximum.
    expect(await w.tryLease()).toBeNull();
    const billing = (await c.credits.billing(job.id))!;
    expect(billing.escrow).toBe(billing.budget);
  }, 120_000);
});

describe('claimed numbers and one job failing (finding #6)', () => {
  it('a result claiming 2^31-1 examples is stored with the derived count and stops no other job', async () => {
    c = await startTestCoordinator(testStore('pglite'));
    c.scheduler.verification.configure({ selfAuditAfterMs: 1_000 });
    const huge = await postJob(c.url, oneRound({ name: 'huge-claims', unitsPerRound: 2 }));
    const other = await postJob(c.url, oneRound({ name: 'other' }));
    // The liar holds both units of its job, so the honest worker's lease is the other job's unit; the liar's
    // results are held (and self-audited) first.
    const liar = await worker(c, 'claims-liar');
    const leases: LeaseMsg[] = [await liar.lease(), await liar.lease()];
    const honest = await worker(c, 'claims-honest');
    const honestLease = await honest.lease();
    for (const lease of leases) {
      const { out } = await liar.train(lease);
      const payload = encodeWeights(out.delta);
      const header = { ...RawWorker.header(lease, out, payload), examples: 2_147_483_647, flops: 1e300 };
      expect((await liar.submit(header, payload)).type).toBe('ack');
    }
    const { out } = await honest.train(honestLease);
    expect((await honest.submitRun(honestLease, out)).type).toBe('ack');

    // Both jobs complete: the huge claims were never summed, and the other job's self-audit ran.
    const unit = 24 * 32;
    await waitFor('the other job', async () => (await getJob(c!.url, other.id)).status === 'completed', 120_000);
    await waitFor('the huge-claims job', async () => (await getJob(c!.url, huge.id)).status === 'completed', 120_000);
    expect((await getJob(c.url, huge.id)).metrics).toMatchObject([{ round: 1, examples: 2 * unit, units: 2 }]);
    expect((await getJob(c.url, other.id)).metrics).toMatchObject([{ round: 1, examples: unit, units: 1 }]);
    const stored = await c.db.query<{ examples: number; flops: number }>(
      `SELECT examples, flops FROM results WHERE job_id = $1 AND status = 'accepted'`,
      [huge.id],
    );
    expect(stored.rows.map((r) => Number(r.examples))).toEqual([unit, unit]);
    // 6 x 25,450 parameters x 768 examples: the coordinator's estimate, the one credits price.
    expect(stored.rows.map((r) => Number(r.flops))).toEqual([117_273_600, 117_273_600]);
  }, 240_000);
});

describe('one job failing stops no other job (finding #6)', () => {
  it("a round whose aggregation keeps failing does not stop another job's self-audit and completion", async () => {
    c = await startTestCoordinator(testStore('pglite'));
    c.scheduler.verification.configure({ selfAuditAfterMs: 1_000 });
    const broken = await postJob(c.url, oneRound({ name: 'broken-round' }));
    const other = await postJob(c.url, oneRound({ name: 'other-round' }));
    // Whatever makes one job's aggregation throw (here: an injected fault), it throws on every sweep.
    const s = c.scheduler as unknown as { completeRound(job: JobRow): Promise<void> };
    const completeRound = s.completeRound.bind(s);
    s.completeRound = async (job) => {
      if (job.id === broken.id) throw new Error('injected aggregation fault');
      return completeRound(job);
    };
    // The broken job's unit is held first, so its self-audit (and failing aggregation) comes first.
    const w = await worker(c, 'isolation-a');
    const lb = await w.lease();
    const lo = await w.lease();
    for (const l of [lb, lo]) {
      const { out } = await w.train(l);
      expect((await w.submitRun(l, out)).type).toBe('ack');
    }
    await waitFor(
      'the broken unit to be accepted',
      async () => (await unitRow(c!, broken.id)).status === 'done',
      60_000,
    );
    await waitFor('the other job', async () => (await getJob(c!.url, other.id)).status === 'completed', 60_000);
    expect((await getJob(c.url, broken.id)).status).toBe('running');
  }, 120_000);
});

describe('the escrow is reserved for everything a job may still owe (finding #14)', () => {
  it('a unit held for its audit is reserved, so no audit copy is leased that the escrow cannot pay', async () => {
    c = await startTestCoordinator(testStore('pglite'));
    c.scheduler.verification.configure({ selfAuditAfterMs: 600_000 });
    // One unit costs 117 micro-credits at the default price: 200 pay for the unit, not for a paid audit copy too.
    const job = await postJob(c.url, oneRound({ name: 'tight-audit', budget: 0.0002 }));
    const a = await worker(c, 'tight-primary');
    const { answer } = await a.trainAndSubmit();
    expect(answer.type).toBe('ack');
    expect((await unitRow(c, job.id)).audit_of).not.toBeNull();

    // An auditor would be paid too (117 + 117 > 200): it gets no lease, so it never trains for nothing.
    const auditor = await worker(c, 'tight-auditor');
    expect(await auditor.tryLease()).toBeNull();

    // The coordinator audits the unit itself; the primary result is paid in full.
    c.scheduler.verification.configure({ selfAuditAfterMs: 1_000 });
    await waitFor('job to complete', async () => (await getJob(c!.url, job.id)).status === 'completed', 60_000);
    await waitFor('the credit', async () => (await intents(c!, job.id)).some((i) => i.state === 'credited'), 30_000);
    const all = await intents(c, job.id);
    expect(all).toMatchObject([{ worker: testIdentity('tight-primary').address, price: 117, state: 'credited' }]);
  }, 120_000);
});

describe('leases one connection and one account may hold (finding #19)', () => {
  it('a connection asking for every unit gets its share, the honest worker gets the rest, and expiring costs leases', async () => {
    c = await startTestCoordinator(testStore('pglite'));
    const job = await postJob(c.url, oneRound({ name: 'hoarded', unitsPerRound: 4, unitDeadlineMs: 5_000 }));
    const activeOf = async (account: string) =>
      Number(
        (
          await c!.db.query<{ n: number }>(
            `SELECT count(*) AS n FROM leases WHERE job_id = $1 AND account = $2 AND status = 'active'`,
            [job.id, account],
          )
        ).rows[0].n,
      );
    const hoarder = testIdentity('hoarder');
    const h = await worker(c, hoarder);
    const got: (LeaseMsg | null)[] = [];
    for (let i = 0; i < 8; i++) got.push(await h.tryLease());
    const first = got.filter((l) => l !== null);
    // An unknown account holds two units at most, whatever it asks; a second connection of it gets none.
    expect(first).toHaveLength(2);
    const h2 = await worker(c, hoarder);
    expect(await h2.tryLease()).toBeNull();
    expect(await activeOf(hoarder.address)).toBe(2);

    // The honest worker gets work at once.
    const honest = await worker(c, 'hoard-honest');
    expect(await honest.tryLease()).not.toBeNull();

    // The hoarder sits on its units until they expire: it has proven it lets leases lapse, so it gets one at a time.
    for (const l of first) {
      await waitFor('the hoarded lease to expire', async () => (await leaseRow(c!, l!.leaseId)).status === 'expired');
    }
    const again: (LeaseMsg | null)[] = [];
    for (let i = 0; i < 8; i++) again.push(await h.tryLease());
    expect(again.filter((l) => l !== null)).toHaveLength(1);
    expect(await activeOf(hoarder.address)).toBe(1);
  }, 120_000);
});

describe('who audits (finding #20)', () => {
  it('an audit copy goes to a random waiting worker, not to the best-ranked one (the cheapest partner)', async () => {
    c = await startTestCoordinator(testStore('pglite'));
    // New accounts are audited on every unit; the copy must come from a worker, never the coordinator itself.
    c.scheduler.verification.configure({ selfAuditAfterMs: null, reexecuteProbability: 0 });
    const trainer = testIdentity('audit-draw-trainer');
    const partner = testIdentity('audit-draw-partner');
    // The trainer ranks first (cheapest), its partner second: ranked in order, the partner would audit every unit.
    expect((await postOffer(c.url, trainer, 0.1)).status).toBe(201);
    expect((await postOffer(c.url, partner, 0.2)).status).toBe(201);
    const a = await worker(c, trainer);
    const others = [await worker(c, partner)];
    for (let i = 0; i < 5; i++) others.push(await worker(c, `audit-draw-${i}`));
    const byAccount = new Map(others.map((w) => [w.account, w]));
    for (const w of others) expect(await w.tryLease()).toBeNull(); // all waiting
    const auditors: string[] = [];
    for (let t = 0; t < 8; t++) {
      a.send({ type: 'request' });
      await postJob(c.url, oneRound({ name: `audit draw ${t}`, localSteps: 4 }));
      const lease = await a.nextOf('lease');
      expect((await a.submitRun(lease, (await a.train(lease)).out)).type).toBe('ack');
      const audit = await waitFor('the audit lease', async () => {
        const r = await c!.db.query<{ account: string }>(
          `SELECT account FROM leases WHERE role = 'audit' AND job_id = (SELECT job_id FROM leases WHERE id = $1)`,
          [lease.leaseId],
        );
        return r.rows[0];
      });
      auditors.push(audit.account);
      // The auditor does the work and waits again, so every trial starts with the same six waiting.
      const x = byAccount.get(audit.account)!;
      const copy = await x.nextOf('lease');
      expect((await x.submitRun(copy, (await x.train(copy)).out)).type).toBe('ack');
      expect(await x.tryLease()).toBeNull();
    }
    // Drawn at random among six, the partner audits all eight units with probability 6^-8 (about 6e-7).
    expect(auditors.filter((acc) => acc === partner.address).length).toBeLessThan(8);
    expect(new Set(auditors).size).toBeGreaterThan(1);
  }, 120_000);
});

describe('release churn', () => {
  it('a released unit is not handed back to the same account at once; another worker gets it', async () => {
    c = await startTestCoordinator(testStore('pglite'));
    const job = await postJob(c.url, oneRound({ name: 'churned' }));
    const churner = await worker(c, 'churner');
    const lease = await churner.lease();
    churner.send({ type: 'release', leaseId: lease.leaseId });
    await waitFor('the release', async () => (await leaseRow(c!, lease.leaseId)).status === 'released');
    // Asking again at once: the unit it gave back is not its to take for a while, so it hears idle.
    expect(await churner.tryLease()).toBeNull();
    const honest = await worker(c, 'churn-honest');
    const got = await honest.tryLease();
    expect(got?.unit.dataSeed).toBe(lease.unit.dataSeed);
    expect((await unitRow(c, job.id)).status).toBe('leased');
  }, 60_000);
});

describe("one account's share of a round (finding #22)", () => {
  it('a trusted account gets at most its share of a round while others are online, and all of it when alone', async () => {
    c = await startTestCoordinator(testStore('pglite'));
    // Trusted accounts are never drawn for an audit here: what the turncoat submits goes straight into the round.
    c.scheduler.verification.configure({ selfAuditAfterMs: null, rng: () => 0.99 });
    const job = await postJob(c.url, oneRound({ name: 'shared-round', unitsPerRound: 4 }));
    const t = await worker(c, 'share-turncoat');
    const h1 = await worker(c, 'share-h1');
    const h2 = await worker(c, 'share-h2');
    await c.db.query(
      `INSERT INTO account_trust (account, consecutive_valid, total_valid, failures, updated_at)
       VALUES ($1, 100, 100, 0, $2)`,
      [t.account, Date.now()],
    );
    const mine = async (status: string) =>
      Number(
        (
          await c!.db.query<{ n: number }>(
            'SELECT count(*) AS n FROM results WHERE job_id = $1 AND account = $2 AND status = $3',
            [job.id, t.account, status],
          )
        ).rows[0].n,
      );

    // The honest workers have worked on the job (here: took a unit and gave it back).
    for (const h of [h1, h2]) {
      const l = await h.lease();
      h.send({ type: 'release', leaseId: l.leaseId });
      await waitFor('the release', async () => (await leaseRow(c!, l.leaseId)).status === 'released');
    }
    // An idle connection of an account that never works on the job does not shrink anyone's share.
    await worker(c, 'share-idle');

    // Three of the job's workers online, four units: an even split is 2, so the turncoat gets 2 and then nothing.
    const leases = [await t.lease(), await t.lease()];
    for (const l of leases) {
      const { out } = await t.train(l);
      expect((await t.submitRun(l, out)).type).toBe('ack');
    }
    expect(await mine('accepted')).toBe(2);
    expect(await t.tryLease()).toBeNull();
    // The rest of the round goes to the others.
    expect(await h1.tryLease()).not.toBeNull();

    // The only one of the job's workers online, it may take the whole round (a lone volunteer finishes a job).
    h1.close();
    h2.close();
    await waitFor('the others to be gone', async () => {
      const r = await c!.db.query<{ n: number }>(
        'SELECT count(*) AS n FROM workers WHERE disconnected_at IS NULL AND account IN ($1, $2)',
        [h1.account, h2.account],
      );
      return Number(r.rows[0].n) === 0;
    });
    expect(await t.tryLease()).not.toBeNull();
  }, 120_000);
});

describe("one network's share of a round (finding #22)", () => {
  it('accounts on one network share one share of a round', async () => {
    c = await startTestCoordinator(testStore('pglite'));
    await postJob(c.url, oneRound({ name: 'network-share', unitsPerRound: 4 }));
    // Two honest workers have worked on the job (took a unit and gave it back): three workers, an even split of 2.
    for (const label of ['net-h1', 'net-h2']) {
      const h = await worker(c, label);
      const l = await h.lease();
      h.send({ type: 'release', leaseId: l.leaseId });
      await waitFor('the release', async () => (await leaseRow(c!, l.leaseId)).status === 'released');
    }
    // Test sockets come from loopback, which has no network identity; the scheduler is asked directly with one.
    const net = '203.0.113.0/24';
    const s1 = { workerId: 'w-net-s1', account: testIdentity('net-s1').address, address: net };
    const s2 = { workerId: 'w-net-s2', account: testIdentity('net-s2').address, address: net };
    expect(await c.scheduler.lease(s1)).not.toBeNull();
    expect(await c.scheduler.lease(s1)).not.toBeNull();
    // A second account on the same network gets nothing of this round; an account elsewhere does.
    expect(await c.scheduler.lease(s2)).toBeNull();
    expect(await c.scheduler.lease({ ...s2, address: '198.51.100.0/24' })).not.toBeNull();
  }, 60_000);
});
