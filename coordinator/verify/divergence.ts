import type { TrainUnitOutput } from '../../shared/train/types.js';
import type { Compute } from '../compute/tasks.js';
import { getJobRow } from '../scheduler/job-repo.js';
import type { Db } from '../store/db.js';
import type { UnitInputs } from './referee.js';
import { addCost, recordEvent } from './store.js';
import { unitKey } from './verdicts.js';
import type { WorkBudget } from './work-budget.js';

/**
 * Non-finite results (NaN or Infinity in the delta or the losses) prove nothing about their worker: a learning rate
 * that is too high makes honest training diverge for everyone, and the job would then be handed out forever while
 * every volunteer's result is refused. So such a result is refused without consequences, and once two accounts have
 * returned one for the same unit the coordinator trains that unit itself: if its own run diverges too, the job fails
 * with that reason (its escrow is refunded); if not, the unit stays open for other workers.
 */
export interface DivergenceDeps {
  db: Db;
  unitInputs(jobId: string, round: number, idx: number): Promise<UnitInputs>;
  failJob(jobId: string, error: string): Promise<void>;
  /** The coordinator's training for others: a check is charged to the job and to the accounts that forced it. */
  budget: WorkBudget;
  track(p: Promise<unknown>): void;
  log(msg: string, extra?: object): void;
  closing(): boolean;
  now(): number;
  /** Where the check trains (the coordinator's compute pool). */
  compute: Compute;
}

/** Distinct accounts whose result for a unit must be non-finite before the coordinator checks it itself. */
export const DIVERGENCE_WITNESSES = 2;

/** Units remembered as cleared; forgetting one only costs one more check of it. */
const MAX_CLEARED = 10_000;

export class DivergenceWatch {
  private checking = new Set<string>();
  /** Units whose own run stayed finite: their non-finite results were the workers' problem. */
  private cleared = new Set<string>();

  constructor(private readonly deps: DivergenceDeps) {}

  /** A result for this unit was refused as non-finite (already recorded as rejected). */
  async onNonFinite(r: { jobId: string; round: number; idx: number; account: string; reason: string }): Promise<void> {
    const { db } = this.deps;
    await recordEvent(db, {
      kind: 'cheap-check',
      jobId: r.jobId,
      round: r.round,
      idx: r.idx,
      account: r.account,
      outcome: 'non_finite',
      reason: `${r.reason}; refused without consequences (training can diverge honestly)`,
      at: this.deps.now(),
    });
    const key = unitKey(r.jobId, r.round, r.idx);
    if (this.checking.has(key) || this.cleared.has(key)) return;
    const { rows } = await db.query<{ account: string }>(
      `SELECT DISTINCT account FROM results
       WHERE job_id = $1 AND round = $2 AND idx = $3 AND status = 'rejected' AND reason LIKE 'non_finite:%'`,
      [r.jobId, r.round, r.idx],
    );
    if (rows.length < DIVERGENCE_WITNESSES) return;
    // The check trains a whole unit: charged to the job and to the accounts whose results forced it; beyond their
    // budgets it waits (the unit stays open; a later non-finite result asks again).
    const job = await getJobRow(db, r.jobId);
    if (!job) return;
    const cost = job.spec.localSteps * job.spec.batchSize;
    const witnesses = rows.map((x) => x.account);
    const why = this.deps.budget.allows(r.jobId, cost, witnesses);
    if (why) {
      await recordEvent(db, {
        kind: 'divergence-check',
        jobId: r.jobId,
        round: r.round,
        idx: r.idx,
        account: null,
        outcome: 'deferred',
        reason: `waits for the coordinator's work budget: ${why}`,
        at: this.deps.now(),
      });
      return;
    }
    this.deps.budget.charge(r.jobId, cost, witnesses);
    this.checking.add(key);
    this.deps.track(
      this.check(r.jobId, r.round, r.idx)
        .catch((err) => {
          if (!this.deps.closing()) this.deps.log('divergence check failed', { key, err: String(err) });
        })
        .finally(() => this.checking.delete(key)),
    );
  }

  private async check(jobId: string, round: number, idx: number): Promise<void> {
    const job = await getJobRow(this.deps.db, jobId);
    if (job?.status !== 'running' || job.round !== round) return;
    const inputs = await this.deps.unitInputs(jobId, round, idx);
    const out = await this.deps.compute.trainUnit({ ...inputs, shouldStop: () => this.deps.closing() });
    const at = firstNonFinite(out);
    await addCost(
      this.deps.db,
      { jobId, round, idx, batchSize: inputs.spec.batchSize },
      { selfAuditSteps: inputs.spec.steps },
    );
    await recordEvent(this.deps.db, {
      kind: 'divergence-check',
      jobId,
      round,
      idx,
      account: null,
      outcome: at ? 'diverged' : 'finite',
      reason: at
        ? `the coordinator's own run of the unit is non-finite ${at}`
        : "the coordinator's own run of the unit stays finite: the non-finite results were the workers' own",
      detail: { steps: inputs.spec.steps, lastLoss: out.losses.at(-1) ?? null },
      at: this.deps.now(),
    });
    if (!at) {
      this.cleared.add(unitKey(jobId, round, idx));
      // Only the current rounds matter; keep the memory of a long-running coordinator bounded (oldest go first).
      if (this.cleared.size > MAX_CLEARED) this.cleared.delete(this.cleared.values().next().value as string);
      return;
    }
    await this.deps.failJob(
      jobId,
      `training diverged in round ${round + 1}: unit ${idx} gives non-finite values ${at} from the round's weights, on the coordinator too (lower the learning rate)`,
    );
  }
}

/** Where a run first stops being finite ("from step s" or "in the delta"), or null. */
function firstNonFinite(out: TrainUnitOutput): string | null {
  const step = out.losses.findIndex((l) => !Number.isFinite(l));
  if (step >= 0) return `from step ${step}`;
  for (const d of out.delta.data) for (const v of d) if (!Number.isFinite(v)) return 'in the delta';
  return null;
}
