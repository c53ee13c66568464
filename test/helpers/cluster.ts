import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { type Coordinator, startCoordinator } from '../../coordinator/app.js';
import type { CoordinatorConfig } from '../../coordinator/config.js';
import { toMicro } from '../../coordinator/credits/money.js';
import { generatePrivateKey } from '../../shared/identity/index.js';
import type { JobSpec, JobView } from '../../shared/protocol/job-spec.js';
import { mnistMlpModel } from '../../shared/train/templates.js';
import { identityOf, type TestIdentity, testIdentity } from './identities.js';
import { newSchemaName, type StoreKind, TEST_DATABASE_URL } from './stores.js';

export interface TestCoordinator extends Coordinator {
  dataDir: string;
  /** A requester account with an API key and TEST_REQUESTER_CREDITS available; postJob/getJob use it by default. */
  requester: TestIdentity & { apiKey: string };
  /** Stops and deletes everything the coordinator stored (the temp folder, the PostgreSQL schema). */
  destroy(): Promise<void>;
}

export const TEST_REQUESTER_CREDITS = 1_000_000;

/** The default requester key of each running test coordinator, by URL, for postJob / getJob. */
const requesterKeys = new Map<string, string>();

/** The default test requester's API key for a coordinator URL. */
export function requesterKey(url: string): string | undefined {
  return requesterKeys.get(url);
}

/** Store settings for a throwaway coordinator; pass the same object again to restart on the same store. */
export function testStore(kind: StoreKind): Partial<CoordinatorConfig> {
  const dataDir = mkdtempSync(join(tmpdir(), 'swarmgrad-'));
  return kind === 'postgres'
    ? { dataDir, databaseUrl: TEST_DATABASE_URL, databaseSchema: newSchemaName() }
    : { dataDir, databaseUrl: undefined };
}

export async function startTestCoordinator(
  store: Partial<CoordinatorConfig>,
  overrides: Partial<CoordinatorConfig> = {},
) {
  const c = await startCoordinator({
    port: 0,
    host: '127.0.0.1',
    logLevel: 'warn',
    sweepEveryMs: 200,
    idleRetryMs: 300,
    creditSweepEveryMs: 200,
    refundGraceMs: 300,
    webDir: join(process.cwd(), 'dist/web'),
    ...store,
    ...overrides,
  });
  const tc = c as TestCoordinator;
  tc.dataDir = c.config.dataDir;
  // Random full re-executions of matches would make referee step counts vary between runs; tests that exercise them
  // turn them on (test/verify-integration-hostile.test.ts).
  c.scheduler.verification.configure({ reexecuteProbability: 0 });
  // A funded requester with a key, made directly (tests of sign-in itself go through the HTTP routes).
  const id = testIdentity('requester');
  const apiKey = (await c.accounts.createApiKey(id.address, 'test requester')).key;
  await c.ledger.deposit(id.address, toMicro(TEST_REQUESTER_CREDITS), `test-funding:${id.address}:${Date.now()}`);
  tc.requester = { ...id, apiKey };
  requesterKeys.set(c.url, apiKey);
  tc.destroy = async () => {
    requesterKeys.delete(c.url);
    await c.close();
    if (c.config.databaseSchema) await dropSchema(c.config.databaseSchema);
    rmSync(c.config.dataDir, { recursive: true, force: true });
  };
  return tc;
}

export interface ReplicaPair {
  a: TestCoordinator;
  b: TestCoordinator;
  /** Stops both before the shared schema is dropped, so neither sweeps a vanishing schema. */
  stop(): Promise<void>;
}

/**
 * Two coordinator replicas on one fresh PostgreSQL schema, each with its own DATA_DIR, sharing the payout signing
 * key as the README asks of replicas. `a` is started first (it creates the schema).
 */
export async function startReplicaPair(
  overrides: { a?: Partial<CoordinatorConfig>; b?: Partial<CoordinatorConfig> } = {},
): Promise<ReplicaPair> {
  const store = testStore('postgres');
  const coordinatorPrivateKey = generatePrivateKey();
  const a = await startTestCoordinator(store, { replicaId: 'replica-a', coordinatorPrivateKey, ...overrides.a });
  const b = await startTestCoordinator(
    { ...store, dataDir: mkdtempSync(join(tmpdir(), 'swarmgrad-')) },
    { replicaId: 'replica-b', coordinatorPrivateKey, ...overrides.b },
  ).catch(async (err) => {
    await a.destroy();
    throw err;
  });
  return {
    a,
    b,
    stop: async () => {
      await Promise.all([a.close(), b.close()]);
      await b.destroy();
      await a.destroy();
    },
  };
}

