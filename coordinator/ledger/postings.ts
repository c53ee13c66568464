import type { Db, Queryable } from '../store/db.js';
import type { AccountKind, AccountRef } from './account-ids.js';
import { EventConflict, InvalidAmount, LedgerError, LedgerInvariantError } from './errors.js';

/** One line of a posting group: a signed amount on one account (positive = the balance grows). */
export interface PostingLine {
  account: AccountRef;
  amount: number;
}

/** A posting as stored and returned. */
export interface Posting {
  id: number;
  eventKey: string;
  accountId: string;
  kind: AccountKind;
  owner: string;
  amount: number;
  createdAt: number;
}

export interface EventRecord {
  eventKey: string;
  kind: string;
  fingerprint: string;
  jobId?: string | null;
  resultId?: string | null;
  memo?: string | null;
}

export function checkAmount(field: string, value: unknown, opts: { positive?: boolean } = {}): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0 || (opts.positive && value === 0)) {
    throw new InvalidAmount(field, value);
  }
  return value;
}

/**
 * Inserts event rows; returns the keys that are new. A key already present is left alone (ON CONFLICT DO NOTHING),
 * which is what makes every operation idempotent: on PostgreSQL a concurrent insert of the same key waits for the
 * first transaction and then sees the conflict, so exactly one of them goes on to post.
 */
export async function insertEvents(q: Queryable, events: EventRecord[], now: number): Promise<Set<string>> {
  if (events.length === 0) return new Set();
  const r = await q.query<{ event_key: string }>(
    `INSERT INTO ledger_events (event_key, kind, fingerprint, job_id, result_id, memo, created_at)
     SELECT k, kd, f, j, r, m, $7::bigint FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
       AS u(k, kd, f, j, r, m)
     ON CONFLICT (event_key) DO NOTHING
     RETURNING event_key`,
    [
      events.map((e) => e.eventKey),
      events.map((e) => e.kind),
      events.map((e) => e.fingerprint),
      events.map((e) => e.jobId ?? null),
      events.map((e) => e.resultId ?? null),
      events.map((e) => e.memo ?? null),
      now,
    ],
  );
  return new Set(r.rows.map((row) => row.event_key));
}

/** For keys that already existed: throws EventConflict when the stored content differs from this request. */
export async function assertSameEvents(q: Queryable, events: EventRecord[]): Promise<void> {
  if (events.length === 0) return;
  const r = await q.query<{ event_key: string; kind: string; fingerprint: string }>(
    'SELECT event_key, kind, fingerprint FROM ledger_events WHERE event_key = ANY($1::text[])',
    [events.map((e) => e.eventKey)],
  );
  const stored = new Map(r.rows.map((row) => [row.event_key, row]));
  for (const e of events) {
    const s = stored.get(e.eventKey);
    if (!s || s.kind !== e.kind || s.fingerprint !== e.fingerprint) throw new EventConflict(e.eventKey);
  }
}

/** A write that rides along in the posting statement (its own `$1..$n` placeholders, renumbered on the way in). */
export interface SideWrite {
  sql: string;
  params: unknown[];
}

/**
 * Applies posting groups (one per event key) in the current transaction, in ONE statement: the balance upsert, the
 * entry inserts and any side writes (credit rows, …) are data-modifying CTEs, so a posting costs one round trip.
 * Each group must sum to zero. Balances are upserted in account-id order so that concurrent transactions lock rows
 * in the same order (no deadlock cycles); the CHECK constraint on ledger_accounts is the last guard against a
 * negative balance.
 */
