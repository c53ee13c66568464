import type { Queryable } from '../store/db.js';

/**
 * Reliability of an account: the fraction of its last RELIABILITY_WINDOW finished leases that ended with an accepted
 * result. Finished = completed, expired (deadline passed), rejected (the result failed its checks) or released (the
 * worker gave the unit back). Revoked leases (job cancelled, unit settled by someone else) say nothing about the
 * worker and do not count; active leases have not finished.
 *
 * A new account has no record: until it has `minLeases` finished leases its reliability is unknown and counts as 1,
 * so newcomers can start earning one. The audit record (verification) is reported beside it, not mixed in.
 */
export interface Reliability {
  value: number;
  known: boolean;
  completed: number;
  finished: number;
}

export const RELIABILITY_WINDOW = 100;
const FINISHED = `('completed', 'expired', 'rejected', 'released')`;

export function reliabilityFrom(completed: number, finished: number, minLeases: number): Reliability {
  const known = finished >= Math.max(1, minLeases);
  return { value: known ? completed / finished : 1, known, completed, finished };
}

export async function reliabilityOf(q: Queryable, account: string, minLeases: number): Promise<Reliability> {
  const r = await q.query<{ completed: number; finished: number }>(
    `SELECT count(*) FILTER (WHERE status = 'completed')::int AS completed, count(*)::int AS finished
     FROM (SELECT status FROM leases WHERE account = $1 AND status IN ${FINISHED}
           ORDER BY created_at DESC LIMIT ${RELIABILITY_WINDOW}) l`,
    [account],
  );
  return reliabilityFrom(Number(r.rows[0]?.completed ?? 0), Number(r.rows[0]?.finished ?? 0), minLeases);
}

export async function reliabilityOfMany(
  q: Queryable,
  accounts: string[],
  minLeases: number,
): Promise<Map<string, Reliability>> {
  const out = new Map<string, Reliability>(accounts.map((a) => [a, reliabilityFrom(0, 0, minLeases)]));
  if (accounts.length === 0) return out;
  const r = await q.query<{ account: string; completed: number; finished: number }>(
    `SELECT account, count(*) FILTER (WHERE status = 'completed')::int AS completed, count(*)::int AS finished
     FROM (SELECT account, status, row_number() OVER (PARTITION BY account ORDER BY created_at DESC) AS n
           FROM leases WHERE account = ANY($1::text[]) AND status IN ${FINISHED}) l
     WHERE n <= ${RELIABILITY_WINDOW} GROUP BY account`,
    [accounts],
  );
  for (const row of r.rows) {
    out.set(row.account, reliabilityFrom(Number(row.completed), Number(row.finished), minLeases));
  }
  return out;
}
