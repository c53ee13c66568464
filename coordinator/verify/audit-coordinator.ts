import type { ResultHeader } from '../../shared/protocol/messages.js';
import { assignExamples } from '../../shared/train/assign.js';
import type { Dataset, TrainUnitSpec, WeightSet } from '../../shared/train/types.js';
import { decodeWeights } from '../../shared/train/weights-format.js';
import type { DisputeParty, PartyId } from '../../shared/verify/bisect.js';
import { type CheapCheckBounds, DEFAULT_CHEAP_CHECK_BOUNDS } from '../../shared/verify/cheap-checks.js';
import type { Compute } from '../compute/tasks.js';
import { setTrustReader } from '../credits/trust.js';
import type { SchedulerHooks } from '../scheduler/hooks.js';
import { checkpointEvery, getJobRow, type JobRow } from '../scheduler/job-repo.js';
import type { WeightCache } from '../scheduler/round-weights.js';
import type { Db, Queryable } from '../store/db.js';
import { DivergenceWatch } from './divergence.js';
import {
  type AuditSettlement,
  type ComparableResult,
  type JobVerificationPolicy,
  SETTLE_ERRORS,
  VerificationEngine,
  WorkDeferred,
} from './engine.js';
import { TrainUnitReferee, type UnitInputs } from './referee.js';
import type { RevealTransport } from './reveal-hub.js';
import { checkpointsOf, describeSettlement, settlementOutcome, shutdownFault } from './settlement-record.js';
import { addCost, getTrust, lockTrust, publicTrust, recordEvent, saveTrust } from './store.js';
import { costKey, Effects, type ResultRow, unitKey, Verdicts } from './verdicts.js';
import { DEFAULT_WORK_BUDGET, WorkBudget, type WorkBudgetOptions } from './work-budget.js';

/**
 * The verification layer inside the live coordinator (docs/VERIFICATION.md, "Integration"). The scheduler calls it
 * at a few hook points; it decides audits, settles audited units with the VerificationEngine (reveals over the worker
 * gateway, the referee in process), applies verdicts and consequences, and keeps trust, records and costs in the
 * store.
 *
 * Unit life cycle (units.status / units.audit_of):
 *   pending -> leased -> [result passes cheap checks]
 *     not audited: done (accepted, trust +1, credited)
 *     audited: pending again with audit_of = that result; leasable only to another account and address, as an
 *       ordinary lease (same unit spec, fresh lease id and token) -> leased -> [second result] -> verifying
 *   verifying -> settleAudit: both valid: done (first accepted, second confirmed, both credited)
 *                             one lost a dispute: the winner waits for one more audit (audit_of = winner)
 *                             both lost: pending, from scratch
 *   pending with audit_of, nobody eligible for selfAuditAfterMs: the coordinator recomputes the unit itself.
 * A round aggregates only when every unit is done, so no unit under audit or dispute can be aggregated.
 */

export interface VerifyOptions {
  /** Time a worker has to answer one reveal request; a party that does not answer in time loses. */
  revealTimeoutMs: number;
  /**
   * When nobody eligible has taken a unit's audit copy for max(this, 2 x the time the unit took), the coordinator
   * recomputes the unit itself (one at a time). null: never (the unit waits for an eligible worker).
   */
  selfAuditAfterMs: number | null;
  /** A settlement claim older than this is presumed dead (a crashed replica) and retaken. */
  settleClaimMs: number;
  /** After a settlement failed with an error (not a verdict), retry after this long. */
  settleRetryMs: number;
  /** Uniform [0, 1) source for audit draws and spot-check choices (tests pass a seeded or scripted one). */
  rng?: () => number;
  /** Global floor of the audit probability for trusted accounts (shared/verify/trust.ts default unless set). */
  policyFloor?: number;
  spotCheckOnMatch?: boolean;
  /** Bounds of the cheap checks (shared/verify/cheap-checks.ts defaults unless set; tests tighten them). */
  cheapCheckBounds?: Partial<CheapCheckBounds>;
  /**
   * Share of matching settlements the coordinator re-executes in full (the referee's whole run judges both deltas):
   * a pair that copies or shares one fabricated result matches itself, and only this can tell (docs/VERIFICATION.md,
   * "Collusion"). Drawn with reexecuteRng, apart from the audit and spot-check draws.
   */
  reexecuteProbability: number;
  reexecuteRng?: () => number;
  /**
   * A pair of accounts that has matched at least minMatches times, and whose matches make at least maxShare of either
   * account's matches, meets far more often than random auditor draws make it: each of its matches is re-executed.
   * null: no watch.
   */
  pairWatch: { minMatches: number; maxShare: number } | null;
  /** Bounds of the training the coordinator does for others, per job and per account (work-budget.ts). */
  workBudget: WorkBudgetOptions;
  /** After a whole-unit run had to wait for the work budget, retry the settlement after this long. */
  deferRetryMs: number;
}

export const DEFAULT_VERIFY_OPTIONS: VerifyOptions = {
  revealTimeoutMs: 30_000,
  selfAuditAfterMs: 20_000,
  settleClaimMs: 10 * 60_000,
  settleRetryMs: 5_000,
  reexecuteProbability: 0.05,
  pairWatch: { minMatches: 4, maxShare: 0.5 },
  workBudget: DEFAULT_WORK_BUDGET,
  deferRetryMs: 60_000,
};

function probability(v: string | undefined, dflt: number): number {
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!(n >= 0 && n <= 1)) throw new Error(`expected a probability in [0, 1], got "${v}"`);
  return n;
}

