import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify';
import type { Address } from '../shared/identity/address.js';
import { Accounts, accountsMigrations } from './accounts/index.js';
import { accountLinkApi } from './api/account-link.js';
import { accountsApi } from './api/accounts.js';
import { authApi, BEARER, RequestAuth, workerGatewayAuth } from './api/auth.js';
import { blobsApi } from './api/blobs.js';
import { closeKeepAliveOnShutdown } from './api/close-keep-alive.js';
import { datasetsApi } from './api/datasets.js';
import { installErrorHandler, rejectNulCharacters } from './api/errors.js';
import { jobsApi } from './api/jobs.js';
import { rateLimits } from './api/limits.js';
import { marketApi } from './api/market.js';
import { webApp } from './api/web.js';
import { ComputePool } from './compute/pool.js';
import { type CoordinatorConfig, configFromEnv, devConveniences } from './config.js';
import { Credits, creditsMigrations, loadCoordinatorKey, toMicro } from './credits/index.js';
import { Ledger, ledgerMigrations } from './ledger/index.js';
import { marketLeaseCondition, marketMigrations, marketWorkerRanking, Offers } from './market/index.js';
import { Scheduler } from './scheduler/scheduler.js';
import { type BlobStore, blobStoreFor } from './store/blobs.js';
import { coreMigrations } from './store/core-migrations.js';
import { DatasetRepo } from './store/datasets.js';
import { type Db, openDb } from './store/db.js';
import { type Migration, runMigrations } from './store/migrate.js';
import { relayReplicaEvents } from './store/replica-events.js';
import { initTfBackend } from './tf-backend.js';
import { verifyMigrations } from './verify/migrations.js';
import { REVEAL_RELAY_EVENT } from './verify/reveal-relay.js';
import { markForfeitDelivered, undeliveredForfeits } from './verify/store.js';
import { workerGateway } from './worker-gateway/gateway.js';

export interface Coordinator {
  app: FastifyInstance;
  db: Db;
  scheduler: Scheduler;
  datasets: DatasetRepo;
  blobs: BlobStore;
  config: CoordinatorConfig;
  accounts: Accounts;
  ledger: Ledger;
  credits: Credits;
  offers: Offers;
  /** The address payout statements are signed with. */
  signerAddress: Address;
  /** The authority SIWE messages and worker challenges must name. */
  domain: string;
  /** http://host:port once listening. */
  url: string;
  close(): Promise<void>;
}

/**
 * TRUST_PROXY as Fastify takes it: a hop count n trusts the n proxies nearest to us (as Fastify does with an integer).
 * Unset: no proxy is trusted, the socket's peer is the client.
 */
function trustProxyOption(v: CoordinatorConfig['trustProxy']): Pick<FastifyServerOptions, 'trustProxy'> {
  if (v === undefined) return {};
  if (typeof v === 'number') return { trustProxy: (_address: string, hop: number) => hop < v };
  return { trustProxy: v };
}

/**
 * Production needs the name clients reach it on: sign-in messages and worker challenges must name it, and a guessed
 * `localhost:<port>` would either lock every real client out or accept messages made for another server.
 */
export function checkProductionConfig(config: Pick<CoordinatorConfig, 'devMode' | 'publicDomain'>): void {
  if (config.devMode || config.publicDomain) return;
  throw new Error(
    'PUBLIC_DOMAIN is required when NODE_ENV=production: set it to the host[:port] clients reach this coordinator on ' +
      '(e.g. PUBLIC_DOMAIN=swarmgrad.example.org); sign-in messages and worker challenges must name it',
  );
}

/** Every domain's migrations, applied in id order at startup. */
export function allMigrations(): Migration[] {
  return [
    ...coreMigrations,
    ...ledgerMigrations,
    ...accountsMigrations,
    ...creditsMigrations,
    ...marketMigrations,
    ...verifyMigrations,
  ];
}

/**
 * Builds and starts a coordinator: store, migrations, built-in datasets, REST API, worker gateway, web app and the
 * lease sweeper. Tests start several of these on loopback ports; `npm start` starts one.
 */
