/** Coordinator settings, read once from the environment. The README lists every variable. */
export interface CoordinatorConfig {
  port: number;
  host: string;
  dataDir: string;
  /** postgres://… switches the store from embedded PGlite to PostgreSQL. */
  databaseUrl?: string;
  /** PostgreSQL schema (tests isolate themselves with one). */
  databaseSchema?: string;
  /** Largest accepted upload (datasets, weights), bytes. */
  maxUploadBytes: number;
  /** Folder of the built web app; served at / when present. */
  webDir: string;
  /** How often expired leases are swept, ms. */
  sweepEveryMs: number;
  /** How long an idle worker waits before asking again, ms. */
  idleRetryMs: number;
  /** Development mode enables the faucet and the demo job. */
  devMode: boolean;
  /** Name of this replica in logs and worker rows. */
  replicaId: string;
  logLevel: string;
}

export function configFromEnv(env: NodeJS.ProcessEnv = process.env): CoordinatorConfig {
  return {
    port: intEnv(env.PORT, 8080),
    host: env.HOST ?? '0.0.0.0',
    dataDir: env.DATA_DIR ?? './data',
    databaseUrl: env.DATABASE_URL || undefined,
    databaseSchema: env.DATABASE_SCHEMA || undefined,
    maxUploadBytes: intEnv(env.MAX_UPLOAD_BYTES, 64 * 1024 * 1024),
    webDir: env.WEB_DIR ?? './dist/web',
    sweepEveryMs: intEnv(env.SWEEP_EVERY_MS, 1000),
    idleRetryMs: intEnv(env.IDLE_RETRY_MS, 2000),
    devMode: (env.NODE_ENV ?? 'development') !== 'production',
    replicaId: env.REPLICA_ID ?? `r-${process.pid}`,
    logLevel: env.LOG_LEVEL ?? 'info',
  };
}

function intEnv(v: string | undefined, dflt: number): number {
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`expected a non-negative integer, got "${v}"`);
  return n;
}
