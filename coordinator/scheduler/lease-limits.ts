import type { Queryable } from '../store/db.js';

/**
 * How many leases one connection and one account may hold at once (issue 9 #19: a connection that asks for many
 * units and sits on them stalls every job it holds). An honest worker trains one unit at a time per connection, so a
 * connection holds at most LEASES_PER_CONNECTION. An account starts with BASE_ACCOUNT_LEASES (a volunteer with one or
 * two tabs), earns one more per UNITS_PER_EXTRA_LEASE units it finished in the last window (measured throughput), up
 * to MAX_ACCOUNT_LEASES, and loses one per lease it let expire in that window; it always keeps one, so a slow honest
 * device still works.
 */
export const LEASES_PER_CONNECTION = 2;
export const BASE_ACCOUNT_LEASES = 2;
export const MAX_ACCOUNT_LEASES = 32;
export const UNITS_PER_EXTRA_LEASE = 2;
export const LEASE_HISTORY_WINDOW_MS = 3_600_000;

export interface LeaseHistory {
  /** Active leases of the account, and of this connection. */
  active: number;
  activeHere: number;
  /** Leases of the account that ended with a result taken in, and that expired, within the window. */
  completed: number;
  expired: number;
}

/** The most leases the account may hold at once given its recent history. */
export function accountAllowance(h: Pick<LeaseHistory, 'completed' | 'expired'>): number {
  const earned = BASE_ACCOUNT_LEASES + Math.floor(h.completed / UNITS_PER_EXTRA_LEASE);
  return Math.max(1, Math.min(MAX_ACCOUNT_LEASES, earned) - h.expired);
}

/** Whether one more lease may be issued to this connection of this account. */
export function mayLeaseMore(h: LeaseHistory): boolean {
  return h.activeHere < LEASES_PER_CONNECTION && h.active < accountAllowance(h);
}

/**
 * The account's lease history, read in the lease transaction under a per-account lock, so that concurrent requests
 * (several connections, several replicas) cannot each pass the bound.
 */
export async function leaseHistory(
  q: Queryable,
  account: string,
  workerId: string,
  now: number,
): Promise<LeaseHistory> {
  await q.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`leases:${account}`]);
  const { rows } = await q.query<{ active: number; here: number; completed: number; expired: number }>(
    `SELECT count(*) FILTER (WHERE status = 'active') AS active,
            count(*) FILTER (WHERE status = 'active' AND worker_id = $2) AS here,
            count(*) FILTER (WHERE status = 'completed' AND ended_at >= $3) AS completed,
            count(*) FILTER (WHERE status = 'expired' AND ended_at >= $3) AS expired
     FROM leases WHERE account = $1 AND (status = 'active' OR ended_at >= $3)`,
    [account, workerId, now - LEASE_HISTORY_WINDOW_MS],
  );
  const r = rows[0];
  return {
    active: Number(r?.active ?? 0),
    activeHere: Number(r?.here ?? 0),
    completed: Number(r?.completed ?? 0),
    expired: Number(r?.expired ?? 0),
  };
}

/**
 * The most of one round's units one account (and one network) may hold (active primary leases) or have in (accepted results) at once,
 * as a share of the round (issue 9 #22: a trusted account turning cheater must not fill a round before its first audit
 * settles). An account always gets max(1, ceil(ROUND_SHARE x unitsPerRound)) and never less than an even split
 * between the job's workers: the accounts online that took a lease of this job in the last PARTICIPANT_WINDOW_MS, and
 * the asker. Connected accounts that never work on the job do not count, so idle (or sybil) connections cannot shrink
 * anyone's share, and a lone worker still takes every unit. Audit copies are not counted: they put nothing unchecked
 * into the round.
 */
export const ROUND_SHARE = 0.25;

/**
 * A unit an account gave back (released, let expire, or had rejected) is not leased to that account again for this
 * long. Without it the cheapest-ranked worker that releases every lease at once is handed the same unit back by
 * every ranked pass (460 times a minute in bench:adversary's release churn) and the unit never reaches anyone else.
 */
export const GIVEN_BACK_COOLDOWN_MS = 15_000;
/** A worker whose heartbeat is older than this is not online. */
export const ONLINE_WINDOW_MS = 30_000;
/** An account counts as one of a job's workers for this long after it last took a lease of the job. */
export const PARTICIPANT_WINDOW_MS = 600_000;

/**
 * SQL condition on candidate unit `u` of job `j`: the account (`accountParam`), together with every account on its
 * network (`addressParam`, null when unknown: coordinator/verify/network-address.ts), is under its share of the round.
 */
export function roundShareSql(accountParam: string, addressParam: string, now: number): string {
  const units = `(j.spec->>'unitsPerRound')::int`;
  const workers = `(SELECT count(DISTINCT p.a) FROM (
      SELECT ${accountParam}::text AS a
      UNION SELECT l.account FROM leases l
        WHERE l.job_id = u.job_id AND l.created_at >= ${Math.trunc(now - PARTICIPANT_WINDOW_MS)}
          AND EXISTS (SELECT 1 FROM workers w WHERE w.account = l.account AND w.disconnected_at IS NULL
                        AND w.last_seen >= ${Math.trunc(now - ONLINE_WINDOW_MS)})) p)`;
  const cap = `GREATEST(1, ceil(${ROUND_SHARE} * ${units}), ceil(${units}::numeric / ${workers}))`;
  const ours = (t: string) =>
    `(${t}.account = ${accountParam} OR (${addressParam}::text IS NOT NULL AND ${t}.address = ${addressParam}::text))`;
  return `(u.audit_of IS NOT NULL OR
    (SELECT count(*) FROM leases l WHERE l.job_id = u.job_id AND l.round = u.round AND ${ours('l')}
       AND l.status = 'active' AND l.role = 'primary')
    + (SELECT count(*) FROM results r WHERE r.job_id = u.job_id AND r.round = u.round AND ${ours('r')}
       AND r.status = 'accepted' AND r.role = 'primary')
    < ${cap})`;
}
