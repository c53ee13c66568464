import { computeThreadsFromEnv } from './compute/threads.js';

/** Coordinator settings, read once from the environment. The README lists every variable. */
export interface CoordinatorConfig {
  port: number;
  host: string;
  dataDir: string;
  /** postgres://… switches the store from embedded PGlite to PostgreSQL. */
  databaseUrl?: string;
  /** PostgreSQL schema (tests isolate themselves with one). */
  databaseSchema?: string;
  /**
   * Largest accepted upload (the authenticated dataset upload), bytes; also the ceiling of a worker's result frame
   * (each frame is bounded by its unit's model size below that).
   */
  maxUploadBytes: number;
  /** Dataset bytes one account may upload per rolling 24 hours (0: unlimited); 429 above. */
  datasetUploadQuotaBytes: number;
  /** Memory for decoded datasets (least recently used dropped first); decoded is ~4x the file size. */
  datasetCacheBytes: number;
  /** Worker threads of the compute pool (tensor work off the event loop: coordinator/compute/pool.ts). */
  computeThreads: number;
  /** Largest body of every other request, bytes (413 above, refused from Content-Length before reading). */
  maxBodyBytes: number;
  /** A request must arrive in full within this, ms (0: no limit). */
  requestTimeoutMs: number;
  /** An idle HTTP connection is closed after this, ms (WebSockets excepted: they have their own hello timeout). */
  connectionTimeoutMs: number;
  /** Requests (and WebSocket connections) per minute from one network address; 0 turns the limit off. */
  rateLimitPerAddress: number;
  /** Requests per minute of one authenticated account (bearer token), over all its addresses; 0: off. */
  rateLimitPerAccount: number;
  /**
   * Fastify's trustProxy: which proxies' X-Forwarded-For to believe for a client's address (`true`, a hop count, or
   * comma-separated addresses / CIDRs). Unset: none, the socket's peer is the client.
   */
  trustProxy?: boolean | number | string;
  /** Folder of the built web app; served at / when present. */
  webDir: string;
  /** How often expired leases are swept, ms. */
  sweepEveryMs: number;
  /** How long an idle worker waits before asking again, ms. */
  idleRetryMs: number;
  /**
   * Development mode: `npm start` sets up the demo job and jobs may run without a budget; listening on loopback only,
   * it also opens the faucet (devConveniences).
   */
  devMode: boolean;
  /** Name of this replica in logs and worker rows. */
  replicaId: string;
  logLevel: string;

  // ---- identity ----
  /**
   * The authority (host[:port]) that SIWE messages and worker challenges must name. Unset: `localhost:<port>` (or
   * `<host>:<port>` for a specific listen address), known once the server listens.
   */
  publicDomain?: string;
  /** EIP-155 chain id of sign-in messages and payout statements. */
  chainId: number;
  /** Workers must answer the challenge with a signature; false admits unsigned hellos (development only). */
  requireWorkerAuth: boolean;
  /** Keys that may use the faucet outside development mode (ADMIN_KEYS, comma-separated). */
  adminKeys: string[];
  /** The coordinator's payout-statement signing key (0x + 64 hex); unset: DATA_DIR/coordinator-key.json. */
  coordinatorPrivateKey?: string;
  /** EIP-712 verifyingContract of payout statements (the claims contract), when there is one. */
  payoutContract?: string;

  // ---- credits and marketplace ----
  /** Price of a TFLOP for workers without an offer (the network's default donation price), in credits. */
  defaultPricePerTflop: number;
  /** Most a job pays per TFLOP when its spec sets no market.maxPricePerTflop, in credits. */
  defaultMaxPricePerTflop: number;
  /** How long a credit stays pending (disputable) before it vests, ms. */
  challengeWindowMs: number;
  /** Fraction of a forfeited credit kept by the treasury. */
  forfeitFeeRate: number;
  /** How often the credit sweeper credits accepted units, vests and refunds, ms. */
  creditSweepEveryMs: number;
  /** An ended job's unspent escrow is refunded this long after it ended (late results still in flight), ms. */
  refundGraceMs: number;
  /** Largest faucet deposit, in credits. */
  faucetMaxCredits: number;
  /** A worker's reliability counts as unknown (1) until it has this many finished leases. */
  reliabilityMinLeases: number;
}

/** A job without its own price cap pays at most this multiple of the default donation price per TFLOP. */
export const DEFAULT_MAX_PRICE_MULTIPLE = 100;

