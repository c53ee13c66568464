import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  CreditBatcher,
  type CreditUnitInput,
  EventConflict,
  InsufficientFunds,
  InvalidArgument,
  issuePayoutStatement,
  JobClosed,
  JobOwnerMismatch,
  Ledger,
  ledgerMigrations,
  listPayoutStatements,
  UnknownJob,
  unitPrice,
} from '../coordinator/ledger/index.js';
import type { Db } from '../coordinator/store/db.js';
import { runMigrations } from '../coordinator/store/migrate.js';
import { addressFromPrivateKey, generatePrivateKey, verifyPayoutStatement } from '../shared/identity/index.js';
import { dropTestDb, openPooledTestDb, STORE_KINDS } from './helpers/stores.js';

const newAddress = () => addressFromPrivateKey(generatePrivateKey());

describe('unitPrice', () => {
  it('is FLOP x price per TFLOP in integer micro-credits, rounded half up', () => {
    expect(unitPrice(1e12, 250)).toBe(250);
    expect(unitPrice(3.2e9, 1_000)).toBe(3);
    expect(unitPrice(1.5e9, 1_000)).toBe(2);
    expect(unitPrice(1.4999e9, 1_000)).toBe(1);
    expect(unitPrice(0, 1_000)).toBe(0);
    // The product (~9e18) is far beyond 2^53: computed in BigInt, 8980177656976768027 / 1e12 rounds to 8980178.
    expect(unitPrice(Number.MAX_SAFE_INTEGER, 997)).toBe(8_980_178);
  });

  it('rejects negative, fractional and non-finite inputs', () => {
    expect(() => unitPrice(-1, 1)).toThrow(InvalidArgument);
    expect(() => unitPrice(Number.NaN, 1)).toThrow(InvalidArgument);
    expect(() => unitPrice(1e12, 1.5)).toThrow(InvalidArgument);
    expect(() => unitPrice(1e12, -1)).toThrow(InvalidArgument);
  });
});

