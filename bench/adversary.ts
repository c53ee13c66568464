/**
 * bench:adversary — one honest worker and one client of every attacker type against a live coordinator, over a demo
 * size MNIST job, on PGlite and/or PostgreSQL. A clean run (the honest worker alone, same job and seed) comes first
 * for the accuracy comparison.
 *
 *   npm run bench:adversary                      full run on PGlite (~5-10 minutes on 2 cores)
 *   npm run bench:adversary -- --store both      PGlite and PostgreSQL (127.0.0.1:5432, db test, like the tests)
 *   npm run bench:adversary -- --quick           smoke run: fewer rounds, shorter storms
 *   npm run bench:adversary -- --without "examples overflow,lease hoarding"   leave attackers out
 *
 * Prints a table per attacker (units submitted, acked, aggregated, credit earned, fair pay, net credit, forfeited)
 * and writes bench/results/adversary-<timestamp>.json. Exits non-zero, naming the failed conditions, unless:
 * the job completes; its accuracy is within 1 point of the clean run; the honest worker has 0 forfeits and 0 trust
 * failures; every attacker's net credit <= 0.
 *
 * Net credit = credit earned (pending + vested in the ledger, GET /api/v1/accounts/:address) minus fair pay: for each
 * credited unit the attacker really trained, the honest worker's credit per unit (or the unit's credit if lower) (a replay's first unit, the price
 * switcher's and the expired-lease capturer's units, …): what it got beyond what honest work earns.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { sha256Hex } from '../shared/hash.js';
import type { LeaseMsg, ResultHeader } from '../shared/protocol/messages.js';
import { PROTOCOL_VERSION } from '../shared/protocol/messages.js';
import { encodeResultEnvelope } from '../shared/protocol/result-envelope.js';
import { assignExamples } from '../shared/train/assign.js';
import { decodeDataset } from '../shared/train/dataset-format.js';
import { mnistMlpModel } from '../shared/train/templates.js';
import { trainUnit } from '../shared/train/train-unit.js';
import type { Dataset, TrainUnitInput, TrainUnitOutput, WeightSet } from '../shared/train/types.js';
import { decodeWeights, encodeWeights, hashWeights } from '../shared/train/weights-format.js';
import {
  getJob,
  postJob,
  smallMnistJob,
  startTestCoordinator,
  type TestCoordinator,
  testStore,
} from '../test/helpers/cluster.js';
import { postOffer, signedWorker, type TestIdentity, testIdentity, workerSigner } from '../test/helpers/identities.js';
import { RawWorker } from '../test/helpers/raw-worker.js';
import type { StoreKind } from '../test/helpers/stores.js';
import { seededInit } from './seeded-init.js';

const { values } = parseArgs({
  options: {
    store: { type: 'string', default: 'pglite' },
    quick: { type: 'boolean', default: false },
    seed: { type: 'string', default: '7' },
    /** Attackers to leave out, comma-separated kinds (e.g. "examples overflow" while it stalls every job). */
    without: { type: 'string', default: '' },
  },
});
const WITHOUT = new Set(
  values
    .without!.split(',')
    .map((x) => x.trim())
    .filter(Boolean),
);
const QUICK = values.quick === true;
const SEED = Number(values.seed);
const STORES: StoreKind[] = values.store === 'both' ? ['pglite', 'postgres'] : [values.store as StoreKind];
const ROUNDS = QUICK ? 2 : 4;
/** Enough units that every attacker gets some while the honest worker still does its share. */
const UNITS_PER_ROUND = 12;
const STEPS = 8;
const BATCH = 16;
const HIDDEN = 16;
const DEADLINE_MS = 12_000;
const JOB_TIMEOUT_MS = QUICK ? 4 * 60_000 : 7 * 60_000;
/** Job price cap (credits/TFLOP): what the price switcher raises its offer to after leasing at a low price. */
const MAX_PRICE = 50;
/** Simulated fleet size for the copying-partner model. */
const FLEET = 100;

/**
 * Stores seeded initial weights as the requester's own. The API takes `initialWeights` only from the requester's own
 * jobs (another account's weights are not its to reuse); a bench has no earlier job, so it records an ended one that
 * holds them (no units, never leased).
 */
async function ownWeights(c: TestCoordinator, w: WeightSet): Promise<string> {
  const hash = await c.scheduler.weights.put(w);
  await c.db.query(
    `INSERT INTO jobs (id, owner, name, spec, status, round, rounds, model_hash, dataset_id, weights_hash)
     SELECT $1, $2, 'seeded initial weights', '{}', 'cancelled', 0, 0, '', id, $3 FROM datasets LIMIT 1`,
    [`job_seed_${hash.slice(0, 16)}_${Date.now()}`, c.requester.address, hash],
  );
  return hash;
}