export function configFromEnv(env: NodeJS.ProcessEnv = process.env): CoordinatorConfig {
  return {
    port: intEnv(env.PORT, 8080),
    host: env.HOST ?? '0.0.0.0',
    dataDir: env.DATA_DIR ?? './data',
    databaseUrl: env.DATABASE_URL || undefined,
    databaseSchema: env.DATABASE_SCHEMA || undefined,
    maxUploadBytes: intEnv(env.MAX_UPLOAD_BYTES, 64 * 1024 * 1024),
    datasetUploadQuotaBytes: intEnv(env.DATASET_UPLOAD_QUOTA_BYTES, 1024 * 1024 * 1024),
    datasetCacheBytes: intEnv(env.DATASET_CACHE_BYTES, 1024 * 1024 * 1024),
    computeThreads: computeThreadsFromEnv(env),
    maxBodyBytes: intEnv(env.MAX_BODY_BYTES, 1024 * 1024),
    requestTimeoutMs: intEnv(env.REQUEST_TIMEOUT_MS, 120_000),
    connectionTimeoutMs: intEnv(env.CONNECTION_TIMEOUT_MS, 60_000),
    rateLimitPerAddress: intEnv(env.RATE_LIMIT_PER_ADDRESS, 3000),
    rateLimitPerAccount: intEnv(env.RATE_LIMIT_PER_ACCOUNT, 1200),
    trustProxy: trustProxyEnv(env.TRUST_PROXY),
    webDir: env.WEB_DIR ?? './dist/web',
    sweepEveryMs: intEnv(env.SWEEP_EVERY_MS, 1000),
    idleRetryMs: intEnv(env.IDLE_RETRY_MS, 2000),
    devMode: (env.NODE_ENV ?? 'development') !== 'production',
    replicaId: env.REPLICA_ID ?? `r-${process.pid}`,
    logLevel: env.LOG_LEVEL ?? 'info',
    publicDomain: env.PUBLIC_DOMAIN || undefined,
    chainId: intEnv(env.CHAIN_ID, 1),
    requireWorkerAuth: boolEnv(env.REQUIRE_WORKER_AUTH, true),
    adminKeys: (env.ADMIN_KEYS ?? '')
      .split(',')
      .map((k) => k.trim())
      .filter((k) => k.length > 0),
    coordinatorPrivateKey: env.COORDINATOR_PRIVATE_KEY || undefined,
    payoutContract: env.PAYOUT_CONTRACT || undefined,
    defaultPricePerTflop: numberEnv(env.DEFAULT_PRICE_PER_TFLOP, 1),
    defaultMaxPricePerTflop: numberEnv(
      env.JOB_MAX_PRICE_PER_TFLOP,
      DEFAULT_MAX_PRICE_MULTIPLE * numberEnv(env.DEFAULT_PRICE_PER_TFLOP, 1),
    ),
    challengeWindowMs: intEnv(env.CHALLENGE_WINDOW_MS, 24 * 3_600_000),
    forfeitFeeRate: numberEnv(env.FORFEIT_FEE_RATE, 0.1, 1),
    creditSweepEveryMs: intEnv(env.CREDIT_SWEEP_EVERY_MS, 2000),
    refundGraceMs: intEnv(env.REFUND_GRACE_MS, 5000),
    faucetMaxCredits: numberEnv(env.FAUCET_MAX_CREDITS, 10_000),
    reliabilityMinLeases: intEnv(env.RELIABILITY_MIN_LEASES, 5),
  };
}

/** True when the listen address reaches this machine only: development conveniences are safe there and nowhere else. */
export function isLoopbackHost(host: string): boolean {
  return /^(localhost|127(\.\d{1,3}){3}|::1|\[::1\])$/i.test(host.trim());
}

/**
 * The HTTP faucet without an admin key: development mode AND a loopback listen address. `npm start` listens on
 * 0.0.0.0 by default, so it is closed unless HOST=127.0.0.1.
 */
export function devConveniences(config: Pick<CoordinatorConfig, 'devMode' | 'host'>): boolean {
  return config.devMode && isLoopbackHost(config.host);
}

function intEnv(v: string | undefined, dflt: number): number {
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`expected a non-negative integer, got "${v}"`);
  return n;
}

function numberEnv(v: string | undefined, dflt: number, max = Number.MAX_SAFE_INTEGER): number {
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0 || n > max) throw new Error(`expected a number in [0, ${max}], got "${v}"`);
  return n;
}

/** TRUST_PROXY: true/false, a hop count, or comma-separated addresses and CIDRs (Fastify's trustProxy forms). */
function trustProxyEnv(v: string | undefined): boolean | number | string | undefined {
  if (v === undefined || v.trim() === '') return undefined;
  if (/^(true|false)$/i.test(v)) return /^true$/i.test(v);
  if (/^\d+$/.test(v)) return Number(v);
  return v
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .join(',');
}

function boolEnv(v: string | undefined, dflt: boolean): boolean {
  if (v === undefined || v === '') return dflt;
  if (/^(1|true|yes|on)$/i.test(v)) return true;
  if (/^(0|false|no|off)$/i.test(v)) return false;
  throw new Error(`expected true or false, got "${v}"`);
}
