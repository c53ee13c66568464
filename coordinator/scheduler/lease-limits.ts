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
