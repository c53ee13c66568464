import { randomUUID } from 'node:crypto';
import { newTrust, type TrustState } from '../../shared/verify/trust.js';
import type { Queryable } from '../store/db.js';

/** Persistence of the verification layer: trust per account, decision records and per-unit cost. */

interface TrustRow {
  consecutive_valid: number;
  total_valid: number;
  failures: number;
}

function toTrust(r: TrustRow | undefined): TrustState {
  if (!r) return newTrust();
  return {
    consecutiveValid: Number(r.consecutive_valid),
    totalValid: Number(r.total_valid),
    failures: Number(r.failures),
  };
}

/** An account's trust; a new account has none (audited on every unit). For the accounts API and the scheduler. */
export async function getTrust(q: Queryable, account: string): Promise<TrustState> {
  const { rows } = await q.query<TrustRow>(
    'SELECT consecutive_valid, total_valid, failures FROM account_trust WHERE account = $1',
    [account],
  );
  return toTrust(rows[0]);
}

/**
 * An account's trust as public views show it (GET /api/v1/accounts/:address, the market). Acceptance is published
 * only once it is final for everyone: a result of the running round of a running job is not counted yet, audited or
 * not, so right after an ack nobody can tell from an account's trust whether the result was drawn for an audit (an
 * unaudited result bumps trust at once, an audited one only at its settlement). Counts return when the round is
 * aggregated or the job ends. No update time either (it would tell the same). Null until something is published.
 */
