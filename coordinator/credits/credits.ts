import { isAddress, normalizeAddress } from '../../shared/identity/address.js';
import { estimateFlops } from '../../shared/train/train-unit.js';
import { escrowId, type ForfeitResult, type Ledger, unitPrice } from '../ledger/index.js';
import { workerPricePerTflop } from '../market/offers.js';
import type { AcceptedResult, SchedulerHooks } from '../scheduler/hooks.js';
import type { JobRow } from '../scheduler/job-repo.js';
import type { Db, Queryable } from '../store/db.js';
import { CreditSweeper, PUBLISHED } from './credit-sweeper.js';
import { toMicro } from './money.js';
import type { ForfeitRequest } from './types.js';

export interface CreditsOptions {
  db: Db;
  ledger: Ledger;
  /** Number of parameters of a job's model, from its initial weights blob. */
  paramCount: (weightsHash: string) => Promise<number>;
  /** Micro-credits per TFLOP for workers without an offer. */
  defaultPricePerTflop: number;
  /** Micro-credits per TFLOP a job pays at most when its spec sets no market.maxPricePerTflop. */
  defaultMaxPricePerTflop: number;
  challengeWindowMs: number;
  forfeitFeeRate: number;
  refundGraceMs: number;
  sweepEveryMs: number;
  log?: (msg: string, extra?: object) => void;
  now?: () => number;
}

export interface JobBilling {
  budget: number;
  escrow: number;
  spent: number;
  refunded: number;
  unitFlops: number;
  closed: boolean;
}

export interface CreditRecord {
  resultId: string;
  leaseId: string | null;
  jobId: string;
  amount: number;
  pricePerTflop: number;
  flops: number;
  state: string;
  reason: string | null;
  acceptedAt: number;
  vestAt: number;
  eventKey: string;
}

/** The ledger event of the credit for one accepted result (what the ledger's creditUnits posts it under). */
export const creditEventKey = (resultId: string): string => `credit:${resultId}`;

/**
 * The glue between the scheduler and the ledger. Inside the scheduler's transactions it only writes its own rows
 * (what a job pays with; an intent to credit each accepted result, priced at acceptance). The ledger runs its own
 * transactions, so it is called after commit, by the credit sweeper, which also vests and refunds; the ledger's
 * idempotent event keys make every step exactly-once, whatever crashes in between.
 */
export class Credits {
  readonly sweeper: CreditSweeper;
  private readonly now: () => number;

  constructor(private readonly opts: CreditsOptions) {
    this.now = opts.now ?? Date.now;
    this.sweeper = new CreditSweeper(this, opts.db, opts.ledger, {
      everyMs: opts.sweepEveryMs,
      refundGraceMs: opts.refundGraceMs,
      log: opts.log,
      now: this.now,
    });
  }

  /** The scheduler hooks this layer needs: job terms at creation, a credit intent per accepted result, refunds. */
  hooks(): Required<Pick<SchedulerHooks, 'onJobCreated' | 'onResultAccepted' | 'onJobEnded' | 'leasePrice'>> {
    return {
      onJobCreated: (q, job) => this.recordJob(q, job),
      leasePrice: (q, who, jobId) => this.leasePrice(q, who.account, jobId),
      onResultAccepted: async (q, r) => {
        await this.recordAcceptance(q, r, this.now());
        // Runs after this transaction: on PGlite the sweep's first query simply waits for the commit; on PostgreSQL
        // a sweep that is too early finds nothing and the next one credits it.
        this.sweeper.poke();
      },
      onJobEnded: async () => this.sweeper.poke(),
    };
  }

  /** Job terms, in the job's creation transaction: budget, FLOP estimate of a unit, marketplace filters. */
  async recordJob(q: Queryable, job: JobRow): Promise<void> {
    const spec = job.spec;
    const params = await this.opts.paramCount(job.weights_hash);
    const unitFlops = Math.round(estimateFlops(params, spec.localSteps * spec.batchSize));
    await q.query(
      `INSERT INTO credit_jobs (job_id, requester, budget, unit_flops, max_price, min_reliability, created_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (job_id) DO NOTHING`,
      [
        job.id,
        job.owner ?? '',
        spec.budget !== undefined ? toMicro(spec.budget) : 0,
        unitFlops,
        // Every job has a maximum price: the requester's, or the network default (a worker's offer can never drain
        // an escrow whatever it asks).
        spec.market?.maxPricePerTflop !== undefined
          ? toMicro(spec.market.maxPricePerTflop)
          : this.opts.defaultMaxPricePerTflop,
        spec.market?.minReliability ?? null,
        this.now(),
      ],
    );
  }

