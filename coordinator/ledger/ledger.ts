import { type Address, InvalidAddressError, normalizeAddress } from '../../shared/identity/address.js';
import type { Db, Queryable } from '../store/db.js';
import {
  type AccountKind,
  escrowId,
  ISSUANCE,
  jobEscrow,
  requesterAvailable,
  TREASURY,
  workerPending,
  workerVested,
} from './account-ids.js';
import {
  EventConflict,
  InsufficientFunds,
  InvalidArgument,
  JobClosed,
  JobOwnerMismatch,
  LedgerError,
  LedgerInvariantError,
  LinkConflict,
  UnknownJob,
} from './errors.js';
import {
  applyPostings,
  assertSameEvents,
  checkAmount,
  ENTRY_COLUMNS,
  type EventRecord,
  ensureAccounts,
  insertEvents,
  lockBalances,
  type Posting,
  type PostingLine,
  postingsFor,
  type SideWrite,
  toPosting,
  withRetry,
} from './postings.js';

/** What every posting operation returns: its event key, whether this call posted it, and the postings. */
export interface PostingResult {
  eventKey: string;
  /** false when the event was already recorded: the call was a no-op and these are the first call's postings. */
  created: boolean;
  postings: Posting[];
}

export interface CreditUnitInput {
  jobId: string;
  resultId: string;
  /** The address that proved itself on the worker socket. */
  worker: string;
  /**
   * Where the credit goes when not to the worker (hello.payTo: a widget's key pays the embedding site). Only routes
   * money: forfeits and trust still follow `worker`. A linked payee is paid into its link target.
   */
  payee?: string;
  /** Integer micro-credits, usually unitPrice(flops, pricePerTflop). */
  price: number;
  /** Unix ms when the challenge window closes and the credit may vest. */
  vestAt: number;
}

export type CreditStatus = 'pending' | 'vested' | 'forfeited';

export interface Credit {
  resultId: string;
  jobId: string;
  worker: Address;
  /** The account whose pending / vested balance holds the credit: the worker, or the wallet it is linked to. */
  payee: Address;
  amount: number;
  vestAt: number;
  status: CreditStatus;
  creditedAt: number;
  settledAt: number | null;
  settleEvent: string | null;
}

export type CreditRejectCode = 'insufficient_funds' | 'unknown_job' | 'job_closed' | 'event_conflict';

export type CreditOutcome =
  | { status: 'credited' | 'duplicate'; resultId: string; eventKey: string; credit: Credit }
  | { status: 'rejected'; resultId: string; code: CreditRejectCode; reason: string };

export interface ForfeitInput {
  worker: string;
  /** Only this job's unvested credits; all of the worker's when omitted. */
  jobId?: string;
  reason: string;
  eventKey: string;
  /** Fraction of the forfeited amount kept by the treasury, 0..1. */
  feeRate: number;
}

export interface ForfeitResult extends PostingResult {
  forfeited: number;
  amount: number;
  fee: number;
}

export interface RefundResult extends PostingResult {
  refunded: number;
}

export interface Balances {
  address: Address;
  available: number;
  escrow: number;
  pending: number;
  vested: number;
  escrowByJob: Record<string, number>;
}

export interface HistoryItem extends Posting {
  eventKind: string;
  jobId: string | null;
  resultId: string | null;
  memo: string | null;
}

export interface IntegrityReport {
  ok: boolean;
  entriesSum: number;
  balancesSum: number;
  /** Accounts whose stored balance differs from the sum of their postings. */
  drift: { accountId: string; balance: number; postings: number }[];
  negative: { accountId: string; balance: number }[];
  /** Workers whose pending / vested balance differs from the sum of their pending / vested credits. */
  creditDrift: { accountId: string; balance: number; credits: number }[];
}

export interface LinkInput {
  /** The account whose credit moves (a browser's local key). */
  from: string;
  /** The account that receives it (a wallet). */
  to: string;
  /** The signed link message and both signatures, kept with the link for audits. */
  proof?: { message: string; localSignature: string; walletSignature: string };
}

export interface LinkResult extends PostingResult {
  from: Address;
  to: Address;
  /** Pending credit moved to the wallet (its credits now vest there). */
  pendingMoved: number;
  /** Vested credit moved to the wallet. */
  vestedMoved: number;
  /** Vested credit left with `from` because a payout statement already promised it to `from`. */
  vestedKept: number;
  linkedAt: number;
}

export interface AccountLinks {
  /** The wallet this account's credit goes to, when it was linked. */
  linkedTo: { address: Address; eventKey: string; linkedAt: number } | null;
  /** Accounts linked to this one. */
  linkedFrom: { address: Address; eventKey: string; linkedAt: number }[];
}

/** The event key of the link of `from`: an account is linked at most once. */
export const linkEventKey = (from: string): string => `link:${from}`;

/** Link targets of workers that have one (worker -> wallet). */
async function payeesOf(q: Queryable, workers: string[]): Promise<Map<Address, Address>> {
  if (workers.length === 0) return new Map();
  const r = await q.query<{ local: Address; wallet: Address }>(
    'SELECT local, wallet FROM ledger_links WHERE local = ANY($1::text[])',
    [workers],
  );
  return new Map(r.rows.map((row) => [row.local, row.wallet]));
}

function toLinkResult(row: Record<string, unknown>, postings: Posting[], created: boolean): LinkResult {
  return {
    eventKey: String(row.event_key),
    created,
    postings,
    from: row.local as Address,
    to: row.wallet as Address,
    pendingMoved: Number(row.pending_moved),
    vestedMoved: Number(row.vested_moved),
    vestedKept: Number(row.vested_kept),
    linkedAt: Number(row.created_at),
  };
}

