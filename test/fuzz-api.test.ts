import http from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { sha256Hex } from '../shared/hash.js';
import { personalSign } from '../shared/identity/index.js';
import type { ChallengeMsg, LeaseMsg, ServerMessage } from '../shared/protocol/messages.js';
import { mulberry32 } from '../shared/train/assign.js';
import { mnistMlpModel } from '../shared/train/templates.js';
import type { WeightSet } from '../shared/train/types.js';
import { decodeWeights, encodeWeights } from '../shared/train/weights-format.js';
import { type CoordinatorProcess, spawnCoordinator } from './helpers/coordinator-process.js';
import {
  type BodySpec,
  type EnvelopeFraming,
  type PayloadKind,
  type RestCase,
  restCase,
  type WsCase,
  type WsFrame,
  wsCase,
} from './helpers/fuzz-cases.js';
import { getNonce, signedWorker, signIn, siweMessage, testIdentity, workerSigner } from './helpers/identities.js';

/**
 * Fuzzing the coordinator's surface with real sockets: REST requests (real routes with mutated parameters, bodies,
 * content types and credentials, stray paths, oversize bodies) and WebSocket sessions (schema-near control messages
 * mutated, garbage, mutated result and reveal envelopes) before hello, after a signed hello and while holding a real
 * lease. The coordinator runs in its own process (PGlite), so a crash or a memory blow-up is its own, not the test's.
 *
 * Holds when: the process never exits, no request gets a 5xx, no WebSocket message ends in an internal error (1011),
 * no request hangs, GET /api/v1/health (probed every 200 ms, on a fresh connection) always answers within
 * HEALTH_BOUND_MS, and the coordinator's RSS stays below RSS_BOUND. Deterministic in FUZZ_SEED (printed); rerun a
 * failure with `FUZZ_SEED=<seed> npx vitest run test/fuzz-api.test.ts`.
 *
 * Bounds: the coordinator process starts at ~0.65 GiB RSS (tfjs, PGlite, a job); under this fuzzing it peaked at
 * 1.0-1.5 GiB on the code of 2026-12-04 (multi-MiB bodies under a 64 MiB body limit; docs/VERIFICATION.md, "Fuzzing"),
 * so 2 GiB leaves margin and still catches a leak or an unbounded buffer. Health: HEALTH_BOUND_MS (FUZZ_HEALTH_MS).
 */

const SEED = Number(process.env.FUZZ_SEED ?? 20261204);
const REST_CASES = Number(process.env.FUZZ_REST ?? 6500);
const WS_CASES = Number(process.env.FUZZ_WS ?? 1400);
const REST_CONCURRENCY = 8;
const WS_CONCURRENCY = 6;
const HEALTH_EVERY_MS = 200;
const HEALTH_BOUND_MS = Number(process.env.FUZZ_HEALTH_MS ?? 100);
/**
 * What is asserted: the 99th percentile of the probes under HEALTH_BOUND_MS, and no probe over HEALTH_STALL_MS. On the
 * 2-core machines this runs on, the prober, the fuzzer and the coordinator's threads share the cores, and one probe in
 * a run can wait on the OS scheduler (113.5 ms once in three CI runs, while this process's own event loop lagged
 * 99.9 ms); a blocked event loop shows as seconds (1,925 ms before the issue-9 fixes).
 */
const HEALTH_STALL_MS = Number(process.env.FUZZ_HEALTH_STALL_MS ?? 250);
const RSS_BOUND = 2 * 2 ** 30;
const REQUEST_TIMEOUT_MS = 30_000;

interface Finding {
  what: string;
  status: number | string;
  detail: string;
}

let coord: CoordinatorProcess;
const ctx = {
  url: '',
  apiKey: '',
  otherKey: '',
  session: '',
  address: '',
  jobId: '',
  hash: '',
  siwe: '',
};