/**
 * VERIFY_REVEAL_TIMEOUT_MS, VERIFY_SELF_AUDIT_AFTER_MS ('off' disables it), VERIFY_SETTLE_CLAIM_MS,
 * VERIFY_REEXECUTE_PROBABILITY, VERIFY_JOB_WORK_BUDGET and VERIFY_ACCOUNT_WORK_BUDGET (example-steps per hour).
 */
export function verifyOptionsFromEnv(env: Record<string, string | undefined> = process.env): VerifyOptions {
  const int = (v: string | undefined, dflt: number) => {
    if (v === undefined || v === '') return dflt;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`expected a positive integer, got "${v}"`);
    return n;
  };
  const selfAudit = env.VERIFY_SELF_AUDIT_AFTER_MS;
  return {
    ...DEFAULT_VERIFY_OPTIONS,
    revealTimeoutMs: int(env.VERIFY_REVEAL_TIMEOUT_MS, DEFAULT_VERIFY_OPTIONS.revealTimeoutMs),
    selfAuditAfterMs: selfAudit === 'off' ? null : int(selfAudit, DEFAULT_VERIFY_OPTIONS.selfAuditAfterMs ?? 20_000),
    settleClaimMs: int(env.VERIFY_SETTLE_CLAIM_MS, DEFAULT_VERIFY_OPTIONS.settleClaimMs),
    reexecuteProbability: probability(env.VERIFY_REEXECUTE_PROBABILITY, DEFAULT_VERIFY_OPTIONS.reexecuteProbability),
    workBudget: {
      ...DEFAULT_WORK_BUDGET,
      perJob: int(env.VERIFY_JOB_WORK_BUDGET, DEFAULT_WORK_BUDGET.perJob),
      perAccount: int(env.VERIFY_ACCOUNT_WORK_BUDGET, DEFAULT_WORK_BUDGET.perAccount),
    },
  };
}

/** What the scheduler lends the verification layer. */
export interface SchedulerPort {
  db: Db;
  weights: WeightCache;
  hooks: SchedulerHooks;
  loadModel(hash: string): Promise<object>;
  loadDataset(id: string): Promise<Dataset>;
  /** Where tensor work runs (the coordinator's compute pool). */
  compute: Compute;
  emit(event: string, payload?: unknown): void;
  completeRound(jobId: string, round: number): Promise<boolean>;
  track(p: Promise<unknown>): void;
  log(msg: string, extra?: object): void;
  /** Ends a running job as failed with this error (its escrow is refunded); nothing if it already ended. */
  failJob(jobId: string, error: string): Promise<void>;
}

/**
 * What to do with a result that passed the cheap checks: accept it (unaudited), hold it for an audit, settle the unit
 * (it was the audit copy), or refuse it (the unit is settled or being settled, or the submitter may not audit it).
 */
export type ResultRoute = 'accept' | 'audit' | 'settle' | 'refuse';

interface UnitRow {
  status: string;
  audit_of: string | null;
  data_seed: number | string;
  result_id: string | null;
}

/** Codes of transport-level failures: refused, but no evidence of cheating (a corrupted upload, a client bug). */
const NOT_PUNISHED = new Set(['hash_mismatch', 'malformed_delta', 'bad_header']);

/** A failed check of checkResult; suspect: only a statistical one failed (audit the result, do not refuse it). */
export interface CheckProblem {
  code: string;
  reason: string;
  suspect: boolean;
}

/** How far back the pair watch looks (bounds its query; a pair that stops meeting is forgotten). */
const PAIR_WATCH_WINDOW_MS = 30 * 24 * 3_600_000;

/** Failed attempts after which a settlement is made by the referee's whole run alone. */
export const MAX_SETTLE_ERRORS = 3;

/** Job statuses after which no lease is issued; results still held then are settled all the same. */
const ENDED_SQL = `('completed', 'failed', 'cancelled')`;
const ENDED: ReadonlySet<string> = new Set(['completed', 'failed', 'cancelled']);

/**
 * May a unit of this round still be settled? The running round of a running job; any round of an ended job (its held
 * results are settled or its escrow and its volunteers' credit would stay locked).
 */
function settlesRound(job: JobRow, round: number): boolean {
  return job.status === 'running' ? job.round === round : ENDED.has(job.status);
}

export class AuditCoordinator {
  private opts: VerifyOptions;
  engine: VerificationEngine;
  private transport: RevealTransport | null = null;
  private closing = false;
  private readonly settling = new Set<string>();
  /** Settlements that failed with an error (not a verdict), by unit: never retried the same way forever. */
  private readonly settleErrors = new Map<string, number>();
  private selfAuditing = false;
  /** When each job last had the self-audit slot (round-robin between jobs). */
  private readonly lastSelfAudit = new Map<string, number>();
  private readonly now = () => Date.now();
  private readonly verdicts: Verdicts;
  private readonly divergence: DivergenceWatch;
  /** The coordinator's training for others, bounded per job and per account. */
  readonly budget: WorkBudget;

  constructor(
    private readonly port: SchedulerPort,
    opts: Partial<VerifyOptions> = {},
  ) {
    this.opts = { ...DEFAULT_VERIFY_OPTIONS, ...opts };
    this.engine = this.buildEngine();
    this.budget = new WorkBudget(this.opts.workBudget, this.now);
    // Public views show trust only as far as it is published (store.ts, publicTrust): no audit draw leaks.
    setTrustReader(publicTrust);
    this.verdicts = new Verdicts(() => this.engine, port.hooks, this.now);
    this.divergence = new DivergenceWatch({
      db: port.db,
      unitInputs: async (jobId, round, idx) => {
        const job = await getJobRow(port.db, jobId);
        if (!job) throw new Error(`job ${jobId} does not exist`);
        return this.unitInputs(job, await this.dataSeed(port.db, jobId, round, idx));
      },
      failJob: (jobId, error) => port.failJob(jobId, error),
      budget: this.budget,
      track: (p) => port.track(p),
      log: (msg, extra) => port.log(msg, extra),
      closing: () => this.closing,
      now: this.now,
      compute: port.compute,
    });
  }