export interface LedgerOptions {
  /** Clock for created_at and credit timestamps (unix ms); tests pass their own. */
  now?: () => number;
}

const CREDIT_COLUMNS =
  'result_id, job_id, worker, payee, amount, vest_at, status, credited_at, settled_at, settle_event';

function toCredit(row: Record<string, unknown>): Credit {
  return {
    resultId: String(row.result_id),
    jobId: String(row.job_id),
    worker: row.worker as Address,
    payee: row.payee as Address,
    amount: Number(row.amount),
    vestAt: Number(row.vest_at),
    status: row.status as CreditStatus,
    creditedAt: Number(row.credited_at),
    settledAt: row.settled_at === null ? null : Number(row.settled_at),
    settleEvent: (row.settle_event as string | null) ?? null,
  };
}

function address(field: string, value: unknown): Address {
  try {
    return normalizeAddress(value);
  } catch (err) {
    if (err instanceof InvalidAddressError) throw new InvalidArgument(field, err.message);
    throw err;
  }
}

function text(field: string, value: unknown, max = 200): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > max) {
    throw new InvalidArgument(field, `must be a non-empty string of at most ${max} characters`);
  }
  return value;
}

function timeMs(field: string, value: unknown): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw new InvalidArgument(field, 'must be a unix time in integer milliseconds');
  }
  return value;
}

/** Validates one unit to credit (throws InvalidArgument / InvalidAmount) and canonicalises its worker address. */
export function checkCreditInput(
  it: CreditUnitInput,
  prefix = '',
): CreditUnitInput & { worker: Address; payee?: Address } {
  return {
    jobId: text(`${prefix}jobId`, it.jobId),
    resultId: text(`${prefix}resultId`, it.resultId),
    worker: address(`${prefix}worker`, it.worker),
    ...(it.payee !== undefined ? { payee: address(`${prefix}payee`, it.payee) } : {}),
    price: checkAmount(`${prefix}price`, it.price),
    vestAt: timeMs(`${prefix}vestAt`, it.vestAt),
  };
}

/** floor(amount x rate) with the rate in parts per million, in BigInt so large amounts stay exact. */
function feeOf(amount: number, feePpm: bigint): number {
  return Number((BigInt(amount) * feePpm) / 1_000_000n);
}

/**
 * The double-entry ledger. Every operation is one transaction, idempotent by its event key, and keeps every
 * balance but the issuance account non-negative. Works the same on PGlite and PostgreSQL; on PostgreSQL it is safe
 * under concurrent callers (row locks in a fixed order, unique event keys, retry on deadlock).
 */
export class Ledger {
  private readonly now: () => number;

  constructor(
    private readonly db: Db,
    opts: LedgerOptions = {},
  ) {
    this.now = opts.now ?? Date.now;
  }

  /** Faucet or admin deposit: mints `amount` from the issuance account into the requester's available balance. */
  async deposit(addr: string, amount: number, eventKey: string, memo?: string): Promise<PostingResult> {
    const who = address('address', addr);
    checkAmount('amount', amount, { positive: true });
    text('eventKey', eventKey);
    const event: EventRecord = { eventKey, kind: 'deposit', fingerprint: JSON.stringify([who, amount]), memo };
    return this.postOnce(event, async () => [
      { account: ISSUANCE, amount: -amount },
      { account: requesterAvailable(who), amount },
    ]);
  }

  /**
   * Moves `budget` from the requester's available balance into the job's escrow (opening the job in the ledger).
   * Throws InsufficientFunds (HTTP 402) when the available balance is lower. A second escrow for the same job (a
   * top-up) needs its own eventKey.
   */
  async escrowJob(
    jobId: string,
    requester: string,
    budget: number,
    opts: { eventKey?: string } = {},
  ): Promise<PostingResult> {
    text('jobId', jobId);
    const who = address('requester', requester);
    checkAmount('budget', budget);
    const eventKey = opts.eventKey ?? `escrow:${jobId}`;
    const event: EventRecord = { eventKey, kind: 'escrow', fingerprint: JSON.stringify([jobId, who, budget]), jobId };
    return this.postOnce(event, async (q, now) => {
      await q.query(
        `INSERT INTO ledger_jobs (job_id, requester, status, created_at) VALUES ($1, $2, 'open', $3)
         ON CONFLICT (job_id) DO NOTHING`,
        [jobId, who, now],
      );
      const job = await q.query<{ requester: string; status: string }>(
        'SELECT requester, status FROM ledger_jobs WHERE job_id = $1 FOR SHARE',
        [jobId],
      );
      if (job.rows[0].requester !== who) throw new JobOwnerMismatch(jobId, job.rows[0].requester, who);
      if (job.rows[0].status !== 'open') throw new JobClosed(jobId);
      const from = requesterAvailable(who);
      const escrow = jobEscrow(jobId, who);
      // The escrow row exists from the start so creditUnits can always lock it.
      await ensureAccounts(q, [escrow]);
      const balances = await lockBalances(q, [from.id]);
      const available = balances.get(from.id) ?? 0;
      if (available < budget) throw new InsufficientFunds(from.id, budget, available);
      return [
        { account: from, amount: -budget },
        { account: escrow, amount: budget },
      ];
    });
  }