beforeAll(async () => {
  // Rate limits stay on, far above this run's volume (about 18,000 requests a minute from one address): what is fuzzed
  // here is how the coordinator handles what it is sent, not the limits (test/hold-limits.test.ts has those).
  coord = await spawnCoordinator('pglite', 60_000, {
    RATE_LIMIT_PER_ADDRESS: '100000',
    RATE_LIMIT_PER_ACCOUNT: '100000',
  });
  ctx.url = coord.url;
  ctx.apiKey = coord.apiKey;
  ctx.address = coord.requester;
  ctx.session = (await signIn(coord.url, 'fuzz-signed-in')).token;
  ctx.otherKey = coord.apiKey.replace(/.$/, (c) => (c === 'a' ? 'b' : 'a'));
  ctx.siwe = siweMessage(await getNonce(coord.url), ctx.address);
  // A real job with real units, so mutated parameters and results can name a real job and a real lease.
  const res = await fetch(`${coord.url}/api/v1/jobs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${coord.apiKey}` },
    body: JSON.stringify(jobSpec(200)),
  });
  expect(res.status).toBe(201);
  ctx.jobId = ((await res.json()) as { id: string }).id;
  const w = await signedWorker(coord.url, 'fuzz-setup');
  ctx.hash = (await w.lease()).unit.weightsHash;
  w.close();
});

afterAll(async () => {
  await coord?.stop();
});

function jobSpec(rounds: number): Record<string, unknown> {
  return {
    name: 'fuzz target',
    model: mnistMlpModel(8),
    dataset: 'mnist',
    loss: 'categoricalCrossentropy',
    optimizer: { type: 'adam', learningRate: 0.003 },
    batchSize: 8,
    localSteps: 2,
    unitsPerRound: 4,
    rounds,
    seed: 1,
    unitDeadlineMs: 60_000,
  };
}

/** An address with the case of one hex letter flipped: a bad EIP-55 checksum. */
function badChecksum(a: string): string {
  const i = [...a].findIndex((ch, k) => k > 1 && /[a-fA-F]/.test(ch));
  const ch = a[i];
  return `${a.slice(0, i)}${ch === ch.toLowerCase() ? ch.toUpperCase() : ch.toLowerCase()}${a.slice(i + 1)}`;
}

/** Fills the generators' placeholders with live values. */
let modelJson = '';
function fill(s: string, lease?: { leaseId: string; token: string }): string {
  modelJson ||= JSON.stringify(mnistMlpModel(8));
  return s
    .replaceAll('{"$model":true}', modelJson)
    .replaceAll('$JOB', ctx.jobId)
    .replaceAll('$HASH', ctx.hash)
    .replaceAll('$ADDRESS', ctx.address)
    .replaceAll('$ADDR_LOWER', ctx.address.toLowerCase())
    .replaceAll('$ADDR_BADSUM', badChecksum(ctx.address))
    .replaceAll('$SIWE', JSON.stringify(ctx.siwe).slice(1, -1))
    .replaceAll('$LEASE', lease?.leaseId ?? 'l_nosuchlease')
    .replaceAll('$TOKEN', lease?.token ?? 'nosuchtoken');
}

// ---- REST ---------------------------------------------------------------------------------------------------------

const oversize = new Map<string, Buffer>();
function oversizeBody(mib: number, shape: string): Buffer {
  const key = `${mib}:${shape}`;
  let b = oversize.get(key);
  if (!b) {
    const n = Math.floor(mib * 2 ** 20);
    if (shape === 'string') b = Buffer.from(`{"name":"${'x'.repeat(n)}"}`);
    else if (shape === 'array') b = Buffer.from(`{"rounds":[${'0,'.repeat(n / 2)}0]}`);
    else if (shape === 'nested') b = Buffer.from(`${'['.repeat(n / 2)}${']'.repeat(n / 2)}`);
    else b = Buffer.alloc(n, 7);
    oversize.set(key, b);
  }
  return b;
}

function bodyBytes(b: BodySpec): Buffer | null {
  switch (b.kind) {
    case 'none':
      return null;
    case 'json':
    case 'text':
      return Buffer.from(fill(b.text));
    case 'bytes':
      return Buffer.from(b.bytes);
    case 'oversize':
      return oversizeBody(b.mib, b.shape);
  }
}

const agent = new http.Agent({ keepAlive: true, maxSockets: REST_CONCURRENCY });