export async function applyPostings(
  q: Queryable,
  groups: { eventKey: string; lines: PostingLine[] }[],
  now: number,
  sideWrites: SideWrite[] = [],
): Promise<Posting[]> {
  const deltas = new Map<string, { account: AccountRef; delta: number }>();
  const entryKeys: string[] = [];
  const entryAccounts: string[] = [];
  const entryOwners: string[] = [];
  const entryAmounts: number[] = [];
  for (const g of groups) {
    let sum = 0;
    for (const line of g.lines) {
      if (!Number.isSafeInteger(line.amount)) throw new LedgerInvariantError(`non-integer posting in ${g.eventKey}`);
      sum += line.amount;
      if (line.amount === 0) continue;
      const d = deltas.get(line.account.id) ?? { account: line.account, delta: 0 };
      d.delta += line.amount;
      deltas.set(line.account.id, d);
      entryKeys.push(g.eventKey);
      entryAccounts.push(line.account.id);
      entryOwners.push(line.account.owner);
      entryAmounts.push(line.amount);
    }
    if (sum !== 0) throw new LedgerInvariantError(`posting group ${g.eventKey} sums to ${sum}, not 0`);
  }

  const ctes: string[] = [];
  const params: unknown[] = [];
  const add = (name: string, sql: string, values: unknown[]) => {
    const offset = params.length;
    ctes.push(`${name} AS (${sql.replace(/\$(\d+)/g, (_, n) => `$${Number(n) + offset}`)})`);
    params.push(...values);
  };
  const touched = [...deltas.values()].sort((a, b) => (a.account.id < b.account.id ? -1 : 1));
  if (entryKeys.length > 0) {
    // A new account starts at its delta; a debit of an account that did not exist starts at 0 in the proposed
    // row (the CHECK applies to it before ON CONFLICT) and is caught below: every debit must hit a known row.
    add(
      'acc',
      `INSERT INTO ledger_accounts (id, kind, owner, balance, delta)
       SELECT id, kind, owner, CASE WHEN delta >= 0 OR kind = 'issuance' THEN delta ELSE 0 END, delta
       FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) WITH ORDINALITY AS u(id, kind, owner, delta, ord)
       ORDER BY ord
       ON CONFLICT (id) DO UPDATE SET balance = ledger_accounts.balance + EXCLUDED.delta, delta = EXCLUDED.delta
       RETURNING id, (xmax = 0) AS inserted`,
      [
        touched.map((t) => t.account.id),
        touched.map((t) => t.account.kind),
        touched.map((t) => t.account.owner),
        touched.map((t) => t.delta),
      ],
    );
    add(
      'ent',
      `INSERT INTO ledger_entries (event_key, account_id, owner, amount, created_at)
       SELECT k, a, o, m, $5::bigint FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS u(k, a, o, m)
       RETURNING id, event_key, account_id, owner, amount, created_at`,
      [entryKeys, entryAccounts, entryOwners, entryAmounts, now],
    );
  }
  for (const [i, w] of sideWrites.entries()) add(`side${i}`, w.sql, w.params);
  if (ctes.length === 0) return [];
  const select =
    entryKeys.length > 0
      ? `SELECT (SELECT json_agg(json_build_object('id', id, 'inserted', inserted)) FROM acc) AS accounts,
                (SELECT json_agg(ent ORDER BY id) FROM ent) AS entries`
      : 'SELECT NULL::json AS accounts, NULL::json AS entries';
  type Row = { accounts: { id: string; inserted: boolean }[] | null; entries: Record<string, unknown>[] | null };
  const r = await q.query<Row>(`WITH ${ctes.join(',\n')}\n${select}`, params).catch((err) => {
    if (pgCode(err) === '23514') {
      throw new LedgerInvariantError(`a posting would take a balance below zero (${(err as Error).message})`);
    }
    throw err;
  });
  const row = r.rows[0];
  for (const a of row.accounts ?? []) {
    const t = deltas.get(a.id)!;
    if (a.inserted && t.delta < 0 && t.account.kind !== 'issuance') {
      throw new LedgerInvariantError(`debit of ${a.id}, an account that holds nothing`);
    }
  }
  return (row.entries ?? []).map((e) => toPosting({ ...e, kind: deltas.get(String(e.account_id))!.account.kind }));
}

/** Makes sure accounts exist (balance 0) so they can be locked before money moves into them. */
export async function ensureAccounts(q: Queryable, accounts: AccountRef[]): Promise<void> {
  if (accounts.length === 0) return;
  await q.query(
    `INSERT INTO ledger_accounts (id, kind, owner)
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) ON CONFLICT (id) DO NOTHING`,
    [accounts.map((a) => a.id), accounts.map((a) => a.kind), accounts.map((a) => a.owner)],
  );
}

/** Locks balance rows (in id order) and returns their balances; missing accounts read as 0. */
export async function lockBalances(q: Queryable, ids: string[]): Promise<Map<string, number>> {
  const sorted = [...new Set(ids)].sort();
  const r = await q.query<{ id: string; balance: number | string }>(
    // NO KEY UPDATE: does not conflict with the KEY SHARE locks that ledger_entries' foreign key takes.
    'SELECT id, balance FROM ledger_accounts WHERE id = ANY($1::text[]) ORDER BY id FOR NO KEY UPDATE',
    [sorted],
  );
  const out = new Map<string, number>(sorted.map((id) => [id, 0]));
  for (const row of r.rows) out.set(row.id, Number(row.balance));
  return out;
}

const ENTRY_COLUMNS = `e.id, e.event_key, e.account_id, a.kind, e.owner, e.amount, e.created_at`;

export function toPosting(row: Record<string, unknown>): Posting {
  return {
    id: Number(row.id),
    eventKey: String(row.event_key),
    accountId: String(row.account_id),
    kind: row.kind as AccountKind,
    owner: String(row.owner),
    amount: Number(row.amount),
    createdAt: Number(row.created_at),
  };
}

export async function postingsFor(q: Queryable, eventKeys: string[]): Promise<Map<string, Posting[]>> {
  const out = new Map<string, Posting[]>(eventKeys.map((k) => [k, []]));
  if (eventKeys.length === 0) return out;
  const r = await q.query(
    `SELECT ${ENTRY_COLUMNS} FROM ledger_entries e JOIN ledger_accounts a ON a.id = e.account_id
     WHERE e.event_key = ANY($1::text[]) ORDER BY e.id`,
    [eventKeys],
  );
  for (const row of r.rows) out.get(String(row.event_key))?.push(toPosting(row));
  return out;
}

export { ENTRY_COLUMNS };

export function pgCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/**
 * Runs fn in a transaction, retrying when PostgreSQL aborts it for a deadlock or a serialization failure. Typed
 * ledger errors are never retried.
 */
export async function withRetry<T>(db: Db, fn: (q: Queryable) => Promise<T>, attempts = 5): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await db.tx(fn);
    } catch (err) {
      const code = pgCode(err);
      const retryable = !(err instanceof LedgerError) && (code === '40P01' || code === '40001');
      if (!retryable || i >= attempts) throw err;
      await new Promise((r) => setTimeout(r, Math.random() * 5 * i));
    }
  }
}
