import type { Db } from './db.js';

/** A schema change, applied once per database in id order. Each domain folder exports its own list. */
export interface Migration {
  id: string;
  sql: string;
}

/** Advisory lock key held while migrating (database-wide: replicas in other schemas wait too, briefly). */
const MIGRATION_LOCK = 7349201;

/**
 * Applies pending migrations inside one transaction each. An advisory lock makes concurrent replicas starting on
 * one PostgreSQL wait for each other instead of racing to create the same tables.
 */
export async function runMigrations(db: Db, migrations: Migration[]): Promise<string[]> {
  // Under the same lock: concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalog (duplicate pg_type).
  await db.tx(async (q) => {
    await q.query(`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK})`);
    await q.query(
      'CREATE TABLE IF NOT EXISTS schema_migrations (id text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())',
    );
  });
  const applied: string[] = [];
  const sorted = [...migrations].sort((a, b) => a.id.localeCompare(b.id));
  for (const m of sorted) {
    const did = await db.tx(async (q) => {
      await q.query(`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK})`);
      const seen = await q.query('SELECT 1 FROM schema_migrations WHERE id = $1', [m.id]);
      if (seen.rows.length > 0) return false;
      for (const stmt of splitStatements(m.sql)) await q.query(stmt);
      await q.query('INSERT INTO schema_migrations (id) VALUES ($1)', [m.id]);
      return true;
    });
    if (did) applied.push(m.id);
  }
  return applied;
}

/** Migrations are plain DDL without functions or string literals holding ';', so a split on ';' is enough. */
function splitStatements(sql: string): string[] {
  return sql
    .split(';')
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}