  /**
   * The price per TFLOP (micro-credits) of a lease, fixed in the lease transaction: the worker's offer then (or the
   * default donation price), never above the job's maximum. Null when the job pays nothing (no budget).
   */
  async leasePrice(q: Queryable, account: string, jobId: string): Promise<number | null> {
    const terms = (
      await q.query<{ budget: number; max_price: number | null }>(
        'SELECT budget, max_price FROM credit_jobs WHERE job_id = $1',
        [jobId],
      )
    ).rows[0];
    if (!terms || Number(terms.budget) === 0) return null;
    const worker = isAddress(account) ? normalizeAddress(account) : account;
    const offer = await workerPricePerTflop(q, worker, this.opts.defaultPricePerTflop);
    return Math.min(offer, this.maxPrice(terms.max_price));
  }

  private maxPrice(stored: number | string | null): number {
    return stored === null ? this.opts.defaultMaxPricePerTflop : Number(stored);
  }

  /**
   * An intent to credit one accepted result, in the accepting transaction. The price per TFLOP is the one fixed on
   * its lease when the coordinator issued it (leasePrice), never what the worker offers by the time it submits;
   * times the job's FLOP estimate of a unit (the coordinator's own estimate, not the worker's claim). Results that
   * cannot be credited are recorded as skipped with the reason.
   */
  async recordAcceptance(q: Queryable, r: AcceptedResult, acceptedAt: number): Promise<void> {
    const terms = (
      await q.query<{ budget: number; unit_flops: number; max_price: number | null }>(
        'SELECT budget, unit_flops, max_price FROM credit_jobs WHERE job_id = $1',
        [r.jobId],
      )
    ).rows[0];
    let skip: string | null = null;
    let payee: string | null = null;
    if (!terms || Number(terms.budget) === 0) skip = 'the job has no budget';
    else if (!isAddress(r.account)) skip = 'the worker account is not an address';
    else {
      const conn = (
        await q.query<{ unverified: boolean; pay_to: string | null }>(
          `SELECT u.worker_id IS NOT NULL AS unverified, p.pay_to FROM results r JOIN leases l ON l.id = r.lease_id
           LEFT JOIN credit_unverified_workers u ON u.worker_id = l.worker_id
           LEFT JOIN credit_worker_payees p ON p.worker_id = l.worker_id WHERE r.id = $1`,
          [r.resultId],
        )
      ).rows[0];
      if (conn?.unverified) skip = 'the worker did not prove its account (unsigned hello)';
      // The connection that delivered the result chose where its credit goes (hello.payTo); the worker stays the signer.
      payee = conn?.pay_to ?? null;
    }
    const worker = skip === null ? normalizeAddress(r.account) : r.account;
    let perTflop = 0;
    let flops = 0;
    let price = 0;
    if (skip === null) {
      const leased = await q.query<{ price_per_tflop: number | string | null }>(
        'SELECT l.price_per_tflop FROM results r JOIN leases l ON l.id = r.lease_id WHERE r.id = $1',
        [r.resultId],
      );
      const fixed = leased.rows[0]?.price_per_tflop;
      // A lease from before prices were fixed on leases: today's offer, capped like any other.
      perTflop =
        fixed !== null && fixed !== undefined
          ? Number(fixed)
          : await workerPricePerTflop(q, worker, this.opts.defaultPricePerTflop);
      perTflop = Math.min(perTflop, this.maxPrice(terms.max_price));
      flops = Number(terms.unit_flops);
      price = unitPrice(flops, perTflop);
    }
    await q.query(
      `INSERT INTO credit_intents (result_id, job_id, worker, price_per_tflop, flops, price, accepted_at, vest_at,
                                   state, reason, settled_at, payee)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (result_id) DO NOTHING`,
      [
        r.resultId,
        r.jobId,
        worker,
        perTflop,
        flops,
        price,
        acceptedAt,
        acceptedAt + this.opts.challengeWindowMs,
        skip === null ? 'open' : 'skipped',
        skip,
        skip === null ? null : acceptedAt,
        skip === null ? payee : null,
      ],
    );
  }

  /** Remembers a connection admitted without a signed challenge: its results are never credited. */
  async markUnverified(workerId: string, account: string): Promise<void> {
    await this.opts.db.query(
      'INSERT INTO credit_unverified_workers (worker_id, account, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING',
      [workerId, account, this.now()],
    );
  }

  /**
   * A connection that named hello.payTo: credit for its results goes to `payTo` (the ledger payee). Nothing else
   * follows payTo: the connection acts as the key that signed its hello.
   */
  async markPayee(workerId: string, payTo: string): Promise<void> {
    await this.opts.db.query(
      'INSERT INTO credit_worker_payees (worker_id, pay_to, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING',
      [workerId, normalizeAddress(payTo), this.now()],
    );
  }