  /** One accepted unit: moves its price from the job's escrow to the worker's pending credit, exactly once. */
  async creditUnit(
    input: CreditUnitInput,
  ): Promise<{ status: 'credited' | 'duplicate'; eventKey: string; credit: Credit }> {
    const [outcome] = await this.creditUnits([input]);
    if (outcome.status !== 'rejected') return outcome;
    const { jobId } = input;
    switch (outcome.code) {
      case 'unknown_job':
        throw new UnknownJob(jobId);
      case 'job_closed':
        throw new JobClosed(jobId);
      case 'event_conflict':
        throw new EventConflict(`credit:${input.resultId}`);
      default: {
        const balance = await this.db.query<{ balance: number }>('SELECT balance FROM ledger_accounts WHERE id = $1', [
          escrowId(jobId),
        ]);
        throw new InsufficientFunds(escrowId(jobId), input.price, Number(balance.rows[0]?.balance ?? 0));
      }
    }
  }

  /**
   * Credits many accepted units in one transaction (what the scheduler should call when results arrive in bursts).
   * Each item gets its own outcome: credited, duplicate (already credited: returns the first credit) or rejected
   * (unknown or closed job, escrow exhausted, or the same result id with a different worker/job/price).
   * Within a batch, items of one job are served in order until its escrow runs out.
   */
  async creditUnits(items: CreditUnitInput[]): Promise<CreditOutcome[]> {
    const clean = items.map((it, i) => checkCreditInput(it, `items[${i}].`));
    if (clean.length === 0) return [];
    const fingerprint = (it: (typeof clean)[number]) => JSON.stringify([it.jobId, it.worker, it.price]);
    // The first occurrence of a result id in the batch is the one that counts; the rest mirror its outcome.
    const firstIndex = new Map<string, number>();
    clean.forEach((it, i) => {
      if (!firstIndex.has(it.resultId)) firstIndex.set(it.resultId, i);
    });
    const unique = [...firstIndex.values()].map((i) => clean[i]);

    const decided = await withRetry(this.db, async (q) => {
      const now = this.now();
      const out = new Map<string, CreditOutcome>();
      const jobIds = [...new Set(unique.map((it) => it.jobId))];
      // Lock every escrow this batch draws on, in id order, before any event key: a concurrent duplicate then
      // waits here instead of holding its event key while we wait for its escrow.
      const jobs = await q.query<{ job_id: string; status: string; requester: string; balance: number }>(
        `SELECT j.job_id, j.status, j.requester, a.balance FROM ledger_jobs j
         JOIN ledger_accounts a ON a.id = 'job:' || j.job_id || ':escrow'
         WHERE j.job_id = ANY($1::text[]) ORDER BY a.id FOR NO KEY UPDATE OF a`,
        [jobIds],
      );
      const jobById = new Map(jobs.rows.map((r) => [r.job_id, { ...r, balance: Number(r.balance) }]));
      // A worker linked to a wallet is paid into the wallet's accounts (a link committed after this read is caught
      // at vesting, which resolves the link again).
      const payees = await payeesOf(q, [...new Set(unique.map((it) => it.payee ?? it.worker))]);
      const payeeOf = (it: { worker: Address; payee?: Address }) => {
        const to = it.payee ?? it.worker;
        return payees.get(to) ?? to;
      };
      const events: EventRecord[] = unique.map((it) => ({
        eventKey: `credit:${it.resultId}`,
        kind: 'credit',
        fingerprint: fingerprint(it),
        jobId: it.jobId,
        resultId: it.resultId,
      }));
      const fresh = await insertEvents(q, events, now);

      const repeated = unique.filter((it) => !fresh.has(`credit:${it.resultId}`));
      if (repeated.length > 0) {
        const stored = await q.query(
          `SELECT ev.fingerprint, ${CREDIT_COLUMNS.split(', ')
            .map((c) => `c.${c}`)
            .join(', ')}
           FROM ledger_events ev LEFT JOIN ledger_credits c ON c.result_id = ev.result_id
           WHERE ev.event_key = ANY($1::text[])`,
          [repeated.map((it) => `credit:${it.resultId}`)],
        );
        const byResult = new Map(stored.rows.map((r) => [String(r.result_id), r]));
        for (const it of repeated) {
          const row = byResult.get(it.resultId);
          if (!row || row.fingerprint !== fingerprint(it)) {
            out.set(it.resultId, {
              status: 'rejected',
              resultId: it.resultId,
              code: 'event_conflict',
              reason: `result ${it.resultId} was already credited with a different job, worker or price`,
            });
          } else {
            out.set(it.resultId, {
              status: 'duplicate',
              resultId: it.resultId,
              eventKey: `credit:${it.resultId}`,
              credit: toCredit(row),
            });
          }
        }
      }

      const accepted: typeof unique = [];
      const dropped: string[] = [];
      for (const it of unique) {
        if (!fresh.has(`credit:${it.resultId}`)) continue;
        const job = jobById.get(it.jobId);
        let reject: { code: CreditRejectCode; reason: string } | null = null;
        if (!job) reject = { code: 'unknown_job', reason: `no escrow exists for job ${it.jobId}` };
        else if (job.status !== 'open') reject = { code: 'job_closed', reason: `job ${it.jobId} is closed` };
        else if (job.balance < it.price) {
          reject = {
            code: 'insufficient_funds',
            reason: `escrow of job ${it.jobId} holds ${job.balance} micro-credits, the unit costs ${it.price}`,
          };
        }
        if (reject) {
          dropped.push(`credit:${it.resultId}`);
          out.set(it.resultId, { status: 'rejected', resultId: it.resultId, ...reject });
          continue;
        }
        job!.balance -= it.price;
        accepted.push(it);
      }
      // One statement: drop the rejected items' event keys, insert the credits, move the money.
      const sideWrites: SideWrite[] = [];
      if (dropped.length > 0) {
        sideWrites.push({ sql: 'DELETE FROM ledger_events WHERE event_key = ANY($1::text[])', params: [dropped] });
      }
      if (accepted.length > 0) {
        sideWrites.push({
          sql: `INSERT INTO ledger_credits (result_id, job_id, worker, payee, amount, vest_at, status, credited_at)
                SELECT r, j, w, p, a, v, 'pending', $7::bigint
                FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[])
                  AS u(r, j, w, p, a, v)`,
          params: [
            accepted.map((it) => it.resultId),
            accepted.map((it) => it.jobId),
            accepted.map((it) => it.worker),
            accepted.map((it) => payeeOf(it)),
            accepted.map((it) => it.price),
            accepted.map((it) => it.vestAt),
            now,
          ],
        });
      }
      await applyPostings(
        q,
        accepted.map((it) => ({
          eventKey: `credit:${it.resultId}`,
          lines: [
            { account: jobEscrow(it.jobId, jobById.get(it.jobId)!.requester), amount: -it.price },
            { account: workerPending(payeeOf(it)), amount: it.price },
          ],
        })),
        now,
        sideWrites,
      );
      if (accepted.length > 0) {
        for (const it of accepted) {
          out.set(it.resultId, {
            status: 'credited',
            resultId: it.resultId,
            eventKey: `credit:${it.resultId}`,
            credit: {
              resultId: it.resultId,
              jobId: it.jobId,
              worker: it.worker,
              payee: payeeOf(it),
              amount: it.price,
              vestAt: it.vestAt,
              status: 'pending',
              creditedAt: now,
              settledAt: null,
              settleEvent: null,
            },
          });
        }
      }
      return out;
    });

    return clean.map((it, i) => {
      const first = decided.get(it.resultId)!;
      if (firstIndex.get(it.resultId) === i) return first;
      if (first.status === 'rejected') return first;
      if (fingerprint(it) !== JSON.stringify([first.credit.jobId, first.credit.worker, first.credit.amount])) {
        return {
          status: 'rejected',
          resultId: it.resultId,
          code: 'event_conflict',
          reason: `result ${it.resultId} appears twice in the batch with different content`,
        };
      }
      return { ...first, status: 'duplicate' };
    });
  }

