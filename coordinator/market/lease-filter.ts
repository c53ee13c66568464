import type { SchedulerHooks, WorkerIdentity } from '../scheduler/scheduler.js';
import type { Db } from '../store/db.js';
import { workerPricePerTflop } from './offers.js';
import { reliabilityOf } from './reliability.js';

export interface LeaseFilterOptions {
  /** Micro-credits per TFLOP for workers without an offer. */
  defaultPricePerTflop: number;
  reliabilityMinLeases: number;
}

/**
 * The SQL a candidate job `j` must satisfy for a worker asking `price` (micro-credits per TFLOP) with reliability
 * `reliability`, given as SQL expressions. A job without a credit_jobs row (no budget, development) takes anyone.
 *
 * - max price: the job's maxPricePerTflop is at least the worker's price;
 * - min reliability: the worker's reliability is at least the job's minReliability;
 * - budget: what is left in escrow after the credits already owed (open intents) and one unit per active lease can
 *   still pay one more unit at this worker's price, so no worker trains a unit nobody can pay for.
 */
export function jobAcceptsWorkerSql(price: string, reliability: string): string {
  const unitCost = `round(t.unit_flops::numeric * ${price} / 1000000000000)`;
  return `NOT EXISTS (
    SELECT 1 FROM credit_jobs t WHERE t.job_id = j.id AND (
      (t.max_price IS NOT NULL AND t.max_price < ${price})
      OR (t.min_reliability IS NOT NULL AND t.min_reliability > ${reliability})
      OR (t.budget > 0 AND
          COALESCE((SELECT a.balance FROM ledger_accounts a WHERE a.id = 'job:' || t.job_id || ':escrow'), 0)
          - COALESCE((SELECT sum(c.price) FROM credit_intents c WHERE c.job_id = t.job_id AND c.state = 'open'), 0)
          - (SELECT count(*) FROM leases l WHERE l.job_id = t.job_id AND l.status = 'active') * ${unitCost}
          < ${unitCost})))`;
}

/** SchedulerHooks.leaseCondition for the marketplace: price, reliability and budget filters on candidate jobs. */
export function marketLeaseCondition(db: Db, opts: LeaseFilterOptions): NonNullable<SchedulerHooks['leaseCondition']> {
  return async (who: WorkerIdentity, firstParam: number) => {
    const [price, reliability] = await Promise.all([
      workerPricePerTflop(db, who.account, opts.defaultPricePerTflop),
      reliabilityOf(db, who.account, opts.reliabilityMinLeases),
    ]);
    return {
      sql: jobAcceptsWorkerSql(`$${firstParam}::bigint`, `$${firstParam + 1}::float8`),
      params: [price, reliability.value],
    };
  };
}
