import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type CreditOutcome,
  EventConflict,
  InsufficientFunds,
  JobClosed,
  Ledger,
  ledgerMigrations,
  UnknownJob,
} from '../coordinator/ledger/index.js';
import type { Db } from '../coordinator/store/db.js';
import { runMigrations } from '../coordinator/store/migrate.js';
import { toChecksumAddress } from '../shared/identity/index.js';
import { dropTestDb, openPooledTestDb, STORE_KINDS, type StoreKind } from './helpers/stores.js';

/**
 * Model-based property test: random sequences of deposits, job submits, accepted units (the same result submitted
 * concurrently, batches, bursts), disputes won and lost, cancels, vesting and races between them run against the
 * real ledger and a plain in-memory model. After every sequence: all postings sum to zero, stored balances equal
 * their postings, nothing is negative, every accepted unit is credited exactly once, and every balance equals the
 * model's.
 *
 * Runs per store: LEDGER_PROPERTY_RUNS (PGlite) and LEDGER_PROPERTY_RUNS_PG (PostgreSQL), 1,000 each by default.
 */
const RUNS: Record<StoreKind, number> = {
  pglite: Number(process.env.LEDGER_PROPERTY_RUNS ?? 1000),
  postgres: Number(process.env.LEDGER_PROPERTY_RUNS_PG ?? 1000),
};
const MAX_COMMANDS = 5;

/**
 * Every sequence starts from a generated prelude (funded requesters, open jobs) so that the random commands act on
 * money most of the time instead of bouncing off empty accounts.
 */
const preludeArb: fc.Arbitrary<Command[]> = fc
  .tuple(
    fc.array(fc.integer({ min: 200, max: 3_000 }), { minLength: 3, maxLength: 3 }),
    fc.array(fc.record({ r: fc.nat({ max: 2 }), budget: fc.integer({ min: 50, max: 1_200 }) }), {
      minLength: 1,
      maxLength: 2,
    }),
  )
  .map(([deposits, jobs]) => [
    { t: 'fund', amounts: deposits } as Command,
    ...jobs.map((j): Command => ({ t: 'submit', r: j.r, budget: j.budget })),
  ]);

const addr = (tag: number, i: number) => toChecksumAddress(`0x${tag.toString(16)}${i.toString(16).padStart(39, '0')}`);
const REQUESTERS = [0, 1, 2].map((i) => addr(0xa, i));
const WORKERS = [0, 1, 2].map((i) => addr(0xb, i));

// ---- commands -------------------------------------------------------------------------------------------------

type Command =
  | { t: 'fund'; amounts: number[] }
  | { t: 'deposit'; r: number; amount: number; replay: boolean }
  | { t: 'submit'; r: number; budget: number }
  | {
      t: 'accept';
      job: number;
      w: number;
      price: number;
      copies: number;
      vestIn: number;
      reuse: number | null;
      conflict: boolean;
    }
  | { t: 'batch'; items: { job: number; w: number; price: number; dupOf: number | null }[] }
  | { t: 'burst'; job: number; n: number; price: number }
  | { t: 'vest'; advance: number }
  | { t: 'dispute'; w: number; job: number | null; lost: boolean; feePct: number; replay: boolean }
  | { t: 'cancel'; job: number; replay: boolean }
  | { t: 'race'; job: number; w: number; price: number; feePct: number };

