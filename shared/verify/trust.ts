/**
 * Adaptive trust per account. A new (or just-caught) account is audited on every unit until it has TRUSTED_AFTER
 * consecutive valid results; after that the audit probability decays as 1/CV (CV = consecutive valid count) down to a
 * floor. Any failed audit or lost dispute resets CV to 0, so a caught cheater is back to being audited every time.
 *
 * The floor matters for the "turncoat" (honest until trusted, then cheats on every unit): the chance it cheats n units
 * undetected is (1 - p)^n. With p >= 0.1, (0.9)^50 = 0.5% -> caught within 50 cheated units in 99.5% of cases.
 * DEFAULT_MIN_AUDIT_PROBABILITY is therefore 0.1 and a job can only raise it (JobSpec.verification.minAuditProbability).
 */

export const TRUSTED_AFTER = 10;
export const DEFAULT_MIN_AUDIT_PROBABILITY = 0.1;

export interface TrustState {
  /** Valid results in a row since the last failure (CV). */
  consecutiveValid: number;
  /** Lifetime counters, for display and for the credits layer. */
  totalValid: number;
  failures: number;
}

export function newTrust(): TrustState {
  return { consecutiveValid: 0, totalValid: 0, failures: 0 };
}

/**
 * Probability that the next unit of this account is audited. 1 until TRUSTED_AFTER consecutive valid results, then
 * max(floor, jobMinP, 1/CV). The effective floor is never below DEFAULT_MIN_AUDIT_PROBABILITY unless the caller
 * passes a lower policyFloor explicitly (tests, experiments).
 */
export function auditProbability(
  trust: TrustState,
  jobMinP = 0,
  policyFloor: number = DEFAULT_MIN_AUDIT_PROBABILITY,
): number {
  if (trust.consecutiveValid < TRUSTED_AFTER) return 1;
  const p = Math.max(policyFloor, jobMinP, 1 / trust.consecutiveValid);
  return Math.min(1, p);
}

/** An accepted result that passed its audit (or was accepted unaudited and later found valid). */
export function recordValid(trust: TrustState): TrustState {
  return {
    consecutiveValid: trust.consecutiveValid + 1,
    totalValid: trust.totalValid + 1,
    failures: trust.failures,
  };
}

/** A failed cheap check, failed audit, lost dispute or unanswered reveal. */
export function recordFailure(trust: TrustState): TrustState {
  return { consecutiveValid: 0, totalValid: trust.totalValid, failures: trust.failures + 1 };
}

/** Whether the account has left the audit-everything phase. */
export function isTrusted(trust: TrustState): boolean {
  return trust.consecutiveValid >= TRUSTED_AFTER;
}

/**
 * Probability that a turncoat cheating on every unit after becoming trusted stays undetected for n cheated units,
 * given audit probability p per unit: (1 - p)^n. Used by docs and the benchmark's closed-form check.
 */
export function undetectedProbability(p: number, n: number): number {
  return (1 - p) ** n;
}