async function dropSchema(schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: TEST_DATABASE_URL });
  await client.connect();
  try {
    await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  } finally {
    await client.end();
  }
}

/** A small MNIST job that a few wasm workers finish in well under a minute. */
export function smallMnistJob(overrides: Partial<JobSpec> = {}): Record<string, unknown> {
  return {
    name: 'test mnist',
    model: mnistMlpModel(32),
    dataset: 'mnist',
    loss: 'categoricalCrossentropy',
    optimizer: { type: 'adam', learningRate: 0.003 },
    batchSize: 32,
    localSteps: 24,
    unitsPerRound: 3,
    rounds: 40,
    targetAccuracy: 0.9,
    outer: { learningRate: 1, momentum: 0.5, nesterov: true },
    seed: 3,
    unitDeadlineMs: 60_000,
    ...overrides,
  };
}

/**
 * A headless worker in its own process (`bin/worker.ts`), so it can be killed like a real one. It signs the
 * challenge with the key of `who` (a test identity, or a label turned into one), passed in SWARMGRAD_PRIVATE_KEY.
 */
export function spawnWorker(
  url: string,
  who: string | TestIdentity,
  backend = 'wasm',
): ChildProcess & { output: string[]; account: string } {
  const id = identityOf(who);
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', 'bin/worker.ts', '--coordinator', url, '--backend', backend, '--quiet'],
    {
      cwd: process.cwd(),
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, LOG_LEVEL: 'warn', SWARMGRAD_PRIVATE_KEY: id.privateKey },
    },
  ) as ChildProcess & { output: string[]; account: string };
  child.account = id.address;
  child.output = [];
  child.stdout?.on('data', (d) => child.output.push(String(d)));
  child.stderr?.on('data', (d) => child.output.push(String(d)));
  return child;
}

export async function stopWorkers(workers: ChildProcess[]): Promise<void> {
  await Promise.all(
    workers.map(
      (w) =>
        new Promise<void>((resolve) => {
          if (w.exitCode !== null || w.signalCode !== null) return resolve();
          w.once('exit', () => resolve());
          w.kill('SIGKILL');
        }),
    ),
  );
}

export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | null | false>,
  timeoutMs = 90_000,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < end) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 150));
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
}

const authHeader = (url: string, apiKey?: string): Record<string, string> => {
  const key = apiKey ?? requesterKeys.get(url);
  return key ? { authorization: `Bearer ${key}` } : {};
};

/** GET a job with `apiKey`, by default the test coordinator's requester key. */
export async function getJob(url: string, id: string, apiKey?: string): Promise<JobView> {
  const res = await fetch(`${url}/api/v1/jobs/${id}`, { headers: authHeader(url, apiKey) });
  if (!res.ok) throw new Error(`GET job ${id}: ${res.status}`);
  return (await res.json()) as JobView;
}

/**
 * Polls a job until it completes and returns it. A failed or cancelled job throws at once; a timeout throws with the
 * job's last state (status, round, units done), so a stalled run says where it stalled.
 */
export async function waitForJob(url: string, id: string, timeoutMs: number, apiKey?: string): Promise<JobView> {
  let last: JobView | undefined;
  const seen = () =>
    last ? `${last.status}, round ${last.round} of ${last.rounds}, ${last.unitsDone} units done` : 'never read';
  const job = await waitFor(
    `job ${id} to complete`,
    async () => {
      last = await getJob(url, id, apiKey);
      return ['completed', 'failed', 'cancelled'].includes(last.status) ? last : null;
    },
    timeoutMs,
  ).catch((err: Error) => {
    throw new Error(`${err.message} (last seen: ${seen()})`);
  });
  if (job.status !== 'completed') throw new Error(`job ${id} ended ${job.status}: ${job.error ?? 'no error given'}`);
  return job;
}

/** POST a job with `apiKey`, by default the test coordinator's requester key. */
export async function postJob(url: string, spec: Record<string, unknown>, apiKey?: string): Promise<JobView> {
  const res = await fetch(`${url}/api/v1/jobs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...authHeader(url, apiKey) },
    body: JSON.stringify(spec),
  });
  if (res.status !== 201) throw new Error(`POST job: ${res.status} ${await res.text()}`);
  return (await res.json()) as JobView;
}