  /** Changes options at run time (tests shorten deadlines, force or script audit draws). */
  configure(opts: Partial<VerifyOptions>): void {
    this.opts = { ...this.opts, ...opts };
    this.engine = this.buildEngine();
    if (opts.workBudget) this.budget.configure(opts.workBudget);
  }

  get options(): Readonly<VerifyOptions> {
    return this.opts;
  }

  private buildEngine(): VerificationEngine {
    return new VerificationEngine({
      rng: this.opts.rng,
      policyFloor: this.opts.policyFloor,
      revealTimeoutMs: this.opts.revealTimeoutMs,
      spotCheckOnMatch: this.opts.spotCheckOnMatch,
    });
  }

  /** The worker gateway plugs in here; without it every reveal fails (and its party loses). */
  attachTransport(t: RevealTransport | null): void {
    this.transport = t;
  }

  /** Shutdown: settlements in flight stop without ruling (their claims are released for whoever runs next). */
  stop(): void {
    this.closing = true;
  }

  private policy(job: JobRow): JobVerificationPolicy {
    const v = job.spec.verification;
    return { minAuditProbability: v?.minAuditProbability ?? 0, tolerance: v?.tolerance ?? 0 };
  }

  // ---- leasing ------------------------------------------------------------------------------------------------

  /**
   * SQL condition on candidate units `u` for a lease: a unit waiting for its audit copy goes only to an account (and
   * network address, where known) that has no result for that unit, whatever its status.
   */
  leaseCondition(who: { account: string; address?: string }, firstParam: number): { sql: string; params: unknown[] } {
    const byAddress = who.address ? ` OR (r.address IS NOT NULL AND r.address = $${firstParam + 1})` : '';
    return {
      sql: `u.audit_of IS NULL OR NOT EXISTS (SELECT 1 FROM results r WHERE r.job_id = u.job_id AND r.round = u.round
              AND r.idx = u.idx AND (r.account = $${firstParam}${byAddress}))`,
      params: who.address ? [who.account, who.address] : [who.account],
    };
  }

  // ---- results ------------------------------------------------------------------------------------------------

  private async unitInputs(job: JobRow, dataSeed: number): Promise<UnitInputs & { k: number }> {
    const spec = job.spec;
    const k = checkpointEvery(spec);
    const [model, dataset, startWeights] = await Promise.all([
      this.port.loadModel(job.model_hash),
      this.port.loadDataset(job.dataset_id),
      this.port.weights.get(job.weights_hash),
    ]);
    const trainSpec: TrainUnitSpec = {
      steps: spec.localSteps,
      batchSize: spec.batchSize,
      checkpointEvery: k,
      optimizer: spec.optimizer,
      loss: spec.loss,
    };
    const indices = assignExamples(dataSeed, spec.localSteps, spec.batchSize, dataset.trainExamples);
    return { model, spec: trainSpec, startWeights, dataset, indices, k };
  }

  private async dataSeed(q: Queryable, jobId: string, round: number, idx: number): Promise<number> {
    const { rows } = await q.query<{ data_seed: number | string }>(
      'SELECT data_seed FROM units WHERE job_id = $1 AND round = $2 AND idx = $3',
      [jobId, round, idx],
    );
    if (!rows[0]) throw new Error(`unit ${unitKey(jobId, round, idx)} does not exist`);
    return Number(rows[0].data_seed);
  }

  /**
   * The cheap checks of shared/verify/cheap-checks.ts on a result whose bytes already parsed with the model's shapes:
   * loss trace against coordinator-side forward passes (first loss, final loss, progress), delta norm, commitments.
   * Returns null when all pass; otherwise the code and reason, with suspect = true when only a statistical check failed
   * (the result is then audited, never refused: routeResult).
   */
  async checkResult(
    job: JobRow,
    unit: { round: number; idx: number },
    header: ResultHeader,
    payload: Uint8Array,
  ): Promise<CheckProblem | null> {
    const inputs = await this.unitInputs(job, await this.dataSeed(this.port.db, job.id, unit.round, unit.idx));
    const r = await this.port.compute.cheapCheck(
      {
        model: inputs.model,
        dataset: inputs.dataset,
        loss: inputs.spec.loss,
        steps: inputs.spec.steps,
        batchSize: inputs.spec.batchSize,
        checkpointEvery: inputs.k,
        indices: inputs.indices,
        startWeights: inputs.startWeights,
        delta: decodeWeights(payload),
        checkpoints: header.checkpoints,
        // The scheduler refused non-finite (null) losses before this; NaN keeps the type honest if one slips through.
        losses: header.losses.map((l) => l ?? Number.NaN),
      },
      { ...DEFAULT_CHEAP_CHECK_BOUNDS, ...this.opts.cheapCheckBounds },
    );
    await addCost(this.port.db, costKey(job, unit.round, unit.idx), { cheapExamples: r.forwardExamples });
    if (r.ok && !r.suspect) return null;
    return { code: r.code.replaceAll('-', '_'), reason: r.reason, suspect: r.suspect };
  }