function authHeader(c: RestCase): Record<string, string> {
  switch (c.auth) {
    case 'none':
      return {};
    case 'apiKey':
      return { authorization: `Bearer ${ctx.apiKey}` };
    case 'session':
      return { authorization: `Bearer ${ctx.session}` };
    case 'otherKey':
      return { authorization: `Bearer ${ctx.otherKey}` };
    case 'basic':
      return { authorization: 'Basic Zm9vOmJhcg==' };
    case 'garbage':
      return { authorization: 'Bearer \u00ff%00 sgk_' };
  }
}

interface RestOutcome {
  status: number | 'timeout' | 'network';
  body: string;
}

function sendRest(c: RestCase): Promise<RestOutcome> {
  const url = new URL(ctx.url);
  const body = bodyBytes(c.body);
  // A path goes out as generated (raw percent-escapes), except what Node refuses to put on the request line.
  const path = fill(c.path).replace(/[^\x21-\x7e]/g, (ch) => encodeURIComponent(ch));
  const headers: Record<string, string> = { ...authHeader(c) };
  if (c.contentType !== null) headers['content-type'] = c.contentType;
  if (body) headers['content-length'] = String(body.length);
  return new Promise((resolve) => {
    const req = http.request(
      { host: url.hostname, port: url.port, method: c.method, path, headers, agent, timeout: REQUEST_TIMEOUT_MS },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (d: Buffer) => {
          if (size < 4096) chunks.push(d);
          size += d.length;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', (err) => resolve({ status: 'network', body: String(err) }));
      },
    );
    req.on('timeout', () => {
      req.destroy();
      resolve({ status: 'timeout', body: '' });
    });
    req.on('error', (err) => resolve({ status: 'network', body: String(err) }));
    if (body) req.end(body);
    else req.end();
  });
}

function describeRest(c: RestCase): string {
  const b = c.body;
  const body =
    b.kind === 'none'
      ? ''
      : b.kind === 'oversize'
        ? ` body=${b.shape} ${b.mib} MiB`
        : b.kind === 'bytes'
          ? ` body=${b.bytes.length} random bytes`
          : ` body=${fill(b.text).slice(0, 160)}`;
  return `${c.method} ${fill(c.path).slice(0, 160)} auth=${c.auth} ct=${c.contentType ?? '-'}${body}`;
}

// ---- WebSocket ----------------------------------------------------------------------------------------------------

const startWeights = new Map<string, Promise<WeightSet>>();
/** A unit's start weights, fetched with its lease (blobs are served to a lease for its own unit only). */
function weightsOf(lease: LeaseMsg): Promise<WeightSet> {
  const hash = lease.unit.weightsHash;
  let p = startWeights.get(hash);
  if (!p) {
    const headers = { authorization: `Lease ${lease.leaseId}:${lease.token}` };
    p = fetch(`${ctx.url}/api/v1/blobs/${hash}`, { headers }).then(async (r) =>
      decodeWeights(new Uint8Array(await r.arrayBuffer())),
    );
    startWeights.set(hash, p);
  }
  return p;
}

let bigPayload: Uint8Array | undefined;
async function payloadOf(kind: PayloadKind, seed: number, lease?: LeaseMsg): Promise<Uint8Array> {
  const rand = mulberry32(seed);
  const random = (n: number) => {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = rand() & 0xff;
    return b;
  };
  const zeros = async () => {
    const w = lease ? await weightsOf(lease) : null;
    return encodeWeights(
      w
        ? { names: w.names, shapes: w.shapes, data: w.data.map((d) => new Float32Array(d.length)) }
        : { names: ['a'], shapes: [[2]], data: [new Float32Array(2)] },
    );
  };
  switch (kind) {
    case 'empty':
      return new Uint8Array(0);
    case 'random':
      return random(1 + (seed % 2048));
    case 'zeros':
      return zeros();
    case 'wrongShape':
      return encodeWeights({ names: ['hidden/kernel'], shapes: [[3, 1]], data: [Float32Array.of(1, 2, Number.NaN)] });
    case 'garbageWeights': {
      const b = await zeros();
      for (let i = 0; i < 6; i++) b[Math.floor(rand() * 1e9) % b.length] = rand() & 0xff;
      return b;
    }
    case 'big':
      bigPayload ??= new Uint8Array(2 * 2 ** 20).map((_, i) => (i * 2654435761) >>> 24);
      return bigPayload;
  }
}