function jobSpec(name: string, initialWeights: string): Record<string, unknown> {
  return smallMnistJob({
    name,
    initialWeights,
    model: mnistMlpModel(HIDDEN),
    batchSize: BATCH,
    localSteps: STEPS,
    unitsPerRound: UNITS_PER_ROUND,
    rounds: ROUNDS,
    targetAccuracy: undefined,
    seed: SEED,
    unitDeadlineMs: DEADLINE_MS,
    budget: 1_000,
    market: { maxPricePerTflop: MAX_PRICE },
    verification: { checkpointEvery: 2 },
  } as Record<string, unknown>);
}

// ---- unit inputs, fetched once per blob ----------------------------------------------------------------------------

const blobCache = new Map<string, Promise<Uint8Array>>();
/** A unit's blob, fetched with the lease that names it (blobs are served to a lease for its own unit only). */
function blob(url: string, hash: string, lease: LeaseMsg): Promise<Uint8Array> {
  let p = blobCache.get(hash);
  if (!p) {
    const headers = { authorization: `Lease ${lease.leaseId}:${lease.token}` };
    p = fetch(`${url}/api/v1/blobs/${hash}`, { headers }).then(async (r) => {
      if (!r.ok) throw new Error(`blob ${hash}: ${r.status}`);
      return new Uint8Array(await r.arrayBuffer());
    });
    blobCache.set(hash, p);
  }
  return p;
}
const datasets = new Map<string, Dataset>();

type Inputs = Omit<TrainUnitInput, 'onStep' | 'shouldStop'>;
async function inputsOf(url: string, lease: LeaseMsg): Promise<Inputs> {
  const u = lease.unit;
  const model = JSON.parse(new TextDecoder().decode(await blob(url, u.modelHash, lease))) as object;
  const startWeights = decodeWeights(await blob(url, u.weightsHash, lease));
  let dataset = datasets.get(u.datasetHash);
  if (!dataset) {
    dataset = decodeDataset(await blob(url, u.datasetHash, lease));
    datasets.set(u.datasetHash, dataset);
  }
  return {
    model,
    spec: {
      steps: u.steps,
      batchSize: u.batchSize,
      checkpointEvery: u.checkpointEvery,
      optimizer: u.optimizer,
      loss: u.loss,
    },
    startWeights,
    dataset,
    indices: assignExamples(u.dataSeed, u.steps, u.batchSize, dataset.trainExamples),
  };
}

// ---- results: honest and forged ------------------------------------------------------------------------------------

interface Made {
  header: ResultHeader;
  payload: Uint8Array;
  /** States to reveal (null: none kept). */
  states: WeightSet[] | null;
  /** Really trained as asked: earns fair pay. */
  honest: boolean;
}

function made(lease: LeaseMsg, out: TrainUnitOutput, states: WeightSet[] | null, honest: boolean): Made {
  const payload = encodeWeights(out.delta);
  return { header: RawWorker.header(lease, out, payload), payload, states, honest };
}

async function honestRun(url: string, lease: LeaseMsg): Promise<Made> {
  const out = await trainUnit({ ...(await inputsOf(url, lease)), keepCheckpointStates: true });
  return made(lease, out, out.checkpointStates ?? null, true);
}

const zerosLike = (w: WeightSet): WeightSet => ({
  names: w.names,
  shapes: w.shapes,
  data: w.data.map((d) => new Float32Array(d.length)),
});

/** No training: an all-zero delta, made-up commitments and a falling loss curve (derived from the unit only). */
async function fakeRun(url: string, lease: LeaseMsg): Promise<Made> {
  const inp = await inputsOf(url, lease);
  const u = lease.unit;
  const delta = zerosLike(inp.startWeights);
  const S = Math.ceil(u.steps / u.checkpointEvery);
  const out = {
    delta,
    finalHash: hashWeights(inp.startWeights),
    checkpoints: Array.from({ length: S }, (_, i) => sha256Hex(new TextEncoder().encode(`fake:${u.dataSeed}:${i}`))),
    losses: Array.from({ length: u.steps }, (_, s) => 2.3 * 0.97 ** s),
    examples: u.steps * u.batchSize,
    flops: 0,
    backend: 'wasm',
    timings: { totalMs: 100, trainMs: 90 },
  } as unknown as TrainUnitOutput;
  return made(lease, out, null, false);
}