  /**
   * Vests every pending credit whose challenge window closed (vestAt <= now) and that was not forfeited:
   * worker pending -> worker vested, one posting group `vest:<resultId>` per credit. Credits locked by a concurrent
   * vestDue or forfeit are skipped (SKIP LOCKED) and picked up by the next call.
   */
  async vestDue(now: number, opts: { limit?: number } = {}): Promise<{ vested: number; amount: number }> {
    timeMs('now', now);
    const limit = opts.limit ?? 10_000;
    return withRetry(this.db, async (q) => {
      const at = this.now();
      // Lock the due credits first, then their payees' pending balances. A link holds its local key's pending
      // balance until it commits, and it never locks a credit posted after its own read, so the balance lock is what
      // orders a vest after a concurrent link: the update below is a later statement and sees that link.
      const due = await q.query<{ result_id: string; payee: Address }>(
        `SELECT result_id, payee FROM ledger_credits WHERE status = 'pending' AND vest_at <= $1
         ORDER BY result_id LIMIT $2 FOR UPDATE SKIP LOCKED`,
        [now, limit],
      );
      if (due.rows.length === 0) return { vested: 0, amount: 0 };
      await lockBalances(
        q,
        due.rows.map((row) => workerPending(row.payee).id),
      );
      // A credit vests into the payee's link target when the payee was linked after the credit was posted.
      const r = await q.query<{
        result_id: string;
        worker: string;
        amount: number;
        job_id: string;
        from_payee: Address;
        to_payee: Address;
      }>(
        `UPDATE ledger_credits c SET status = 'vested', settled_at = $2, settle_event = 'vest:' || c.result_id,
           payee = m.to_payee
         FROM (SELECT lc.result_id, lc.payee AS from_payee, COALESCE(l.wallet, lc.payee) AS to_payee
               FROM ledger_credits lc LEFT JOIN ledger_links l ON l.local = lc.payee
               WHERE lc.result_id = ANY($1::text[])) m
         WHERE c.result_id = m.result_id AND c.status = 'pending'
         RETURNING c.result_id, c.worker, c.amount, c.job_id, m.from_payee, m.to_payee`,
        [due.rows.map((row) => row.result_id), at],
      );
      if (r.rows.length === 0) return { vested: 0, amount: 0 };
      const credits = r.rows.map((row) => ({ ...row, amount: Number(row.amount) }));
      // Event rows, balances and entries in one statement (the entries' foreign key sees the sibling insert).
      await applyPostings(
        q,
        credits.map((c) => ({
          eventKey: `vest:${c.result_id}`,
          lines: [
            { account: workerPending(c.from_payee), amount: -c.amount },
            { account: workerVested(c.to_payee), amount: c.amount },
          ],
        })),
        at,
        [
          {
            sql: `INSERT INTO ledger_events (event_key, kind, fingerprint, job_id, result_id, created_at)
                  SELECT 'vest:' || r, 'vest', json_build_array(w, a)::text, j, r, $5::bigint
                  FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[]) AS u(r, w, a, j)`,
            params: [
              credits.map((c) => c.result_id),
              credits.map((c) => c.worker),
              credits.map((c) => c.amount),
              credits.map((c) => c.job_id),
              at,
            ],
          },
        ],
      );
      return { vested: credits.length, amount: credits.reduce((s, c) => s + c.amount, 0) };
    });
  }