function frameEnvelope(head: Uint8Array, payload: Uint8Array, framing: EnvelopeFraming): Uint8Array {
  const out = new Uint8Array(8 + head.length + payload.length);
  out.set([0x53, 0x47, 0x52, 0x31], 0);
  const view = new DataView(out.buffer);
  view.setUint32(4, head.length, true);
  out.set(head, 8);
  out.set(payload, 8 + head.length);
  switch (framing) {
    case 'ok':
      return out;
    case 'badMagic':
      out[3] = 0x32;
      return out;
    case 'hugeLength':
      view.setUint32(4, 0xffffffff, true);
      return out;
    case 'zeroLength':
      view.setUint32(4, 0, true);
      return out;
    case 'truncated':
      return out.subarray(0, 8 + Math.floor(head.length / 2));
    case 'short':
      return out.subarray(0, 5);
  }
}

async function frameBytes(f: WsFrame, lease?: LeaseMsg): Promise<string | Uint8Array> {
  if (f.kind === 'text') return fill(f.text, lease);
  if (f.kind === 'binary') return f.bytes;
  const payload = await payloadOf(f.payload, f.seed, lease);
  const head = fill(f.header, lease).replaceAll('$DELTAHASH', sha256Hex(payload));
  return frameEnvelope(new TextEncoder().encode(head), payload, f.framing);
}

interface WsOutcome {
  frames: number;
  closeCode: number | null;
  internal: string | null;
  helloOk: boolean;
}

function waitUntil(cond: () => boolean, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const end = Date.now() + ms;
    const tick = () => (cond() || Date.now() > end ? resolve() : setTimeout(tick, 20));
    tick();
  });
}

async function runWs(c: WsCase): Promise<WsOutcome> {
  const ws = new WebSocket(`${ctx.url.replace(/^http/, 'ws')}/api/v1/worker`);
  const inbox: ServerMessage[] = [];
  let closeCode: number | null = null;
  let lastMessageAt = Date.now();
  ws.on('message', (data, isBinary) => {
    lastMessageAt = Date.now();
    if (!isBinary) {
      try {
        inbox.push(JSON.parse(String(data)) as ServerMessage);
      } catch {
        // A server frame that is not JSON is reported through `internal` below.
        inbox.push({ type: 'error', code: 'internal', message: `non-JSON frame: ${String(data).slice(0, 80)}` });
      }
    }
  });
  ws.on('error', () => {});
  const closed = new Promise<void>((resolve) =>
    ws.on('close', (code) => {
      closeCode = code;
      resolve();
    }),
  );
  const find = <T extends ServerMessage['type']>(type: T) =>
    inbox.find((m) => m.type === type) as Extract<ServerMessage, { type: T }> | undefined;
  let frames = 0;
  let helloOk = false;
  const open = () => ws.readyState === WebSocket.OPEN;
  await waitUntil(() => find('challenge') !== undefined || closeCode !== null, 10_000);
  const challenge = find('challenge') as ChallengeMsg | undefined;
  if (challenge && c.hello !== 'none' && open()) {
    const id = testIdentity(`fuzz-worker-${c.identity}`);
    const hello: Record<string, unknown> = {
      type: 'hello',
      protocol: 1,
      account: id.address,
      backend: 'wasm',
      capabilities: { backends: ['wasm'] },
    };
    if (c.hello !== 'unsigned') hello.auth = await workerSigner(id.privateKey)(challenge);
    if (c.hello === 'forged') {
      const auth = hello.auth as { message: string; signature: string };
      auth.signature = personalSign(auth.message, testIdentity('fuzz-forger').privateKey);
    }
    if (c.hello === 'foreignPayTo') hello.payTo = ctx.address;
    ws.send(JSON.stringify(hello));
    frames++;
    await waitUntil(() => find('welcome') !== undefined || closeCode !== null, 10_000);
    helloOk = find('welcome') !== undefined;
  }
  let lease: LeaseMsg | undefined;
  if (helloOk && c.lease && open()) {
    ws.send('{"type":"request"}');
    frames++;
    await waitUntil(() => find('lease') !== undefined || find('idle') !== undefined || closeCode !== null, 5_000);
    lease = find('lease');
  }
  for (const f of c.frames) {
    if (!open()) break;
    ws.send(await frameBytes(f, lease));
    frames++;
  }
  // Let the coordinator answer: until it closes, or is quiet for 250 ms.
  lastMessageAt = Date.now();
  await waitUntil(() => closeCode !== null || Date.now() - lastMessageAt > 250, 10_000);
  if (closeCode === null) {
    ws.close();
    await Promise.race([closed, new Promise((r) => setTimeout(r, 2_000))]);
    if (closeCode === null) ws.terminate();
  }
  const err = inbox.find((m) => m.type === 'error' && m.code === 'internal') as { message: string } | undefined;
  return { frames, closeCode, helloOk, internal: err ? err.message : closeCode === 1011 ? 'closed 1011' : null };
}

