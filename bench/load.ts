/**
 * bench:load — how many volunteers one coordinator feeds (issue: one coordinator serves 10,000 volunteers).
 *
 *   npm run bench:load                                  N = 100, 1000, 10000 on PGlite and PostgreSQL, 1 replica
 *   npm run bench:load -- --sockets 100,1000 --store postgres --replicas 2 --seconds 20
 *   npm run bench:load -- --quick                       N = 100 on PGlite, 10 s
 *
 * The coordinator runs in child processes (bench/load-server.ts, one per replica) so that this generator does not
 * share its event loop; both share the machine's cores, as the targets say. Each of the N sockets has its own key and
 * says a signed hello. Phases per run:
 *   1. connect: all sockets connect and sign in (connect latency = open to welcome); then the coordinator's RSS is
 *      read with every socket idle (no job exists yet), against its RSS before: MB per 1,000 idle sockets;
 *   2. serve: a tiny job (MNIST MLP 784-2-10, 2 local steps of batch 4, 10,000 units per round, so no round closes)
 *      is posted and every socket asks for work in a loop for --seconds: request -> lease or idle (lease latency,
 *      and the share answered within 1 s), train the unit (cpu backend, in this process: a few ms for this model;
 *      audit copies of a unit reuse the unit's result) -> submit -> ack.
 * A health probe (GET /api/v1/health) runs every 250 ms throughout. Results accepted per second are counted from the
 * coordinator's results table (primary and audit copies apart), acks from the sockets.
 *
 * Writes a table to stdout and JSON to bench/results/load-<time>.json.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { createInterface, type Interface } from 'node:readline';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import WebSocket from 'ws';
import { sha256Hex } from '../shared/hash.js';
import { addressFromPrivateKey, buildWorkerAuth, type Hex } from '../shared/identity/index.js';
import type { ChallengeMsg, LeaseMsg, ResultHeader, ServerMessage } from '../shared/protocol/messages.js';
import { PROTOCOL_VERSION } from '../shared/protocol/messages.js';
import { encodeResultEnvelope } from '../shared/protocol/result-envelope.js';
import { assignExamples } from '../shared/train/assign.js';
import { decodeDataset } from '../shared/train/dataset-format.js';
import { mnistMlpModel } from '../shared/train/templates.js';
import { trainUnit } from '../shared/train/train-unit.js';
import type { Dataset, WeightSet } from '../shared/train/types.js';
import { decodeWeights, encodeWeights } from '../shared/train/weights-format.js';

const { values } = parseArgs({
  options: {
    sockets: { type: 'string', default: '100,1000,10000' },
    store: { type: 'string', default: 'both' },
    replicas: { type: 'string', default: '1' },
    seconds: { type: 'string', default: '20' },
    quick: { type: 'boolean', default: false },
    units: { type: 'string', default: '10000' },
  },
});
const UNITS = Number(values.units);
const SOCKETS = values.quick ? [100] : values.sockets!.split(',').map(Number);
const STORES = values.quick ? ['pglite'] : values.store === 'both' ? ['pglite', 'postgres'] : [values.store!];
const REPLICAS = values.replicas!.split(',').map(Number);
const SECONDS = values.quick ? 10 : Number(values.seconds);

// ---- the coordinator processes ---------------------------------------------------------------------------------

interface Replica {
  child: ChildProcess;
  lines: Interface;
  url: string;
  apiKey: string;
  schema?: string;
  ask(cmd: object): Promise<Record<string, unknown>>;
}

async function startReplica(store: string, env: Record<string, string> = {}): Promise<Replica> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'bench/load-server.ts'], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, LOAD_STORE: store, ...env },
  });
  const lines = createInterface({ input: child.stdout! });
  const queue: ((o: Record<string, unknown>) => void)[] = [];
  lines.on('line', (l) => {
    // The coordinator's own log lines (pino, also JSON) go to stderr; only the driver's answers are replies.
    if (!/^\{"(ready|jobId|rss|stopped)"/.test(l)) return void process.stderr.write(`${l}\n`);
    queue.shift()?.(JSON.parse(l) as Record<string, unknown>);
  });
  const next = () => new Promise<Record<string, unknown>>((resolve) => queue.push(resolve));
  const ready = await next();
  return {
    child,
    lines,
    url: ready.url as string,
    apiKey: ready.apiKey as string,
    schema: ready.schema as string | undefined,
    ask: (cmd) => {
      const p = next();
      child.stdin!.write(`${JSON.stringify(cmd)}\n`);
      return p;
    },
  };
}

// ---- the generator's worker sockets -----------------------------------------------------------------------------

const blobCache = new Map<string, Promise<Uint8Array>>();
/** A unit's blob, fetched once with the lease that names it (blobs are served to a lease for its own unit only). */
function blob(url: string, hash: string, lease: LeaseMsg): Promise<Uint8Array> {
  let p = blobCache.get(hash);
  if (!p) {
    const headers = { authorization: `Lease ${lease.leaseId}:${lease.token}` };
    const get = async (tries: number): Promise<Uint8Array> => {
      try {
        const r = await fetch(`${url}/api/v1/blobs/${hash}`, { headers });
        if (!r.ok) throw new Error(`blob ${hash}: ${r.status}`);
        return new Uint8Array(await r.arrayBuffer());
      } catch (err) {
        if (tries <= 1) throw err;
        return get(tries - 1);
      }
    };
    p = get(3);
    blobCache.set(hash, p);
  }
  return p;
}