/** Half the steps, the rest of the commitments padded with the half-way state. */
async function partialRun(url: string, lease: LeaseMsg): Promise<Made> {
  const inp = await inputsOf(url, lease);
  const half = Math.max(inp.spec.checkpointEvery, inp.spec.steps / 2);
  const out = await trainUnit({ ...inp, toStep: half, keepCheckpointStates: true });
  const states = [...(out.checkpointStates ?? [])];
  const S = Math.ceil(inp.spec.steps / inp.spec.checkpointEvery);
  while (states.length < S) states.push(states[states.length - 1]);
  const full = { ...out, checkpoints: states.map(hashWeights), losses: [...out.losses, ...out.losses] };
  return made(lease, full, states, false);
}

/** Honest training, delta scaled by 1.1 (the committed final state left as trained). */
async function scaledRun(url: string, lease: LeaseMsg): Promise<Made> {
  const m = await honestRun(url, lease);
  const delta = decodeWeights(m.payload);
  const scaled = { ...delta, data: delta.data.map((d) => d.map((v) => v * 1.1)) };
  const payload = encodeWeights(scaled);
  return { ...m, header: { ...m.header, deltaHash: sha256Hex(payload) }, payload, honest: false };
}

function relabel(m: Made, lease: LeaseMsg): Made {
  return { ...m, header: { ...m.header, leaseId: lease.leaseId, token: lease.token } };
}

// ---- agents --------------------------------------------------------------------------------------------------------

interface Stats {
  submitted: number;
  acked: number;
  rejected: number;
  /** Lease ids of results it really trained (fair pay if accepted). */
  honestLeases: Set<string>;
  notes: Record<string, number>;
}

interface Agent {
  kind: string;
  /** Addresses its credit lands on. */
  accounts: string[];
  stats: Stats;
  run(stop: () => boolean): Promise<void>;
  close(): void;
}

const newStats = (): Stats => ({ submitted: 0, acked: 0, rejected: 0, honestLeases: new Set(), notes: {} });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const note = (s: Stats, k: string, n = 1) => {
  s.notes[k] = (s.notes[k] ?? 0) + n;
};

async function submit(w: RawWorker, s: Stats, m: Made): Promise<void> {
  if (m.states) w.states.set(m.header.leaseId, m.states);
  if (m.honest) s.honestLeases.add(m.header.leaseId);
  s.submitted++;
  const a = await w.submit(m.header, m.payload).catch(() => null);
  if (a?.type === 'ack') s.acked++;
  else s.rejected++;
}

/** Lease, make a result, submit, until stopped. `make` null: drop the lease (release it). */
async function workLoop(
  w: RawWorker,
  s: Stats,
  stop: () => boolean,
  make: (lease: LeaseMsg, n: number) => Promise<Made | null>,
  after?: () => Promise<void>,
): Promise<void> {
  let n = 0;
  while (!stop() && w.ws.readyState === w.ws.OPEN) {
    const lease = await w.lease(2_000).catch(() => null);
    if (!lease) continue;
    const m = await make(lease, n++).catch((err) => {
      note(s, `error: ${(err as Error).message.slice(0, 60)}`);
      return null;
    });
    if (m) await submit(w, s, m);
    await after?.();
  }
}

/** A signed worker whose hello carries extra fields (payTo). */
async function helloWith(url: string, id: TestIdentity, extra: Record<string, unknown>): Promise<RawWorker> {
  const w = new RawWorker(url, id.address);
  await w.open();
  const challenge = await w.nextOf('challenge');
  const auth = await workerSigner(id.privateKey)(challenge);
  w.send({
    type: 'hello',
    protocol: PROTOCOL_VERSION,
    account: id.address,
    backend: 'wasm',
    capabilities: { backends: ['wasm'] },
    auth,
    ...extra,
  });
  await w.nextOf('welcome');
  return w;
}

async function simple(
  c: TestCoordinator,
  kind: string,
  make: (url: string, lease: LeaseMsg, n: number, w: RawWorker, s: Stats) => Promise<Made | null>,
  setup?: (w: RawWorker, s: Stats) => void | Promise<void>,
): Promise<Agent> {
  const w = await signedWorker(c.url, `adv-${kind}-${SEED}`);
  const s = newStats();
  await setup?.(w, s);
  return {
    kind,
    accounts: [w.account],
    stats: s,
    run: (stop) => workLoop(w, s, stop, (lease, n) => make(c.url, lease, n, w, s)),
    close: () => w.close(),
  };
}