function describeWs(c: WsCase): string {
  const frames = c.frames.map((f) =>
    f.kind === 'text'
      ? `text ${fill(f.text).slice(0, 120)}`
      : f.kind === 'binary'
        ? `binary ${f.bytes.length} bytes`
        : `envelope ${f.framing} payload=${f.payload} header=${fill(f.header).slice(0, 120)}`,
  );
  return `hello=${c.hello} lease=${c.lease} frames: ${frames.join(' | ')}`;
}

// ---- runner --------------------------------------------------------------------------------------------------------

async function pool<T>(items: T[], concurrency: number, run: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) await run(items[next++]);
    }),
  );
}

function probeHealth(): Promise<{ ms: number; status: number | string }> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const req = http.get(`${ctx.url}/api/v1/health`, { agent: false, timeout: 10_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve({ ms: performance.now() - t0, status: res.statusCode ?? 0 }));
    });
    req.on('error', (err) => resolve({ ms: performance.now() - t0, status: String(err) }));
  });
}

/**
 * The health prober runs on its own thread, so stalls of this test's event loop (building multi-MiB bodies) do not
 * count against the coordinator: every HEALTH_EVERY_MS a GET on a fresh connection, latency to the end of the body.
 */
const PROBER = `
const { parentPort, workerData } = require('node:worker_threads');
const http = require('node:http');
let stop = false;
const results = [];
parentPort.on('message', () => { stop = true; });
const probe = () => new Promise((resolve) => {
  const t0 = performance.now();
  const at = Date.now();
  const req = http.get(workerData.url + '/api/v1/health', { agent: false, timeout: 10000 }, (res) => {
    res.resume();
    res.on('end', () => resolve({ at, ms: performance.now() - t0, status: res.statusCode }));
  });
  req.on('timeout', () => { req.destroy(); resolve({ at, ms: performance.now() - t0, status: 'timeout' }); });
  req.on('error', (err) => resolve({ at, ms: performance.now() - t0, status: String(err) }));
});
(async () => {
  while (!stop) {
    const started = Date.now();
    results.push(await probe());
    await new Promise((r) => setTimeout(r, Math.max(0, workerData.every - (Date.now() - started))));
  }
  parentPort.postMessage(results);
})();
`;

interface Probe {
  at: number;
  ms: number;
  status: number | string;
}

function startProber(): { stop(): Promise<Probe[]> } {
  const w = new Worker(PROBER, { eval: true, workerData: { url: ctx.url, every: HEALTH_EVERY_MS } });
  const done = new Promise<Probe[]>((resolve) => w.once('message', resolve));
  return {
    stop: async () => {
      w.postMessage('stop');
      const r = await done;
      await w.terminate();
      return r;
    },
  };
}