interface UnitResult {
  payload: Uint8Array;
  header: Omit<ResultHeader, 'leaseId' | 'token'>;
  states: WeightSet[];
}
// One result per unit (weights + data seed): an audit copy of a unit is the same honest work.
const results = new Map<string, Promise<UnitResult>>();
let trainChain: Promise<unknown> = Promise.resolve();

function unitResult(url: string, lease: LeaseMsg): Promise<UnitResult> {
  const u = lease.unit;
  const key = `${u.weightsHash}:${u.dataSeed}`;
  let p = results.get(key);
  if (!p) {
    // Serialised: tfjs on one thread; the model is tiny, so this is not what limits the run.
    p = trainChain.then(async (): Promise<UnitResult> => {
      const [model, weights, data] = await Promise.all([
        blob(url, u.modelHash, lease),
        blob(url, u.weightsHash, lease),
        datasetOf(url, u.datasetHash, lease),
      ]);
      const out = await trainUnit({
        model: JSON.parse(new TextDecoder().decode(model)) as object,
        spec: {
          steps: u.steps,
          batchSize: u.batchSize,
          checkpointEvery: u.checkpointEvery,
          optimizer: u.optimizer,
          loss: u.loss,
        },
        startWeights: decodeWeights(weights),
        dataset: data,
        indices: assignExamples(u.dataSeed, u.steps, u.batchSize, data.trainExamples),
        keepCheckpointStates: true,
      });
      const payload = encodeWeights(out.delta);
      return {
        payload,
        states: out.checkpointStates ?? [],
        header: {
          type: 'result' as const,
          deltaHash: sha256Hex(payload),
          finalHash: out.finalHash,
          checkpoints: out.checkpoints,
          losses: out.losses,
          examples: out.examples,
          flops: out.flops,
          backend: out.backend,
          timings: { totalMs: out.timings.totalMs, trainMs: out.timings.trainMs },
        },
      };
    });
    trainChain = p.catch(() => {});
    results.set(key, p);
  }
  return p;
}

const datasets = new Map<string, Promise<Dataset>>();
function datasetOf(url: string, hash: string, lease: LeaseMsg): Promise<Dataset> {
  let p = datasets.get(hash);
  if (!p) {
    p = blob(url, hash, lease).then(decodeDataset);
    datasets.set(hash, p);
  }
  return p;
}

interface Stats {
  /** Latencies and counts are recorded from this time on (after the warm-up), until `until`. */
  measureFrom: number;
  until: number;
  warmAcks: number;
  connectMs: number[];
  leaseMs: number[];
  leases: number;
  idles: number;
  acks: number;
  rejects: Map<string, number>;
  errors: number;
}

class LoadWorker {
  ws!: WebSocket;
  private states = new Map<string, WeightSet[]>();
  private waiting: ((m: ServerMessage) => void) | null = null;
  open = false;

  constructor(
    private readonly url: string,
    private readonly key: Hex,
    private readonly stats: Stats,
  ) {}

  connect(): Promise<void> {
    const t0 = performance.now();
    return new Promise((resolve) => {
      const done = () => resolve();
      this.ws = new WebSocket(`${this.url.replace(/^http/, 'ws')}/api/v1/worker`);
      this.ws.on('error', () => {
        this.stats.errors++;
        done();
      });
      this.ws.on('close', () => {
        this.open = false;
        this.waiting?.({ type: 'idle', retryMs: 1000 });
        done();
      });
      this.ws.on('message', (data, isBinary) => {
        if (isBinary) return;
        const m = JSON.parse(String(data)) as ServerMessage;
        if (m.type === 'challenge') return this.hello(m);
        if (m.type === 'welcome') {
          this.open = true;
          this.stats.connectMs.push(performance.now() - t0);
          return done();
        }
        if (m.type === 'reveal') return this.reveal(m);
        if (m.type === 'settled' || m.type === 'revoke') return;
        const w = this.waiting;
        this.waiting = null;
        w?.(m);
      });
    });
  }