/** Every attacker of the bench, connected and ready; `honest` is the honest worker's address. */
async function attackers(c: TestCoordinator, honest: string): Promise<Agent[]> {
  const url = c.url;
  const agents: Agent[] = [];
  agents.push(await simple(c, 'lazy', (u, l) => fakeRun(u, l)));
  agents.push(await simple(c, 'partial', (u, l) => partialRun(u, l)));
  agents.push(await simple(c, 'scaled', (u, l) => scaledRun(u, l)));
  {
    let first: Made | null = null;
    agents.push(
      await simple(c, 'replay', async (u, l) => {
        if (!first) {
          first = await honestRun(u, l);
          return first;
        }
        return { ...relabel(first, l), honest: false };
      }),
    );
  }
  {
    // Two accounts that derive the same fake bytes from a unit: when one audits the other, they agree.
    const a = await simple(c, 'sybil-a', (u, l) => fakeRun(u, l));
    const b = await simple(c, 'sybil-b', (u, l) => fakeRun(u, l));
    agents.push(pair('sybil pair', a, b));
  }
  {
    // Signs with its own key and names the honest worker as payTo, hoping its work is booked to the victim's account
    // (trust, forfeits, reveals); the note counts its submissions with payTo = the victim.
    const id = testIdentity(`adv-payto-${SEED}`);
    const w = await helloWith(url, id, { payTo: honest });
    const s = newStats();
    agents.push({
      kind: 'payTo hijack',
      accounts: [id.address],
      stats: s,
      run: (stop) =>
        workLoop(w, s, stop, (l) => {
          note(s, 'submitted with payTo = victim');
          return fakeRun(url, l);
        }),
      close: () => w.close(),
    });
  }
  agents.push(
    await simple(c, 'expired-lease capture', async (u, l, _n, _w, s) => {
      // Holds the unit past its deadline (it is reissued meanwhile), then submits real work for the expired lease.
      await sleep(Math.max(0, l.deadline - Date.now()) + 1_500);
      note(s, 'late submissions');
      // Real work, but for a lease that is no longer its own: nothing it is owed (fair pay 0).
      return { ...(await honestRun(u, l)), honest: false };
    }),
  );
  {
    // Offers a very low price (ranked first for work), raises its offer to far above the job's cap after each lease,
    // submits real work, and lowers it again for the next lease.
    const id = testIdentity(`adv-price-switch-${SEED}`);
    await postOffer(url, id, 0.01);
    const w = await signedWorker(url, id);
    const s = newStats();
    agents.push({
      kind: 'price switch',
      accounts: [id.address],
      stats: s,
      run: (stop) =>
        workLoop(
          w,
          s,
          stop,
          async (l) => {
            const r = await postOffer(url, id, MAX_PRICE * 100);
            note(s, `offer raise -> ${r.status}`);
            return honestRun(url, l);
          },
          async () => {
            await postOffer(url, id, 0.01);
          },
        ),
      close: () => w.close(),
    });
  }
  agents.push(
    await simple(
      c,
      'malformed reveal',
      (u, l) => partialRun(u, l),
      (w) => {
        // Answers every reveal with an envelope whose payload is not a state in the weights format.
        w.revealer = (req) => {
          w.ws.send(
            encodeResultEnvelope(
              { type: 'reveal', requestId: req.requestId, leaseId: req.leaseId, index: req.index },
              Uint8Array.from({ length: 333 }, (_, i) => (i * 37) & 0xff),
            ),
          );
          return 'silent';
        };
      },
    ),
  );
  agents.push(
    await simple(c, 'examples overflow', async (u, l) => {
      const m = await honestRun(u, l);
      // Real work, but claims 2^31-1 examples and 1e30 FLOP.
      return { ...m, header: { ...m.header, examples: 2 ** 31 - 1, flops: 1e30 } };
    }),
  );
  {
    // Asks for work again and again on one connection and never works: how many units can one client hold?
    const w = await signedWorker(url, `adv-hoarder-${SEED}`);
    const s = newStats();
    agents.push({
      kind: 'lease hoarding',
      accounts: [w.account],
      stats: s,
      run: async (stop) => {
        const held = new Set<string>();
        while (!stop() && w.ws.readyState === w.ws.OPEN) {
          const l = await w.tryLease(2_000).catch(() => null);
          if (l) held.add(l.leaseId);
          // Every lease it was ever given (expired ones included), not how many it held at once.
          s.notes['leases taken in all'] = held.size;
          await sleep(300);
        }
      },
      close: () => w.close(),
    });
  }
  {
    // A trains honestly and shares every result; B asks for work only right after A submitted (when the audit copy
    // of A's unit is on offer) and submits A's result whenever it holds the same unit; other units it trains honestly.
    const shared = new Map<string, Made>();
    const copied = new Set<string>();
    const key = (l: LeaseMsg) => `${l.unit.weightsHash}:${l.unit.dataSeed}`;
    let aSubmitted = 0;
    const a = await simple(c, 'copy-a', async (u, l) => {
      const m = await honestRun(u, l);
      shared.set(key(l), m);
      aSubmitted++;
      return m;
    });
    const bId = testIdentity(`adv-copy-b-${SEED}`);
    // The lowest offer of all ranks B first for the audit copy it asks for (its credit per unit is then tiny, so its
    // free share is counted in units, at equal price, below).
    await postOffer(url, bId, 0.001);
    const bw = await signedWorker(url, bId);
    const bs = newStats();
    const b: Agent = {
      kind: 'copy-b',
      accounts: [bId.address],
      stats: bs,
      run: async (stop) => {
        let seen = 0;
        while (!stop() && bw.ws.readyState === bw.ws.OPEN) {
          if (aSubmitted === seen) {
            await sleep(50);
            continue;
          }
          seen = aSubmitted;
          const l = await bw.tryLease(2_000).catch(() => null);
          if (!l) continue;
          const m = shared.get(key(l));
          if (m) {
            note(bs, 'copied');
            copied.add(l.leaseId);
            await submit(bw, bs, { ...relabel(m, l), honest: false });
          } else await submit(bw, bs, await honestRun(url, l));
        }
      },
      close: () => bw.close(),
    };
    const p = pair('copying partner', a, b);
    (p as Agent & { copied?: Set<string>; partner?: Agent }).copied = copied;
    (p as Agent & { copied?: Set<string>; partner?: Agent }).partner = a;
    agents.push(p);
  }
  {
    // Offers the lowest price (ranked first for every unit on offer), takes a lease and hands it straight back, again
    // and again: does the unit ever reach anyone else?
    const id = testIdentity(`adv-release-churn-${SEED}`);
    await postOffer(url, id, 0.0001);
    const w = await signedWorker(url, id);
    const s = newStats();
    agents.push({
      kind: 'release churn',
      accounts: [id.address],
      stats: s,
      run: async (stop) => {
        while (!stop() && w.ws.readyState === w.ws.OPEN) {
          const l = await w.tryLease(2_000).catch(() => null);
          if (!l) {
            await sleep(100);
            continue;
          }
          w.send({ type: 'release', leaseId: l.leaseId });
          note(s, 'released');
        }
      },
      close: () => w.close(),
    });
  }
  agents.push(
    await simple(
      c,
      'silent party',
      (u, l) => partialRun(u, l),
      (w) => {
        w.revealer = () => 'silent';
      },
    ),
  );
  {
    const id = testIdentity(`adv-turncoat-${SEED}`);
    // Earned trust before the run (100 valid results), works honestly once, then cheats.
    await c.db.query(
      `INSERT INTO account_trust (account, consecutive_valid, total_valid, failures, updated_at)
       VALUES ($1, 100, 100, 0, $2) ON CONFLICT (account) DO NOTHING`,
      [id.address, Date.now()],
    );
    const w = await signedWorker(url, id);
    const s = newStats();
    agents.push({
      kind: 'turncoat',
      accounts: [id.address],
      stats: s,
      run: (stop) => workLoop(w, s, stop, (l, n) => (n === 0 ? honestRun(url, l) : partialRun(url, l))),
      close: () => w.close(),
    });
  }
  {
    // Honest work, plus unsolicited reveal envelopes and reveal-errors every 50 ms.
    const base = await simple(c, 'reveal spam', (u, l) => honestRun(u, l));
    const w = await signedWorker(url, `adv-reveal-spam-side-${SEED}`);
    let i = 0;
    const spam = setInterval(() => {
      if (w.ws.readyState !== w.ws.OPEN) return;
      i++;
      w.ws.send(
        encodeResultEnvelope(
          { type: 'reveal', requestId: `spam-${i}`, leaseId: `l_${i}`, index: i % 4 },
          new Uint8Array(64 * 1024),
        ),
      );
      w.send({ type: 'reveal-error', requestId: `spam-${i}`, reason: 'x'.repeat(400) });
      note(base.stats, 'spam frames', 2);
    }, 50);
    agents.push({
      ...base,
      accounts: [...base.accounts, w.account],
      close: () => {
        clearInterval(spam);
        w.close();
        base.close();
      },
    });
  }
  {
    // Connects, says hello, takes a lease and drops the connection, over and over.
    const id = testIdentity(`adv-storm-${SEED}`);
    const s = newStats();
    agents.push({
      kind: 'reconnect storm',
      accounts: [id.address],
      stats: s,
      run: async (stop) => {
        const burst = QUICK ? 2 : 4;
        while (!stop()) {
          await Promise.all(
            Array.from({ length: burst }, async () => {
              const w = await signedWorker(url, id).catch(() => null);
              if (!w) return note(s, 'hello failed');
              note(s, 'connections');
              const l = await w.tryLease(1_000).catch(() => null);
              if (l) note(s, 'leases dropped');
              w.vanish();
            }),
          );
          await sleep(200);
        }
      },
      close: () => {},
    });
  }
  return agents;
}

