import { randomBytes, randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { sha256Hex } from '../../shared/hash.js';
import type { JobSpec } from '../../shared/protocol/job-spec.js';
import type { LeaseMsg, ResultHeader } from '../../shared/protocol/messages.js';
import { deriveDataSeed } from '../../shared/train/assign.js';
import { outerStep } from '../../shared/train/outer-optimizer.js';
import { estimateFlops } from '../../shared/train/train-unit.js';
import type { WeightSet } from '../../shared/train/types.js';
import { allFinite, decodeWeights, sameShapes } from '../../shared/train/weights-format.js';
import { aggregateDeltas } from '../../shared/verify/aggregate.js';
import { type Compute, localCompute } from '../compute/tasks.js';
import type { BlobStore } from '../store/blobs.js';
import type { DatasetRepo } from '../store/datasets.js';
import type { Db, Queryable } from '../store/db.js';
import { AuditCoordinator, type ResultRoute, verifyOptionsFromEnv } from '../verify/audit-coordinator.js';
import type { SchedulerHooks, WorkerIdentity } from './hooks.js';
import { JOB_DEPENDENT_CODES, JobFaultWatch, UNIT_FAILED } from './job-fault.js';
import { checkpointEvery, getJobRow, type JobRow, newJobId } from './job-repo.js';
import { GIVEN_BACK_COOLDOWN_MS, leaseHistory, mayLeaseMore, roundShareSql } from './lease-limits.js';
import { WeightCache } from './round-weights.js';

export type SubmitOutcome = { ok: true; resultId: string } | { ok: false; code: string; reason: string };

interface LeaseRow {
  id: string;
  token: string;
  job_id: string;
  round: number;
  idx: number;
  worker_id: string | null;
  account: string;
  status: string;
  attached: boolean;
  deadline: number;
  /** What the lease was issued for: the unit's result, or the audit copy of the result in audit_of. */
  role: 'primary' | 'audit';
  audit_of: string | null;
  /** Micro-credits per TFLOP its result is credited at, fixed when issued; null: the job pays nothing. */
  price_per_tflop: number | string | null;
}

/** A claimed aggregation is retaken by someone else after this long (its claimant is presumed dead). */
const AGGREGATION_CLAIM_MS = 120_000;

/**
 * Rounds of work units, leases and results. All state lives in the store, so any replica can serve any worker and a
 * restarted coordinator resumes where it stopped. Events tell the gateway when to push work or revoke a lease.
 *
 * Events: 'work' (units became leasable), 'revoke' ({leaseId, workerId, reason}), 'round' ({jobId, round}),
 * 'job' ({jobId, status}).
 */
export class Scheduler extends EventEmitter {
  readonly weights: WeightCache;
  /** Audits, disputes, trust and consequences (coordinator/verify); events 'forfeit' ({ForfeitRecord}). */
  readonly verification: AuditCoordinator;
  /** Failures a job causes end the job, not its workers' standing (job-fault.ts). */
  readonly jobFaults: JobFaultWatch;

  constructor(
    private readonly db: Db,
    private readonly blobs: BlobStore,
    private readonly datasets: DatasetRepo,
    private readonly log: (msg: string, extra?: object) => void = () => {},
    readonly hooks: SchedulerHooks = {},
    /** Where tensor work runs: the coordinator's compute pool (app.ts), in process when not given. */
    readonly compute: Compute = localCompute,
  ) {
    super();
    this.weights = new WeightCache(blobs);
    this.verification = new AuditCoordinator(
      {
        db,
        weights: this.weights,
        hooks,
        loadModel: (hash) => this.loadModelJson(hash),
        loadDataset: (id) => datasets.load(id),
        compute,
        emit: (event, payload) => this.emit(event, payload),
        completeRound: (jobId, round) => this.maybeCompleteRound(jobId, round),
        track: (p) => this.track(p),
        log,
        failJob: (jobId, error) => this.failJob(jobId, error),
      },
      verifyOptionsFromEnv(),
    );
    this.jobFaults = new JobFaultWatch({
      db,
      trial: async (job) =>
        this.compute.trialStep(
          await this.loadModelJson(job.model_hash),
          job.spec,
          await datasets.load(job.dataset_id),
          await this.weights.get(job.weights_hash),
        ),
      failJob: (jobId, error) => this.failJob(jobId, error),
    });
  }

  /** A unit an account gave back is not leased to it again for this long (lease-limits.ts; tests shorten it). */
  givenBackCooldownMs = GIVEN_BACK_COOLDOWN_MS;

  private inflight = new Set<Promise<unknown>>();

  /** Background work (round aggregation) is tracked so shutdown can wait for it instead of cutting it off. */
  private track(p: Promise<unknown>): void {
    this.inflight.add(p);
    void p.finally(() => this.inflight.delete(p));
  }

  async drain(): Promise<void> {
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
  }

  // ---- jobs -------------------------------------------------------------------------------------------------

  /**
   * Creates a job from a validated spec and an allow-listed model. Initial weights come from the spec or tfjs. `id`
   * lets the caller choose the id beforehand (its budget is escrowed under it first).
   */
  async createJob(
    spec: JobSpec,
    model: object,
    datasetId: string,
    owner: string | null = null,
    id: string = newJobId(),
  ): Promise<JobRow> {
    const modelBytes = new TextEncoder().encode(JSON.stringify(model));
    const modelHash = await this.blobs.put(modelBytes);
    let weights = await this.compute.buildInitialWeights(model);
    if (spec.initialWeights) {
      const given = await this.weights.get(spec.initialWeights).catch(() => null);
      if (!given) throw new SchedulerError(404, '/initialWeights', 'no weights blob with that id');
      if (!sameShapes(given, weights)) {
        throw new SchedulerError(400, '/initialWeights', 'weights do not match the model: shapes differ');
      }
      weights = given;
    }
    // Preflight (preflight.ts): a job no honest worker can complete is refused here, not failed on volunteers.
    const problem = await this.compute.trialStep(model, spec, await this.datasets.load(datasetId), weights);
    if (problem) throw new SchedulerError(400, problem.field, problem.message);
    const weightsHash = await this.weights.put(weights, await this.compute.encodeWeights(weights));
    const row = await this.db.tx(async (q) => {
      await q.query(
        `INSERT INTO jobs (id, owner, name, spec, status, round, rounds, model_hash, dataset_id, weights_hash)
         VALUES ($1, $2, $3, $4, 'queued', 0, $5, $6, $7, $8)`,
        [id, owner, spec.name, JSON.stringify(spec), spec.rounds, modelHash, datasetId, weightsHash],
      );
      await this.insertRoundUnits(q, id, spec, 0);
      const created = (await getJobRow(q, id)) as JobRow;
      await this.hooks.onJobCreated?.(q, created);
      return created;
    });
    this.emit('work');
    return row;
  }

  async cancelJob(id: string): Promise<JobRow | null> {
    await this.endJob(id, 'cancelled', null, 'job cancelled');
    return getJobRow(this.db, id);
  }

  /** Ends a running job as failed (training diverged): its leases are revoked and its escrow is refunded. */
  async failJob(id: string, error: string): Promise<void> {
    const ended = await this.endJob(id, 'failed', error, 'job failed');
    if (ended) await this.hooks.onJobEnded?.(ended);
  }

  private async endJob(
    id: string,
    status: 'cancelled' | 'failed',
    error: string | null,
    why: string,
  ): Promise<JobRow | null> {
    const ended = await this.db.tx(async (q) => {
      const { rows } = await q.query<JobRow>(
        `UPDATE jobs SET status = $2, error = COALESCE($3, error), updated_at = now()
         WHERE id = $1 AND status IN ('queued', 'running') RETURNING *`,
        [id, status, error],
      );
      if (rows.length === 0) return null;
      const revoked = await q.query<{ id: string; worker_id: string | null }>(
        `UPDATE leases SET status = 'revoked', ended_at = $2, end_reason = $3
         WHERE job_id = $1 AND status = 'active' RETURNING id, worker_id`,
        [id, Date.now(), why],
      );
      return { job: rows[0], revoked: revoked.rows };
    });
    if (!ended) return null;
    for (const l of ended.revoked) this.emit('revoke', { leaseId: l.id, workerId: l.worker_id, reason: why });
    this.emit('job', { jobId: id, status });
    return ended.job;
  }

  private async insertRoundUnits(q: Queryable, jobId: string, spec: JobSpec, round: number): Promise<void> {
    const values: string[] = [];
    const params: unknown[] = [jobId, round];
    for (let i = 0; i < spec.unitsPerRound; i++) {
      params.push(i, deriveDataSeed(spec.seed, round, i));
      values.push(`($1, $2, $${params.length - 1}, $${params.length})`);
    }
    await q.query(
      `INSERT INTO units (job_id, round, idx, data_seed) VALUES ${values.join(', ')} ON CONFLICT DO NOTHING`,
      params,
    );
  }

  // ---- leases -----------------------------------------------------------------------------------------------

  /** Leases the oldest pending unit of any active job to this worker, or returns null when there is none. */
  async lease(who: WorkerIdentity, only: 'any' | 'audit' = 'any'): Promise<LeaseMsg | null> {
    const now = Date.now();
    const extra = (await this.hooks.leaseCondition?.(who, 2)) ?? null;
    const audit = this.verification.leaseCondition(who, 2 + (extra?.params.length ?? 0));
    const out = await this.db.tx(async (q) => {
      // A connection or account already holding its share of leases gets none (hoarding stalls jobs).
      if (!mayLeaseMore(await leaseHistory(q, who.account, who.workerId, now))) return null;
      const { rows } = await q.query<{
        job_id: string;
        round: number;
        idx: number;
        data_seed: number;
        spec: JobSpec;
        model_hash: string;
        weights_hash: string;
        dataset_id: string;
        status: string;
        audit_of: string | null;
      }>(
        `SELECT u.job_id, u.round, u.idx, u.data_seed, u.audit_of, j.spec, j.model_hash, j.weights_hash, j.dataset_id,
                j.status
         FROM units u JOIN jobs j ON j.id = u.job_id AND j.round = u.round
         WHERE u.status = 'pending' AND j.status IN ('queued', 'running') ${only === 'audit' ? 'AND u.audit_of IS NOT NULL' : ''}
           AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.job_id = u.job_id AND l.round = u.round AND l.idx = u.idx
                           AND l.account = $1 AND (l.status = 'active' OR (l.status IN ('released', 'expired', 'rejected')
                           AND l.ended_at > ${Math.floor(now - this.givenBackCooldownMs)})))
           ${extra ? `AND (${extra.sql})` : ''}
           AND (${audit.sql})
           AND ${roundShareSql('$1', `$${2 + (extra?.params.length ?? 0) + audit.params.length}`, now)}
         ORDER BY j.created_at, u.round, u.idx
         LIMIT 1 FOR UPDATE OF u SKIP LOCKED`,
        [who.account, ...(extra?.params ?? []), ...audit.params, who.address ?? null],
      );
      const u = rows[0];
      if (!u) return null;
      const leaseId = `lease_${randomUUID().replaceAll('-', '')}`;
      const token = randomBytes(24).toString('hex');
      const deadline = now + u.spec.unitDeadlineMs;
      await q.query(
        `UPDATE units SET status = 'leased', attempts = attempts + 1 WHERE job_id = $1 AND round = $2 AND idx = $3`,
        [u.job_id, u.round, u.idx],
      );
      // The role and the price are the coordinator's, fixed here: a unit waiting for its audit copy is leased as
      // the audit of that one result; anything else is the unit's primary result.
      const price = (await this.hooks.leasePrice?.(q, who, u.job_id)) ?? null;
      await q.query(
        `INSERT INTO leases (id, token, job_id, round, idx, worker_id, account, status, deadline, created_at, role,
                             audit_of, price_per_tflop, address)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', $8, $9, $10, $11, $12, $13)`,
        [
          leaseId,
          token,
          u.job_id,
          u.round,
          u.idx,
          who.workerId,
          who.account,
          deadline,
          now,
          u.audit_of ? 'audit' : 'primary',
          u.audit_of,
          price,
          who.address ?? null,
        ],
      );
      if (u.status === 'queued') {
        await q.query(`UPDATE jobs SET status = 'running', updated_at = now() WHERE id = $1 AND status = 'queued'`, [
          u.job_id,
        ]);
      }
      const msg: LeaseMsg = {
        type: 'lease',
        leaseId,
        token,
        deadline,
        unit: {
          jobName: u.spec.name,
          modelHash: u.model_hash,
          weightsHash: u.weights_hash,
          datasetHash: u.dataset_id,
          dataSeed: Number(u.data_seed),
          steps: u.spec.localSteps,
          batchSize: u.spec.batchSize,
          checkpointEvery: checkpointEvery(u.spec),
          optimizer: u.spec.optimizer,
          loss: u.spec.loss,
        },
      };
      return msg;
    });
    return out;
  }

  /**
   * Whether any unit of an active job is waiting for a worker, filters aside. False means no lease() can succeed, so
   * the gateway stops offering work to further workers in a ranked pass.
   */
  async hasPendingUnits(only: 'any' | 'audit' = 'any'): Promise<boolean> {
    const { rows } = await this.db.query(
      `SELECT 1 FROM units u JOIN jobs j ON j.id = u.job_id AND j.round = u.round
       WHERE u.status = 'pending' AND j.status IN ('queued', 'running')
         ${only === 'audit' ? 'AND u.audit_of IS NOT NULL' : ''} LIMIT 1`,
    );
    return rows.length > 0;
  }

  /**
   * A reconnecting worker asks to keep leases it still holds. Kept when the token matches, the account is the same,
   * the lease is unexpired and its unit is not settled; the unit stops being offered to others.
   */
  async resume(who: WorkerIdentity, leaseId: string, token: string): Promise<boolean> {
    return this.db.tx(async (q) => {
      const { rows } = await q.query<LeaseRow>(`SELECT * FROM leases WHERE id = $1 FOR UPDATE`, [leaseId]);
      const l = rows[0];
      if (!l || l.token !== token || l.account !== who.account || l.status !== 'active') return false;
      if (Number(l.deadline) < Date.now()) return false;
      await q.query(`UPDATE leases SET worker_id = $2, attached = true WHERE id = $1`, [leaseId, who.workerId]);
      await q.query(
        `UPDATE units SET status = 'leased' WHERE job_id = $1 AND round = $2 AND idx = $3 AND status = 'pending'`,
        [l.job_id, l.round, l.idx],
      );
      return true;
    });
  }

  /**
   * A worker gives a lease back (Stop, or `error`: it could not train the unit): the unit is leasable again at once.
   * Units that several accounts cannot train make the coordinator check the job itself (job-fault.ts).
   */
  async release(who: WorkerIdentity, leaseId: string, error?: string): Promise<boolean> {
    const reason = error ? `${UNIT_FAILED}: ${error.slice(0, 500)}` : 'released by worker';
    const l = await this.endLease(leaseId, 'released', reason, who.account);
    if (!l) return false;
    if (error) {
      const job = await getJobRow(this.db, l.job_id);
      if (
        job?.status === 'running' &&
        job.round === l.round &&
        (await this.jobFaults.onUnitFailed(job, l.round, l.idx))
      ) {
        return true;
      }
    }
    this.emit('work');
    return true;
  }

  /** A worker's connection dropped: its leases stay valid for a resume, but their units go back on offer. */
  async detachWorker(workerId: string): Promise<void> {
    const changed = await this.db.tx(async (q) => {
      const { rows } = await q.query<LeaseRow>(
        `UPDATE leases SET attached = false WHERE worker_id = $1 AND status = 'active' AND attached RETURNING *`,
        [workerId],
      );
      for (const l of rows) await this.reofferUnit(q, l.job_id, l.round, l.idx);
      await q.query('UPDATE workers SET disconnected_at = $2 WHERE id = $1', [workerId, Date.now()]);
      return rows.length;
    });
    if (changed > 0) this.emit('work');
  }

  async progress(who: WorkerIdentity, leaseId: string, step: number): Promise<void> {
    await this.db.query(
      `UPDATE leases SET progress_step = GREATEST(progress_step, $3) WHERE id = $1 AND account = $2 AND status = 'active'`,
      [leaseId, who.account, step],
    );
  }

  /** Ends an active lease; its unit becomes pending again unless another live lease covers it. */
  private async endLease(leaseId: string, status: string, reason: string, account?: string): Promise<LeaseRow | null> {
    return this.db.tx(async (q) => {
      const { rows } = await q.query<LeaseRow>(
        `UPDATE leases SET status = $2, ended_at = $3, end_reason = $4
         WHERE id = $1 AND status = 'active' ${account ? 'AND account = $5' : ''} RETURNING *`,
        account ? [leaseId, status, Date.now(), reason, account] : [leaseId, status, Date.now(), reason],
      );
      const l = rows[0];
      if (!l) return null;
      await this.reofferUnit(q, l.job_id, l.round, l.idx);
      return l;
    });
  }

  /** Puts a leased unit back on offer when no attached, active lease still covers it. */
  private async reofferUnit(q: Queryable, jobId: string, round: number, idx: number): Promise<void> {
    await q.query(
      `UPDATE units SET status = 'pending'
       WHERE job_id = $1 AND round = $2 AND idx = $3 AND status = 'leased'
         AND NOT EXISTS (SELECT 1 FROM leases l WHERE l.job_id = $1 AND l.round = $2 AND l.idx = $3
                         AND l.status = 'active' AND l.attached)`,
      [jobId, round, idx],
    );
  }

  // ---- results ----------------------------------------------------------------------------------------------

  /**
   * Checks a result and, when it passes, counts it exactly once. The unique index on (job, round, unit) for accepted
   * results is the final guard: two valid results racing for one unit cannot both count.
   */
  async submitResult(who: WorkerIdentity, header: ResultHeader, payload: Uint8Array): Promise<SubmitOutcome> {
    // The deadline is judged at arrival: checking the result takes time, and a lease that expires meanwhile was met.
    const arrivedAt = Date.now();
    const lease = (await this.db.query<LeaseRow>('SELECT * FROM leases WHERE id = $1', [header.leaseId])).rows[0];
    if (!lease) return reject('unknown_lease', 'no such lease');
    if (lease.token !== header.token) return reject('bad_token', 'the lease token does not match');
    if (lease.account !== who.account) return reject('not_your_lease', 'this lease was issued to another account');
    if (lease.status === 'completed') return reject('duplicate', 'a result for this lease was already accepted');
    const job = await getJobRow(this.db, lease.job_id);
    if (job?.status !== 'running') return reject('job_not_running', `the job is ${job?.status ?? 'gone'}`);
    if (job.round !== lease.round) return reject('unit_already_completed', 'the round of this unit is over');
    const unit = (
      await this.db.query<{ status: string }>(
        'SELECT status FROM units WHERE job_id = $1 AND round = $2 AND idx = $3',
        [lease.job_id, lease.round, lease.idx],
      )
    ).rows[0];
    if (unit?.status === 'done' || unit?.status === 'verifying') {
      return reject('unit_already_completed', 'another result for this unit was accepted');
    }
    if (lease.status === 'rejected') return reject('lease_closed', 'a result for this lease was already rejected');
    if (lease.status !== 'active' && lease.status !== 'expired') {
      return reject('lease_ended', `the lease was ${lease.status}`);
    }
    // A result counts only on a live lease: an expired one's unit may be someone else's (or held for its audit) now.
    if (Number(lease.deadline) < arrivedAt) {
      return reject('lease_expired', 'the lease deadline passed before the result arrived');
    }

    const problem =
      (await this.cheapChecks(job, header, payload)) ??
      (await this.verification.checkResult(job, { round: lease.round, idx: lease.idx }, header, payload));
    // Only exact checks refuse; a suspect result (a statistical check failed) is held for an audit below.
    const suspect = problem?.suspect ? problem : null;
    if (problem && !suspect) {
      // A check that depends on the job's model is first run on the coordinator itself: if the job fails it, the
      // refusal is the job's fault (job-fault.ts), and nobody is punished for it.
      if (JOB_DEPENDENT_CODES.has(problem.code) && (await this.jobFaults.fault(job))) {
        await this.recordRejection(lease, header, problem.code, problem.reason, who.address);
        await this.jobFaults.failIfFaulty(job);
        return reject(
          'job_fault',
          `the job itself fails this check on the coordinator (${problem.code}); it has ended`,
        );
      }
      await this.recordRejection(lease, header, problem.code, problem.reason, who.address);
      await this.verification.onCheapCheckFailed(job, lease, problem.code, problem.reason);
      return reject(problem.code, problem.reason);
    }

    const resultId = `res_${randomUUID().replaceAll('-', '')}`;
    const work = await this.unitWork(job);
    await this.blobs.put(payload);
    let revoked: { id: string; worker_id: string | null }[] = [];
    // Verification decides whether this result is accepted now or held for an audit / settlement (blind: the worker
    // gets the same ack either way).
    let route: ResultRoute = 'accept';
    try {
      revoked = await this.db.tx(async (q) => {
        route = await this.verification.routeResult(q, {
          job,
          round: lease.round,
          idx: lease.idx,
          account: lease.account,
          address: who.address,
          resultId,
          suspect,
          lease: { role: lease.role, auditOf: lease.audit_of },
        });
        if (route === 'refuse') throw new UnitSettled();
        if (route === 'accept') {
          const u = await q.query(
            `UPDATE units SET status = 'done', result_id = $4
             WHERE job_id = $1 AND round = $2 AND idx = $3 AND status <> 'done'`,
            [lease.job_id, lease.round, lease.idx, resultId],
          );
          if (u.rowCount === 0) throw new UnitSettled();
        }
        const l = await q.query(
          `UPDATE leases SET status = 'completed', ended_at = $2, end_reason = 'result accepted'
           WHERE id = $1 AND status IN ('active', 'expired') AND deadline >= $3`,
          [lease.id, Date.now(), arrivedAt],
        );
        if (l.rowCount === 0) throw new LeaseLapsed();
        const held = route !== 'accept';
        await this.insertResult(
          q,
          resultId,
          lease,
          header,
          work,
          held ? 'pending' : 'accepted',
          null,
          who.address,
          route,
        );
        if (held) return this.revokeOtherLeases(q, lease);
        await this.verification.afterAccepted(q, job, {
          round: lease.round,
          idx: lease.idx,
          account: lease.account,
          resultId,
        });
        await this.hooks.onResultAccepted?.(q, {
          resultId,
          jobId: job.id,
          owner: job.owner,
          round: lease.round,
          unit: lease.idx,
          account: lease.account,
          flops: work.flops,
          examples: work.examples,
          role: 'primary',
        });
        return this.revokeOtherLeases(q, lease);
      });
    } catch (err) {
      if (err instanceof LeaseLapsed) return reject('lease_expired', 'the lease ended before the result was taken in');
      if (err instanceof UnitSettled || isUniqueViolation(err)) {
        return reject('unit_already_completed', 'another result for this unit was accepted');
      }
      throw err;
    }
    for (const l of revoked) {
      this.emit('revoke', { leaseId: l.id, workerId: l.worker_id, reason: 'unit completed by another worker' });
    }
    if (route !== 'accept') {
      this.verification.afterHeld(route, job.id, lease.round, lease.idx);
      return { ok: true, resultId };
    }
    this.track(
      this.maybeCompleteRound(job.id, lease.round).catch((err) =>
        this.log('round aggregation failed', { jobId: job.id, err: String(err) }),
      ),
    );
    return { ok: true, resultId };
  }

  /**
   * What one unit of the job is, by the coordinator's count: steps x batch examples and its FLOP estimate. The
   * worker's header claims the same numbers, but a claim is never stored, summed or paid for.
   */
  private async unitWork(job: JobRow): Promise<{ examples: number; flops: number }> {
    const examples = job.spec.localSteps * job.spec.batchSize;
    const start = await this.weights.get(job.weights_hash);
    const params = start.shapes.reduce((n, shape) => n + shape.reduce((a, b) => a * b, 1), 0);
    return { examples, flops: estimateFlops(params, examples) };
  }

  /** Other copies of a unit whose result is in stop at once (their results could no longer count). */
  private async revokeOtherLeases(q: Queryable, lease: LeaseRow): Promise<{ id: string; worker_id: string | null }[]> {
    return (
      await q.query<{ id: string; worker_id: string | null }>(
        `UPDATE leases SET status = 'revoked', ended_at = $4, end_reason = 'unit completed by another worker'
         WHERE job_id = $1 AND round = $2 AND idx = $3 AND status = 'active' RETURNING id, worker_id`,
        [lease.job_id, lease.round, lease.idx, Date.now()],
      )
    ).rows;
  }

  /** Parse, shape, finiteness, hash and commitment checks: cheap enough to run on every result. */
  private async cheapChecks(
    job: JobRow,
    header: ResultHeader,
    payload: Uint8Array,
  ): Promise<{ code: string; reason: string; suspect?: false } | null> {
    if (sha256Hex(payload) !== header.deltaHash) {
      return { code: 'hash_mismatch', reason: 'the delta bytes do not hash to deltaHash' };
    }
    let delta: WeightSet;
    try {
      delta = decodeWeights(payload);
    } catch (err) {
      return { code: 'malformed_delta', reason: `the delta does not parse: ${(err as Error).message}` };
    }
    const start = await this.weights.get(job.weights_hash);
    if (!sameShapes(delta, start)) {
      return { code: 'wrong_shape', reason: 'the delta does not have the shapes of the model weights' };
    }
    if (!allFinite(delta)) return { code: 'non_finite', reason: 'the delta contains NaN or Infinity' };
    const steps = job.spec.localSteps;
    const expected = Math.ceil(steps / checkpointEvery(job.spec));
    if (header.checkpoints.length !== expected) {
      return {
        code: 'bad_commitments',
        reason: `expected ${expected} checkpoint hashes, got ${header.checkpoints.length}`,
      };
    }
    if (header.losses.length !== steps) {
      return { code: 'bad_losses', reason: `expected ${steps} per-step losses, got ${header.losses.length}` };
    }
    if (!header.losses.every(Number.isFinite)) return { code: 'non_finite', reason: 'a reported loss is not finite' };
    return null;
  }

  private async recordRejection(
    lease: LeaseRow,
    header: ResultHeader,
    code: string,
    reason: string,
    address?: string,
  ): Promise<void> {
    await this.db.tx(async (q) => {
      const l = await q.query(
        `UPDATE leases SET status = 'rejected', ended_at = $2, end_reason = $3 WHERE id = $1 AND status IN ('active', 'expired')`,
        [lease.id, Date.now(), `${code}: ${reason}`],
      );
      if (l.rowCount === 0) return;
      await this.insertResult(
        q,
        `res_${randomUUID().replaceAll('-', '')}`,
        lease,
        header,
        { examples: 0, flops: 0 },
        'rejected',
        `${code}: ${reason}`,
        address,
      );
      await this.reofferUnit(q, lease.job_id, lease.round, lease.idx);
    });
    this.emit('work');
  }

  private async insertResult(
    q: Queryable,
    id: string,
    lease: LeaseRow,
    h: ResultHeader,
    work: { examples: number; flops: number },
    status: 'accepted' | 'rejected' | 'pending',
    reason: string | null,
    address?: string,
    route?: ResultRoute,
  ): Promise<void> {
    await q.query(
      `INSERT INTO results (id, lease_id, job_id, round, idx, account, status, reason, delta_hash, final_hash,
                            checkpoints, losses, examples, flops, backend, created_at, address, role)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)`,
      [
        id,
        lease.id,
        lease.job_id,
        lease.round,
        lease.idx,
        lease.account,
        status,
        reason,
        h.deltaHash,
        h.finalHash,
        JSON.stringify(h.checkpoints),
        JSON.stringify(h.losses),
        work.examples,
        work.flops,
        h.backend,
        Date.now(),
        address ?? null,
        route === 'settle' ? 'audit' : 'primary',
      ],
    );
  }

  // ---- rounds -----------------------------------------------------------------------------------------------

  /**
   * When every unit of the round has an accepted result: aggregate the deltas, apply the outer optimizer, evaluate on
   * the held-out split and open the next round (or finish). A claim on the job row makes exactly one replica do it;
   * the final update is conditional on the round, so a retaken claim can never apply a round twice.
   */
  async maybeCompleteRound(jobId: string, round: number): Promise<boolean> {
    const now = Date.now();
    const { rows } = await this.db.query<JobRow>(
      `UPDATE jobs SET agg_claimed_at = $3
       WHERE id = $1 AND round = $2 AND status = 'running'
         AND (agg_claimed_at IS NULL OR agg_claimed_at < $4)
         AND (SELECT count(*) FROM units WHERE job_id = $1 AND round = $2 AND status = 'done')
             >= (spec->>'unitsPerRound')::int
       RETURNING *`,
      [jobId, round, now, now - AGGREGATION_CLAIM_MS],
    );
    const job = rows[0];
    if (!job) return false;
    try {
      await this.completeRound(job);
      return true;
    } catch (err) {
      await this.db.query('UPDATE jobs SET agg_claimed_at = NULL WHERE id = $1 AND round = $2', [jobId, round]);
      // Verification reopened a unit meanwhile (a reissue): the round completes once it is done again.
      if (err instanceof RoundChanged) return false;
      throw err;
    }
  }

  private async completeRound(job: JobRow): Promise<void> {
    const spec = job.spec;
    const results = (
      await this.db.query<{ id: string; delta_hash: string }>(
        `SELECT id, delta_hash FROM results WHERE job_id = $1 AND round = $2 AND status = 'accepted' ORDER BY idx`,
        [job.id, job.round],
      )
    ).rows;
    const deltas = await Promise.all(results.map((r) => this.weights.get(r.delta_hash)));
    const mean = aggregateDeltas(deltas, spec.aggregation);
    const params = await this.weights.get(job.weights_hash);
    const momentum = job.momentum_hash ? await this.weights.get(job.momentum_hash) : null;
    const next = outerStep(params, mean, momentum, spec.outer);
    // Encoded and hashed in the compute pool, which then holds the new weights for the evaluation below.
    const [weightsHash, momentumHash] = await Promise.all([
      this.compute.encodeWeights(next.params).then((e) => this.weights.put(next.params, e)),
      this.compute.encodeWeights(next.momentum).then((e) => this.weights.put(next.momentum, e)),
    ]);

    const model = await this.loadModelJson(job.model_hash);
    const dataset = await this.datasets.load(job.dataset_id);
    const evalResult = await this.compute.evaluate(model, next.params, dataset, { loss: spec.loss });
    // The coordinator's count, never a sum of what results claim (one huge claim must not break a round).
    const examples = results.length * spec.localSteps * spec.batchSize;
    const nextRound = job.round + 1;
    const reachedTarget = spec.targetAccuracy !== undefined && evalResult.accuracy >= spec.targetAccuracy;
    const finished = nextRound >= job.rounds || reachedTarget;

    const applied = await this.db.tx(async (q) => {
      const upd = await q.query(
        `UPDATE jobs SET round = $3, weights_hash = $4, momentum_hash = $5, agg_claimed_at = NULL,
                status = $6, updated_at = now()
         WHERE id = $1 AND round = $2 AND status = 'running'`,
        [job.id, job.round, nextRound, weightsHash, momentumHash, finished ? 'completed' : 'running'],
      );
      if (upd.rowCount === 0) return false;
      const ids = results.map((r) => r.id);
      if (!(await this.verification.sameAcceptedSet(q, job.id, job.round, ids, spec.unitsPerRound))) {
        throw new RoundChanged();
      }
      await q.query(
        `INSERT INTO round_metrics (job_id, round, loss, accuracy, examples, units) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT DO NOTHING`,
        [job.id, nextRound, evalResult.loss, evalResult.accuracy, examples, results.length],
      );
      if (!finished) await this.insertRoundUnits(q, job.id, spec, nextRound);
      return true;
    });
    if (!applied) return;
    void this.verification
      .onRoundAggregated(job.id, job.round)
      .catch((err) => this.log('settled notices failed', { jobId: job.id, err: String(err) }));
    this.log('round complete', {
      jobId: job.id,
      round: nextRound,
      loss: evalResult.loss,
      accuracy: evalResult.accuracy,
    });
    this.emit('round', { jobId: job.id, round: nextRound, accuracy: evalResult.accuracy, loss: evalResult.loss });
    if (finished) {
      const ended = await getJobRow(this.db, job.id);
      if (ended) await this.hooks.onJobEnded?.(ended);
      this.emit('job', { jobId: job.id, status: 'completed' });
    } else this.emit('work');
  }

  private modelCache = new Map<string, object>();

  async loadModelJson(hash: string): Promise<object> {
    const hit = this.modelCache.get(hash);
    if (hit) return hit;
    const bytes = await this.blobs.get(hash);
    if (!bytes) throw new Error(`model blob ${hash} is missing`);
    const model = JSON.parse(new TextDecoder().decode(bytes)) as object;
    this.modelCache.set(hash, model);
    return model;
  }

  // ---- housekeeping -----------------------------------------------------------------------------------------

  /**
   * Expires leases past their deadline, detaches leases of workers that stopped heartbeating (a replica that
   * died), and finishes rounds whose aggregation was interrupted (a coordinator restart).
   */
  async sweep(staleWorkerMs = 30_000): Promise<void> {
    const now = Date.now();
    const swept = await this.db.tx(async (q) => {
      const { rows } = await q.query<LeaseRow>(
        `UPDATE leases SET status = 'expired', ended_at = $1, end_reason = 'deadline passed'
         WHERE status = 'active' AND deadline < $1 RETURNING *`,
        [now],
      );
      const stale = await q.query<LeaseRow>(
        `UPDATE leases SET attached = false
         WHERE status = 'active' AND attached AND worker_id IN
           (SELECT id FROM workers WHERE disconnected_at IS NOT NULL OR last_seen < $1)
         RETURNING *`,
        [now - staleWorkerMs],
      );
      for (const l of [...rows, ...stale.rows]) await this.reofferUnit(q, l.job_id, l.round, l.idx);
      return { expired: rows, detached: stale.rows.length };
    });
    for (const l of swept.expired) {
      this.emit('revoke', { leaseId: l.id, workerId: l.worker_id, reason: 'deadline passed' });
    }
    // Units of expired leases and of workers whose replica went silent are on offer again: tell waiting workers.
    if (swept.expired.length > 0 || swept.detached > 0) this.emit('work');
    const stuck = await this.db.query<{ id: string; round: number }>(
      `SELECT j.id, j.round FROM jobs j WHERE j.status = 'running'
         AND (j.agg_claimed_at IS NULL OR j.agg_claimed_at < $1)
         AND (SELECT count(*) FROM units u WHERE u.job_id = j.id AND u.round = j.round AND u.status = 'done')
             >= (j.spec->>'unitsPerRound')::int`,
      [now - AGGREGATION_CLAIM_MS],
    );
    // One job's failing aggregation is logged and retried on later sweeps; it never stops another job's round or
    // the verification sweep (self-audits, settlements) of every job.
    for (const j of stuck.rows) {
      await this.maybeCompleteRound(j.id, j.round).catch((err) =>
        this.log('round aggregation failed', { jobId: j.id, round: j.round, err: String(err) }),
      );
    }
    await this.verification.sweep();
  }
}

export class SchedulerError extends Error {
  constructor(
    readonly statusCode: number,
    readonly field: string | undefined,
    message: string,
  ) {
    super(message);
  }
}

class UnitSettled extends Error {}

class LeaseLapsed extends Error {}

class RoundChanged extends Error {}

function reject(code: string, reason: string): SubmitOutcome {
  return { ok: false, code, reason };
}

function isUniqueViolation(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: string }).code === '23505';
}