  private hello(c: ChallengeMsg): void {
    const auth = buildWorkerAuth({
      privateKey: this.key,
      domain: c.domain,
      uri: c.uri,
      chainId: c.chainId,
      challenge: c.nonce,
    });
    this.ws.send(
      JSON.stringify({
        type: 'hello',
        protocol: PROTOCOL_VERSION,
        account: addressFromPrivateKey(this.key),
        backend: 'cpu',
        capabilities: { backends: ['cpu'] },
        auth: { message: auth.message, signature: auth.signature },
      }),
    );
  }

  private reveal(m: Extract<ServerMessage, { type: 'reveal' }>): void {
    const state = this.states.get(m.leaseId)?.[m.index];
    if (!state) {
      this.ws.send(JSON.stringify({ type: 'reveal-error', requestId: m.requestId, reason: 'states not kept' }));
      return;
    }
    this.ws.send(
      encodeResultEnvelope(
        { type: 'reveal', requestId: m.requestId, leaseId: m.leaseId, index: m.index },
        encodeWeights(state),
      ),
    );
  }

  private answer(timeoutMs: number): Promise<ServerMessage | null> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.waiting = null;
        resolve(null);
      }, timeoutMs);
      this.waiting = (m) => {
        clearTimeout(t);
        resolve(m);
      };
    });
  }

  /** request -> lease | idle, train, submit -> ack, until stats.until. */
  async run(): Promise<void> {
    const s = this.stats;
    const left = () => Math.max(1, s.until - Date.now());
    while (this.open && Date.now() < s.until) {
      const t0 = Date.now();
      const measured = t0 >= s.measureFrom;
      const reply = this.answer(left());
      this.ws.send('{"type":"request"}');
      const m = await reply;
      if (!m) break;
      if (measured) s.leaseMs.push(Date.now() - t0);
      if (m.type === 'idle') {
        if (measured) s.idles++;
        await new Promise((r) => setTimeout(r, Math.min(m.retryMs, left())));
        continue;
      }
      if (m.type !== 'lease') continue;
      if (measured) s.leases++;
      const r = await unitResult(this.url, m);
      this.states.set(m.leaseId, r.states);
      const ack = this.answer(left());
      this.ws.send(encodeResultEnvelope({ ...r.header, leaseId: m.leaseId, token: m.token }, r.payload));
      const a = await ack;
      if (a?.type === 'ack') {
        if (Date.now() >= s.measureFrom) s.acks++;
        else s.warmAcks++;
      } else if (a?.type === 'reject') s.rejects.set(a.code, (s.rejects.get(a.code) ?? 0) + 1);
    }
  }
}

// ---- one run ----------------------------------------------------------------------------------------------------

const quantile = (xs: number[], q: number) => {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};