function pair(kind: string, a: Agent, b: Agent): Agent {
  const stats = newStats();
  const merged = (): Stats => ({
    submitted: a.stats.submitted + b.stats.submitted,
    acked: a.stats.acked + b.stats.acked,
    rejected: a.stats.rejected + b.stats.rejected,
    honestLeases: new Set([...a.stats.honestLeases, ...b.stats.honestLeases]),
    notes: { ...a.stats.notes, ...b.stats.notes },
  });
  return {
    kind,
    accounts: [...a.accounts, ...b.accounts],
    get stats() {
      return Object.assign(stats, merged());
    },
    run: async (stop) => {
      await Promise.all([a.run(stop), b.run(stop)]);
    },
    close: () => {
      a.close();
      b.close();
    },
  };
}

// ---- one run -------------------------------------------------------------------------------------------------------

interface Row {
  attacker: string;
  submitted: number;
  acked: number;
  aggregated: number;
  earned: number;
  fairPay: number;
  net: number;
  forfeited: number;
  notes: Record<string, number>;
}

interface RunResult {
  store: StoreKind;
  /** Where a job that did not complete stood (units by status, active leases by holder). */
  stall?: string;
  adversarial: boolean;
  completed: boolean;
  status: string;
  accuracy: number;
  seconds: number;
  honest: { address: string; units: number; earned: number; forfeits: number; trustFailures: number };
  honestUnitPrice: number;
  rows: Row[];
  copying?: {
    copiesSubmitted: number;
    copiesPaid: number;
    aUnits: number;
    pairUnits: number;
    shareMeasured: number;
    shareAt100New: number;
    shareAt100Trusted: number;
  };
}