export async function startCoordinator(overrides: Partial<CoordinatorConfig> = {}): Promise<Coordinator> {
  const config: CoordinatorConfig = { ...configFromEnv(), ...overrides };
  checkProductionConfig(config);
  await initTfBackend();
  // Tensor work (preflight, cheap checks, evaluation, audits, referee) runs in these threads, never on the event loop.
  const compute = new ComputePool({ threads: config.computeThreads });
  const db = await openDb({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, schema: config.databaseSchema });
  await runMigrations(db, allMigrations());
  // Blobs live in PostgreSQL when the store is PostgreSQL, so replicas need no shared DATA_DIR (store/blobs.ts).
  const blobs = blobStoreFor(db, config.dataDir);
  const datasets = new DatasetRepo(db, blobs, {
    cacheBytes: config.datasetCacheBytes,
    uploadQuotaBytesPerDay: config.datasetUploadQuotaBytes,
  });
  await datasets.ensureBuiltins();

  const serverOptions: FastifyServerOptions = {
    logger: { level: config.logLevel },
    // Small bodies everywhere; only the authenticated dataset upload takes up to maxUploadBytes (its own route limit,
    // its key checked in onRequest before the body is read).
    bodyLimit: config.maxBodyBytes,
    requestTimeout: config.requestTimeoutMs,
    connectionTimeout: config.connectionTimeoutMs,
    ...trustProxyOption(config.trustProxy),
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: false } },
  };
  const app = Fastify(serverOptions);
  const log = (msg: string, extra?: object) => app.log.info(extra ?? {}, msg);
  closeKeepAliveOnShutdown(app);

  // SIWE messages name the authority clients reach us on. Without PUBLIC_DOMAIN it is known only once the server
  // listens (port 0 in tests), so Accounts reads it through a getter.
  let domain = config.publicDomain ?? 'localhost';
  const accounts = new Accounts(db, {
    get domain() {
      return domain;
    },
    chainId: config.chainId,
  });
  const ledger = new Ledger(db);
  const offers = new Offers(db);
  const signer = loadCoordinatorKey({ privateKey: config.coordinatorPrivateKey, dataDir: config.dataDir });
  const defaultPrice = toMicro(config.defaultPricePerTflop);
  const credits: Credits = new Credits({
    db,
    ledger,
    // Called from the scheduler's hooks, so only once `scheduler` below exists.
    paramCount: async (hash): Promise<number> =>
      (await scheduler.weights.get(hash)).shapes.reduce((n, shape) => n + shape.reduce((a, b) => a * b, 1), 0),
    defaultPricePerTflop: defaultPrice,
    defaultMaxPricePerTflop: toMicro(config.defaultMaxPricePerTflop),
    challengeWindowMs: config.challengeWindowMs,
    forfeitFeeRate: config.forfeitFeeRate,
    refundGraceMs: config.refundGraceMs,
    sweepEveryMs: config.creditSweepEveryMs,
    log,
  });
  const scheduler: Scheduler = new Scheduler(
    db,
    blobs,
    datasets,
    log,
    {
      ...credits.hooks(),
      leaseCondition: marketLeaseCondition(db, {
        defaultPricePerTflop: defaultPrice,
        defaultMaxPricePerTflop: toMicro(config.defaultMaxPricePerTflop),
        reliabilityMinLeases: config.reliabilityMinLeases,
      }),
    },
    compute,
  );
  // Replicas on one PostgreSQL tell each other about new work and revoked leases (store/replica-events.ts).
  const relay =
    db.kind === 'postgres' && config.databaseUrl
      ? await relayReplicaEvents({
          db,
          databaseUrl: config.databaseUrl,
          schema: config.databaseSchema,
          emitter: scheduler,
          // REVEAL_RELAY_EVENT: verification's reveal requests and answers (verify/reveal-relay.ts).
          events: ['work', 'revoke', REVEAL_RELAY_EVENT],
          log,
        })
      : null;
  // A lost dispute (verification) forfeits the loser's unvested credit. Idempotent by the forfeit's event key; the
  // credit sweeper's forfeit source catches up on any event this process missed.
  // Always scoped to the disputed job: one lost dispute never takes credit earned on other jobs.
  scheduler.on('forfeit', (f: { eventKey: string; worker: string; reason: string; jobId: string }) => {
    credits
      .forfeit({ worker: f.worker, jobId: f.jobId, reason: f.reason, eventKey: f.eventKey })
      .then(() => markForfeitDelivered(db, f.eventKey))
      .catch((err) => app.log.error({ err, eventKey: f.eventKey }, 'forfeit failed'));
  });
  credits.sweeper.setForfeitSource({
    undelivered: async () =>
      (await undeliveredForfeits(db)).map((f) => ({
        worker: f.worker,
        jobId: f.jobId,
        reason: f.reason,
        eventKey: f.eventKey,
      })),
    delivered: (eventKey) => markForfeitDelivered(db, eventKey),
  });
  const auth = new RequestAuth(accounts, config.adminKeys);
  installErrorHandler(app);
  rejectNulCharacters(app);
  // Before every route, so that each one (and the worker socket's upgrade) is counted.
  await app.register(rateLimits, {
    perAddress: config.rateLimitPerAddress,
    perAccount: config.rateLimitPerAccount,
    auth,
  });

  await app.register(swagger, {
    openapi: {
      info: {
        title: 'swarmgrad coordinator',
        version: '1.0.0',
        description: 'Requester REST API. Workers connect over WebSocket at /api/v1/worker (docs/PROTOCOL.md).',
      },
      components: {
        securitySchemes: {
          bearer: {
            type: 'http',
            scheme: 'bearer',
            description: 'An API key (sgk_…, POST /api/v1/keys) or a session token (sgs_…, POST /api/v1/auth/signin).',
          },
        },
      },
    },
  });
  await app.register(swaggerUi, { routePrefix: '/api/v1/docs' });
  app.get('/api/v1/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  // Never rate limited: load balancers and monitors probe it often, from one address, and it costs nothing.
  app.get('/api/v1/health', { schema: { hide: true }, config: { rateLimit: false } }, async () => ({
    ok: true,
    store: db.kind,
  }));

  // Dataset uploads need a key like every requester write; datasets and blobs are their owners' (api/datasets.ts,
  // api/blobs.ts): workers read blobs with their lease.
  app.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    if (route.url !== '/api/v1/datasets' || !methods.includes('POST')) return;
    const requireKey = async (req: import('fastify').FastifyRequest) => {
      await auth.require(req);
    };
    // onRequest: refused before a byte of the upload is read.
    const existing = route.onRequest ? (Array.isArray(route.onRequest) ? route.onRequest : [route.onRequest]) : [];
    route.onRequest = [requireKey, ...existing];
    route.schema = { ...route.schema, security: BEARER };
  });
  await app.register(datasetsApi, { datasets, auth, maxUploadBytes: config.maxUploadBytes });
  await app.register(authApi, { auth });
  await app.register(jobsApi, { db, scheduler, datasets, auth, ledger, credits, devMode: config.devMode });
  await app.register(accountsApi, {
    db,
    ledger,
    credits,
    auth,
    // Minting credit without an admin key: only a development coordinator that this machine alone can reach.
    devMode: devConveniences(config),
    faucetMaxCredits: config.faucetMaxCredits,
    reliabilityMinLeases: config.reliabilityMinLeases,
    signer: {
      privateKey: signer.privateKey,
      address: signer.address,
      chainId: config.chainId,
      verifyingContract: config.payoutContract,
    },
  });
  await app.register(accountLinkApi, { accounts, ledger });
  await app.register(marketApi, {
    db,
    offers,
    auth,
    defaultPricePerTflop: defaultPrice,
    reliabilityMinLeases: config.reliabilityMinLeases,
  });
  await app.register(blobsApi, { blobs, db, auth });
  await app.register(workerGateway, {
    scheduler,
    db,
    replicaId: config.replicaId,
    idleRetryMs: config.idleRetryMs,
    maxPayloadBytes: config.maxUploadBytes,
    // Work goes to the cheapest reliable waiting worker first (docs/ARCHITECTURE.md, marketplace).
    rankWorkers: marketWorkerRanking(db, {
      defaultPricePerTflop: defaultPrice,
      reliabilityMinLeases: config.reliabilityMinLeases,
    }),
    ...workerGatewayAuth({
      accounts,
      requireWorkerAuth: config.requireWorkerAuth,
      markUnverified: (workerId, account) => credits.markUnverified(workerId, account),
      markPayee: (workerId, payTo) => credits.markPayee(workerId, payTo),
    }),
  });
  await app.register(webApp, { webDir: config.webDir });

  let sweeping = false;
  const sweeper = setInterval(() => {
    if (sweeping) return;
    sweeping = true;
    scheduler
      .sweep()
      .catch((err) => app.log.error({ err }, 'sweep failed'))
      .finally(() => {
        sweeping = false;
      });
  }, config.sweepEveryMs);
  sweeper.unref();
  // Spent nonces and dead sessions, now and then.
  const purger = setInterval(() => {
    accounts.purgeExpired().catch((err) => app.log.error({ err }, 'purging expired nonces failed'));
  }, 3_600_000);
  purger.unref();

  await app.listen({ port: config.port, host: config.host });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : config.port;
  const host = config.host === '0.0.0.0' || config.host === '::' ? 'localhost' : config.host;
  if (!config.publicDomain) domain = `${host}:${port}`;
  credits.sweeper.start();

  let closed = false;
  return {
    app,
    db,
    scheduler,
    datasets,
    blobs,
    config,
    accounts,
    ledger,
    credits,
    offers,
    signerAddress: signer.address,
    get domain() {
      return domain;
    },
    url: `http://${host}:${port}`,
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(sweeper);
      clearInterval(purger);
      await app.close();
      while (sweeping) await new Promise((r) => setTimeout(r, 20));
      await scheduler.drain();
      // Runs still in flight were told to stop (verification.stop() in the gateway's onClose): the pool waits for them.
      await compute.close();
      // After the gateway closed: its detached leases are new work the other replicas hear about.
      await relay?.close();
      await credits.sweeper.stop();
      await db.close();
    },
  };
}