  /**
   * A lost dispute: the worker's unvested (pending) credits — of one job, or all — go back to the escrow of the job
   * each was paid from, minus `feeRate` of it to the treasury. When a job's escrow was already refunded (job
   * closed), its share goes straight to the requester's available balance instead.
   */
  async forfeitUnvested(input: ForfeitInput): Promise<ForfeitResult> {
    const worker = address('worker', input.worker);
    if (input.jobId !== undefined) text('jobId', input.jobId);
    text('reason', input.reason, 500);
    text('eventKey', input.eventKey);
    if (typeof input.feeRate !== 'number' || !(input.feeRate >= 0 && input.feeRate <= 1)) {
      throw new InvalidArgument('feeRate', 'must be a number in [0, 1]');
    }
    const feePpm = BigInt(Math.round(input.feeRate * 1_000_000));
    const event: EventRecord = {
      eventKey: input.eventKey,
      kind: 'forfeit',
      fingerprint: JSON.stringify([worker, input.jobId ?? null, feePpm.toString()]),
      jobId: input.jobId ?? null,
      memo: input.reason,
    };
    let summary = { forfeited: 0, amount: 0, fee: 0 };
    const result = await this.postOnce(event, async (q, now) => {
      summary = { forfeited: 0, amount: 0, fee: 0 };
      const credits = await q.query<{ result_id: string; job_id: string; amount: number; payee: Address }>(
        `SELECT result_id, job_id, amount, payee FROM ledger_credits
         WHERE worker = $1 AND status = 'pending' AND ($2::text IS NULL OR job_id = $2)
         ORDER BY result_id FOR UPDATE`,
        [worker, input.jobId ?? null],
      );
      if (credits.rows.length === 0) return [];
      await q.query(
        `UPDATE ledger_credits SET status = 'forfeited', settled_at = $2, settle_event = $3
         WHERE result_id = ANY($1::text[])`,
        [credits.rows.map((c) => c.result_id), now, input.eventKey],
      );
      const perJob = new Map<string, number>();
      // Forfeits follow the worker that did the work; the money leaves whichever pending account holds it.
      const perPayee = new Map<Address, number>();
      for (const c of credits.rows) {
        perJob.set(c.job_id, (perJob.get(c.job_id) ?? 0) + Number(c.amount));
        perPayee.set(c.payee, (perPayee.get(c.payee) ?? 0) + Number(c.amount));
      }
      // FOR SHARE: a concurrent refund (FOR UPDATE) of one of these jobs waits, so money never lands in an escrow
      // that was just emptied and closed.
      const jobs = await q.query<{ job_id: string; requester: string; status: string }>(
        'SELECT job_id, requester, status FROM ledger_jobs WHERE job_id = ANY($1::text[]) ORDER BY job_id FOR SHARE',
        [[...perJob.keys()]],
      );
      const lines: PostingLine[] = [];
      let total = 0;
      let fees = 0;
      for (const job of jobs.rows) {
        const amount = perJob.get(job.job_id)!;
        const fee = feeOf(amount, feePpm);
        total += amount;
        fees += fee;
        const back = job.status === 'open' ? jobEscrow(job.job_id, job.requester) : requesterAvailable(job.requester);
        lines.push({ account: back, amount: amount - fee });
      }
      if (jobs.rows.length !== perJob.size) throw new LedgerInvariantError('a credit refers to a job without escrow');
      for (const [payee, amount] of perPayee) lines.push({ account: workerPending(payee), amount: -amount });
      lines.push({ account: TREASURY, amount: fees });
      summary = { forfeited: credits.rows.length, amount: total, fee: fees };
      return lines;
    });
    if (!result.created) {
      const pendingOut = result.postings
        .filter((p) => p.kind === 'pending')
        .reduce((sum, p) => sum + p.amount, 0 as number);
      const fee = result.postings.find((p) => p.kind === 'treasury');
      const count = await this.db.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM ledger_credits WHERE settle_event = $1',
        [input.eventKey],
      );
      summary = { forfeited: Number(count.rows[0].n), amount: 0 - pendingOut, fee: fee?.amount ?? 0 };
    }
    return { ...result, ...summary };
  }

  /**
   * Links `from` (a local key) to `to` (a wallet), once and for good, in one transaction under the event key
   * `link:<from>`: from's pending credits move to to's pending account (their payee becomes `to`, so they vest
   * there and are still forfeited if `from` loses a dispute), from's vested balance moves to to's vested account
   * except what a payout statement already promised to `from`, and every later credit earned by `from` is paid to
   * `to`. The same link again is a no-op (created: false); another wallet, or a chain (to already linked on, or
   * from already a link target), is a LinkConflict (409).
   */
  async linkAccounts(input: LinkInput): Promise<LinkResult> {
    const from = address('from', input.from);
    const to = address('to', input.to);
    if (from === to) throw new InvalidArgument('to', 'must differ from from');
    const eventKey = linkEventKey(from);
    const event: EventRecord = { eventKey, kind: 'link', fingerprint: JSON.stringify([from, to]), memo: `to ${to}` };
    return withRetry(this.db, async (q) => {
      const now = this.now();
      const fresh = await insertEvents(q, [event], now);
      if (!fresh.has(eventKey)) {
        const existing = await q.query('SELECT * FROM ledger_links WHERE local = $1', [from]);
        const row = existing.rows[0];
        if (!row) throw new LedgerInvariantError(`event ${eventKey} without its link row`);
        if (row.wallet !== to) {
          throw new LinkConflict('already_linked', `${from} is already linked to ${String(row.wallet)}`, 'from');
        }
        await assertSameEvents(q, [event]);
        return toLinkResult(row, (await postingsFor(q, [eventKey])).get(eventKey) ?? [], false);
      }
      // Lock order as in vestDue / forfeitUnvested: credits first, then balances (in id order). The balance locks
      // also serialise links that share an address, so the chain checks below see each other.
      const credits = await q.query<{ result_id: string; amount: number }>(
        `SELECT result_id, amount FROM ledger_credits WHERE payee = $1 AND status = 'pending'
         ORDER BY result_id FOR UPDATE`,
        [from],
      );
      const accounts = [workerPending(from), workerPending(to), workerVested(from), workerVested(to)].sort((a, b) =>
        a.id < b.id ? -1 : 1,
      );
      await ensureAccounts(q, accounts);
      const balances = await lockBalances(
        q,
        accounts.map((a) => a.id),
      );
      const onward = await q.query<{ wallet: string }>('SELECT wallet FROM ledger_links WHERE local = $1', [to]);
      if (onward.rows.length > 0) {
        throw new LinkConflict(
          'link_chain',
          `${to} is itself linked to ${onward.rows[0].wallet}: link to that wallet instead`,
          'to',
        );
      }
      const inward = await q.query<{ local: string }>('SELECT local FROM ledger_links WHERE wallet = $1 LIMIT 1', [
        from,
      ]);
      if (inward.rows.length > 0) {
        throw new LinkConflict('link_chain', `${from} receives the credit of ${inward.rows[0].local}`, 'from');
      }
      // The credits locked above, not the balance: a credit committed after that lock stays with `from` and moves
      // when it vests (vestDue resolves the link).
      const pendingMoved = credits.rows.reduce((sum, c) => sum + Number(c.amount), 0);
      const kept = await q.query<{ v: number }>(
        'SELECT COALESCE(MAX(vested), 0)::bigint AS v FROM ledger_statements WHERE account = $1',
        [from],
      );
      const vestedBalance = balances.get(workerVested(from).id) ?? 0;
      const vestedKept = Math.min(Number(kept.rows[0].v), vestedBalance);
      const vestedMoved = vestedBalance - vestedKept;
      if (pendingMoved > (balances.get(workerPending(from).id) ?? 0)) {
        throw new LedgerInvariantError(`pending credits of ${from} exceed its pending balance`);
      }
      const sideWrites: SideWrite[] = [
        {
          sql: `INSERT INTO ledger_links (local, wallet, event_key, pending_moved, vested_moved, vested_kept, message,
                                          local_signature, wallet_signature, created_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::bigint)`,
          params: [
            from,
            to,
            eventKey,
            pendingMoved,
            vestedMoved,
            vestedKept,
            input.proof?.message ?? null,
            input.proof?.localSignature ?? null,
            input.proof?.walletSignature ?? null,
            now,
          ],
        },
      ];
      if (credits.rows.length > 0) {
        sideWrites.push({
          sql: 'UPDATE ledger_credits SET payee = $2 WHERE result_id = ANY($1::text[])',
          params: [credits.rows.map((c) => c.result_id), to],
        });
      }
      const postings = await applyPostings(
        q,
        [
          {
            eventKey,
            lines: [
              { account: workerPending(from), amount: -pendingMoved },
              { account: workerPending(to), amount: pendingMoved },
              { account: workerVested(from), amount: -vestedMoved },
              { account: workerVested(to), amount: vestedMoved },
            ],
          },
        ],
        now,
        sideWrites,
      );
      return {
        eventKey,
        created: true,
        postings,
        from,
        to,
        pendingMoved,
        vestedMoved,
        vestedKept,
        linkedAt: now,
      };
    });
  }

  /** The link of `from`, or null. */
  async link(from: string): Promise<LinkResult | null> {
    const who = address('from', from);
    const r = await this.db.query('SELECT * FROM ledger_links WHERE local = $1', [who]);
    if (r.rows.length === 0) return null;
    const key = String(r.rows[0].event_key);
    return toLinkResult(r.rows[0], (await postingsFor(this.db, [key])).get(key) ?? [], false);
  }

  /** Where an account's credit goes (linkedTo) and which accounts send theirs here (linkedFrom). */
  async links(addr: string): Promise<AccountLinks> {
    const who = address('address', addr);
    const r = await this.db.query<{ local: Address; wallet: Address; event_key: string; created_at: number }>(
      `SELECT local, wallet, event_key, created_at FROM ledger_links WHERE local = $1 OR wallet = $1
       ORDER BY created_at, local`,
      [who],
    );
    const out: AccountLinks = { linkedTo: null, linkedFrom: [] };
    for (const row of r.rows) {
      const ref = { eventKey: row.event_key, linkedAt: Number(row.created_at) };
      if (row.local === who) out.linkedTo = { address: row.wallet, ...ref };
      else out.linkedFrom.push({ address: row.local, ...ref });
    }
    return out;
  }

  /** Cancel or finish: closes the job and returns its unspent escrow to the requester's available balance. */
  async refundJob(jobId: string, opts: { eventKey?: string } = {}): Promise<RefundResult> {
    text('jobId', jobId);
    const eventKey = opts.eventKey ?? `refund:${jobId}`;
    const event: EventRecord = { eventKey, kind: 'refund', fingerprint: JSON.stringify([jobId]), jobId };
    let refunded = 0;
    const result = await this.postOnce(event, async (q, now) => {
      const job = await q.query<{ requester: string }>(
        'SELECT requester FROM ledger_jobs WHERE job_id = $1 FOR UPDATE',
        [jobId],
      );
      if (job.rows.length === 0) throw new UnknownJob(jobId);
      const requester = job.rows[0].requester;
      await q.query(`UPDATE ledger_jobs SET status = 'closed', closed_at = $2 WHERE job_id = $1`, [jobId, now]);
      const escrow = jobEscrow(jobId, requester);
      refunded = (await lockBalances(q, [escrow.id])).get(escrow.id) ?? 0;
      return [
        { account: escrow, amount: -refunded },
        { account: requesterAvailable(requester), amount: refunded },
      ];
    });
    if (!result.created) refunded = result.postings.find((p) => p.kind === 'available')?.amount ?? 0;
    return { ...result, refunded };
  }

  async balances(addr: string): Promise<Balances> {
    const who = address('address', addr);
    const r = await this.db.query<{ id: string; kind: AccountKind; balance: number }>(
      'SELECT id, kind, balance FROM ledger_accounts WHERE owner = $1',
      [who],
    );
    const out: Balances = { address: who, available: 0, escrow: 0, pending: 0, vested: 0, escrowByJob: {} };
    for (const row of r.rows) {
      const balance = Number(row.balance);
      if (row.kind === 'escrow') {
        out.escrow += balance;
        out.escrowByJob[row.id.slice('job:'.length, -':escrow'.length)] = balance;
      } else if (row.kind === 'available' || row.kind === 'pending' || row.kind === 'vested') {
        out[row.kind] += balance;
      }
    }
    return out;
  }

  /** Treasury fees collected and total credit issued (the negated issuance balance). */
  async systemBalances(): Promise<{ treasury: number; issued: number }> {
    const r = await this.db.query<{ id: string; balance: number }>(
      'SELECT id, balance FROM ledger_accounts WHERE id = ANY($1::text[])',
      [[TREASURY.id, ISSUANCE.id]],
    );
    const get = (id: string) => Number(r.rows.find((row) => row.id === id)?.balance ?? 0);
    return { treasury: get(TREASURY.id), issued: 0 - get(ISSUANCE.id) };
  }

  /** Postings on any of the address's accounts, newest first. `cursor` is the nextCursor of the previous page. */
  async history(
    addr: string,
    opts: { limit?: number; cursor?: string } = {},
  ): Promise<{ items: HistoryItem[]; nextCursor: string | null }> {
    const who = address('address', addr);
    const limit = opts.limit ?? 50;
    if (!Number.isInteger(limit) || limit < 1 || limit > 500) throw new InvalidArgument('limit', 'must be 1..500');
    if (opts.cursor !== undefined && !/^\d{1,18}$/.test(opts.cursor)) {
      throw new InvalidArgument('cursor', 'must be the nextCursor of a previous page');
    }
    const r = await this.db.query(
      `SELECT ${ENTRY_COLUMNS}, ev.kind AS event_kind, ev.job_id, ev.result_id, ev.memo
       FROM ledger_entries e
       JOIN ledger_accounts a ON a.id = e.account_id
       JOIN ledger_events ev ON ev.event_key = e.event_key
       WHERE e.owner = $1 AND ($2::bigint IS NULL OR e.id < $2::bigint)
       ORDER BY e.id DESC LIMIT $3`,
      [who, opts.cursor ?? null, limit + 1],
    );
    const items = r.rows.slice(0, limit).map((row) => ({
      ...toPosting(row),
      eventKind: String(row.event_kind),
      jobId: (row.job_id as string | null) ?? null,
      resultId: (row.result_id as string | null) ?? null,
      memo: (row.memo as string | null) ?? null,
    }));
    const nextCursor = r.rows.length > limit ? String(items[items.length - 1].id) : null;
    return { items, nextCursor };
  }

  /** A receipt: the event and its postings (empty postings for an event that moved nothing), or null. */
  async postingsForEvent(eventKey: string): Promise<{
    eventKey: string;
    kind: string;
    jobId: string | null;
    resultId: string | null;
    memo: string | null;
    createdAt: number;
    postings: Posting[];
  } | null> {
    const ev = await this.db.query('SELECT * FROM ledger_events WHERE event_key = $1', [eventKey]);
    if (ev.rows.length === 0) return null;
    const row = ev.rows[0];
    const postings = (await postingsFor(this.db, [eventKey])).get(eventKey) ?? [];
    return {
      eventKey,
      kind: String(row.kind),
      jobId: (row.job_id as string | null) ?? null,
      resultId: (row.result_id as string | null) ?? null,
      memo: (row.memo as string | null) ?? null,
      createdAt: Number(row.created_at),
      postings,
    };
  }

  async credit(resultId: string): Promise<Credit | null> {
    const r = await this.db.query(`SELECT ${CREDIT_COLUMNS} FROM ledger_credits WHERE result_id = $1`, [resultId]);
    return r.rows.length ? toCredit(r.rows[0]) : null;
  }

  async credits(filter: { worker?: string; jobId?: string; status?: CreditStatus } = {}): Promise<Credit[]> {
    const r = await this.db.query(
      `SELECT ${CREDIT_COLUMNS} FROM ledger_credits
       WHERE ($1::text IS NULL OR worker = $1) AND ($2::text IS NULL OR job_id = $2) AND ($3::text IS NULL OR status = $3)
       ORDER BY credited_at, result_id`,
      [filter.worker ? address('worker', filter.worker) : null, filter.jobId ?? null, filter.status ?? null],
    );
    return r.rows.map(toCredit);
  }

  /** Sum of every posting ever made: 0 unless the ledger is broken. */
  async totalSum(): Promise<number> {
    const r = await this.db.query<{ s: number }>('SELECT COALESCE(SUM(amount), 0)::bigint AS s FROM ledger_entries');
    return Number(r.rows[0].s);
  }

  /** Cross-checks balances against postings and credits; for tests, audits and an admin endpoint. */
  async checkIntegrity(): Promise<IntegrityReport> {
    const sums = await this.db.query<{ e: number; b: number }>(
      `SELECT (SELECT COALESCE(SUM(amount), 0)::bigint FROM ledger_entries) AS e,
              (SELECT COALESCE(SUM(balance), 0)::bigint FROM ledger_accounts) AS b`,
    );
    const drift = await this.db.query<{ id: string; balance: number; postings: number }>(
      `SELECT a.id, a.balance, COALESCE(s.total, 0)::bigint AS postings FROM ledger_accounts a
       LEFT JOIN (SELECT account_id, SUM(amount) AS total FROM ledger_entries GROUP BY account_id) s ON s.account_id = a.id
       WHERE a.balance <> COALESCE(s.total, 0)`,
    );
    const negative = await this.db.query<{ id: string; balance: number }>(
      `SELECT id, balance FROM ledger_accounts WHERE kind <> 'issuance' AND balance < 0`,
    );
    // Pending / vested balances = the credits they hold (by payee), plus vested credit moved in by account links,
    // minus vested credit moved out.
    const creditDrift = await this.db.query<{ id: string; balance: number; credits: number }>(
      `SELECT a.id, a.balance, (COALESCE(c.total, 0) + CASE WHEN a.kind = 'vested'
                THEN COALESCE(li.moved, 0) - COALESCE(lo.moved, 0) ELSE 0 END)::bigint AS credits
       FROM ledger_accounts a
       LEFT JOIN (SELECT payee, status, SUM(amount) AS total FROM ledger_credits GROUP BY payee, status) c
         ON a.owner = c.payee AND c.status = a.kind
       LEFT JOIN (SELECT wallet, SUM(vested_moved) AS moved FROM ledger_links GROUP BY wallet) li ON li.wallet = a.owner
       LEFT JOIN (SELECT local, SUM(vested_moved) AS moved FROM ledger_links GROUP BY local) lo ON lo.local = a.owner
       WHERE a.kind IN ('pending', 'vested')
         AND a.balance <> COALESCE(c.total, 0) + CASE WHEN a.kind = 'vested'
                THEN COALESCE(li.moved, 0) - COALESCE(lo.moved, 0) ELSE 0 END`,
    );
    const entriesSum = Number(sums.rows[0].e);
    const balancesSum = Number(sums.rows[0].b);
    const report: IntegrityReport = {
      ok: false,
      entriesSum,
      balancesSum,
      drift: drift.rows.map((r) => ({ accountId: r.id, balance: Number(r.balance), postings: Number(r.postings) })),
      negative: negative.rows.map((r) => ({ accountId: r.id, balance: Number(r.balance) })),
      creditDrift: creditDrift.rows.map((r) => ({
        accountId: r.id,
        balance: Number(r.balance),
        credits: Number(r.credits),
      })),
    };
    report.ok =
      entriesSum === 0 &&
      balancesSum === 0 &&
      report.drift.length === 0 &&
      report.negative.length === 0 &&
      report.creditDrift.length === 0;
    return report;
  }

  /**
   * Cumulative credit that reached `address`'s vested account (the payout statement's `vested`), less what an
   * account link moved on to a wallet: that part is the wallet's to be paid. It never decreases, because a link
   * leaves behind what earlier statements already promised (linkAccounts).
   */
  async cumulativeVested(addr: string, q: Queryable = this.db): Promise<number> {
    const who = address('address', addr);
    const r = await q.query<{ s: number }>(
      `SELECT ((SELECT COALESCE(SUM(amount), 0) FROM ledger_entries WHERE account_id = $1 AND amount > 0)
             - (SELECT COALESCE(SUM(vested_moved), 0) FROM ledger_links WHERE local = $2))::bigint AS s`,
      [workerVested(who).id, who],
    );
    return Number(r.rows[0].s);
  }

  /** Runs `build` and posts its lines under `event` unless the event key exists: then returns the first postings. */
  private async postOnce(
    event: EventRecord,
    build: (q: Queryable, now: number) => Promise<PostingLine[]>,
  ): Promise<PostingResult> {
    return withRetry(this.db, async (q) => {
      const now = this.now();
      const fresh = await insertEvents(q, [event], now);
      if (!fresh.has(event.eventKey)) {
        await assertSameEvents(q, [event]);
        const postings = (await postingsFor(q, [event.eventKey])).get(event.eventKey) ?? [];
        return { eventKey: event.eventKey, created: false, postings };
      }
      const lines = await build(q, now);
      const postings = await applyPostings(q, [{ eventKey: event.eventKey, lines }], now);
      return { eventKey: event.eventKey, created: true, postings };
    });
  }
}

export { LedgerError };