async function runOne(store: string, replicaCount: number, n: number) {
  const first = await startReplica(store);
  const replicas = [first];
  if (replicaCount > 1) {
    if (store !== 'postgres') throw new Error('several replicas need --store postgres');
    replicas.push(await startReplica(store, { LOAD_SCHEMA: first.schema!, LOAD_REPLICA: 'load-b' }));
  }
  const stats: Stats = {
    measureFrom: Number.POSITIVE_INFINITY,
    // Finite: timers treat anything over 2^31 ms as 1 ms.
    until: Date.now() + 600_000,
    warmAcks: 0,
    connectMs: [],
    leaseMs: [],
    leases: 0,
    idles: 0,
    acks: 0,
    rejects: new Map(),
    errors: 0,
  };
  const health: number[] = [];
  let probing = true;
  const probe = (async () => {
    while (probing) {
      const t0 = performance.now();
      const ok = await fetch(`${first.url}/api/v1/health`, { signal: AbortSignal.timeout(10_000) })
        .then((r) => r.ok)
        .catch(() => false);
      health.push(ok ? performance.now() - t0 : 10_000);
      await new Promise((r) => setTimeout(r, 250));
    }
  })();

  const rssBefore = ((await first.ask({ cmd: 'stats', since: 0 })).rss as number) / 1e6;
  const workers = Array.from(
    { length: n },
    (_, i) => new LoadWorker(replicas[i % replicas.length].url, `0x${randomBytes(32).toString('hex')}` as Hex, stats),
  );
  const tc = performance.now();
  for (let i = 0; i < n; i += 200) await Promise.all(workers.slice(i, i + 200).map((w) => w.connect()));
  const connectSeconds = (performance.now() - tc) / 1000;
  await new Promise((r) => setTimeout(r, 1000));
  const rssIdle = ((await first.ask({ cmd: 'stats', since: 0 })).rss as number) / 1e6;
  const held = workers.filter((w) => w.open).length;

  await first.ask({
    cmd: 'job',
    spec: {
      name: 'load',
      model: mnistMlpModel(2),
      dataset: 'mnist',
      loss: 'categoricalCrossentropy',
      optimizer: { type: 'sgd', learningRate: 0.05 },
      batchSize: 4,
      localSteps: 2,
      unitsPerRound: UNITS,
      rounds: 100,
      unitDeadlineMs: 120_000,
      budget: 1_000,
    },
  });
  // Warm-up (downloads, the coordinator's first dataset decode): until the first ack or 90 s; then the window.
  const running = Promise.all(workers.map((w) => w.run()));
  const warmEnd = Date.now() + 90_000;
  while (stats.warmAcks === 0 && Date.now() < warmEnd) await new Promise((r) => setTimeout(r, 100));
  const since = Date.now();
  stats.measureFrom = since;
  stats.until = since + SECONDS * 1000;
  await running;
  const seconds = (Date.now() - since) / 1000;
  const counts = (await first.ask({ cmd: 'stats', since })).results as { role: string; status: string; n: number }[];
  const by = (pred: (r: { role: string; status: string }) => boolean) =>
    counts.filter(pred).reduce((s, r) => s + Number(r.n), 0);
  probing = false;
  await probe;
  for (const w of workers) w.ws.terminate();
  for (const r of [...replicas].reverse()) await r.ask({ cmd: 'stop' });

  return {
    store,
    replicas: replicaCount,
    sockets: n,
    held,
    connectSeconds: round(connectSeconds),
    connectP50: round(quantile(stats.connectMs, 0.5)),
    connectP99: round(quantile(stats.connectMs, 0.99)),
    leaseP50: round(quantile(stats.leaseMs, 0.5)),
    leaseP99: round(quantile(stats.leaseMs, 0.99)),
    answeredWithin1s: round(stats.leaseMs.filter((x) => x <= 1000).length / Math.max(1, stats.leaseMs.length)),
    leases: stats.leases,
    idles: stats.idles,
    acksPerSecond: round(stats.acks / seconds),
    primaryPerSecond: round(by((r) => r.role === 'primary' && r.status !== 'rejected') / seconds),
    auditPerSecond: round(by((r) => r.role === 'audit' && r.status !== 'rejected') / seconds),
    rejected: by((r) => r.status === 'rejected'),
    rejects: Object.fromEntries(stats.rejects),
    healthP50: round(quantile(health, 0.5)),
    healthMax: round(Math.max(...health)),
    rssPer1000IdleMb: round(((rssIdle - rssBefore) / Math.max(1, held)) * 1000),
    socketErrors: stats.errors,
  };
}

const round = (x: number) => (Number.isFinite(x) ? Math.round(x * 100) / 100 : x);

await tf.setBackend('cpu');
await tf.ready();
const rows: Awaited<ReturnType<typeof runOne>>[] = [];
for (const store of STORES) {
  for (const replicas of REPLICAS) {
    if (replicas > 1 && store !== 'postgres') continue;
    for (const n of SOCKETS) {
      console.error(`bench:load ${store}, ${replicas} replica(s), ${n} sockets...`);
      rows.push(await runOne(store, replicas, n));
    }
  }
}
const load = loadavg().map((x) => x.toFixed(1));
console.log(`\nbench:load (${SECONDS} s per run; load average ${load.join(' ')})\n`);
console.log(
  '| store | replicas | sockets | held | connect p50/p99 ms | lease p50/p99 ms | answered <= 1 s | results/s (primary + audit) | health p50/max ms | RSS MB / 1,000 idle sockets |',
);
console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
for (const r of rows) {
  console.log(
    `| ${r.store} | ${r.replicas} | ${r.sockets} | ${r.held} | ${r.connectP50} / ${r.connectP99} | ${r.leaseP50} / ${r.leaseP99} | ${(r.answeredWithin1s * 100).toFixed(0)}% | ${r.acksPerSecond} (${r.primaryPerSecond} + ${r.auditPerSecond}) | ${r.healthP50} / ${r.healthMax} | ${r.rssPer1000IdleMb} |`,
  );
}
mkdirSync('bench/results', { recursive: true });
const file = `bench/results/load-${new Date().toISOString().replaceAll(':', '-')}.json`;
writeFileSync(file, JSON.stringify({ seconds: SECONDS, loadavg: loadavg(), rows }, null, 2));
console.log(`\nJSON: ${file}`);
process.exit(0);