  /**
   * Inside the scheduler's accepting transaction, before the result row exists: what happens to this result. Locks
   * the unit row. For 'audit' and 'settle' the unit row is updated here; for 'accept' the scheduler marks it done.
   */
  async routeResult(
    q: Queryable,
    r: {
      job: JobRow;
      round: number;
      idx: number;
      account: string;
      address?: string;
      resultId: string;
      /** A statistical cheap check failed (checkResult): audited whatever the draw. */
      suspect?: CheckProblem | null;
      /** The role the coordinator issued the result's lease for (and the result it audits); the unit's state never
       *  decides it, so a primary lease cannot make itself the audit copy of a unit that went on hold meanwhile. */
      lease: { role: 'primary' | 'audit'; auditOf: string | null };
    },
  ): Promise<ResultRoute> {
    const { rows } = await q.query<UnitRow>(
      'SELECT status, audit_of, data_seed, result_id FROM units WHERE job_id = $1 AND round = $2 AND idx = $3 FOR UPDATE',
      [r.job.id, r.round, r.idx],
    );
    const u = rows[0];
    if (!u || u.status === 'done' || u.status === 'verifying') return 'refuse';
    // Only the coordinator picks an auditor: an audit copy comes on a lease issued to audit this very result, and a
    // primary result arriving while the unit is held for audit is no longer wanted.
    if ((u.audit_of ?? null) !== (r.lease.role === 'audit' ? r.lease.auditOf : null)) return 'refuse';
    const cost = costKey(r.job, r.round, r.idx);
    if (u.audit_of) {
      // The audit copy. Its holder was chosen under the lease condition; a late result of an older lease is checked
      // here with the same rule.
      const clash = await q.query(
        `SELECT 1 FROM results WHERE job_id = $1 AND round = $2 AND idx = $3
           AND (account = $4 OR ($5::text IS NOT NULL AND address = $5)) LIMIT 1`,
        [r.job.id, r.round, r.idx, r.account, r.address ?? null],
      );
      if (clash.rows.length > 0) return 'refuse';
      await q.query(
        `UPDATE units SET status = 'verifying', settle_claimed_at = NULL WHERE job_id = $1 AND round = $2 AND idx = $3`,
        [r.job.id, r.round, r.idx],
      );
      await addCost(q, cost, { workerSteps: r.job.spec.localSteps });
      return 'settle';
    }
    const trust = await getTrust(q, r.account);
    await addCost(q, cost, { workerSteps: r.job.spec.localSteps });
    if (r.suspect) {
      await recordEvent(q, {
        kind: 'cheap-check',
        jobId: r.job.id,
        round: r.round,
        idx: r.idx,
        account: r.account,
        resultId: r.resultId,
        outcome: `suspect: ${r.suspect.code}`,
        reason: `${r.suspect.reason}; audited instead of refused (a statistical check, which honest units can fail)`,
        at: this.now(),
      });
    } else if (!this.engine.shouldAudit(trust, this.policy(r.job))) return 'accept';
    await q.query(
      `UPDATE units SET status = 'pending', audit_of = $4, audit_since = $5, settle_claimed_at = NULL
       WHERE job_id = $1 AND round = $2 AND idx = $3`,
      [r.job.id, r.round, r.idx, r.resultId, this.now()],
    );
    return 'audit';
  }

  /** In the accepting transaction of an unaudited result, after its row exists: trust +1, marked final. */
  async afterAccepted(q: Queryable, job: JobRow, r: { round: number; idx: number; account: string; resultId: string }) {
    const now = this.now();
    const before = await lockTrust(q, r.account, now);
    await saveTrust(q, r.account, before, this.engine.applyVerdict(before, 'valid'), now);
    await q.query('UPDATE results SET final_at = $2 WHERE id = $1', [r.resultId, now]);
    await addCost(q, costKey(job, r.round, r.idx), { primarySteps: job.spec.localSteps });
  }

  /** After the accepting transaction of a result held for audit or settlement. */
  afterHeld(route: ResultRoute, jobId: string, round: number, idx: number): void {
    if (route === 'audit') this.port.emit('work');
    if (route === 'settle') this.startSettlement(jobId, round, idx);
  }

  /** A result failed a cheap check (already recorded as rejected): consequences for its account, unless benign. */
  async onCheapCheckFailed(
    job: JobRow,
    lease: { id: string; round: number; idx: number; account: string },
    code: string,
    reason: string,
  ): Promise<void> {
    if (code === 'non_finite') {
      // Honest training can diverge: no consequences, but a unit that diverges for everyone fails the job.
      return this.divergence.onNonFinite({
        jobId: job.id,
        round: lease.round,
        idx: lease.idx,
        account: lease.account,
        reason,
      });
    }
    if (NOT_PUNISHED.has(code)) return;
    const effects = new Effects();
    await this.port.db.tx(async (q) => {
      await q.query('SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE', [job.id]);
      await recordEvent(q, {
        kind: 'cheap-check',
        jobId: job.id,
        round: lease.round,
        idx: lease.idx,
        account: lease.account,
        outcome: code,
        reason,
        at: this.now(),
      });
      await this.verdicts.punish(
        q,
        { job, round: lease.round, idx: lease.idx, account: lease.account, leaseId: lease.id },
        `cheap check ${code}: ${reason}`,
        effects,
      );
    });
    this.flush(effects);
  }

  // ---- settlement ---------------------------------------------------------------------------------------------

  startSettlement(jobId: string, round: number, idx: number): void {
    this.port.track(
      this.settle(jobId, round, idx).catch((err) =>
        this.port.log('settlement failed', { jobId, round, idx, err: String(err) }),
      ),
    );
  }