  /**
   * A lost dispute: the worker's unvested credit for the disputed job goes back to the escrow it came from
   * (or to the requester when the job was already refunded), less the treasury's fee. Accepted results not yet
   * credited are credited first, so that they are forfeited too. Idempotent by eventKey. This is what the
   * verification layer calls. Returns null for an account that is not an address (an unverified development
   * worker): it holds no credit.
   */
  async forfeit(req: ForfeitRequest): Promise<ForfeitResult | null> {
    if (!isAddress(req.worker)) return null;
    const worker = normalizeAddress(req.worker);
    await this.sweeper.creditOpen({ worker, jobId: req.jobId, unpublished: true });
    return this.opts.ledger.forfeitUnvested({
      worker,
      jobId: req.jobId,
      reason: req.reason,
      eventKey: req.eventKey,
      feeRate: req.feeRate ?? this.opts.forfeitFeeRate,
    });
  }

  /** The job's budget as the ledger sees it; null for a job without one. */
  async billing(jobId: string): Promise<JobBilling | null> {
    const db = this.opts.db;
    const terms = (
      await db.query<{ budget: number; unit_flops: number }>(
        'SELECT budget, unit_flops FROM credit_jobs WHERE job_id = $1',
        [jobId],
      )
    ).rows[0];
    if (!terms || Number(terms.budget) === 0) return null;
    const r = await db.query<{ escrow: number | null; spent: number; refunded: number; status: string | null }>(
      `SELECT (SELECT balance FROM ledger_accounts WHERE id = $2) AS escrow,
              (SELECT COALESCE(sum(amount), 0)::bigint FROM ledger_credits
                WHERE job_id = $1 AND status IN ('pending', 'vested')) AS spent,
              (SELECT COALESCE(sum(e.amount), 0)::bigint FROM ledger_entries e
                JOIN ledger_events ev ON ev.event_key = e.event_key
                WHERE ev.job_id = $1 AND ev.kind = 'refund' AND e.amount > 0) AS refunded,
              (SELECT status FROM ledger_jobs WHERE job_id = $1) AS status`,
      [jobId, escrowId(jobId)],
    );
    const row = r.rows[0];
    return {
      budget: Number(terms.budget),
      escrow: Number(row.escrow ?? 0),
      spent: Number(row.spent),
      refunded: Number(row.refunded),
      unitFlops: Number(terms.unit_flops),
      closed: row.status === 'closed',
    };
  }

  /** Credits an account earned as worker or received as payee (hello.payTo), newest first: intent state until credited, then the ledger's pending / vested / forfeited. */
  async creditsOf(
    worker: string,
    opts: { limit?: number; cursor?: string } = {},
  ): Promise<{ items: CreditRecord[]; nextCursor: string | null }> {
    const limit = opts.limit ?? 50;
    const [beforeAt, beforeId] = opts.cursor ? splitCursor(opts.cursor) : [null, null];
    const r = await this.opts.db.query(
      `SELECT c.*, r.lease_id, lc.status AS ledger_status FROM credit_intents c
       LEFT JOIN results r ON r.id = c.result_id
       LEFT JOIN ledger_credits lc ON lc.result_id = c.result_id
       WHERE (c.worker = $1 OR c.payee = $1) AND ($2::bigint IS NULL OR (c.accepted_at, c.result_id) < ($2::bigint, $3::text))
         AND ${PUBLISHED}
       ORDER BY c.accepted_at DESC, c.result_id DESC LIMIT $4`,
      [worker, beforeAt, beforeId, limit + 1],
    );
    const items = r.rows.slice(0, limit).map(
      (row): CreditRecord => ({
        resultId: String(row.result_id),
        leaseId: (row.lease_id as string | null) ?? null,
        jobId: String(row.job_id),
        amount: Number(row.price),
        pricePerTflop: Number(row.price_per_tflop),
        flops: Number(row.flops),
        state: row.state === 'credited' && row.ledger_status ? String(row.ledger_status) : String(row.state),
        reason: (row.reason as string | null) ?? null,
        acceptedAt: Number(row.accepted_at),
        vestAt: Number(row.vest_at),
        eventKey: creditEventKey(String(row.result_id)),
      }),
    );
    const last = items[items.length - 1];
    return { items, nextCursor: r.rows.length > limit && last ? `${last.acceptedAt}.${last.resultId}` : null };
  }
}

function splitCursor(cursor: string): [number, string] {
  const m = /^(\d{1,16})\.([A-Za-z0-9_]{1,100})$/.exec(cursor);
  if (!m) throw new RangeError('cursor must be the nextCursor of a previous page');
  return [Number(m[1]), m[2]];
}
