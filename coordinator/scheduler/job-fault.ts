import type { Db } from '../store/db.js';
import type { JobRow } from './job-repo.js';
import type { PreflightProblem } from './preflight.js';

/**
 * A failure the job causes is the job's fault. Preflight refuses such jobs at submit; this watch catches one that
 * slips through (stored before a rule existed, or a case preflight does not foresee) at run time:
 *  - a worker that cannot train a unit gives it back with `release.error` (lease end_reason 'unit_failed: ...');
 *    once JOB_FAULT_WITNESSES distinct accounts did so for one unit, the coordinator runs the trial step itself;
 *  - a result refused by an exact check that depends on the job's model (JOB_DEPENDENT_CODES) triggers the trial
 *    before anyone is punished: the coordinator's own run is the proof, no witnesses needed.
 * When the trial fails, the job ends `failed` with the reason (its escrow is refunded by onJobEnded) and the leases
 * those failures ended become 'revoked' ("job fault: ..."), which reliability does not count; nobody is punished.
 * When it passes, the failures were the workers' own and count as before.
 */
export const JOB_FAULT_WITNESSES = 3;

/** Exact-check codes an honest worker can fail because of the job's model: the first-loss recompute. */
export const JOB_DEPENDENT_CODES: ReadonlySet<string> = new Set(['first_loss_mismatch']);

/** end_reason prefix of a lease its worker gave back because training failed. */
export const UNIT_FAILED = 'unit_failed';

/** Trials remembered (per job and round weights); forgetting one only costs one more trial. */
const MAX_TRIALS = 1_000;

export interface JobFaultDeps {
  db: Db;
  /** The coordinator's own trial step of the job at its current weights (preflight.ts trialStep). */
  trial(job: JobRow): Promise<PreflightProblem | null>;
  failJob(jobId: string, error: string): Promise<void>;
}

export class JobFaultWatch {
  private trials = new Map<string, Promise<PreflightProblem | null>>();

  constructor(private readonly deps: JobFaultDeps) {}

  /** The job's own fault, if its trial fails; memoised per job and round weights. */
  fault(job: JobRow): Promise<PreflightProblem | null> {
    const key = `${job.id}:${job.weights_hash}`;
    let p = this.trials.get(key);
    if (!p) {
      // A trial that cannot even run (a blob missing) proves nothing against the job: treated as no fault.
      p = this.deps.trial(job).catch(() => {
        this.trials.delete(key);
        return null;
      });
      this.trials.set(key, p);
      if (this.trials.size > MAX_TRIALS) this.trials.delete(this.trials.keys().next().value as string);
    }
    return p;
  }

  /** A worker gave a unit back because it could not train it. True when the job was failed for it. */
  async onUnitFailed(job: JobRow, round: number, idx: number): Promise<boolean> {
    const { rows } = await this.deps.db.query<{ n: number }>(
      `SELECT count(DISTINCT account)::int AS n FROM leases
       WHERE job_id = $1 AND round = $2 AND idx = $3 AND status = 'released' AND end_reason LIKE $4`,
      [job.id, round, idx, `${UNIT_FAILED}:%`],
    );
    if (Number(rows[0]?.n ?? 0) < JOB_FAULT_WITNESSES) return false;
    return this.failIfFaulty(job);
  }

  /** Runs (or reuses) the trial; when it fails, voids the failures the job caused and fails the job. */
  async failIfFaulty(job: JobRow): Promise<boolean> {
    const problem = await this.fault(job);
    if (!problem) return false;
    const codes = [UNIT_FAILED, ...JOB_DEPENDENT_CODES].map((c) => `${c}:%`);
    await this.deps.db.query(
      `UPDATE leases SET status = 'revoked', end_reason = 'job fault: ' || end_reason
       WHERE job_id = $1 AND status IN ('released', 'rejected') AND end_reason LIKE ANY($2::text[])`,
      [job.id, codes],
    );
    await this.deps.failJob(job.id, `the job cannot be trained as specified: ${problem.message}`);
    return true;
  }
}