  private reveal(account: string, leaseId: string, index: number): Promise<WeightSet> {
    if (!this.transport) return Promise.reject(new Error('no worker gateway to reach the worker'));
    // The engine's own deadline (revealTimeoutMs) fires first; this one only clears the request.
    return this.transport.reveal(account, leaseId, index, this.opts.revealTimeoutMs + 1_000);
  }

  private async releaseClaim(jobId: string, round: number, idx: number, retryInMs: number | null): Promise<void> {
    const at = retryInMs === null ? null : this.now() - this.opts.settleClaimMs + retryInMs;
    await this.port.db.query(
      `UPDATE units SET settle_claimed_at = $4 WHERE job_id = $1 AND round = $2 AND idx = $3 AND status = 'verifying'`,
      [jobId, round, idx, at],
    );
  }

  /** Settles a unit whose two copies are in: compare, spot check or dispute, then verdicts and consequences. */
  private async settle(jobId: string, round: number, idx: number): Promise<void> {
    const key = unitKey(jobId, round, idx);
    if (this.settling.has(key) || this.closing) return;
    this.settling.add(key);
    try {
      const now = this.now();
      const claimed = await this.port.db.query<UnitRow>(
        `UPDATE units SET settle_claimed_at = $4
         WHERE job_id = $1 AND round = $2 AND idx = $3 AND status = 'verifying'
           AND (settle_claimed_at IS NULL OR settle_claimed_at < $5)
         RETURNING status, audit_of, data_seed, result_id`,
        [jobId, round, idx, now, now - this.opts.settleClaimMs],
      );
      const u = claimed.rows[0];
      if (!u) return;
      try {
        await this.settleClaimed(jobId, round, idx, u);
      } catch (err) {
        if (err instanceof WorkDeferred) {
          // The work waits for the budget's window; the parties keep their states (nothing was ruled).
          this.port.log('settlement waits for the work budget', { jobId, round, idx, why: err.message });
          await this.releaseClaim(jobId, round, idx, this.opts.deferRetryMs);
          return;
        }
        // Cut off by shutdown (the referee stops between steps): whoever runs next retakes it at once.
        await this.releaseClaim(jobId, round, idx, this.closing ? null : this.opts.settleRetryMs).catch(() => {});
        if (this.closing) return;
        // Counted: after MAX_SETTLE_ERRORS the unit is settled without any party's reveals (settleClaimed).
        this.settleErrors.set(key, (this.settleErrors.get(key) ?? 0) + 1);
        if (this.settleErrors.size > 10_000) this.settleErrors.delete(this.settleErrors.keys().next().value as string);
        throw err;
      }
    } finally {
      this.settling.delete(key);
    }
  }

  private async settleClaimed(jobId: string, round: number, idx: number, u: UnitRow): Promise<void> {
    const db = this.port.db;
    const job = await getJobRow(db, jobId);
    if (!job || !settlesRound(job, round)) return;
    const { rows } = await db.query<ResultRow>(
      `SELECT * FROM results WHERE job_id = $1 AND round = $2 AND idx = $3 AND status = 'pending' ORDER BY created_at`,
      [jobId, round, idx],
    );
    const a = rows.find((r) => r.id === u.audit_of);
    const b = rows.filter((r) => r.id !== u.audit_of).at(-1);
    if (!a || !b) {
      // Nothing to compare (a self-audit interrupted by a restart, or a reissue): wait for a copy again.
      await db.query(
        `UPDATE units SET status = 'pending', audit_of = $4, audit_since = $5, settle_claimed_at = NULL
         WHERE job_id = $1 AND round = $2 AND idx = $3 AND status = 'verifying'`,
        [jobId, round, idx, a?.id ?? null, this.now()],
      );
      this.port.emit('work');
      return;
    }
    const inputs = await this.unitInputs(job, Number(u.data_seed));
    const [deltaA, deltaB] = await Promise.all([
      this.port.weights.get(a.delta_hash),
      this.port.weights.get(b.delta_hash),
    ]);
    const party = (r: ResultRow, delta: WeightSet): DisputeParty & ComparableResult => ({
      account: r.account,
      checkpoints: checkpointsOf(r),
      delta,
      deltaHash: r.delta_hash,
      reveal: (i) => this.reveal(r.account, r.lease_id, i),
    });
    const wholeCost = inputs.spec.steps * inputs.spec.batchSize;
    const key = unitKey(jobId, round, idx);
    // A settlement that keeps failing with an error is not retried the same way forever: the referee's own run of the
    // whole unit judges both deltas, with nothing the parties reveal (the deltas were checked at submission).
    const failing = (this.settleErrors.get(key) ?? 0) >= MAX_SETTLE_ERRORS;
    if (failing) this.budget.charge(job.id, wholeCost);
    const reexecute = failing ? SETTLE_ERRORS : await this.reexecution(job.id, wholeCost, a.account, b.account);
    // The referee trains in the compute pool: sockets (reveals of other disputes, leases) stay served meanwhile.
    const referee = new TrainUnitReferee({ ...inputs, shouldStop: () => this.closing }, this.port.compute);
    const t0 = performance.now();
    const s = await this.engine.settleAudit({
      a: party(a, deltaA),
      b: party(b, deltaB),
      unit: {
        unitId: unitKey(jobId, round, idx),
        steps: inputs.spec.steps,
        checkpointEvery: inputs.k,
        startWeights: inputs.startWeights,
        tolerance: this.engine.tolerance(this.policy(job)),
        stateLayout: await this.port.compute.stateLayout(inputs.model, inputs.spec),
      },
      referee,
      stop: () => this.closing,
      reexecute,
      // A silent party makes the referee run the whole unit: charged to it (and the job), within their budgets.
      mayRunWhole: (silent) => {
        const why = this.budget.allows(job.id, wholeCost, silent);
        if (!why) this.budget.charge(job.id, wholeCost, silent);
        return why;
      },
    });
    const ms = performance.now() - t0;
    if (this.closing || shutdownFault(s)) {
      await this.releaseClaim(jobId, round, idx, null);
      return;
    }
    await this.applySettlement(job, round, idx, a, b, s, ms);
    this.settleErrors.delete(key);
  }