const idx = fc.nat({ max: 2 });
const commandArb: fc.Arbitrary<Command> = fc.oneof(
  {
    weight: 2,
    arbitrary: fc.record({
      t: fc.constant('deposit' as const),
      r: idx,
      amount: fc.integer({ min: 1, max: 2_000 }),
      replay: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ t: fc.constant('submit' as const), r: idx, budget: fc.integer({ min: 0, max: 1_500 }) }),
  },
  {
    weight: 5,
    arbitrary: fc.record({
      t: fc.constant('accept' as const),
      job: fc.nat({ max: 5 }),
      w: idx,
      price: fc.integer({ min: 0, max: 400 }),
      copies: fc.integer({ min: 1, max: 4 }),
      vestIn: fc.integer({ min: 0, max: 50 }),
      reuse: fc.option(fc.nat({ max: 20 }), { freq: 3 }),
      conflict: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      t: fc.constant('batch' as const),
      items: fc.array(
        fc.record({
          job: fc.nat({ max: 5 }),
          w: idx,
          price: fc.integer({ min: 0, max: 300 }),
          dupOf: fc.option(fc.nat({ max: 5 }), { freq: 3 }),
        }),
        { minLength: 1, maxLength: 6 },
      ),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant('burst' as const),
      job: fc.nat({ max: 5 }),
      n: fc.integer({ min: 2, max: 6 }),
      price: fc.integer({ min: 1, max: 300 }),
    }),
  },
  { weight: 2, arbitrary: fc.record({ t: fc.constant('vest' as const), advance: fc.integer({ min: 0, max: 60 }) }) },
  {
    weight: 2,
    arbitrary: fc.record({
      t: fc.constant('dispute' as const),
      w: idx,
      job: fc.option(fc.nat({ max: 5 }), { freq: 2 }),
      lost: fc.integer({ min: 0, max: 3 }).map((n) => n > 0),
      feePct: fc.integer({ min: 0, max: 50 }),
      replay: fc.boolean(),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ t: fc.constant('cancel' as const), job: fc.nat({ max: 5 }), replay: fc.boolean() }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      t: fc.constant('race' as const),
      job: fc.nat({ max: 5 }),
      w: idx,
      price: fc.integer({ min: 0, max: 200 }),
      feePct: fc.integer({ min: 0, max: 50 }),
    }),
  },
);

// ---- model ----------------------------------------------------------------------------------------------------

interface MCredit {
  resultId: string;
  jobId: string;
  worker: string;
  amount: number;
  vestAt: number;
  status: 'pending' | 'vested' | 'forfeited';
}

class Model {
  available = new Map<string, number>();
  escrow = new Map<string, number>();
  jobs = new Map<string, { requester: string; open: boolean }>();
  jobOrder: string[] = [];
  credits = new Map<string, MCredit>();
  vested = new Map<string, number>();
  treasury = 0;
  issued = 0;

  add(map: Map<string, number>, key: string, delta: number) {
    map.set(key, (map.get(key) ?? 0) + delta);
  }
  pending(worker: string) {
    let s = 0;
    for (const c of this.credits.values()) if (c.worker === worker && c.status === 'pending') s += c.amount;
    return s;
  }
  credit(c: MCredit) {
    this.add(this.escrow, c.jobId, -c.amount);
    this.credits.set(c.resultId, { ...c, status: 'pending' });
  }
  vest(c: MCredit) {
    c.status = 'vested';
    this.add(this.vested, c.worker, c.amount);
  }
  /** One forfeit event over `credits`: per job, floor(sum x fee) to the treasury, the rest back. */
  forfeit(credits: MCredit[], feePct: number) {
    const perJob = new Map<string, number>();
    for (const c of credits) {
      c.status = 'forfeited';
      this.add(perJob, c.jobId, c.amount);
    }
    for (const [jobId, amount] of perJob) {
      const fee = Math.floor((amount * feePct) / 100);
      this.treasury += fee;
      const job = this.jobs.get(jobId)!;
      if (job.open) this.add(this.escrow, jobId, amount - fee);
      else this.add(this.available, job.requester, amount - fee);
    }
  }
  refund(jobId: string) {
    const job = this.jobs.get(jobId)!;
    this.add(this.available, job.requester, this.escrow.get(jobId) ?? 0);
    this.escrow.set(jobId, 0);
    job.open = false;
  }
}

// ---- runner ---------------------------------------------------------------------------------------------------

const LEDGER_TABLES = [
  'ledger_entries',
  'ledger_statements',
  'ledger_credits',
  'ledger_events',
  'ledger_jobs',
  'ledger_accounts',
];

