import type { Queryable } from '../store/db.js';
import type { JobRow } from './job-repo.js';

/**
 * What the scheduler and the layers around it (verification, credits, the marketplace, the worker gateway) tell each
 * other, in one place: who is asking for work, what an accepted result is, and the hooks the scheduler calls. The
 * scheduler imports the verification layer; verification, credits and the marketplace import only these types, never
 * scheduler.ts, so there is no import circle between them.
 */

/** Who is asking: a connected worker and the account it proved. */
export interface WorkerIdentity {
  workerId: string;
  account: string;
  /** Network identity for the audit rule (coordinator/verify/network-address.ts); undefined when unknown. */
  address?: string;
}

/** What an accepted result is, as the credit layer sees it (inside the accepting transaction). */
export interface AcceptedResult {
  resultId: string;
  jobId: string;
  owner: string | null;
  round: number;
  unit: number;
  account: string;
  flops: number;
  examples: number;
  /**
   * 'primary': the unit's result, the one the round aggregates (one per unit). 'audit': an independent copy that
   * confirmed it (the auditor did the same work). Results of audited units are accepted only once settled.
   */
  role?: 'primary' | 'audit';
}

/**
 * Extension points for the ledger, accounts and marketplace. Hooks that take a Queryable run inside the scheduler's
 * transaction, so what they write commits or rolls back with the state change they belong to.
 */
export interface SchedulerHooks {
  /** After the job row exists; throw to refuse the job (e.g. insufficient balance for its budget). */
  onJobCreated?(q: Queryable, job: JobRow): Promise<void>;
  /**
   * When a result becomes final and valid, in the same transaction: once per result, at most one 'primary' per unit.
   */
  onResultAccepted?(q: Queryable, r: AcceptedResult): Promise<void>;
  /** After a job completes, fails or is cancelled (refunds). */
  onJobEnded?(job: JobRow): Promise<void>;
  /**
   * Extra SQL condition on candidate jobs `j` for this worker (marketplace filters), with its parameters; placeholders
   * are numbered from `firstParam`.
   */
  leaseCondition?(who: WorkerIdentity, firstParam: number): Promise<{ sql: string; params: unknown[] } | null>;
  /**
   * In the lease transaction: the price per TFLOP (micro-credits) the result of this lease will be credited at, fixed
   * now by the coordinator so that nothing the worker does later changes it; null when the job pays nothing.
   */
  leasePrice?(q: Queryable, who: WorkerIdentity, jobId: string): Promise<number | null>;
}
