import type { AcceptedResult } from '../scheduler/hooks.js';
import type { Queryable } from '../store/db.js';

export interface ForfeitRequest {
  /** The account that lost the dispute (the key that signed the losing result's connection). */
  worker: string;
  /**
   * The job of the disputed work: only its unvested credit is forfeited. Required: losing one dispute never takes
   * what the worker earned on other jobs.
   */
  jobId: string;
  reason: string;
  /** Idempotency key, e.g. `forfeit:<unitId>:<account>`: the same key twice forfeits once. */
  eventKey: string;
  /** Treasury's share of the forfeited amount; the coordinator's FORFEIT_FEE_RATE when omitted. */
  feeRate?: number;
}

/**
 * What the credit sweeper asks of the credits layer (Credits implements it). Declared here, not as the Credits class,
 * so that credits.ts (which owns a sweeper) and credit-sweeper.ts do not import each other.
 */
export interface CreditPort {
  forfeit(req: ForfeitRequest): Promise<unknown>;
  recordAcceptance(q: Queryable, r: AcceptedResult, acceptedAt: number): Promise<void>;
}