  /**
   * Whether a match of these two accounts is re-executed in full, and why: a random share of all matches
   * (reexecuteProbability), and every match of a watched pair (one that meets far more often than random auditor
   * draws make it). Decided before the comparison, so a mismatch simply ignores it.
   */
  private async reexecution(jobId: string, cost: number, x: string, y: string): Promise<string | null> {
    const why = await this.reexecutionReason(x, y);
    // Re-executions are the coordinator's own choice: charged to the job, and skipped (a spot check instead) when
    // the job's work budget is spent.
    if (!why || this.budget.allows(jobId, cost)) return null;
    this.budget.charge(jobId, cost, why === 'watched-pair' ? [x, y] : []);
    return why;
  }

  private async reexecutionReason(x: string, y: string): Promise<string | null> {
    const p = this.opts.reexecuteProbability;
    if (p >= 1 || (p > 0 && (this.opts.reexecuteRng ?? Math.random)() < p)) return 'drawn';
    const watch = this.opts.pairWatch;
    if (!watch) return null;
    const { rows } = await this.port.db.query<{ me: string; total: number; pair: number }>(
      `SELECT x.account AS me, count(*)::int AS total,
              (count(*) FILTER (WHERE y.account = ANY($1::text[]) AND y.account <> x.account))::int AS pair
       FROM results x JOIN results y ON y.job_id = x.job_id AND y.round = x.round AND y.idx = x.idx AND y.id <> x.id
       WHERE x.account = ANY($1::text[]) AND x.status IN ('accepted', 'confirmed') AND x.created_at > $2
         AND y.status IN ('accepted', 'confirmed')
       GROUP BY x.account`,
      [[x, y], this.now() - PAIR_WATCH_WINDOW_MS],
    );
    const watched = rows.some((r) => r.pair >= watch.minMatches && r.pair >= watch.maxShare * r.total);
    return watched ? 'watched-pair' : null;
  }

