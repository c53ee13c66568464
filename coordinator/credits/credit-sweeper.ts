import type { Ledger } from '../ledger/index.js';
import type { Db } from '../store/db.js';
import type { CreditPort, ForfeitRequest } from './types.js';

/**
 * Result statuses that earn credit: 'accepted' (the unit's result) and 'confirmed' (an independent audit copy that
 * agreed with it; the auditor did the same work).
 */
export const CREDITABLE = `('accepted', 'confirmed')`;

/**
 * Forfeits decided elsewhere (the verification layer) that may not have reached the ledger yet, e.g. because the
 * process died between the verdict and the 'forfeit' event. The sweeper posts each (idempotent by eventKey) and then
 * reports it delivered.
 */
export interface ForfeitSource {
  undelivered(): Promise<ForfeitRequest[]>;
  delivered(eventKey: string): Promise<void>;
}

export interface SweeperOptions {
  everyMs: number;
  refundGraceMs: number;
  /** Accepted results without an intent (older data, another acceptance path) are looked for this often. */
  backfillEveryMs?: number;
  /** An escrow whose job row never appeared (a crash between escrow and job creation) is refunded after this. */
  orphanEscrowMs?: number;
  log?: (msg: string, extra?: object) => void;
  now?: () => number;
}

export interface SweepReport {
  backfilled: number;
  credited: number;
  rejected: number;
  vested: number;
  refunded: number;
  forfeited: number;
}

const BATCH = 500;

/**
 * SQL condition on a credit intent `c`: its acceptance is published, i.e. its result is not in the running round of a
 * running job. Until then the credit is not posted (no pending balance, no ledger line, no credit record in public
 * views), audited or not: an unaudited result is accepted at its ack, an audited one only at its settlement, and
 * showing either at once would tell everyone which results were drawn for an audit. Posted once the round is
 * aggregated or the job ends (a forfeit posts them first: `unpublished` = true, so that they are forfeited too).
 */
export const PUBLISHED = `NOT EXISTS (SELECT 1 FROM results pr JOIN jobs pj ON pj.id = pr.job_id
  WHERE pr.id = c.result_id AND pj.status = 'running' AND pr.round = pj.round)`;

/**
 * Turns credit intents into ledger credits, vests credits whose challenge window closed, and refunds the unspent
 * escrow of ended jobs. Each step is idempotent (ledger event keys, conditional state updates), so it may run on
 * every replica, be interrupted anywhere and simply run again.
 */
export class CreditSweeper {
  private timer: ReturnType<typeof setInterval> | null = null;
  private pokeTimer: ReturnType<typeof setTimeout> | null = null;
  private running: Promise<SweepReport> | null = null;
  private queued: Promise<SweepReport> | null = null;
  private again = false;
  private lastBackfill = 0;
  private forfeitSource: ForfeitSource | null = null;
  private readonly now: () => number;

  constructor(
    private readonly credits: CreditPort,
    private readonly db: Db,
    private readonly ledger: Ledger,
    private readonly opts: SweeperOptions,
  ) {
    this.now = opts.now ?? Date.now;
  }

