import { join } from 'node:path';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import Fastify, { type FastifyInstance } from 'fastify';
import { blobsApi } from './api/blobs.js';
import { datasetsApi } from './api/datasets.js';
import { installErrorHandler } from './api/errors.js';
import { jobsApi } from './api/jobs.js';
import { webApp } from './api/web.js';
import { type CoordinatorConfig, configFromEnv } from './config.js';
import { Scheduler } from './scheduler/scheduler.js';
import { BlobStore } from './store/blobs.js';
import { coreMigrations } from './store/core-migrations.js';
import { DatasetRepo } from './store/datasets.js';
import { type Db, openDb } from './store/db.js';
import { type Migration, runMigrations } from './store/migrate.js';
import { initTfBackend } from './tf-backend.js';
import { workerGateway } from './worker-gateway/gateway.js';

export interface Coordinator {
  app: FastifyInstance;
  db: Db;
  scheduler: Scheduler;
  datasets: DatasetRepo;
  blobs: BlobStore;
  config: CoordinatorConfig;
  /** http://host:port once listening. */
  url: string;
  close(): Promise<void>;
}

/** Every domain's migrations, applied in id order at startup. */
export function allMigrations(): Migration[] {
  return [...coreMigrations];
}

/**
 * Builds and starts a coordinator: store, migrations, built-in datasets, REST API, worker gateway, web app and the
 * lease sweeper. Tests start several of these on loopback ports; `npm start` starts one.
 */
export async function startCoordinator(overrides: Partial<CoordinatorConfig> = {}): Promise<Coordinator> {
  const config: CoordinatorConfig = { ...configFromEnv(), ...overrides };
  await initTfBackend();
  const db = await openDb({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, schema: config.databaseSchema });
  await runMigrations(db, allMigrations());
  const blobs = new BlobStore(join(config.dataDir, 'blobs'));
  const datasets = new DatasetRepo(db, blobs);
  await datasets.ensureBuiltins();

  const app = Fastify({
    logger: { level: config.logLevel },
    bodyLimit: config.maxUploadBytes,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: false } },
  });
  const scheduler = new Scheduler(db, blobs, datasets, (msg, extra) => app.log.info(extra ?? {}, msg));
  installErrorHandler(app);

  await app.register(swagger, {
    openapi: {
      info: {
        title: 'swarmgrad coordinator',
        version: '1.0.0',
        description: 'Requester REST API. Workers connect over WebSocket at /api/v1/worker (docs/PROTOCOL.md).',
      },
    },
  });
  await app.register(swaggerUi, { routePrefix: '/api/v1/docs' });
  app.get('/api/v1/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  app.get('/api/v1/health', { schema: { hide: true } }, async () => ({ ok: true, store: db.kind }));

  await app.register(datasetsApi, { datasets, maxUploadBytes: config.maxUploadBytes });
  await app.register(jobsApi, { db, scheduler, datasets });
  await app.register(blobsApi, { blobs });
  await app.register(workerGateway, {
    scheduler,
    db,
    replicaId: config.replicaId,
    idleRetryMs: config.idleRetryMs,
    maxPayloadBytes: config.maxUploadBytes,
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

  await app.listen({ port: config.port, host: config.host });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : config.port;
  const host = config.host === '0.0.0.0' || config.host === '::' ? 'localhost' : config.host;

  let closed = false;
  return {
    app,
    db,
    scheduler,
    datasets,
    blobs,
    config,
    url: `http://${host}:${port}`,
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(sweeper);
      await app.close();
      while (sweeping) await new Promise((r) => setTimeout(r, 20));
      await scheduler.drain();
      await db.close();
    },
  };
}
