import { mkdirSync } from 'node:fs';
import { PGlite } from '@electric-sql/pglite';
import pg from 'pg';

/**
 * One SQL interface over both stores: embedded PGlite (default, zero setup) and PostgreSQL (DATABASE_URL, for
 * several coordinator replicas). Both speak the same dialect, so every module writes plain parameterised SQL once.
 */
export interface Queryable {
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<{ rows: T[]; rowCount: number }>;
}

export interface Db extends Queryable {
  readonly kind: 'pglite' | 'postgres';
  /** Runs fn in one transaction; rolls back if it throws. */
  tx<T>(fn: (q: Queryable) => Promise<T>): Promise<T>;
  /** Runs a multi-statement script (migrations). */
  exec(sql: string): Promise<void>;
  close(): Promise<void>;
}

export interface OpenDbOptions {
  /** postgres://… uses PostgreSQL; otherwise PGlite under dataDir (or in memory when dataDir is 'memory://'). */
  databaseUrl?: string;
  dataDir: string;
  /** PostgreSQL only: a schema to create and use (tests isolate themselves this way). */
  schema?: string;
}

export async function openDb(opts: OpenDbOptions): Promise<Db> {
  if (opts.databaseUrl && /^postgres(ql)?:\/\//.test(opts.databaseUrl)) return openPostgres(opts.databaseUrl, opts.schema);
  return openPglite(opts.dataDir);
}

async function openPglite(dataDir: string): Promise<Db> {
  let dir: string | undefined;
  if (dataDir !== 'memory://') {
    mkdirSync(dataDir, { recursive: true });
    dir = `${dataDir}/pglite`;
  }
  const pgl = new PGlite(dir);
  await pgl.waitReady;
  const wrap = (q: Pick<PGlite, 'query'>): Queryable => ({
    async query<T>(sql: string, params?: unknown[]) {
      const r = await q.query<T>(sql, params as unknown[]);
      return { rows: r.rows, rowCount: r.affectedRows ?? r.rows.length };
    },
  });
  const base = wrap(pgl);
  return {
    kind: 'pglite',
    query: base.query,
    tx: (fn) => pgl.transaction((t) => fn(wrap(t))),
    exec: async (sql) => {
      await pgl.exec(sql);
    },
    close: () => pgl.close(),
  };
}

async function openPostgres(url: string, schema?: string): Promise<Db> {
  if (schema && !/^[a-z_][a-z0-9_]*$/.test(schema)) throw new Error(`invalid schema name ${schema}`);
  const pool = new pg.Pool({ connectionString: url, max: 10 });
  if (schema) {
    await pool.query(`CREATE SCHEMA IF NOT EXISTS ${schema}`);
    pool.on('connect', (client) => {
      client.query(`SET search_path TO ${schema}`).catch(() => {});
    });
    // Connections opened before the listener existed do not carry the search_path: start clean.
  }
  // int8 (COUNT, SUM of bigint) as JS numbers: every count here stays far below 2^53.
  pg.types.setTypeParser(20, (v) => Number(v));
  pg.types.setTypeParser(1700, (v) => Number(v));
  const query = async <T>(sql: string, params?: unknown[]) => {
    const r = await pool.query(sql, params);
    return { rows: r.rows as T[], rowCount: r.rowCount ?? 0 };
  };
  return {
    kind: 'postgres',
    query,
    async tx(fn) {
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        const out = await fn({
          async query<T>(sql: string, params?: unknown[]) {
            const r = await client.query(sql, params);
            return { rows: r.rows as T[], rowCount: r.rowCount ?? 0 };
          },
        });
        await client.query('COMMIT');
        return out;
      } catch (err) {
        await client.query('ROLLBACK').catch(() => {});
        throw err;
      } finally {
        client.release();
      }
    },
    exec: async (sql) => {
      await pool.query(sql);
    },
    close: () => pool.end(),
  };
}