/**
 * Empties the ledger in one round trip with plain DELETEs (TRUNCATE of six tables costs more than deleting a few
 * rows). PGlite has no autovacuum, so every 100 runs a VACUUM clears the dead rows the DELETEs leave behind.
 */
let resets = 0;
async function resetLedger(db: Db): Promise<void> {
  await db.exec(LEDGER_TABLES.map((t) => `DELETE FROM ${t};`).join('\n'));
  if (db.kind === 'pglite' && ++resets % 100 === 0) await db.exec('VACUUM');
}

/** Opt-in timing per command kind (LEDGER_PROPERTY_PROFILE=1), to tune run counts against the time budget. */
const PROFILE = process.env.LEDGER_PROPERTY_PROFILE === '1';
const profile = new Map<string, { n: number; ms: number }>();
function charge(what: string, since: number) {
  const p = profile.get(what) ?? { n: 0, ms: 0 };
  p.n++;
  p.ms += performance.now() - since;
  profile.set(what, p);
}

const outcomeCode = (o: CreditOutcome) => (o.status === 'rejected' ? o.code : o.status);

async function runSequence(db: Db, commands: Command[], run: number): Promise<void> {
  let since = performance.now();
  await resetLedger(db);
  if (PROFILE) charge('reset', since);
  let clock = 1_000;
  const ledger = new Ledger(db, { now: () => clock });
  const m = new Model();
  let seq = 0;
  const fresh = (what: string) => `${what}-${run}-${seq++}`;
  const jobAt = (i: number): string | null => (m.jobOrder.length === 0 ? null : m.jobOrder[i % m.jobOrder.length]);
  const creditAt = (i: number): MCredit | null => {
    const all = [...m.credits.values()];
    return all.length === 0 ? null : all[i % all.length];
  };

  for (const cmd of commands) {
    since = performance.now();
    await runCommand(cmd);
    if (PROFILE) charge(cmd.t, since);
  }
  since = performance.now();
  await checkInvariants();
  if (PROFILE) charge('invariants', since);

  async function runCommand(cmd: Command): Promise<void> {
    switch (cmd.t) {
      case 'fund': {
        // One deposit per requester, all at once.
        const keys = cmd.amounts.map(() => fresh('dep'));
        const results = await Promise.all(
          cmd.amounts.map((amount, r) => ledger.deposit(REQUESTERS[r], amount, keys[r])),
        );
        expect(results.every((x) => x.created)).toBe(true);
        cmd.amounts.forEach((amount, r) => {
          m.add(m.available, REQUESTERS[r], amount);
          m.issued += amount;
        });
        break;
      }
      case 'deposit': {
        const key = fresh('dep');
        const r = REQUESTERS[cmd.r];
        expect((await ledger.deposit(r, cmd.amount, key)).created).toBe(true);
        if (cmd.replay) expect((await ledger.deposit(r, cmd.amount, key)).created).toBe(false);
        m.add(m.available, r, cmd.amount);
        m.issued += cmd.amount;
        break;
      }
      case 'submit': {
        const r = REQUESTERS[cmd.r];
        const jobId = fresh('job');
        const enough = (m.available.get(r) ?? 0) >= cmd.budget;
        const result = await ledger.escrowJob(jobId, r, cmd.budget).catch((e) => e);
        if (enough) {
          expect(result.created).toBe(true);
          m.add(m.available, r, -cmd.budget);
          m.escrow.set(jobId, cmd.budget);
          m.jobs.set(jobId, { requester: r, open: true });
          m.jobOrder.push(jobId);
        } else {
          expect(result).toBeInstanceOf(InsufficientFunds);
        }
        break;
      }
      case 'accept': {
        const reused = cmd.reuse === null ? null : creditAt(cmd.reuse);
        if (reused) {
          // A result already credited, submitted again (copies at once): duplicates, or a conflict when altered.
          const unit = {
            jobId: reused.jobId,
            resultId: reused.resultId,
            worker: reused.worker,
            price: reused.amount,
            vestAt: clock,
          };
          const altered = cmd.conflict ? { ...unit, price: unit.price + 1 } : unit;
          const outs = await Promise.all(
            Array.from({ length: cmd.copies }, () => ledger.creditUnit(altered).catch((e) => e)),
          );
          for (const o of outs) {
            if (cmd.conflict) expect(o).toBeInstanceOf(EventConflict);
            else expect(o.status).toBe('duplicate');
          }
          break;
        }
        const jobId = jobAt(cmd.job) ?? 'no-such-job';
        const unit = {
          jobId,
          resultId: fresh('res'),
          worker: WORKERS[cmd.w],
          price: cmd.price,
          vestAt: clock + cmd.vestIn,
        };
        const outs = await Promise.all(
          Array.from({ length: cmd.copies }, () => ledger.creditUnit(unit).catch((e) => e)),
        );
        const job = m.jobs.get(jobId);
        if (!job) {
          for (const o of outs) expect(o).toBeInstanceOf(UnknownJob);
        } else if (!job.open) {
          for (const o of outs) expect(o).toBeInstanceOf(JobClosed);
        } else if ((m.escrow.get(jobId) ?? 0) < cmd.price) {
          for (const o of outs) expect(o).toBeInstanceOf(InsufficientFunds);
        } else {
          expect(outs.filter((o) => o.status === 'credited')).toHaveLength(1);
          expect(outs.filter((o) => o.status === 'duplicate')).toHaveLength(cmd.copies - 1);
          m.credit({ ...unit, amount: cmd.price, status: 'pending' });
        }
        break;
      }
      case 'batch': {
        const items = cmd.items.map((it, i) => {
          if (it.dupOf !== null && i > 0) return { ...cmd.items[it.dupOf % i], resultIdOf: it.dupOf % i };
          return { ...it, resultIdOf: i };
        });
        const ids = cmd.items.map(() => fresh('res'));
        const inputs = items.map((it) => ({
          jobId: jobAt(it.job) ?? 'no-such-job',
          resultId: ids[it.resultIdOf],
          worker: WORKERS[it.w],
          price: it.price,
          vestAt: clock + 10,
        }));
        const outs = await ledger.creditUnits(inputs);
        // Expected outcomes: first occurrences in order against a running escrow, later copies mirror them.
        const expected: string[] = [];
        const firstOutcome = new Map<string, string>();
        const running = new Map(m.escrow);
        for (const input of inputs) {
          const seen = firstOutcome.get(input.resultId);
          if (seen !== undefined) {
            expected.push(seen === 'credited' || seen === 'duplicate' ? 'duplicate' : seen);
            continue;
          }
          const job = m.jobs.get(input.jobId);
          let code: string;
          if (!job) code = 'unknown_job';
          else if (!job.open) code = 'job_closed';
          else if ((running.get(input.jobId) ?? 0) < input.price) code = 'insufficient_funds';
          else {
            code = 'credited';
            running.set(input.jobId, (running.get(input.jobId) ?? 0) - input.price);
            m.credit({ ...input, amount: input.price, status: 'pending' });
          }
          firstOutcome.set(input.resultId, code);
          expected.push(code);
        }
        expect(outs.map(outcomeCode)).toEqual(expected);
        break;
      }
      case 'burst': {
        // Different results for one job at once: exactly as many as the escrow pays for get credited.
        const jobId = jobAt(cmd.job);
        if (!jobId || !m.jobs.get(jobId)!.open) break;
        const units = Array.from({ length: cmd.n }, () => ({
          jobId,
          resultId: fresh('res'),
          worker: WORKERS[seq % 3],
          price: cmd.price,
          vestAt: clock + 5,
        }));
        const outs = await Promise.all(units.map((u) => ledger.creditUnit(u).catch((e) => e)));
        const affordable = Math.min(cmd.n, Math.floor((m.escrow.get(jobId) ?? 0) / cmd.price));
        expect(outs.filter((o) => o.status === 'credited')).toHaveLength(affordable);
        for (const o of outs) if (o instanceof Error) expect(o).toBeInstanceOf(InsufficientFunds);
        units.forEach((u, i) => {
          if (outs[i].status === 'credited') m.credit({ ...u, amount: u.price, status: 'pending' });
        });
        break;
      }
      case 'vest': {
        clock += cmd.advance;
        const due = [...m.credits.values()].filter((c) => c.status === 'pending' && c.vestAt <= clock);
        const r = await ledger.vestDue(clock);
        expect(r.vested).toBe(due.length);
        expect(r.amount).toBe(due.reduce((s, c) => s + c.amount, 0));
        for (const c of due) m.vest(c);
        break;
      }
      case 'dispute': {
        if (!cmd.lost) break; // a dispute won moves nothing
        const worker = WORKERS[cmd.w];
        const jobId = cmd.job === null ? undefined : (jobAt(cmd.job) ?? undefined);
        const eventKey = fresh('forfeit');
        const input = { worker, jobId, reason: 'lost dispute', eventKey, feeRate: cmd.feePct / 100 };
        const first = await ledger.forfeitUnvested(input);
        const lost = [...m.credits.values()].filter(
          (c) => c.worker === worker && c.status === 'pending' && (jobId === undefined || c.jobId === jobId),
        );
        expect(first.forfeited).toBe(lost.length);
        expect(first.amount).toBe(lost.reduce((s, c) => s + c.amount, 0));
        m.forfeit(lost, cmd.feePct);
        if (cmd.replay) {
          const again = await ledger.forfeitUnvested(input);
          expect(again).toMatchObject({
            created: false,
            forfeited: first.forfeited,
            amount: first.amount,
            fee: first.fee,
          });
        }
        break;
      }
      case 'cancel': {
        const jobId = jobAt(cmd.job);
        if (!jobId) break;
        const job = m.jobs.get(jobId)!;
        const expectedRefund = job.open ? (m.escrow.get(jobId) ?? 0) : null;
        const r = await ledger.refundJob(jobId);
        if (expectedRefund !== null) {
          expect(r).toMatchObject({ created: true, refunded: expectedRefund });
          m.refund(jobId);
        } else {
          expect(r.created).toBe(false);
        }
        if (cmd.replay) expect((await ledger.refundJob(jobId)).created).toBe(false);
        break;
      }
      case 'race': {
        // A credit, a vesting run and a forfeit of the same worker at once: the outcome depends on the
        // interleaving, so the model learns it from the credits table and then must agree on every balance.
        const jobId = jobAt(cmd.job);
        if (!jobId) break;
        const worker = WORKERS[cmd.w];
        const unit = { jobId, resultId: fresh('res'), worker, price: cmd.price, vestAt: clock };
        const eventKey = fresh('forfeit');
        const before = new Map([...m.credits.values()].map((c) => [c.resultId, c.status]));
        const [credited] = await Promise.all([
          ledger.creditUnit(unit).catch((e) => e),
          ledger.vestDue(clock),
          ledger.forfeitUnvested({ worker, reason: 'race', eventKey, feeRate: cmd.feePct / 100 }),
        ]);
        if (credited instanceof Error) {
          expect(credited).toBeInstanceOf(credited instanceof JobClosed ? JobClosed : InsufficientFunds);
        } else {
          expect(credited.status).toBe('credited');
          m.credit({ ...unit, amount: unit.price, status: 'pending' });
        }
        const rows = await ledger.credits();
        const forfeited: MCredit[] = [];
        for (const row of rows) {
          const mc = m.credits.get(row.resultId)!;
          expect(mc).toBeDefined();
          if (mc.status === row.status) continue;
          expect(before.get(row.resultId) ?? 'pending').toBe('pending');
          if (row.status === 'vested') m.vest(mc);
          else if (row.status === 'forfeited') {
            expect(row.settleEvent).toBe(eventKey);
            forfeited.push(mc);
          }
        }
        m.forfeit(forfeited, cmd.feePct);
        break;
      }
    }
  }

  async function checkInvariants(): Promise<void> {
    // ---- invariants after the sequence -------------------------------------------------------------------------
    const report = await ledger.checkIntegrity();
    expect(report).toEqual({ ok: true, entriesSum: 0, balancesSum: 0, drift: [], negative: [], creditDrift: [] });
    expect(await ledger.totalSum()).toBe(0);
    // Every account's balance against the model, in one query.
    const stored = await db.query<{ id: string; balance: number }>('SELECT id, balance FROM ledger_accounts');
    const actual = new Map(stored.rows.filter((r) => Number(r.balance) !== 0).map((r) => [r.id, Number(r.balance)]));
    const expected = new Map<string, number>();
    const put = (id: string, v: number) => v !== 0 && expected.set(id, v);
    for (const r of REQUESTERS) put(`requester:${r}:available`, m.available.get(r) ?? 0);
    for (const jobId of m.jobs.keys()) put(`job:${jobId}:escrow`, m.escrow.get(jobId) ?? 0);
    for (const w of WORKERS) {
      put(`worker:${w}:pending`, m.pending(w));
      put(`worker:${w}:vested`, m.vested.get(w) ?? 0);
    }
    put('treasury:fees', m.treasury);
    put('issuance:faucet', 0 - m.issued);
    expect(Object.fromEntries(actual)).toEqual(Object.fromEntries(expected));
    // Exactly-once crediting: one credit row and one posting group (two postings, none for price 0) per result.
    const credits = await db.query<{ result_id: string; amount: number; n: number }>(
      `SELECT c.result_id, c.amount, (SELECT count(*) FROM ledger_entries e WHERE e.event_key = 'credit:' || c.result_id)::int AS n
     FROM ledger_credits c`,
    );
    expect(credits.rows.length).toBe(m.credits.size);
    for (const row of credits.rows) {
      expect(m.credits.has(row.result_id)).toBe(true);
      expect(Number(row.n)).toBe(Number(row.amount) > 0 ? 2 : 0);
    }
  }
}