export async function publicTrust(q: Queryable, account: string): Promise<Record<string, unknown> | null> {
  const { rows } = await q.query<TrustRow & { last_failure_at: number | string | null }>(
    'SELECT consecutive_valid, total_valid, failures, last_failure_at FROM account_trust WHERE account = $1',
    [account],
  );
  const row = rows[0];
  if (!row) return null;
  const unpublished = await q.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM results r JOIN jobs j ON j.id = r.job_id
     WHERE r.account = $1 AND r.status IN ('accepted', 'confirmed') AND r.final_at IS NOT NULL
       AND j.status = 'running' AND r.round = j.round`,
    [account],
  );
  const hidden = Number(unpublished.rows[0]?.n ?? 0);
  const t = toTrust(row);
  const out = {
    account,
    consecutive_valid: Math.max(0, t.consecutiveValid - hidden),
    total_valid: Math.max(0, t.totalValid - hidden),
    failures: t.failures,
    last_failure_at: row.last_failure_at === null ? null : Number(row.last_failure_at),
  };
  return out.total_valid === 0 && out.failures === 0 ? null : out;
}

/** Reads an account's trust and locks its row until the transaction ends (read-modify-write without lost updates). */
export async function lockTrust(q: Queryable, account: string, now: number): Promise<TrustState> {
  await q.query('INSERT INTO account_trust (account, updated_at) VALUES ($1, $2) ON CONFLICT (account) DO NOTHING', [
    account,
    now,
  ]);
  const { rows } = await q.query<TrustRow>(
    'SELECT consecutive_valid, total_valid, failures FROM account_trust WHERE account = $1 FOR UPDATE',
    [account],
  );
  return toTrust(rows[0]);
}

export async function saveTrust(
  q: Queryable,
  account: string,
  before: TrustState,
  after: TrustState,
  now: number,
): Promise<void> {
  const failed = after.failures > before.failures;
  await q.query(
    `UPDATE account_trust SET consecutive_valid = $2, total_valid = $3, failures = $4, updated_at = $5
       ${failed ? ', last_failure_at = $5' : ''}
     WHERE account = $1`,
    [account, after.consecutiveValid, after.totalValid, after.failures, now],
  );
}

export interface VerificationEvent {
  /** Defaults to a random id; forfeits use their idempotency key. */
  id?: string;
  kind: 'audit' | 'self-audit' | 'cheap-check' | 'forfeit' | 'reissue' | 'reaudit' | 'divergence-check';
  jobId: string;
  round: number;
  idx: number;
  account?: string | null;
  resultId?: string | null;
  outcome: string;
  reason?: string | null;
  detail?: object;
  at: number;
}

export async function recordEvent(q: Queryable, e: VerificationEvent): Promise<void> {
  await q.query(
    `INSERT INTO verification_events (id, kind, job_id, round, idx, account, result_id, outcome, reason, detail, at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (id) DO NOTHING`,
    [
      e.id ?? `ve_${randomUUID().replaceAll('-', '')}`,
      e.kind,
      e.jobId,
      e.round,
      e.idx,
      e.account ?? null,
      e.resultId ?? null,
      e.outcome,
      e.reason ?? null,
      e.detail ? JSON.stringify(e.detail) : null,
      e.at,
    ],
  );
}

export interface UnitCost {
  /** H when the unit gets its accepted result (kept as a maximum: a reissued unit still counts once). */
  primarySteps?: number;
  /** H per result that passed the cheap checks (the accepted one and every audit copy). */
  workerSteps?: number;
  selfAuditSteps?: number;
  refereeSteps?: number;
  cheapExamples?: number;
  reveals?: number;
  audits?: number;
  disputes?: number;
  settleMs?: number;
}

const COST_COLUMNS: [keyof UnitCost, string][] = [
  ['primarySteps', 'primary_steps'],
  ['workerSteps', 'worker_steps'],
  ['selfAuditSteps', 'self_audit_steps'],
  ['refereeSteps', 'referee_steps'],
  ['cheapExamples', 'cheap_examples'],
  ['reveals', 'reveals'],
  ['audits', 'audits'],
  ['disputes', 'disputes'],
  ['settleMs', 'settle_ms'],
];

/** Adds to a unit's verification cost counters. */
export async function addCost(
  q: Queryable,
  unit: { jobId: string; round: number; idx: number; batchSize: number },
  cost: UnitCost,
): Promise<void> {
  const cols = COST_COLUMNS.map(([, c]) => c);
  const values = COST_COLUMNS.map(([k]) => cost[k] ?? 0);
  await q.query(
    `INSERT INTO verification_costs (job_id, round, idx, batch_size, ${cols.join(', ')})
     VALUES ($1, $2, $3, $4, ${cols.map((_, i) => `$${i + 5}`).join(', ')})
     ON CONFLICT (job_id, round, idx) DO UPDATE SET
       ${cols
         .map((c) =>
           c === 'primary_steps'
             ? `${c} = GREATEST(verification_costs.${c}, EXCLUDED.${c})`
             : `${c} = verification_costs.${c} + EXCLUDED.${c}`,
         )
         .join(', ')}`,
    [unit.jobId, unit.round, unit.idx, unit.batchSize, ...values],
  );
}

export interface CostSummary {
  units: number;
  /** Steps of the results that count (one per unit). */
  primarySteps: number;
  /** Steps workers ran beyond the one result per unit that counts: audit copies and re-audits. */
  auditSteps: number;
  /** Steps the coordinator ran in place of an auditor nobody eligible picked up. */
  selfAuditSteps: number;
  /** Steps the referee recomputed (spot checks and disputes). */
  refereeSteps: number;
  /** Examples the cheap checks ran forward, and the same in training-step equivalents (a step is ~3 forwards). */
  cheapExamples: number;
  cheapStepEquivalents: number;
  reveals: number;
  audits: number;
  disputes: number;
  settleMs: number;
  /** Verification steps per useful step: (audit + self-audit + referee + cheap) / primary. */
  overhead: number;
}

/** A job's verification cost so far (all its units, or one round). */
export async function verificationCost(q: Queryable, jobId: string, round?: number): Promise<CostSummary> {
  const { rows } = await q.query<Record<string, number | string | null>>(
    `SELECT count(*) AS units, sum(primary_steps) AS primary_steps,
            sum(GREATEST(worker_steps - primary_steps, 0)) AS audit_steps,
            sum(self_audit_steps) AS self_audit_steps, sum(referee_steps) AS referee_steps,
            sum(cheap_examples) AS cheap_examples, sum(cheap_examples::double precision / (3 * batch_size)) AS cheap_eq,
            sum(reveals) AS reveals, sum(audits) AS audits, sum(disputes) AS disputes, sum(settle_ms) AS settle_ms
     FROM verification_costs WHERE job_id = $1 AND ($2::int IS NULL OR round = $2)`,
    [jobId, round ?? null],
  );
  const r = rows[0] ?? {};
  const n = (k: string) => Number(r[k] ?? 0);
  const primary = n('primary_steps');
  const extra = n('audit_steps') + n('self_audit_steps') + n('referee_steps') + n('cheap_eq');
  return {
    units: n('units'),
    primarySteps: primary,
    auditSteps: n('audit_steps'),
    selfAuditSteps: n('self_audit_steps'),
    refereeSteps: n('referee_steps'),
    cheapExamples: n('cheap_examples'),
    cheapStepEquivalents: n('cheap_eq'),
    reveals: n('reveals'),
    audits: n('audits'),
    disputes: n('disputes'),
    settleMs: n('settle_ms'),
    overhead: primary > 0 ? extra / primary : 0,
  };
}

/**
 * What the credits layer gets when an account loses: a ForfeitRequest (`worker`, `reason`, `eventKey`) covering all of
 * the worker's unvested credit, and where it was caught. Stored as a verification event (id = eventKey), so a
 * consumer that missed the scheduler's 'forfeit' event can catch up with undeliveredForfeits.
 */
export interface ForfeitRecord {
  /** Idempotency key: `forfeit:<leaseId>` of the losing result. */
  eventKey: string;
  worker: string;
  reason: string;
  jobId: string;
  round: number;
  idx: number;
  unitId: string;
  at: number;
}

export async function undeliveredForfeits(q: Queryable, limit = 100): Promise<ForfeitRecord[]> {
  const { rows } = await q.query<{ detail: ForfeitRecord | string }>(
    `SELECT detail FROM verification_events WHERE kind = 'forfeit' AND delivered_at IS NULL ORDER BY at LIMIT $1`,
    [limit],
  );
  return rows.map((r) => (typeof r.detail === 'string' ? (JSON.parse(r.detail) as ForfeitRecord) : r.detail));
}

export async function markForfeitDelivered(q: Queryable, eventKey: string, at = Date.now()): Promise<void> {
  await q.query(
    `UPDATE verification_events SET delivered_at = $2 WHERE id = $1 AND kind = 'forfeit' AND delivered_at IS NULL`,
    [eventKey, at],
  );
}
