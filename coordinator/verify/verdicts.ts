import type { AcceptedResult, SchedulerHooks } from '../scheduler/hooks.js';
import type { JobRow } from '../scheduler/job-repo.js';
import type { Queryable } from '../store/db.js';
import type { VerificationEngine } from './engine.js';
import { addCost, type ForfeitRecord, lockTrust, recordEvent, saveTrust } from './store.js';

/**
 * Applying verdicts in the store, inside the caller's transaction: a valid result becomes final (trust +1, credited
 * once), a loser gets the consequences (trust reset, forfeit record, its results not yet aggregated dropped and their
 * units reissued). Side effects that must wait for the commit are collected in an Effects.
 */

/** A result row as verification reads it. */
export interface ResultRow {
  id: string;
  lease_id: string;
  job_id: string;
  round: number;
  idx: number;
  account: string;
  status: string;
  delta_hash: string;
  checkpoints: string[] | string;
  examples: number;
  flops: number;
  backend: string | null;
  final_at: number | string | null;
}

/** An open (not yet final or not yet aggregated) result of an account, with its unit and job state. */
interface OpenRow {
  id: string;
  lease_id: string;
  job_id: string;
  round: number;
  idx: number;
  status: string;
  job_round: number;
  job_status: string;
  unit_status: string;
  audit_of: string | null;
  unit_result: string | null;
}

/** Side effects collected inside a transaction and carried out after it commits. */
export class Effects {
  revoked: { leaseId: string; workerId: string | null; reason: string }[] = [];
  forfeits: ForfeitRecord[] = [];
  settled: { account: string; leaseId: string }[] = [];
  work = false;
  rounds: { jobId: string; round: number }[] = [];
}

export const unitKey = (jobId: string, round: number, idx: number) => `${jobId}/${round}/${idx}`;

export function costKey(job: JobRow, round: number, idx: number) {
  return { jobId: job.id, round, idx, batchSize: job.spec.batchSize };
}

export function clip(s: string, n = 480): string {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}

export class Verdicts {
  constructor(
    /** The engine in effect (tests may reconfigure it). */
    private readonly engine: () => VerificationEngine,
    private readonly hooks: SchedulerHooks,
    private readonly now: () => number = Date.now,
  ) {}

  /** A result found valid: accepted (aggregated) or confirmed; trust +1 and credit, once per result. */
  async finalizeValid(q: Queryable, job: JobRow, r: ResultRow, status: 'accepted' | 'confirmed') {
    const now = this.now();
    const prev = await q.query<{ final_at: number | string | null }>(
      'SELECT final_at FROM results WHERE id = $1 FOR UPDATE',
      [r.id],
    );
    const first = prev.rows[0]?.final_at === null || prev.rows[0]?.final_at === undefined;
    await q.query('UPDATE results SET status = $2, final_at = COALESCE(final_at, $3) WHERE id = $1', [
      r.id,
      status,
      now,
    ]);
    if (status === 'accepted') {
      await addCost(q, costKey(job, r.round, r.idx), { primarySteps: job.spec.localSteps });
    }
    if (!first) return;
    const before = await lockTrust(q, r.account, now);
    await saveTrust(q, r.account, before, this.engine().applyVerdict(before, 'valid'), now);
    const accepted: AcceptedResult = {
      resultId: r.id,
      jobId: job.id,
      owner: job.owner,
      round: r.round,
      unit: r.idx,
      account: r.account,
      flops: Number(r.flops),
      examples: Number(r.examples),
      role: status === 'accepted' ? 'primary' : 'audit',
    };
    await this.hooks.onResultAccepted?.(q, accepted);
  }

