import { randomBytes } from 'node:crypto';
import { type Db, openDb } from '../../coordinator/store/db.js';

/** Both stores every persistence test runs against. PostgreSQL is the server on 127.0.0.1:5432 (see README). */
export const STORE_KINDS = ['pglite', 'postgres'] as const;
export type StoreKind = (typeof STORE_KINDS)[number];

export const TEST_DATABASE_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/** A fresh, isolated database: in-memory PGlite, or a new schema on PostgreSQL (dropped by `dropTestDb`). */
export async function openTestDb(kind: StoreKind): Promise<Db & { schema?: string }> {
  if (kind === 'pglite') return openDb({ dataDir: 'memory://' });
  const schema = `t_${randomBytes(6).toString('hex')}`;
  const db = await openDb({ databaseUrl: TEST_DATABASE_URL, dataDir: 'unused', schema });
  return Object.assign(db, { schema });
}

/**
 * openTestDb, except that on PostgreSQL the search_path rides in the connection options, so every pooled connection
 * (including the one openDb created the schema with) works inside the test schema: for tests that run transactions
 * concurrently. synchronous_commit=off: tests need no crash durability; locking and visibility are unchanged.
 */
export async function openPooledTestDb(kind: StoreKind): Promise<Db & { schema?: string }> {
  if (kind === 'pglite') return openTestDb(kind);
  const schema = newSchemaName();
  const sep = TEST_DATABASE_URL.includes('?') ? '&' : '?';
  const databaseUrl = `${TEST_DATABASE_URL}${sep}options=-c%20search_path%3D${schema}%20-c%20synchronous_commit%3Doff`;
  return Object.assign(await openDb({ databaseUrl, dataDir: 'unused', schema }), { schema });
}

/** Options for a coordinator on a throwaway store: a new schema on PostgreSQL, or PGlite in a temp folder. */
export function newSchemaName(): string {
  return `t_${randomBytes(6).toString('hex')}`;
}

export async function dropTestDb(db: Db & { schema?: string }): Promise<void> {
  if (db.kind === 'postgres' && db.schema) await db.query(`DROP SCHEMA IF EXISTS ${db.schema} CASCADE`);
  await db.close();
}