describe.each(STORE_KINDS)('ledger properties on %s', (kind) => {
  let db: Db & { schema?: string };
  beforeAll(async () => {
    db = await openPooledTestDb(kind);
    await runMigrations(db, ledgerMigrations);
  });
  afterAll(async () => {
    await dropTestDb(db);
  });

  it(`keeps sums at zero, balances non-negative and credits exactly once over ${RUNS[kind]} random sequences`, async () => {
    let run = 0;
    const started = performance.now();
    await fc.assert(
      fc.asyncProperty(
        preludeArb,
        fc.array(commandArb, { minLength: 1, maxLength: MAX_COMMANDS }),
        async (prelude, commands) => {
          await runSequence(db, [...prelude, ...commands], run++);
          if (PROFILE && run % 200 === 0)
            console.log(`  ${run} sequences after ${((performance.now() - started) / 1000).toFixed(1)} s`);
        },
      ),
      { numRuns: RUNS[kind] },
    );
    const seconds = (performance.now() - started) / 1000;
    console.log(`[ledger properties] ${kind}: ${run} sequences in ${seconds.toFixed(1)} s`);
    if (PROFILE) {
      for (const [what, p] of [...profile].sort((a, b) => b[1].ms - a[1].ms)) {
        console.log(
          `  ${what.padEnd(10)} ${String(p.n).padStart(6)} x ${(p.ms / p.n).toFixed(2)} ms = ${(p.ms / 1000).toFixed(1)} s`,
        );
      }
      profile.clear();
    }
    expect(run).toBeGreaterThanOrEqual(RUNS[kind]);
  }, 900_000);
});