  /** Plugs in the verification layer's record of forfeits, caught up on every sweep. */
  setForfeitSource(source: ForfeitSource | null): void {
    this.forfeitSource = source;
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.poke(0), this.opts.everyMs);
    this.timer.unref();
    this.poke(0);
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    if (this.pokeTimer) clearTimeout(this.pokeTimer);
    this.timer = null;
    this.pokeTimer = null;
    this.again = false;
    while (this.running || this.queued) await (this.queued ?? this.running)?.catch(() => {});
  }

  /** Asks for a sweep soon (debounced): after an acceptance, the end of a job, a cancel. */
  poke(delayMs = 50): void {
    if (!this.timer) return;
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.pokeTimer) return;
    this.pokeTimer = setTimeout(() => {
      this.pokeTimer = null;
      void this.sweep().catch((err) => this.opts.log?.('credit sweep failed', { err: String(err) }));
    }, delayMs);
    this.pokeTimer.unref();
  }

  /** One full pass; concurrent callers share the pass in progress. */
  sweep(): Promise<SweepReport> {
    // A sweep already running may have read the store before the caller's change: the caller gets the next sweep,
    // which starts once this one ends (callers meanwhile share it).
    if (this.running) {
      this.queued ??= this.running
        .catch(() => undefined)
        .then(() => {
          this.queued = null;
          return this.sweep();
        });
      return this.queued;
    }
    const run = this.sweepOnce().finally(() => {
      this.running = null;
      if (this.again) {
        this.again = false;
        this.poke();
      }
    });
    this.running = run;
    return run;
  }

  private async sweepOnce(): Promise<SweepReport> {
    const report: SweepReport = { backfilled: 0, credited: 0, rejected: 0, vested: 0, refunded: 0, forfeited: 0 };
    const now = this.now();
    if (now - this.lastBackfill >= (this.opts.backfillEveryMs ?? 30_000)) {
      report.backfilled = await this.backfill();
      this.lastBackfill = now;
    }
    const c = await this.creditOpen();
    report.credited = c.credited;
    report.rejected = c.rejected;
    // Forfeits before vesting: a credit whose owner lost a dispute must not vest on the way.
    report.forfeited = await this.deliverForfeits();
    report.vested = (await this.ledger.vestDue(this.now())).vested;
    report.refunded = await this.refundEnded();
    return report;
  }

  private async deliverForfeits(): Promise<number> {
    if (!this.forfeitSource) return 0;
    const pending = await this.forfeitSource.undelivered();
    let done = 0;
    for (const f of pending) {
      // One forfeit that fails (logged, retried next sweep) must not hold up the others or vesting.
      try {
        await this.credits.forfeit(f);
        await this.forfeitSource.delivered(f.eventKey);
        done++;
      } catch (err) {
        this.opts.log?.('forfeit failed', { eventKey: f.eventKey, err: String(err) });
      }
    }
    return done;
  }

  /** Intents for accepted results that have none (results from before the credits layer, or another path). */
  async backfill(): Promise<number> {
    let total = 0;
    for (;;) {
      const r = await this.db.query<{
        id: string;
        job_id: string;
        owner: string | null;
        round: number;
        idx: number;
        account: string;
        flops: number;
        examples: number;
        created_at: number;
      }>(
        `SELECT r.id, r.job_id, j.owner, r.round, r.idx, r.account, r.flops, r.examples, r.created_at
         FROM results r JOIN jobs j ON j.id = r.job_id
         WHERE r.status IN ${CREDITABLE} AND NOT EXISTS (SELECT 1 FROM credit_intents c WHERE c.result_id = r.id)
         ORDER BY r.created_at LIMIT ${BATCH}`,
      );
      if (r.rows.length === 0) return total;
      await this.db.tx(async (q) => {
        for (const row of r.rows) {
          await this.credits.recordAcceptance(
            q,
            {
              resultId: row.id,
              jobId: row.job_id,
              owner: row.owner,
              round: row.round,
              unit: row.idx,
              account: row.account,
              flops: Number(row.flops),
              examples: Number(row.examples),
            },
            Number(row.created_at),
          );
        }
      });
      total += r.rows.length;
      if (r.rows.length < BATCH) return total;
    }
  }

  /**
   * Posts open intents of published results to the ledger in batches (creditUnits: one transaction per batch, idempotent per result).
   * An intent whose result is no longer accepted or confirmed (overturned by verification before it was credited) is
   * dropped.
   */
  async creditOpen(
    filter: { worker?: string; jobId?: string; unpublished?: boolean } = {},
  ): Promise<{ credited: number; rejected: number }> {
    let credited = 0;
    let rejected = 0;
    for (;;) {
      const r = await this.db.query<{
        result_id: string;
        job_id: string;
        worker: string;
        payee: string | null;
        price: number;
        vest_at: number;
        result_status: string | null;
      }>(
        `SELECT c.result_id, c.job_id, c.worker, c.payee, c.price, c.vest_at, r.status AS result_status
         FROM credit_intents c LEFT JOIN results r ON r.id = c.result_id
         WHERE c.state = 'open' AND ($1::text IS NULL OR c.worker = $1) AND ($2::text IS NULL OR c.job_id = $2)
           AND ($3::boolean OR ${PUBLISHED})
         ORDER BY c.accepted_at, c.result_id LIMIT ${BATCH}`,
        [filter.worker ?? null, filter.jobId ?? null, filter.unpublished === true],
      );
      if (r.rows.length === 0) break;
      const updates: { id: string; state: string; reason: string | null }[] = [];
      const live = r.rows.filter((row) => {
        if (row.result_status === 'accepted' || row.result_status === 'confirmed') return true;
        updates.push({ id: row.result_id, state: 'rejected', reason: 'the result is no longer accepted' });
        return false;
      });
      const outcomes = await this.ledger.creditUnits(
        live.map((row) => ({
          jobId: row.job_id,
          resultId: row.result_id,
          worker: row.worker,
          ...(row.payee ? { payee: row.payee } : {}),
          price: Number(row.price),
          vestAt: Number(row.vest_at),
        })),
      );
      for (const o of outcomes) {
        if (o.status === 'rejected') {
          updates.push({ id: o.resultId, state: 'rejected', reason: `${o.code}: ${o.reason}` });
          this.opts.log?.('credit rejected by the ledger', { resultId: o.resultId, code: o.code, reason: o.reason });
        } else updates.push({ id: o.resultId, state: 'credited', reason: null });
      }
      await this.db.query(
        `UPDATE credit_intents c SET state = u.s, reason = u.r, settled_at = $4::bigint
         FROM unnest($1::text[], $2::text[], $3::text[]) AS u(id, s, r)
         WHERE c.result_id = u.id AND c.state = 'open'`,
        [updates.map((u) => u.id), updates.map((u) => u.state), updates.map((u) => u.reason), this.now()],
      );
      credited += updates.filter((u) => u.state === 'credited').length;
      rejected += updates.filter((u) => u.state !== 'credited').length;
      if (r.rows.length < BATCH) break;
    }
    return { credited, rejected };
  }

  /**
   * Refunds the unspent escrow of jobs that ended (completed, failed, cancelled) at least refundGraceMs ago and owe
   * no credit any more: no open intent, no creditable result without an intent, no result still held for
   * verification (its audit copy may yet be paid). An escrow whose job row never appeared is refunded too.
   */
  async refundEnded(): Promise<number> {
    const now = this.now();
    const r = await this.db.query<{ job_id: string }>(
      `SELECT lj.job_id FROM ledger_jobs lj LEFT JOIN jobs j ON j.id = lj.job_id
       WHERE lj.status = 'open'
         AND ((j.id IS NOT NULL AND j.status IN ('completed', 'failed', 'cancelled')
               AND j.updated_at < to_timestamp($1::float8 / 1000))
              OR (j.id IS NULL AND lj.created_at < $2::bigint))
         AND NOT EXISTS (SELECT 1 FROM credit_intents c WHERE c.job_id = lj.job_id AND c.state = 'open')
         AND NOT EXISTS (SELECT 1 FROM results p WHERE p.job_id = lj.job_id AND p.status = 'pending')
         AND NOT EXISTS (SELECT 1 FROM results r WHERE r.job_id = lj.job_id AND r.status IN ${CREDITABLE}
                         AND NOT EXISTS (SELECT 1 FROM credit_intents c2 WHERE c2.result_id = r.id))
       ORDER BY lj.job_id LIMIT 100`,
      [now - this.opts.refundGraceMs, now - (this.opts.orphanEscrowMs ?? 300_000)],
    );
    for (const row of r.rows) {
      const out = await this.ledger.refundJob(row.job_id);
      if (out.created) this.opts.log?.('job escrow refunded', { jobId: row.job_id, refunded: out.refunded });
    }
    return r.rows.length;
  }
}