  private async applySettlement(
    job: JobRow,
    round: number,
    idx: number,
    a: ResultRow,
    b: ResultRow,
    s: AuditSettlement,
    ms: number,
  ): Promise<void> {
    const effects = new Effects();
    const now = this.now();
    const parties: Record<PartyId, ResultRow> = { a, b };
    const applied = await this.port.db.tx(async (q) => {
      await q.query('SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE', [job.id]);
      const cur = (
        await q.query<UnitRow>(
          'SELECT status, audit_of, data_seed, result_id FROM units WHERE job_id = $1 AND round = $2 AND idx = $3 FOR UPDATE',
          [job.id, round, idx],
        )
      ).rows[0];
      const still = await q.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM results WHERE id = ANY($1::text[]) AND status = 'pending'`,
        [[a.id, b.id]],
      );
      if (cur?.status !== 'verifying' || cur.audit_of !== a.id || Number(still.rows[0].n) !== 2) return false;

      let accepted: string | null = null;
      for (const id of ['a', 'b'] as const) {
        if (s.verdicts[id] !== 'valid') continue;
        const status = accepted === null ? 'accepted' : 'confirmed';
        if (status === 'accepted') accepted = parties[id].id;
        await this.verdicts.finalizeValid(q, job, parties[id], status);
      }
      for (const id of ['a', 'b'] as const) {
        if (s.verdicts[id] !== 'invalid') continue;
        const r = parties[id];
        await this.verdicts.punish(
          q,
          { job, round, idx, account: r.account, leaseId: r.lease_id, resultId: r.id },
          s.reasons[id] ?? 'failed its audit',
          effects,
        );
      }
      const held = (['a', 'b'] as const).find((id) => s.verdicts[id] === 'reaudit');
      if (accepted) {
        await q.query(
          `UPDATE units SET status = 'done', result_id = $4, audit_of = NULL, settle_claimed_at = NULL
           WHERE job_id = $1 AND round = $2 AND idx = $3`,
          [job.id, round, idx, accepted],
        );
        const revoked = await q.query<{ id: string; worker_id: string | null }>(
          `UPDATE leases SET status = 'revoked', ended_at = $4, end_reason = 'unit completed by another worker'
           WHERE job_id = $1 AND round = $2 AND idx = $3 AND status = 'active' RETURNING id, worker_id`,
          [job.id, round, idx, now],
        );
        for (const l of revoked.rows) {
          effects.revoked.push({ leaseId: l.id, workerId: l.worker_id, reason: 'unit completed by another worker' });
        }
        effects.rounds.push({ jobId: job.id, round });
      } else {
        // A dispute winner waits for one more independent copy; after a double loss the unit starts over.
        await q.query(
          `UPDATE units SET status = 'pending', audit_of = $4, audit_since = $5, settle_claimed_at = NULL
           WHERE job_id = $1 AND round = $2 AND idx = $3`,
          [job.id, round, idx, held ? parties[held].id : null, now],
        );
        effects.work = true;
        if (held) {
          await recordEvent(q, {
            kind: 'reaudit',
            jobId: job.id,
            round,
            idx,
            account: parties[held].account,
            resultId: parties[held].id,
            outcome: 'waiting for one more audit',
            reason: s.reasons[held] ?? null,
            at: now,
          });
        }
      }
      await addCost(q, costKey(job, round, idx), {
        refereeSteps: s.refereeSteps,
        reveals: s.reveals,
        audits: 1,
        disputes: s.dispute ? 1 : 0,
        settleMs: ms,
      });
      await recordEvent(q, {
        kind: 'audit',
        jobId: job.id,
        round,
        idx,
        account: null,
        resultId: a.id,
        outcome: settlementOutcome(s),
        reason: s.dispute?.reason ?? Object.values(s.spotChecks)[0]?.reason ?? s.compare.how,
        detail: describeSettlement(s, parties),
        at: now,
      });
      return true;
    });
    if (!applied) {
      await this.releaseClaim(job.id, round, idx, null);
      return;
    }
    this.flush(effects);
  }

  /** Carries out what a committed transaction decided: revokes, forfeits, settled notices, new work, rounds. */
  private flush(e: Effects): void {
    for (const r of e.revoked) this.port.emit('revoke', r);
    for (const f of e.forfeits) this.port.emit('forfeit', f);
    const byAccount = new Map<string, string[]>();
    for (const s of e.settled) byAccount.set(s.account, [...(byAccount.get(s.account) ?? []), s.leaseId]);
    for (const [account, leases] of byAccount) this.transport?.settled(account, leases);
    if (e.work) this.port.emit('work');
    for (const r of e.rounds) {
      this.port.track(
        this.port
          .completeRound(r.jobId, r.round)
          .catch((err) => this.port.log('round aggregation failed', { jobId: r.jobId, err: String(err) })),
      );
    }
  }

  // ---- rounds and housekeeping --------------------------------------------------------------------------------

  /** Inside the round's final transaction: is the set of accepted results still the one that was aggregated? */
  async sameAcceptedSet(q: Queryable, jobId: string, round: number, ids: string[], needed: number): Promise<boolean> {
    const { rows } = await q.query<{ id: string }>(
      `SELECT id FROM results WHERE job_id = $1 AND round = $2 AND status = 'accepted' ORDER BY idx`,
      [jobId, round],
    );
    if (rows.length !== needed || rows.length !== ids.length) return false;
    const now = new Set(rows.map((r) => r.id));
    return ids.every((id) => now.has(id));
  }

  /** A round was aggregated: its results are final, so their workers may drop the checkpoint states. */
  async onRoundAggregated(jobId: string, round: number): Promise<void> {
    if (!this.transport) return;
    const { rows } = await this.port.db.query<{ account: string; lease_id: string }>(
      `SELECT account, lease_id FROM results WHERE job_id = $1 AND round = $2 AND status IN ('accepted', 'confirmed')`,
      [jobId, round],
    );
    const byAccount = new Map<string, string[]>();
    for (const r of rows) byAccount.set(r.account, [...(byAccount.get(r.account) ?? []), r.lease_id]);
    for (const [account, leases] of byAccount) this.transport.settled(account, leases);
  }

  /** Restarts settlements nobody is running, and self-audits units no eligible worker took in time. */
  async sweep(): Promise<void> {
    if (this.closing) return;
    const now = this.now();
    const stuck = await this.port.db.query<{ job_id: string; round: number; idx: number }>(
      `SELECT u.job_id, u.round, u.idx FROM units u JOIN jobs j ON j.id = u.job_id
       WHERE u.status = 'verifying' AND ((j.status = 'running' AND j.round = u.round) OR j.status IN ${ENDED_SQL})
         AND (u.settle_claimed_at IS NULL OR u.settle_claimed_at < $1) LIMIT 20`,
      [now - this.opts.settleClaimMs],
    );
    for (const u of stuck.rows) {
      if (!this.settling.has(unitKey(u.job_id, u.round, u.idx))) this.startSettlement(u.job_id, u.round, u.idx);
    }
    if (this.selfAuditing) return;
    // A result held for audit in a job that ended will never get its audit copy (no leases for an ended job): it is
    // self-audited at once, even when self-audits are off, so that neither its worker's credit nor the job's escrow
    // stays locked. One candidate per job: the slot goes round-robin over jobs, not to one job's long queue.
    const due = await this.port.db.query<{ job_id: string; round: number; idx: number; cost: number | string }>(
      `SELECT DISTINCT ON (u.job_id) u.job_id, u.round, u.idx,
              (j.spec->>'localSteps')::bigint * (j.spec->>'batchSize')::bigint AS cost
       FROM units u
       JOIN jobs j ON j.id = u.job_id
       JOIN results r ON r.id = u.audit_of JOIN leases l ON l.id = r.lease_id
       WHERE u.status = 'pending' AND u.audit_of IS NOT NULL
         AND (j.status IN ${ENDED_SQL}
              OR (j.status = 'running' AND j.round = u.round AND $2::bigint IS NOT NULL
                  AND u.audit_since < $1 - GREATEST($2::bigint, 2 * (r.created_at - l.created_at))))
       ORDER BY u.job_id, u.audit_since LIMIT 100`,
      [now, this.opts.selfAuditAfterMs],
    );
    // A job whose work budget is spent waits for the window (or for a worker to take the audit copy).
    const d = this.nextSelfAudit(due.rows.filter((r) => this.budget.allows(r.job_id, Number(r.cost)) === null));
    if (!d) return;
    this.lastSelfAudit.set(d.job_id, now);
    this.budget.charge(d.job_id, Number(d.cost));
    this.selfAuditing = true;
    this.port.track(
      this.selfAudit(d.job_id, d.round, d.idx)
        .catch((err) => this.port.log('self-audit failed', { jobId: d.job_id, err: String(err) }))
        .finally(() => {
          this.selfAuditing = false;
        }),
    );
  }

  /** Round-robin over jobs: the candidate of the job whose last self-audit is the oldest (never first). */
  private nextSelfAudit<T extends { job_id: string }>(candidates: T[]): T | undefined {
    let best: T | undefined;
    let bestAt = Number.POSITIVE_INFINITY;
    for (const c of candidates) {
      const at = this.lastSelfAudit.get(c.job_id) ?? Number.NEGATIVE_INFINITY;
      if (at < bestAt) {
        best = c;
        bestAt = at;
      }
    }
    if (this.lastSelfAudit.size > 10_000) this.lastSelfAudit.clear();
    return best;
  }

  /**
   * Nobody eligible took the audit copy: the coordinator (trusted) trains the whole unit itself and compares. A
   * match accepts the result; a mismatch rejects it outright, no dispute needed.
   */
  private async selfAudit(jobId: string, round: number, idx: number): Promise<void> {
    const db = this.port.db;
    const now = this.now();
    const effects = new Effects();
    const claimed = await db.tx(async (q) => {
      const u = (
        await q.query<UnitRow>(
          `UPDATE units SET status = 'verifying', settle_claimed_at = $4
           WHERE job_id = $1 AND round = $2 AND idx = $3 AND status = 'pending' AND audit_of IS NOT NULL
           RETURNING status, audit_of, data_seed, result_id`,
          [jobId, round, idx, now],
        )
      ).rows[0];
      if (!u) return null;
      const revoked = await q.query<{ id: string; worker_id: string | null }>(
        `UPDATE leases SET status = 'revoked', ended_at = $4, end_reason = 'unit completed by another worker'
         WHERE job_id = $1 AND round = $2 AND idx = $3 AND status = 'active' RETURNING id, worker_id`,
        [jobId, round, idx, now],
      );
      for (const l of revoked.rows) {
        effects.revoked.push({ leaseId: l.id, workerId: l.worker_id, reason: 'unit completed by another worker' });
      }
      return u;
    });
    if (!claimed) return;
    this.flush(effects);
    try {
      const job = await getJobRow(db, jobId);
      if (!job || !settlesRound(job, round)) {
        await this.releaseClaim(jobId, round, idx, null);
        return;
      }
      const a = (await db.query<ResultRow>('SELECT * FROM results WHERE id = $1', [claimed.audit_of])).rows[0];
      if (a?.status !== 'pending') {
        await this.releaseClaim(jobId, round, idx, 0);
        return;
      }
      const inputs = await this.unitInputs(job, Number(claimed.data_seed));
      const t0 = performance.now();
      const mine = await this.port.compute.trainUnit({ ...inputs, shouldStop: () => this.closing });
      const ms = performance.now() - t0;
      if (this.closing) {
        await this.releaseClaim(jobId, round, idx, null);
        return;
      }
      const theirs = await this.port.weights.get(a.delta_hash);
      const cmp = this.engine.compare(
        { deltaHash: a.delta_hash, delta: theirs },
        { deltaHash: mine.deltaHash, delta: mine.delta },
        this.engine.tolerance(this.policy(job)),
      );
      const after = new Effects();
      const applied = await db.tx(async (q) => {
        await q.query('SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE', [job.id]);
        const cur = (
          await q.query<UnitRow>(
            'SELECT status, audit_of, data_seed, result_id FROM units WHERE job_id = $1 AND round = $2 AND idx = $3 FOR UPDATE',
            [jobId, round, idx],
          )
        ).rows[0];
        if (cur?.status !== 'verifying' || cur.audit_of !== a.id) return false;
        const reason = `the coordinator's own run of the unit differs by ${cmp.deltaDistance.toExponential(2)} (tolerance ${this.engine.tolerance(this.policy(job)).toExponential(1)})`;
        if (cmp.verdict === 'match') {
          await this.verdicts.finalizeValid(q, job, a, 'accepted');
          await q.query(
            `UPDATE units SET status = 'done', result_id = $4, audit_of = NULL, settle_claimed_at = NULL
             WHERE job_id = $1 AND round = $2 AND idx = $3`,
            [jobId, round, idx, a.id],
          );
          after.rounds.push({ jobId, round });
        } else {
          await this.verdicts.punish(
            q,
            { job, round, idx, account: a.account, leaseId: a.lease_id, resultId: a.id },
            reason,
            after,
          );
          await q.query(
            `UPDATE units SET status = 'pending', audit_of = NULL, settle_claimed_at = NULL
             WHERE job_id = $1 AND round = $2 AND idx = $3`,
            [jobId, round, idx],
          );
          after.work = true;
        }
        await addCost(q, costKey(job, round, idx), { selfAuditSteps: inputs.spec.steps, audits: 1, settleMs: ms });
        await recordEvent(q, {
          kind: 'self-audit',
          jobId,
          round,
          idx,
          account: a.account,
          resultId: a.id,
          outcome: cmp.verdict === 'match' ? 'valid' : 'invalid',
          reason: cmp.verdict === 'match' ? cmp.how : reason,
          detail: { compare: cmp, steps: inputs.spec.steps, ms },
          at: this.now(),
        });
        return true;
      });
      if (applied) this.flush(after);
    } catch (err) {
      await this.releaseClaim(jobId, round, idx, this.opts.settleRetryMs).catch(() => {});
      throw err;
    }
  }
}
