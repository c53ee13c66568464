import type { SchedulerHooks, WorkerIdentity } from '../scheduler/hooks.js';
import type { Db } from '../store/db.js';
import { workerPricePerTflop } from './offers.js';
import { reliabilityOf } from './reliability.js';

export interface LeaseFilterOptions {
  /** Micro-credits per TFLOP for workers without an offer. */
  defaultPricePerTflop: number;
  /** Micro-credits per TFLOP a job without market.maxPricePerTflop pays at most (jobs stored before it had none). */
  defaultMaxPricePerTflop: number;
  reliabilityMinLeases: number;
}

/**
 * The SQL a candidate job `j` must satisfy for a worker asking `price` (micro-credits per TFLOP) with reliability
 * `reliability`, given as SQL expressions. A job without a credit_jobs row (no budget, development) takes anyone.
 *
 * - max price: the job's maxPricePerTflop (or the network default maximum) is at least the worker's price;
 * - min reliability: the worker's reliability is at least the job's minReliability;
 * - budget: what is left in escrow after everything the job may still owe can pay one more unit at this worker's
 *   price, so no worker trains a unit nobody can pay for. Owed: credits not yet posted (open intents), every active
 *   lease (primary or audit copy) and every result held for an audit or its settlement, each at the price fixed on
 *   its lease; all of these may become credits, so a credit that cannot be paid never follows work that was used.
 */
export function jobAcceptsWorkerSql(price: string, reliability: string, defaultMaxPrice: number): string {
  const cost = (perTflop: string) => `round(t.unit_flops::numeric * ${perTflop} / 1000000000000)`;
  return `NOT EXISTS (
    SELECT 1 FROM credit_jobs t WHERE t.job_id = j.id AND (
      COALESCE(t.max_price, ${Math.trunc(defaultMaxPrice)}) < ${price}
      OR (t.min_reliability IS NOT NULL AND t.min_reliability > ${reliability})
      OR (t.budget > 0 AND
          COALESCE((SELECT a.balance FROM ledger_accounts a WHERE a.id = 'job:' || t.job_id || ':escrow'), 0)
          - COALESCE((SELECT sum(c.price) FROM credit_intents c WHERE c.job_id = t.job_id AND c.state = 'open'), 0)
          - COALESCE((SELECT sum(${cost(`COALESCE(l.price_per_tflop, ${price})`)}) FROM leases l
                      WHERE l.job_id = t.job_id AND l.status = 'active'), 0)
          - COALESCE((SELECT sum(${cost(`COALESCE(l.price_per_tflop, ${price})`)}) FROM results r
                      JOIN leases l ON l.id = r.lease_id WHERE r.job_id = t.job_id AND r.status = 'pending'), 0)
          < ${cost(price)})))`;
}

/** SchedulerHooks.leaseCondition for the marketplace: price, reliability and budget filters on candidate jobs. */
export function marketLeaseCondition(db: Db, opts: LeaseFilterOptions): NonNullable<SchedulerHooks['leaseCondition']> {
  return async (who: WorkerIdentity, firstParam: number) => {
    const [price, reliability] = await Promise.all([
      workerPricePerTflop(db, who.account, opts.defaultPricePerTflop),
      reliabilityOf(db, who.account, opts.reliabilityMinLeases),
    ]);
    return {
      sql: jobAcceptsWorkerSql(`$${firstParam}::bigint`, `$${firstParam + 1}::float8`, opts.defaultMaxPricePerTflop),
      params: [price, reliability.value],
    };
  };
}
