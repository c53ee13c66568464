import type { Queryable } from '../store/db.js';

/**
 * An account's trust record as the verification layer keeps it, for GET /api/v1/accounts/:address and the market.
 * The default reader returns the row of a table `account_trust` (keyed by `account`) when that table exists, else
 * null; the verification layer may install its own reader with setTrustReader.
 */
export type TrustReader = (q: Queryable, address: string) => Promise<Record<string, unknown> | null>;

const tableReader: TrustReader = async (q, address) => {
  const exists = await q.query<{ t: string | null }>(`SELECT to_regclass('account_trust')::text AS t`);
  if (!exists.rows[0]?.t) return null;
  const r = await q.query<Record<string, unknown>>('SELECT * FROM account_trust WHERE account = $1', [address]);
  if (r.rows.length === 0) return null;
  // JSON-safe copy: bigint-ish columns arrive as numbers or strings depending on the store; both serialise.
  return JSON.parse(JSON.stringify(r.rows[0])) as Record<string, unknown>;
};

let reader: TrustReader = tableReader;

export function setTrustReader(next: TrustReader | null): void {
  reader = next ?? tableReader;
}

export function readTrust(q: Queryable, address: string): Promise<Record<string, unknown> | null> {
  return reader(q, address);
}