describe.each(STORE_KINDS)('ledger on %s', (kind) => {
  let db: Db & { schema?: string };
  let ledger: Ledger;
  let clock = 1_000_000;

  beforeAll(async () => {
    db = await openPooledTestDb(kind);
    await runMigrations(db, ledgerMigrations);
    ledger = new Ledger(db, { now: () => clock });
  });
  afterAll(async () => {
    await dropTestDb(db);
  });
  beforeEach(async () => {
    // Every test ends with a balanced ledger; the next one starts from it.
    expect(await ledger.totalSum()).toBe(0);
  });

  it('deposits idempotently by event key and refuses a reused key with other content', async () => {
    const r = newAddress();
    const first = await ledger.deposit(r, 5_000, `dep:${r}`);
    expect(first.created).toBe(true);
    expect(first.postings.map((p) => [p.kind, p.amount]).sort()).toEqual([
      ['available', 5_000],
      ['issuance', -5_000],
    ]);
    const again = await ledger.deposit(r, 5_000, `dep:${r}`);
    expect(again.created).toBe(false);
    expect(again.postings).toEqual(first.postings);
    await expect(ledger.deposit(r, 6_000, `dep:${r}`)).rejects.toBeInstanceOf(EventConflict);
    expect((await ledger.balances(r)).available).toBe(5_000);
    await expect(ledger.deposit(r, 0, 'dep:zero')).rejects.toMatchObject({ code: 'invalid_amount', httpStatus: 400 });
    await expect(ledger.deposit(r, 1.5, 'dep:frac')).rejects.toMatchObject({ code: 'invalid_amount' });
    await expect(ledger.deposit('0xnope', 1, 'dep:bad')).rejects.toMatchObject({ code: 'invalid_argument' });
  });

  it('escrows a job budget or answers InsufficientFunds (402) with the reason', async () => {
    const r = newAddress();
    await ledger.deposit(r, 1_000, `dep:${r}`);
    const err = await ledger.escrowJob(`job-${r}-big`, r, 1_001).catch((e) => e);
    expect(err).toBeInstanceOf(InsufficientFunds);
    expect(err).toMatchObject({ httpStatus: 402, needed: 1_001, available: 1_000 });
    expect(err.message).toContain('1000');
    // The failed submit left nothing behind: no job, no escrow.
    await expect(ledger.refundJob(`job-${r}-big`)).rejects.toBeInstanceOf(UnknownJob);
    const ok = await ledger.escrowJob(`job-${r}`, r, 600);
    expect(ok.created).toBe(true);
    expect(await ledger.balances(r)).toMatchObject({ available: 400, escrow: 600, escrowByJob: { [`job-${r}`]: 600 } });
    expect((await ledger.escrowJob(`job-${r}`, r, 600)).created).toBe(false);
    await expect(ledger.escrowJob(`job-${r}`, newAddress(), 1, { eventKey: 'other' })).rejects.toBeInstanceOf(
      JobOwnerMismatch,
    );
    await ledger.escrowJob(`job-${r}`, r, 400, { eventKey: `topup:${r}` });
    expect(await ledger.balances(r)).toMatchObject({ available: 0, escrow: 1_000 });
  });

  it('credits an accepted unit exactly once, even when the same result arrives 16 times at once', async () => {
    const r = newAddress();
    const w = newAddress();
    const job = `job-${r}`;
    await ledger.deposit(r, 10_000, `dep:${r}`);
    await ledger.escrowJob(job, r, 10_000);
    const unit = { jobId: job, resultId: `res-${r}`, worker: w, price: 300, vestAt: clock + 1_000 };
    const outcomes = await Promise.all(Array.from({ length: 16 }, () => ledger.creditUnit(unit)));
    expect(outcomes.filter((o) => o.status === 'credited')).toHaveLength(1);
    expect(outcomes.filter((o) => o.status === 'duplicate')).toHaveLength(15);
    expect(new Set(outcomes.map((o) => o.credit.creditedAt)).size).toBe(1);
    expect(await ledger.balances(w)).toMatchObject({ pending: 300, vested: 0 });
    expect((await ledger.balances(r)).escrow).toBe(9_700);
    const receipt = await ledger.postingsForEvent(`credit:${unit.resultId}`);
    expect(receipt?.postings.map((p) => p.amount).sort((a, b) => a - b)).toEqual([-300, 300]);
    expect(receipt?.resultId).toBe(unit.resultId);
    // The same result for another worker or price is a conflict, not a second credit.
    await expect(ledger.creditUnit({ ...unit, worker: newAddress() })).rejects.toBeInstanceOf(EventConflict);
    await expect(ledger.creditUnit({ ...unit, price: 301 })).rejects.toBeInstanceOf(EventConflict);
    // A retry with a recomputed vestAt is still the same credit.
    expect((await ledger.creditUnit({ ...unit, vestAt: clock + 5_000 })).status).toBe('duplicate');
  });

  it('rejects units of unknown jobs, closed jobs and exhausted escrow with typed errors', async () => {
    const r = newAddress();
    const w = newAddress();
    const job = `job-${r}`;
    await ledger.deposit(r, 500, `dep:${r}`);
    await ledger.escrowJob(job, r, 500);
    const unit = (id: string, price: number) => ({
      jobId: job,
      resultId: `${job}-${id}`,
      worker: w,
      price,
      vestAt: clock,
    });
    await expect(ledger.creditUnit({ ...unit('a', 1), jobId: 'no-such-job' })).rejects.toBeInstanceOf(UnknownJob);
    const err = await ledger.creditUnit(unit('b', 501)).catch((e) => e);
    expect(err).toBeInstanceOf(InsufficientFunds);
    expect(err).toMatchObject({ available: 500, needed: 501, httpStatus: 402 });
    // A rejected unit leaves no trace: the same result can be credited once escrow allows it.
    expect(await ledger.postingsForEvent(`credit:${job}-b`)).toBeNull();
    await ledger.creditUnit(unit('c', 200));
    await ledger.refundJob(job);
    await expect(ledger.creditUnit(unit('d', 1))).rejects.toBeInstanceOf(JobClosed);
    // …but a result credited before the close is still reported as credited.
    expect((await ledger.creditUnit(unit('c', 200))).status).toBe('duplicate');
  });

  it('credits a batch in one transaction with per-item outcomes', async () => {
    const r = newAddress();
    const w1 = newAddress();
    const w2 = newAddress();
    const job = `job-${r}`;
    await ledger.deposit(r, 1_000, `dep:${r}`);
    await ledger.escrowJob(job, r, 1_000);
    const item = (id: string, worker: string, price: number) => ({
      jobId: job,
      resultId: `${job}-${id}`,
      worker,
      price,
      vestAt: clock,
    });
    const out = await ledger.creditUnits([
      item('a', w1, 400),
      item('b', w2, 400),
      item('a', w1, 400),
      item('c', w1, 400),
      item('d', w2, 200),
      { ...item('e', w1, 1), jobId: 'missing' },
      item('b', w1, 400),
    ]);
    expect(out.map((o) => (o.status === 'rejected' ? o.code : o.status))).toEqual([
      'credited',
      'credited',
      'duplicate',
      'insufficient_funds',
      'credited',
      'unknown_job',
      'event_conflict',
    ]);
    expect(await ledger.balances(w1)).toMatchObject({ pending: 400 });
    expect(await ledger.balances(w2)).toMatchObject({ pending: 600 });
    expect((await ledger.balances(r)).escrow).toBe(0);
    const again = await ledger.creditUnits([item('a', w1, 400), item('c', w1, 400)]);
    expect(again.map((o) => (o.status === 'rejected' ? o.code : o.status))).toEqual([
      'duplicate',
      'insufficient_funds',
    ]);
    expect(await ledger.creditUnits([])).toEqual([]);
  });

  it('batches per-unit credit calls made at once, with each caller getting its own outcome', async () => {
    class CountingLedger extends Ledger {
      transactions = 0;
      override creditUnits(items: CreditUnitInput[]) {
        this.transactions++;
        return super.creditUnits(items);
      }
    }
    const counting = new CountingLedger(db, { now: () => clock });
    const batcher = new CreditBatcher(counting, { maxBatch: 50, concurrency: 2 });
    const r = newAddress();
    const jobs = [0, 1, 2, 3].map((j) => `job-${j}-${r}`);
    await ledger.deposit(r, 4_000, `dep:${r}`);
    for (const job of jobs) await ledger.escrowJob(job, r, 1_000);
    const worker = newAddress();
    const units = Array.from({ length: 200 }, (_, i) => ({
      jobId: jobs[(i % 150) % 4],
      resultId: `${r}-u${i % 150}`, // results 0..49 arrive twice, identical
      worker,
      price: 20,
      vestAt: clock,
    }));
    const outcomes = await Promise.all(units.map((u) => batcher.credit(u)));
    await batcher.drain();
    expect(outcomes.filter((o) => o.status === 'credited')).toHaveLength(150);
    expect(outcomes.filter((o) => o.status === 'duplicate')).toHaveLength(50);
    expect(outcomes.every((o, i) => o.resultId === units[i].resultId)).toBe(true);
    expect(counting.transactions).toBeLessThanOrEqual(5);
    expect(await ledger.balances(worker)).toMatchObject({ pending: 3_000 });
    // Bad input fails alone; a unit the escrow cannot pay is rejected alone; the rest go through.
    const mixed = await Promise.allSettled([
      batcher.credit({ ...units[0], resultId: `${r}-bad`, price: -1 }),
      batcher.credit({ ...units[0], resultId: `${r}-big`, jobId: jobs[0], price: 10_000 }),
      batcher.credit({ ...units[0], resultId: `${r}-ok`, jobId: jobs[1] }),
    ]);
    expect(mixed[0]).toMatchObject({ status: 'rejected', reason: { code: 'invalid_amount' } });
    expect(mixed[1]).toMatchObject({ status: 'fulfilled', value: { status: 'rejected', code: 'insufficient_funds' } });
    expect(mixed[2]).toMatchObject({ status: 'fulfilled', value: { status: 'credited' } });
    expect(batcher.backlog).toBe(0);
  });

  it('vests credits whose challenge window passed, once', async () => {
    const r = newAddress();
    const w = newAddress();
    const job = `job-${r}`;
    await ledger.deposit(r, 1_000, `dep:${r}`);
    await ledger.escrowJob(job, r, 1_000);
    await ledger.creditUnit({ jobId: job, resultId: `${job}-1`, worker: w, price: 100, vestAt: clock + 10 });
    await ledger.creditUnit({ jobId: job, resultId: `${job}-2`, worker: w, price: 200, vestAt: clock + 20 });
    clock += 10;
    const first = await ledger.vestDue(clock);
    expect(first.vested).toBeGreaterThanOrEqual(1);
    expect(await ledger.balances(w)).toMatchObject({ pending: 200, vested: 100 });
    clock += 10;
    await ledger.vestDue(clock);
    expect(await ledger.balances(w)).toMatchObject({ pending: 0, vested: 300 });
    expect((await ledger.vestDue(clock)).vested).toBe(0);
    expect((await ledger.credit(`${job}-1`))?.status).toBe('vested');
    expect((await ledger.postingsForEvent(`vest:${job}-2`))?.postings).toHaveLength(2);
  });

  it('forfeits a dispute loser’s unvested credit to the escrow, minus the treasury fee', async () => {
    const r = newAddress();
    const loser = newAddress();
    const job = `job-${r}`;
    const other = `job2-${r}`;
    await ledger.deposit(r, 2_000, `dep:${r}`);
    await ledger.escrowJob(job, r, 1_000);
    await ledger.escrowJob(other, r, 1_000);
    await ledger.creditUnit({ jobId: job, resultId: `${job}-v`, worker: loser, price: 100, vestAt: clock });
    await ledger.vestDue(clock);
    await ledger.creditUnit({ jobId: job, resultId: `${job}-1`, worker: loser, price: 333, vestAt: clock + 100 });
    await ledger.creditUnit({ jobId: other, resultId: `${other}-1`, worker: loser, price: 50, vestAt: clock + 100 });
    const { treasury: before } = await ledger.systemBalances();

    const f = await ledger.forfeitUnvested({
      worker: loser,
      jobId: job,
      reason: 'lost dispute d1',
      eventKey: `forfeit:${job}`,
      feeRate: 0.1,
    });
    expect(f).toMatchObject({ created: true, forfeited: 1, amount: 333, fee: 33 });
    expect(await ledger.balances(loser)).toMatchObject({ pending: 50, vested: 100 });
    expect((await ledger.balances(r)).escrowByJob[job]).toBe(1_000 - 100 - 333 + 300);
    expect((await ledger.systemBalances()).treasury).toBe(before + 33);
    expect((await ledger.credit(`${job}-1`))?.status).toBe('forfeited');
    // Replaying the same dispute is a no-op that reports the first outcome.
    const replay = await ledger.forfeitUnvested({
      worker: loser,
      jobId: job,
      reason: 'lost dispute d1',
      eventKey: `forfeit:${job}`,
      feeRate: 0.1,
    });
    expect(replay).toMatchObject({ created: false, forfeited: 1, amount: 333, fee: 33 });
    // The other job closes first: its share goes straight back to the requester's available balance.
    await ledger.refundJob(other);
    const availableBefore = (await ledger.balances(r)).available;
    await ledger.forfeitUnvested({
      worker: loser,
      reason: 'lost dispute d2',
      eventKey: `forfeit:all:${loser}`,
      feeRate: 0.5,
    });
    expect((await ledger.balances(r)).available).toBe(availableBefore + 25);
    expect((await ledger.balances(r)).escrowByJob[other]).toBe(0);
    expect(await ledger.balances(loser)).toMatchObject({ pending: 0, vested: 100 });
    await expect(
      ledger.forfeitUnvested({ worker: loser, reason: 'x', eventKey: 'f:bad', feeRate: 1.5 }),
    ).rejects.toBeInstanceOf(InvalidArgument);
  });

  it('refunds unspent escrow once on cancel or finish', async () => {
    const r = newAddress();
    const w = newAddress();
    const job = `job-${r}`;
    await ledger.deposit(r, 1_000, `dep:${r}`);
    await ledger.escrowJob(job, r, 800);
    await ledger.creditUnit({ jobId: job, resultId: `${job}-1`, worker: w, price: 300, vestAt: clock });
    const refund = await ledger.refundJob(job);
    expect(refund).toMatchObject({ created: true, refunded: 500 });
    expect(await ledger.balances(r)).toMatchObject({ available: 700, escrow: 0 });
    expect(await ledger.refundJob(job)).toMatchObject({ created: false, refunded: 500 });
    expect(await ledger.balances(r)).toMatchObject({ available: 700 });
    await expect(ledger.refundJob('never-escrowed')).rejects.toBeInstanceOf(UnknownJob);
  });

  it('pages through an address’s history newest first and links receipts to postings', async () => {
    const r = newAddress();
    for (let i = 0; i < 7; i++) await ledger.deposit(r, 10 + i, `dep:${r}:${i}`, `faucet ${i}`);
    const seen: number[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await ledger.history(r, { limit: 3, cursor });
      seen.push(...page.items.map((i) => i.amount));
      expect(page.items.every((i) => i.eventKind === 'deposit' && i.owner === r)).toBe(true);
      cursor = page.nextCursor ?? undefined;
      pages++;
    } while (cursor);
    expect(pages).toBe(3);
    expect(seen).toEqual([16, 15, 14, 13, 12, 11, 10]);
    const first = (await ledger.history(r, { limit: 1 })).items[0];
    expect(first.memo).toBe('faucet 6');
    const receipt = await ledger.postingsForEvent(first.eventKey);
    expect(receipt?.postings.some((p) => p.id === first.id)).toBe(true);
    await expect(ledger.history(r, { cursor: 'DROP TABLE' })).rejects.toBeInstanceOf(InvalidArgument);
    await expect(ledger.history(r, { limit: 0 })).rejects.toBeInstanceOf(InvalidArgument);
  });

  it('end to end: vested credit = sum of accepted prices, unspent refunded, loser forfeits', async () => {
    const requester = newAddress();
    const honest = newAddress();
    const cheat = newAddress();
    const job = `job-${requester}`;
    const price = unitPrice(4.2e11, 2_500); // 1,050 micro-credits per unit
    await ledger.deposit(requester, 100_000, `dep:${requester}`);
    await ledger.escrowJob(job, requester, 20_000);
    const { treasury: treasuryBefore } = await ledger.systemBalances();
    for (let i = 0; i < 6; i++) {
      await ledger.creditUnit({ jobId: job, resultId: `${job}-h${i}`, worker: honest, price, vestAt: clock + 100 });
    }
    for (let i = 0; i < 3; i++) {
      await ledger.creditUnit({ jobId: job, resultId: `${job}-c${i}`, worker: cheat, price, vestAt: clock + 100 });
    }
    await ledger.forfeitUnvested({
      worker: cheat,
      jobId: job,
      reason: 'lost dispute',
      eventKey: `forfeit:${job}:cheat`,
      feeRate: 0.2,
    });
    clock += 100;
    await ledger.vestDue(clock);
    await ledger.refundJob(job);
    expect(await ledger.balances(honest)).toMatchObject({ pending: 0, vested: 6 * price });
    expect(await ledger.balances(cheat)).toMatchObject({ pending: 0, vested: 0 });
    const fee = Math.floor(3 * price * 0.2);
    expect((await ledger.systemBalances()).treasury).toBe(treasuryBefore + fee);
    expect(await ledger.balances(requester)).toMatchObject({ available: 100_000 - 6 * price - fee, escrow: 0 });
    expect(await ledger.checkIntegrity()).toMatchObject({ ok: true });
  });

  it('issues signed payout statements of cumulative vested credit', async () => {
    const r = newAddress();
    const w = newAddress();
    const job = `job-${r}`;
    const coordinatorKey = generatePrivateKey();
    const signer = { privateKey: coordinatorKey, chainId: 31337 };
    await ledger.deposit(r, 1_000, `dep:${r}`);
    await ledger.escrowJob(job, r, 1_000);
    await ledger.creditUnit({ jobId: job, resultId: `${job}-1`, worker: w, price: 400, vestAt: clock });
    await ledger.vestDue(clock);
    const s1 = await issuePayoutStatement(db, ledger, w, signer, 1_767_225_600_000);
    expect(s1.statement).toMatchObject({ account: w, vested: 400n, statementId: 1n, issuedAt: 1_767_225_600n });
    expect(verifyPayoutStatement(s1.statement, signer, s1.signature, addressFromPrivateKey(coordinatorKey))).toBe(true);
    await ledger.creditUnit({ jobId: job, resultId: `${job}-2`, worker: w, price: 100, vestAt: clock });
    await ledger.vestDue(clock);
    const s2 = await issuePayoutStatement(db, ledger, w, signer);
    expect(s2.statement).toMatchObject({ vested: 500n, statementId: 2n });
    const listed = await listPayoutStatements(db, w);
    expect(listed.map((s) => [s.statementId, s.vested])).toEqual([
      ['2', '500'],
      ['1', '400'],
    ]);
  });

  it('keeps balances non-negative at the database level too', async () => {
    // Bypass the ledger's own checks: the CHECK constraint refuses a negative balance outright.
    const r = newAddress();
    await ledger.deposit(r, 10, `dep:${r}`);
    await expect(
      db.query('UPDATE ledger_accounts SET balance = balance - 11 WHERE id = $1', [`requester:${r}:available`]),
    ).rejects.toThrow(/ledger_balance_non_negative/);
  });

  it('stays consistent under a concurrent mix of credits, vesting, forfeits and refunds', async () => {
    const requesters = [newAddress(), newAddress()];
    const workers = [newAddress(), newAddress(), newAddress()];
    const jobs = requesters.map((r, i) => `job-mix-${i}-${r}`);
    for (const [i, r] of requesters.entries()) {
      await ledger.deposit(r, 50_000, `dep:${r}`);
      await ledger.escrowJob(jobs[i], r, 30_000);
    }
    const ops: Promise<unknown>[] = [];
    for (let i = 0; i < 120; i++) {
      const job = jobs[i % 2];
      const worker = workers[i % 3];
      const resultId = `${job}-r${i % 40}`; // each result id submitted 3 times
      ops.push(
        ledger
          .creditUnit({ jobId: job, resultId, worker, price: 50 + (i % 40), vestAt: clock + (i % 5) })
          .catch((e) => e),
      );
      if (i % 10 === 0) ops.push(ledger.vestDue(clock + (i % 5)));
      if (i % 30 === 7) {
        ops.push(ledger.forfeitUnvested({ worker, reason: 'race', eventKey: `forfeit:mix:${i}`, feeRate: 0.25 }));
      }
      if (i === 100) ops.push(ledger.refundJob(jobs[1]).catch((e) => e));
    }
    const settled = await Promise.all(ops);
    for (const s of settled) {
      if (
        s instanceof Error &&
        !(s instanceof JobClosed) &&
        !(s instanceof EventConflict) &&
        !(s instanceof InsufficientFunds)
      ) {
        throw s;
      }
    }
    const report = await ledger.checkIntegrity();
    expect(report).toMatchObject({ ok: true, entriesSum: 0, drift: [], negative: [], creditDrift: [] });
    const credits = await db.query<{ result_id: string; n: number }>(
      `SELECT ev.result_id, count(*)::int AS n FROM ledger_entries e JOIN ledger_events ev ON ev.event_key = e.event_key
       WHERE ev.kind = 'credit' AND ev.job_id = ANY($1::text[]) GROUP BY ev.result_id`,
      [jobs],
    );
    expect(credits.rows.length).toBeGreaterThan(0);
    expect(credits.rows.every((row) => Number(row.n) === 2)).toBe(true);
  });
});