  /**
   * Consequences for an account that lost (failed cheap check, failed spot check, lost dispute, silent): its result
   * rejected, trust reset, a forfeit record, and each of its results not yet aggregated dropped and its unit
   * reissued (or, when an independent copy already confirmed it, replaced by that copy). Call with the job row of
   * `loser.job` locked.
   */
  async punish(
    q: Queryable,
    loser: { job: JobRow; round: number; idx: number; account: string; leaseId: string; resultId?: string },
    reason: string,
    effects: Effects,
  ): Promise<void> {
    const now = this.now();
    const { job, account } = loser;
    const unitId = unitKey(job.id, loser.round, loser.idx);
    if (loser.resultId) {
      await q.query(`UPDATE results SET status = 'rejected', reason = $2 WHERE id = $1`, [
        loser.resultId,
        clip(`verification: ${reason}`),
      ]);
      effects.settled.push({ account, leaseId: loser.leaseId });
    }
    // Lock the jobs the loser has open results in, in id order, before reading which rounds they are in.
    const jobIds = (
      await q.query<{ job_id: string }>(
        `SELECT DISTINCT job_id FROM results WHERE account = $1 AND status IN ('accepted', 'pending', 'confirmed')`,
        [account],
      )
    ).rows.map((r) => r.job_id);
    if (jobIds.length > 0) {
      await q.query('SELECT id FROM jobs WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE', [jobIds]);
    }
    const open = (
      await q.query<OpenRow>(
        `SELECT r.id, r.lease_id, r.job_id, r.round, r.idx, r.status, j.round AS job_round, j.status AS job_status,
                u.status AS unit_status, u.audit_of, u.result_id AS unit_result
         FROM results r JOIN jobs j ON j.id = r.job_id
         JOIN units u ON u.job_id = r.job_id AND u.round = r.round AND u.idx = r.idx
         WHERE r.account = $1 AND r.status IN ('accepted', 'pending', 'confirmed')`,
        [account],
      )
    ).rows;
    const before = await lockTrust(q, account, now);
    const c = this.engine().consequencesFor(
      { account, unitId, trust: before },
      reason,
      open.map((o) => ({
        resultId: o.id,
        unitId: unitKey(o.job_id, o.round, o.idx),
        aggregated: o.job_status !== 'running' || o.round < o.job_round,
      })),
    );
    await saveTrust(q, account, before, c.trust, now);
    const forfeit: ForfeitRecord = {
      eventKey: `forfeit:${loser.leaseId}`,
      worker: account,
      reason: clip(reason),
      jobId: job.id,
      round: loser.round,
      idx: loser.idx,
      unitId,
      at: c.forfeit.at,
    };
    await recordEvent(q, {
      id: forfeit.eventKey,
      kind: 'forfeit',
      jobId: job.id,
      round: loser.round,
      idx: loser.idx,
      account,
      resultId: loser.resultId ?? null,
      outcome: 'forfeit',
      reason: forfeit.reason,
      detail: forfeit,
      at: now,
    });
    effects.forfeits.push(forfeit);
    const reissue = new Set(c.reissue.map((r) => r.resultId));
    for (const o of open) if (reissue.has(o.id)) await this.reissue(q, o, account, reason, effects);
  }

  private async reissue(q: Queryable, o: OpenRow, account: string, why: string, effects: Effects): Promise<void> {
    // A unit being settled right now is left to its settlement (which may still find this result valid).
    if (o.unit_status === 'verifying') return;
    const now = this.now();
    const reason = clip(`reissued: ${account} lost a verification elsewhere (${why})`);
    const unit = [o.job_id, o.round, o.idx];
    await q.query(`UPDATE results SET status = 'rejected', reason = $2 WHERE id = $1`, [o.id, reason]);
    effects.settled.push({ account, leaseId: o.lease_id });
    let outcome: string;
    if (o.status === 'accepted') {
      const copy = (
        await q.query<{ id: string }>(
          `SELECT id FROM results WHERE job_id = $1 AND round = $2 AND idx = $3 AND status = 'confirmed'
           ORDER BY created_at LIMIT 1`,
          unit,
        )
      ).rows[0];
      if (copy) {
        // An independent copy already matched it: that copy becomes the unit's result.
        await q.query(`UPDATE results SET status = 'accepted' WHERE id = $1`, [copy.id]);
        await q.query('UPDATE units SET result_id = $4 WHERE job_id = $1 AND round = $2 AND idx = $3', [
          ...unit,
          copy.id,
        ]);
        outcome = 'replaced by its confirmed copy';
      } else {
        await q.query(
          `UPDATE units SET status = 'pending', result_id = NULL, audit_of = NULL, audit_since = NULL
           WHERE job_id = $1 AND round = $2 AND idx = $3`,
          unit,
        );
        outcome = 'unit reissued';
        effects.work = true;
      }
    } else if (o.status === 'pending') {
      // Its audit copy (if one is out) now simply becomes an ordinary result of the unit.
      await q.query(
        `UPDATE units SET audit_of = NULL, audit_since = NULL WHERE job_id = $1 AND round = $2 AND idx = $3 AND audit_of = $4`,
        [...unit, o.id],
      );
      outcome = 'unit reissued';
      effects.work = true;
    } else {
      // It confirmed someone else's result: that result needs another independent audit.
      if (o.unit_status === 'done' && o.unit_result) {
        await q.query(`UPDATE results SET status = 'pending' WHERE id = $1 AND status = 'accepted'`, [o.unit_result]);
        await q.query(
          `UPDATE units SET status = 'pending', result_id = NULL, audit_of = $4, audit_since = $5
           WHERE job_id = $1 AND round = $2 AND idx = $3`,
          [...unit, o.unit_result, now],
        );
        effects.work = true;
      }
      outcome = 're-audit of the result it confirmed';
    }
    await recordEvent(q, {
      kind: 'reissue',
      jobId: o.job_id,
      round: o.round,
      idx: o.idx,
      account,
      resultId: o.id,
      outcome,
      reason,
      at: now,
    });
  }
}