async function earnedOf(url: string, address: string): Promise<number> {
  const r = await fetch(`${url}/api/v1/accounts/${address}?limit=1`);
  if (!r.ok) return 0;
  const b = (await r.json()) as { balances: { pending: number; vested: number } };
  return b.balances.pending + b.balances.vested;
}

async function run(store: StoreKind, adversarial: boolean): Promise<RunResult> {
  const t0 = Date.now();
  const c = await startTestCoordinator(testStore(store));
  // Shorter verification waits than production (30 s / 20 s) so that a demo job ends in minutes.
  c.scheduler.verification.configure({ revealTimeoutMs: 5_000, selfAuditAfterMs: 3_000 });
  const honestId = testIdentity(`adv-honest-${SEED}`);
  const honest = await signedWorker(c.url, honestId);
  const hs = newStats();
  const all = adversarial ? await attackers(c, honestId.address) : [];
  const agents = all.filter((a) => !WITHOUT.has(a.kind));
  for (const a of all) if (WITHOUT.has(a.kind)) a.close();
  let done = false;
  const stop = () => done;
  const init = await ownWeights(c, await seededInit(mnistMlpModel(HIDDEN), SEED));
  const job = await postJob(c.url, jobSpec(adversarial ? 'adversary' : 'clean', init));
  const loops = [
    workLoop(honest, hs, stop, (l) => honestRun(c.url, l)),
    ...agents.map((a) => a.run(stop).catch((err) => note(a.stats, `crashed: ${String(err).slice(0, 60)}`))),
  ];
  const label = new Map<string, string>([[honestId.address, 'honest']]);
  for (const a of agents) for (const x of a.accounts) label.set(x, a.kind);
  let view = await getJob(c.url, job.id);
  const end = Date.now() + JOB_TIMEOUT_MS;
  let nextLog = Date.now() + 30_000;
  let stall: string | undefined;
  while (Date.now() < end && !['completed', 'failed', 'cancelled'].includes(view.status)) {
    await sleep(500);
    view = await getJob(c.url, job.id);
    if (Date.now() > nextLog) {
      nextLog += 30_000;
      stall = await snapshot(c, job.id, label);
      console.log(
        `    ${Math.round((Date.now() - t0) / 1000)} s: round ${view.round}, ${view.unitsDone} units done; ${stall}`,
      );
    }
  }
  // Disputes and forfeits of the last round settle after it aggregates: give them time, with everyone still online.
  await sleep(adversarial ? 8_000 : 1_000);
  done = true;
  await Promise.race([Promise.all(loops), sleep(20_000)]);
  for (const a of agents) a.close();
  honest.close();
  await sleep(1_000);

  const accepted = async (accounts: string[]) =>
    (
      await c.db.query<{ lease_id: string; account: string }>(
        `SELECT lease_id, account FROM results WHERE job_id = $1 AND status = 'accepted' AND account = ANY($2)`,
        [job.id, accounts],
      )
    ).rows;
  // Results that were credited (whatever became of them later): what fair pay is counted on.
  const credited = async (accounts: string[]) =>
    (
      await c.db.query<{ lease_id: string; amount: number }>(
        `SELECT r.lease_id, k.amount FROM ledger_credits k JOIN results r ON r.id = k.result_id
         WHERE k.job_id = $1 AND k.worker = ANY($2)`,
        [job.id, accounts],
      )
    ).rows;
  const honestAccepted = await accepted([honestId.address]);
  const honestEarned = await earnedOf(c.url, honestId.address);
  // The honest worker's credit per unit, forfeited ones included (what one unit of honest work is priced at).
  const honestPaid = await credited([honestId.address]);
  const honestUnitPrice =
    honestPaid.length > 0 ? honestPaid.reduce((x, r) => x + Number(r.amount), 0) / honestPaid.length : 0;
  const forfeits = await c.db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM ledger_credits WHERE worker = $1 AND status = 'forfeited'`,
    [honestId.address],
  );
  const trust = await c.db.query<{ failures: number }>('SELECT failures FROM account_trust WHERE account = $1', [
    honestId.address,
  ]);
  const rows: Row[] = [];
  let copying: RunResult['copying'];
  for (const a of agents) {
    const acc = await accepted(a.accounts);
    const earned = (await Promise.all(a.accounts.map((x) => earnedOf(c.url, x)))).reduce((x, y) => x + y, 0);
    const paid = await credited(a.accounts);
    // A unit it really trained is fair at the honest worker's rate, or at less if it was paid less (a low offer).
    const fairPay = paid
      .filter((r) => a.stats.honestLeases.has(r.lease_id))
      .reduce((sum, r) => sum + Math.min(Number(r.amount), honestUnitPrice), 0);
    const forfeited = await c.db.query<{ n: number }>(
      `SELECT coalesce(sum(amount), 0)::bigint AS n FROM ledger_credits WHERE worker = ANY($1) AND status = 'forfeited'`,
      [a.accounts],
    );
    const st = a.stats;
    rows.push({
      attacker: a.kind,
      submitted: st.submitted,
      acked: st.acked,
      aggregated: acc.length,
      earned,
      fairPay,
      net: earned - fairPay,
      forfeited: Number(forfeited.rows[0].n),
      notes: st.notes,
    });
    const extra = a as Agent & { copied?: Set<string>; partner?: Agent };
    if (extra.copied && extra.partner) {
      // B's free credit: its copies of A's results that were credited, as a share of the pair's credited units here
      // (B asks for work right after A submits, when A's audit copy is on offer, and is ranked first by its offer). Modelled for FLEET workers online with
      // the auditor drawn at random among the others: a unit of A gets a copy from B with probability
      // p_audit / (FLEET - 1), accepted at the rate measured here; the free share of the pair is f / (1 + f).
      const copiesPaid = paid.filter((r) => extra.copied!.has(r.lease_id)).length;
      const aUnits = (await credited(extra.partner.accounts)).length;
      const acceptRate = extra.copied.size > 0 ? copiesPaid / extra.copied.size : 0;
      const f = (p: number) => (p * acceptRate) / (FLEET - 1);
      copying = {
        copiesSubmitted: extra.copied.size,
        copiesPaid,
        aUnits,
        pairUnits: paid.length,
        shareMeasured: paid.length > 0 ? copiesPaid / paid.length : 0,
        shareAt100New: f(1) / (1 + f(1)),
        shareAt100Trusted: f(0.1) / (1 + f(0.1)),
      };
    }
  }
  view = await getJob(c.url, job.id);
  await c.destroy();
  return {
    store,
    adversarial,
    stall: view.status === 'completed' ? undefined : stall,
    completed: view.status === 'completed',
    status: `${view.status}, round ${view.round} of ${view.rounds}`,
    accuracy: view.metrics.at(-1)?.accuracy ?? 0,
    seconds: (Date.now() - t0) / 1000,
    honest: {
      address: honestId.address,
      units: honestAccepted.length,
      earned: honestEarned,
      forfeits: Number(forfeits.rows[0].n),
      trustFailures: Number(trust.rows[0]?.failures ?? 0),
    },
    honestUnitPrice,
    rows,
    copying,
  };
}

/** Units of the current round by status, and who holds the active leases: where a slow job waits. */
async function snapshot(c: TestCoordinator, jobId: string, label: Map<string, string>): Promise<string> {
  const units = await c.db.query<{ status: string; n: number; attempts: number }>(
    `SELECT status, count(*)::int AS n, max(attempts)::int AS attempts FROM units
     WHERE job_id = $1 AND round = (SELECT max(round) FROM units WHERE job_id = $1) GROUP BY status`,
    [jobId],
  );
  const leases = await c.db.query<{ account: string; n: number }>(
    `SELECT account, count(*)::int AS n FROM leases WHERE job_id = $1 AND status = 'active' GROUP BY account`,
    [jobId],
  );
  const u = units.rows.map((r) => `${r.n} ${r.status} (max ${r.attempts} attempts)`).join(', ');
  const l = leases.rows.map((r) => `${label.get(r.account) ?? r.account.slice(0, 8)} ${r.n}`).join(', ');
  return `units ${u}; active leases: ${l || 'none'}`;
}

// ---- main ----------------------------------------------------------------------------------------------------------

function table(r: RunResult): string {
  const head = ['attacker', 'submitted', 'acked', 'aggregated', 'earned', 'fair pay', 'net', 'forfeited', 'notes'];
  const lines = r.rows.map((x) => [
    x.attacker,
    String(x.submitted),
    String(x.acked),
    String(x.aggregated),
    String(x.earned),
    String(Math.round(x.fairPay)),
    String(Math.round(x.net)),
    String(x.forfeited),
    Object.entries(x.notes)
      .map(([k, v]) => `${k} ${v}`)
      .join(', '),
  ]);
  const w = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
  const fmt = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(w[i]))).join('  ');
  return [fmt(head), ...lines.map(fmt)].join('\n');
}

await tf.setBackend('wasm');
await tf.ready();
const failures: string[] = [];
const out: { store: StoreKind; clean: RunResult; attack: RunResult }[] = [];
const started = Date.now();
for (const store of STORES) {
  console.log(`bench:adversary ${QUICK ? '(quick) ' : ''}on ${store}: clean run…`);
  const clean = await run(store, false);
  console.log(
    `  clean: ${clean.status}, accuracy ${(100 * clean.accuracy).toFixed(2)}%, ${clean.seconds.toFixed(0)} s`,
  );
  console.log(`bench:adversary on ${store}: honest worker + attackers…`);
  const attack = await run(store, true);
  out.push({ store, clean, attack });
  console.log(
    `  attack: ${attack.status}, accuracy ${(100 * attack.accuracy).toFixed(2)}%, ${attack.seconds.toFixed(0)} s; honest: ${attack.honest.units} units, earned ${attack.honest.earned} micro-credits (${attack.honestUnitPrice.toFixed(1)}/unit), forfeits ${attack.honest.forfeits}, trust failures ${attack.honest.trustFailures}`,
  );
  console.log(
    '  credits in micro-credits; net = earned - fair pay (honest credit per unit, or less, for each credited unit it really trained)',
  );
  console.log(table(attack).replace(/^/gm, '  '));
  if (attack.stall) console.log(`  stalled: ${attack.stall}`);
  if (attack.copying) {
    const k = attack.copying;
    const pct = (x: number) => `${(100 * x).toFixed(2)}%`;
    console.log(
      `  copying partner: ${k.copiesPaid} of ${k.copiesSubmitted} copies credited; ${pct(k.shareMeasured)} of the pair's ${k.pairUnits} credited units free here (asks for work right after its partner submits, lowest offer); modelled with ${FLEET} online and random auditors: ${pct(k.shareAt100New)} (new accounts, p_audit 1), ${pct(k.shareAt100Trusted)} (trusted, p_audit 0.1)`,
    );
  }
  const f = (s: string) => failures.push(`${store}: ${s}`);
  if (!attack.completed) f(`job did not complete (${attack.status})`);
  if (!clean.completed) f(`clean job did not complete (${clean.status})`);
  if (Math.abs(attack.accuracy - clean.accuracy) > 0.01)
    f(`accuracy ${(100 * attack.accuracy).toFixed(2)}% vs clean ${(100 * clean.accuracy).toFixed(2)}%`);
  if (attack.honest.forfeits > 0) f(`honest worker lost ${attack.honest.forfeits} credited units to forfeits`);
  if (attack.honest.trustFailures > 0) f(`honest worker has ${attack.honest.trustFailures} trust failures`);
  for (const r of attack.rows) if (r.net > 0) f(`${r.attacker} net credit ${Math.round(r.net)} > 0`);
}
mkdirSync('bench/results', { recursive: true });
const file = `bench/results/adversary-${new Date().toISOString().replace(/[:.]/g, '-')}.json`;
writeFileSync(
  file,
  `${JSON.stringify({ quick: QUICK, seed: SEED, rounds: ROUNDS, unitsPerRound: UNITS_PER_ROUND, steps: STEPS, batch: BATCH, hidden: HIDDEN, runs: out, failures, seconds: (Date.now() - started) / 1000 }, null, 2)}\n`,
);
console.log(`wrote ${file} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
if (failures.length > 0) {
  console.log(`DOES NOT HOLD:\n${failures.map((x) => `  - ${x}`).join('\n')}`);
  process.exit(1);
}
console.log('holds');
process.exit(0);