/** Findings of one kind, grouped by route and status, with up to three examples each. */
function grouped(findings: Finding[]): string {
  const groups = new Map<string, Finding[]>();
  for (const f of findings) {
    const k = `${f.what} -> ${f.status}`;
    groups.set(k, [...(groups.get(k) ?? []), f]);
  }
  return [...groups.entries()]
    .map(
      ([k, fs]) =>
        `  ${fs.length} x ${k}\n${fs
          .slice(0, 3)
          .map((f) => `      e.g. ${f.detail}`)
          .join('\n')}`,
    )
    .join('\n');
}

describe('fuzzing the REST API and the worker WebSocket', () => {
  it('never crashes, never answers 5xx, keeps health under 100 ms and memory bounded', {
    timeout: 600_000,
  }, async () => {
    console.log(`fuzz seed ${SEED} (FUZZ_SEED=${SEED} reproduces this run)`);
    const rest = fc.sample(restCase, { seed: SEED, numRuns: REST_CASES });
    const wss = fc.sample(wsCase, { seed: SEED + 1, numRuns: WS_CASES });

    let peakRss = coord.rss();
    const rssAtStart = peakRss;
    const prober = startProber();
    const rssTimer = setInterval(() => {
      if (!coord.exited) peakRss = Math.max(peakRss, coord.rss());
    }, 250);
    // This process's own stalls (not counted in the health figures, which a separate thread measures).
    const lag = monitorEventLoopDelay({ resolution: 10 });
    lag.enable();

    const fiveXx: Finding[] = [];
    const hung: Finding[] = [];
    const network: Finding[] = [];
    const wsInternal: Finding[] = [];
    const statuses = new Map<string, number>();
    // What was in flight, to tell which kinds of traffic coincide with slow health answers.
    const spans: { start: number; end: number; what: string }[] = [];
    const closeCodes = new Map<string, number>();
    let frames = 0;
    let hellos = 0;
    const t0 = Date.now();

    await Promise.all([
      pool(rest, REST_CONCURRENCY, async (c) => {
        if (coord.exited) return;
        const start = Date.now();
        const out = await sendRest(c);
        spans.push({
          start,
          end: Date.now(),
          what: `${c.route} body=${c.body.kind === 'oversize' ? `oversize ${c.body.shape}` : c.body.kind}`,
        });
        statuses.set(String(out.status), (statuses.get(String(out.status)) ?? 0) + 1);
        const f = { what: c.route, status: out.status, detail: `${describeRest(c)} => ${out.body.slice(0, 200)}` };
        if (typeof out.status === 'number' && out.status >= 500) fiveXx.push(f);
        else if (out.status === 'timeout') hung.push(f);
        else if (out.status === 'network') network.push(f);
      }),
      pool(wss, WS_CONCURRENCY, async (c) => {
        if (coord.exited) return;
        const start = Date.now();
        const out = await runWs(c);
        spans.push({
          start,
          end: Date.now(),
          what: `ws ${c.frames.some((f) => f.kind === 'envelope' && f.payload === 'big') ? '2 MiB envelope' : c.frames.some((f) => f.kind === 'text' && f.text.length > 100_000) ? 'big text frame' : 'frames'}`,
        });
        frames += out.frames;
        if (out.helloOk) hellos++;
        const code = String(out.closeCode);
        closeCodes.set(code, (closeCodes.get(code) ?? 0) + 1);
        if (out.internal) wsInternal.push({ what: `ws ${c.hello}`, status: out.internal, detail: describeWs(c) });
      }),
    ]);

    const health = await prober.stop();
    clearInterval(rssTimer);
    lag.disable();
    const finalHealth = coord.exited ? { ms: 0, status: 'process gone' } : await probeHealth();
    const seconds = (Date.now() - t0) / 1000;
    const latencies = health.map((h) => h.ms).sort((a, b) => a - b);
    const maxHealth = latencies.at(-1) ?? 0;
    const p99 = latencies[Math.floor(latencies.length * 0.99)] ?? 0;
    const badHealth = health.filter((h) => h.status !== 200);
    const slowHealth = health.filter((h) => h.ms >= HEALTH_BOUND_MS);
    // Traffic kinds in flight during slow probes more often than during probes in general: the likely stallers.
    const overlapping = (probes: Probe[]) => {
      const n = new Map<string, number>();
      for (const h of probes) {
        const kinds = new Set(spans.filter((sp) => sp.start <= h.at + h.ms && sp.end >= h.at).map((sp) => sp.what));
        for (const k of kinds) n.set(k, (n.get(k) ?? 0) + 1);
      }
      return n;
    };
    const duringSlow = overlapping(slowHealth);
    const duringAll = overlapping(health);
    const suspects = [...duringSlow]
      .map(([what, n]) => ({ what, n, lift: n / slowHealth.length / ((duringAll.get(what) ?? 1) / health.length) }))
      .filter((x) => x.n >= 3 && x.lift > 1.5)
      .sort((a, b) => b.lift - a.lift)
      .slice(0, 6)
      .map(
        (x) => `${x.what} (during ${x.n} of ${slowHealth.length} slow probes, x${x.lift.toFixed(1)} its usual rate)`,
      );
    const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;

    const report = [
      `fuzz seed ${SEED}: ${rest.length} REST requests + ${frames} WebSocket frames (${wss.length} connections, ${hellos} signed in) in ${seconds.toFixed(0)} s`,
      `REST statuses: ${JSON.stringify(Object.fromEntries([...statuses].sort()))}`,
      `WebSocket close codes: ${JSON.stringify(Object.fromEntries([...closeCodes].sort()))}`,
      `health: ${health.length} probes, max ${maxHealth.toFixed(1)} ms, p99 ${p99.toFixed(1)} ms, ${slowHealth.length} >= ${HEALTH_BOUND_MS} ms, ${badHealth.length} not 200; test-process event-loop lag max ${(lag.max / 1e6).toFixed(1)} ms`,
      `traffic around slow health probes: ${suspects.join('; ') || '-'}`,
      `coordinator RSS: start ${gib(rssAtStart)}, peak ${gib(peakRss)} (bound ${gib(RSS_BOUND)})`,
      `crash: ${coord.exited ? JSON.stringify(coord.exited) : 'none'}; final health ${finalHealth.status}`,
      `5xx responses: ${fiveXx.length}${fiveXx.length ? `\n${grouped(fiveXx)}` : ''}`,
      `WebSocket internal errors: ${wsInternal.length}${wsInternal.length ? `\n${grouped(wsInternal)}` : ''}`,
      `hung requests (> ${REQUEST_TIMEOUT_MS / 1000} s): ${hung.length}${hung.length ? `\n${grouped(hung)}` : ''}`,
      `connections dropped without a response: ${network.length}${network.length ? `\n${grouped(network)}` : ''}`,
    ].join('\n');
    console.log(report);
    if (coord.exited) console.log(`coordinator output:\n${coord.output.join('').slice(-5000)}`);

    // At the default sizes the run must reach 10,000 requests and frames (FUZZ_REST / FUZZ_WS shrink it for a try).
    const defaultSize = process.env.FUZZ_REST === undefined && process.env.FUZZ_WS === undefined;
    if (defaultSize) expect(rest.length + frames, 'requests and frames sent').toBeGreaterThanOrEqual(10_000);
    expect.soft(coord.exited, 'the coordinator process crashed').toBeNull();
    expect.soft(finalHealth.status, 'health after fuzzing').toBe(200);
    expect.soft(fiveXx.length, `5xx responses:\n${grouped(fiveXx)}`).toBe(0);
    expect.soft(wsInternal.length, `WebSocket internal errors:\n${grouped(wsInternal)}`).toBe(0);
    expect.soft(hung.length, `hung requests:\n${grouped(hung)}`).toBe(0);
    expect.soft(badHealth.length, `health probes not answered 200: ${JSON.stringify(badHealth.slice(0, 5))}`).toBe(0);
    expect.soft(p99, `p99 health latency (ms); max ${maxHealth.toFixed(1)}`).toBeLessThan(HEALTH_BOUND_MS);
    expect.soft(maxHealth, `max health latency (ms); p99 ${p99.toFixed(1)}`).toBeLessThan(HEALTH_STALL_MS);
    expect.soft(peakRss, 'peak coordinator RSS (bytes)').toBeLessThan(RSS_BOUND);
  });
});
