/**
 * bench:verify — an adversarial, in-process simulation of the verification layer with real training.
 *
 *   npm run bench:verify              full run (~6-9 minutes on 2 cores)
 *   npm run bench:verify -- --quick   ~1 minute, same code paths, smaller numbers (no docs update)
 *   npm run bench:verify -- --docs-only   rewrite the docs section from bench/results/verify.json
 *
 * What it does:
 *  1. fleet: DiLoCo rounds of a 784-32-10 MNIST MLP. 30 workers, 30% adversarial (lazy, stale, half, scaled, poison,
 *     turncoat, a sybil pair, copycat); honest workers alternate cpu and wasm tfjs backends. Every result goes
 *     through the cheap checks, the trust policy draws audits, audits are settled by VerificationEngine (compare, spot
 *     check, bisection + referee), losers lose their unvested credits. Rounds aggregate with the robust aggregation.
 *  2. clean: the same rounds with only honest workers, for the accuracy comparison.
 *  3. honest audits: many small cpu-vs-wasm unit pairs run through cheap checks + settleAudit, to count false positives.
 *  4. turncoat sampling: the audit-sampling process alone, over many seeds (no training needed).
 *  5. webgpu (optional): a few wasm-vs-webgpu pairs when a WebGPU adapter exists.
 *
 * Writes a table to stdout, bench/results/verify.json, and the `## bench:verify` section of docs/BENCHMARKS.md.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { buildMnistDataset } from '../coordinator/store/builtin/mnist.js';
import { type JobVerificationPolicy, type UnitContext, VerificationEngine } from '../coordinator/verify/engine.js';
import { TrainUnitReferee } from '../coordinator/verify/referee.js';
import { assignExamples, deriveDataSeed, mulberry32 } from '../shared/train/assign.js';
import { evaluateModel, forwardLoss } from '../shared/train/evaluate.js';
import { outerStep } from '../shared/train/outer-optimizer.js';
import { mnistMlpModel } from '../shared/train/templates.js';
import { trainUnit } from '../shared/train/train-unit.js';
import type { Dataset, TrainUnitOutput, TrainUnitSpec, WeightSet } from '../shared/train/types.js';
import { hashWeights, subtractWeights, weightsNorm } from '../shared/train/weights-format.js';
import { type AggregateOptions, aggregateDeltas } from '../shared/verify/aggregate.js';
import type { DisputeParty } from '../shared/verify/bisect.js';
import { cheapCheck } from '../shared/verify/cheap-checks.js';
import { relativeDistance } from '../shared/verify/distance.js';
import { DEFAULT_TOLERANCE } from '../shared/verify/tolerance.js';
import {
  auditProbability,
  DEFAULT_MIN_AUDIT_PROBABILITY,
  newTrust,
  recordFailure,
  recordValid,
  TRUSTED_AFTER,
  type TrustState,
} from '../shared/verify/trust.js';
import { seededInit } from './seeded-init.js';

// ---- configuration ---------------------------------------------------------------------------------------------

const QUICK = process.argv.includes('--quick');
const SKIP_WEBGPU = process.argv.includes('--no-webgpu');
const SEED = 20261126;
const HIDDEN = 32;
const H = 32;
const K = 4;
const B = 32;
const ROUNDS = QUICK ? 3 : 12;
/** Units per round: a random 20 of the 30 workers get one each (a rejected unit is reissued). */
const UNITS_PER_ROUND = 20;
const HONEST_WORKERS = 21;
const HONEST_PAIRS_TARGET = QUICK ? 40 : 1000;
const PAIR_STEPS = 8;
const PAIR_K = 1;
const PAIR_B = 16;
const TURNCOAT_SEEDS = 10_000;
const TURNCOAT_WINDOW = 50;
const VESTING_ROUNDS = 4;
const MAX_REAUDITS = 3;
const TAU = DEFAULT_TOLERANCE;
const JOB: JobVerificationPolicy = { minAuditProbability: DEFAULT_MIN_AUDIT_PROBABILITY, tolerance: TAU };
const AGGREGATION: AggregateOptions = { method: 'trimmed', trimFraction: 0.2, clipFactor: 3 };
const OUTER = { learningRate: 0.7, momentum: 0.9, nesterov: true };
const SPEC: TrainUnitSpec = {
  steps: H,
  batchSize: B,
  checkpointEvery: K,
  optimizer: { type: 'sgd', learningRate: 0.1 },
  loss: 'categoricalCrossentropy',
};
const POISON_EPS = [1e-1, 1e-2, 1e-3, 3 * TAU, TAU / 2];
/** Coordinator-side work (cheap checks, referee, evaluation) runs on wasm, as the coordinator does. */
const COORDINATOR_BACKEND = 'wasm';

type Backend = 'cpu' | 'wasm' | 'webgpu';
type Kind = 'honest' | 'lazy' | 'stale' | 'half' | 'scaled' | 'poison' | 'turncoat' | 'sybil' | 'copycat';

interface Worker {
  account: string;
  address: string;
  kind: Kind;
  backend: Backend;
  trust: TrustState;
  /** Credits: pending (round earned) and vested. */
  pending: { round: number; cheated: boolean }[];
  vested: number;
  vestedCheated: number;
  forfeited: number;
  /** Last submission (stale replays it, copycat copies others'). */
  last?: Submission;
  unitsDone: number;
}

interface Submission {
  worker: Worker;
  /** Row label in the report (poison rows carry their eps). */
  row: string;
  cheated: boolean;
  delta: WeightSet;
  deltaHash: string;
  checkpoints: string[];
  losses: number[];
  states: WeightSet[] | null;
  /** Result for a lease the worker does not hold (the gateway's token check rejects it). */
  foreignLease?: boolean;
  /** Steps of training the worker actually ran (what the cheat saved). */
  stepsRun: number;
  ms: number;
}

// ---- helpers ---------------------------------------------------------------------------------------------------

const rngState = mulberry32(SEED);
const rand = () => rngState() / 4294967296;

async function useBackend(name: Backend | string): Promise<void> {
  if (tf.getBackend() !== name) {
    await tf.setBackend(name);
    await tf.ready();
  }
}

function clone(w: WeightSet): WeightSet {
  return { names: w.names.slice(), shapes: w.shapes.map((s) => s.slice()), data: w.data.map((d) => d.slice()) };
}

function weightsPart(state: WeightSet, n: number): WeightSet {
  return { names: state.names.slice(0, n), shapes: state.shapes.slice(0, n), data: state.data.slice(0, n) };
}

/** A state whose weights part is replaced (slots kept). */
function withWeights(state: WeightSet, weights: WeightSet): WeightSet {
  const n = weights.data.length;
  return { ...state, data: [...weights.data.map((d) => d.slice()), ...state.data.slice(n).map((d) => d.slice())] };
}

/** start + f x (w - start), per element in float32. */
function lerp(start: WeightSet, w: WeightSet, f: number): WeightSet {
  return {
    names: w.names.slice(),
    shapes: w.shapes.map((s) => s.slice()),
    data: w.data.map((d, t) => {
      const s = start.data[t];
      const out = new Float32Array(d.length);
      for (let i = 0; i < d.length; i++) out[i] = s[i] + f * (d[i] - s[i]);
      return out;
    }),
  };
}

function fmtPct(x: number): string {
  return Number.isFinite(x) ? `${(100 * x).toFixed(1)}%` : 'n/a';
}

function now(): number {
  return performance.now();
}

// ---- the unit world --------------------------------------------------------------------------------------------

interface UnitWorld {
  model: object;
  dataset: Dataset;
  spec: TrainUnitSpec;
  start: WeightSet;
  indices: Int32Array;
  unitId: string;
}

async function honestRun(w: UnitWorld, backend: Backend): Promise<TrainUnitOutput> {
  await useBackend(backend);
  return trainUnit({
    model: w.model,
    spec: w.spec,
    startWeights: w.start,
    dataset: w.dataset,
    indices: w.indices,
    keepCheckpointStates: true,
  });
}

function fromOutput(worker: Worker, row: string, cheated: boolean, o: TrainUnitOutput, ms: number): Submission {
  return {
    worker,
    row,
    cheated,
    delta: o.delta,
    deltaHash: o.deltaHash,
    checkpoints: o.checkpoints,
    losses: o.losses,
    states: o.checkpointStates ?? null,
    stepsRun: o.losses.length,
    ms,
  };
}

/** Builds a submission whose committed final state is `finalState` and whose delta is bound to it exactly. */
function withFinalState(
  worker: Worker,
  row: string,
  w: UnitWorld,
  states: WeightSet[],
  losses: number[],
  stepsRun: number,
  ms: number,
): Submission {
  const n = w.start.data.length;
  const delta = subtractWeights(weightsPart(states[states.length - 1], n), w.start);
  return {
    worker,
    row,
    cheated: true,
    delta,
    deltaHash: hashWeights(delta),
    checkpoints: states.map(hashWeights),
    losses,
    states,
    stepsRun,
    ms,
  };
}

/** Lazy: no training at all. Alternates an all-zero delta and a random one, with a made-up falling loss curve. */
function lazyResult(worker: Worker, w: UnitWorld): Submission {
  const zero = worker.unitsDone % 2 === 0;
  const next = mulberry32(worker.unitsDone + 17);
  const delta: WeightSet = {
    names: w.start.names.slice(),
    shapes: w.start.shapes.map((s) => s.slice()),
    data: w.start.data.map((d) =>
      zero ? new Float32Array(d.length) : Float32Array.from(d, () => (next() / 2 ** 32 - 0.5) * 0.02),
    ),
  };
  const S = Math.ceil(w.spec.steps / w.spec.checkpointEvery);
  return {
    worker,
    row: 'lazy',
    cheated: true,
    delta,
    deltaHash: hashWeights(delta),
    checkpoints: Array.from({ length: S }, (_, i) =>
      hashWeights({ names: ['x'], shapes: [[1]], data: [Float32Array.of(i + next())] }),
    ),
    losses: Array.from({ length: w.spec.steps }, (_, s) => 2.3 * 0.97 ** s),
    states: null,
    stepsRun: 0,
    ms: 0,
  };
}

/** Half: trains half the steps and doubles the delta; later checkpoints are extrapolated states. */
async function halfResult(worker: Worker, row: string, w: UnitWorld): Promise<Submission> {
  const t0 = now();
  await useBackend(worker.backend);
  const half = w.spec.steps / 2;
  const o = await trainUnit({
    model: w.model,
    spec: w.spec,
    startWeights: w.start,
    dataset: w.dataset,
    indices: w.indices,
    toStep: half,
    keepCheckpointStates: true,
  });
  const honestStates = o.checkpointStates!;
  const S = Math.ceil(w.spec.steps / w.spec.checkpointEvery);
  const halfState = honestStates[honestStates.length - 1];
  const n = w.start.data.length;
  const states = [...honestStates];
  for (let j = honestStates.length + 1; j <= S; j++) {
    states.push(withWeights(halfState, lerp(w.start, weightsPart(halfState, n), j / honestStates.length)));
  }
  return withFinalState(worker, row, w, states, [...o.losses, ...o.losses], half, now() - t0);
}

/** Scaled: honest training, delta x 1.1, with the final commitment moved to match. */
async function scaledResult(worker: Worker, w: UnitWorld): Promise<Submission> {
  const t0 = now();
  const o = await honestRun(w, worker.backend);
  const states = [...o.checkpointStates!];
  states[states.length - 1] = withWeights(states[states.length - 1], lerp(w.start, o.finalWeights, 1.1));
  return withFinalState(worker, 'scaled', w, states, o.losses, w.spec.steps, now() - t0);
}

/**
 * Poison: honest up to a random checkpoint boundary, then a targeted nudge (output kernel column and bias of class
 * 7) of relative size eps (relative to the expected final delta norm), then honest training from the nudged state.
 */
async function poisonResult(worker: Worker, w: UnitWorld, eps: number): Promise<Submission> {
  const t0 = now();
  await useBackend(worker.backend);
  const S = Math.ceil(w.spec.steps / w.spec.checkpointEvery);
  const j = 1 + Math.floor(rand() * (S - 1)); // inject after state j, 1..S-1
  const at = j * w.spec.checkpointEvery;
  const head = await trainUnit({
    model: w.model,
    spec: w.spec,
    startWeights: w.start,
    dataset: w.dataset,
    indices: w.indices,
    toStep: at,
    keepCheckpointStates: true,
  });
  const state = clone(head.checkpointStates![head.checkpointStates!.length - 1]);
  const n = w.start.data.length;
  const deltaSoFar = weightsNorm(subtractWeights(weightsPart(state, n), w.start));
  const size = eps * deltaSoFar * (w.spec.steps / at);
  const kernel = state.names.indexOf('output/kernel');
  const bias = state.names.indexOf('output/bias');
  const rows = state.shapes[kernel][0];
  const cols = state.shapes[kernel][1];
  const per = size / Math.sqrt(rows + 1);
  for (let r = 0; r < rows; r++) state.data[kernel][r * cols + 7] += per;
  state.data[bias][7] += per;
  const tail = await trainUnit({
    model: w.model,
    spec: w.spec,
    startWeights: w.start,
    dataset: w.dataset,
    indices: w.indices,
    fromStep: at,
    fromState: state,
    keepCheckpointStates: true,
  });
  const states = [...head.checkpointStates!.slice(0, -1), state, ...tail.checkpointStates!];
  return withFinalState(
    worker,
    `poison ${fmtEps(eps)}`,
    w,
    states,
    [...head.losses, ...tail.losses],
    w.spec.steps,
    now() - t0,
  );
}

function fmtEps(eps: number): string {
  if (Math.abs(eps - 10 * TAU) < 1e-12) return '1e-3 (10 tau)';
  if (Math.abs(eps - 3 * TAU) < 1e-12) return '3 tau';
  if (Math.abs(eps - TAU / 2) < 1e-12) return 'tau/2 (below tolerance)';
  return eps.toExponential(0);
}

/**
 * Sybil fake: no training. losses[0] is computed exactly (a forward pass), the rest repeat it with noise, the delta is
 * a small random vector and the checkpoints hash made-up intermediate states. Both accounts derive the same bytes
 * from the unit, so when they hold the same unit their results are identical.
 */
async function sybilResult(worker: Worker, w: UnitWorld): Promise<Submission> {
  const t0 = now();
  await useBackend(worker.backend);
  const l0 = await forwardLoss(w.model, w.start, w.dataset, w.indices.subarray(0, w.spec.batchSize), w.spec.loss);
  const next = mulberry32(w.indices[0] * 7 + w.indices[1]);
  const scale = (0.05 * weightsNorm(w.start)) / Math.sqrt(w.start.data.reduce((a, d) => a + d.length, 0));
  const target: WeightSet = {
    ...clone(w.start),
    data: w.start.data.map((d) => Float32Array.from(d, (v) => v + (next() / 2 ** 32 - 0.5) * scale)),
  };
  const S = Math.ceil(w.spec.steps / w.spec.checkpointEvery);
  const states = Array.from({ length: S }, (_, j) => lerp(w.start, target, (j + 1) / S));
  const losses = Array.from({ length: w.spec.steps }, (_, s) =>
    s === 0 ? l0 : l0 * (1 + (next() / 2 ** 32 - 0.5) * 0.02),
  );
  return withFinalState(worker, 'sybil pair', w, states, losses, 0, now() - t0);
}

// ---- the fleet simulation --------------------------------------------------------------------------------------

interface RowStats {
  submitted: number;
  cheated: number;
  caughtByCheapCheck: number;
  audited: number;
  detectedWhenAudited: number;
  detected: number;
  firstDetectionAfter: number | null;
  cheatedSoFar: number;
  stepsSaved: number;
}

function newRow(): RowStats {
  return {
    submitted: 0,
    cheated: 0,
    caughtByCheapCheck: 0,
    audited: 0,
    detectedWhenAudited: 0,
    detected: 0,
    firstDetectionAfter: null,
    cheatedSoFar: 0,
    stepsSaved: 0,
  };
}

interface Costs {
  usefulSteps: number;
  usefulMs: number;
  auditSteps: number;
  auditMs: number;
  refereeSteps: number;
  refereeMs: number;
  cheapForwardExamples: number;
  cheapMs: number;
  reissueSteps: number;
}

function newCosts(): Costs {
  return {
    usefulSteps: 0,
    usefulMs: 0,
    auditSteps: 0,
    auditMs: 0,
    refereeSteps: 0,
    refereeMs: 0,
    cheapForwardExamples: 0,
    cheapMs: 0,
    reissueSteps: 0,
  };
}

interface FleetResult {
  accuracy: number[];
  rows: Map<string, RowStats>;
  honestAudits: { pairs: number; crossBackend: number; falsePositives: number; worstDistance: number };
  honestCheapFalsePositives: number;
  /** Honest results a statistical cheap check flagged: audited, never refused. */
  honestSuspects: number;
  honestUnits: number;
  all: Costs;
  steady: Costs;
  disputes: { count: number; refereeSteps: number; segments: number; reveals: number };
  spotChecks: { count: number; failed: number; refereeSteps: number };
  credits: Map<string, { kind: Kind; vested: number; vestedCheated: number; pending: number; forfeited: number }>;
  ms: number;
}

function makeWorkers(adversarial: boolean): Worker[] {
  const workers: Worker[] = [];
  const veteran = (): TrustState => {
    const cv = TRUSTED_AFTER + Math.floor(rand() * 40);
    return { consecutiveValid: cv, totalValid: cv, failures: 0 };
  };
  for (let i = 0; i < HONEST_WORKERS; i++) {
    // A third on cpu (slow), the rest on wasm: every audit pair is as likely as not to cross backends.
    workers.push(newWorker(`honest-${i}`, 'honest', i % 3 === 0 ? 'cpu' : 'wasm', veteran()));
  }
  const kinds: Kind[] = ['lazy', 'stale', 'half', 'scaled', 'poison', 'turncoat', 'sybil', 'sybil', 'copycat'];
  kinds.forEach((kind, i) => {
    const backend: Backend = i % 2 === 0 ? 'wasm' : 'cpu';
    if (!adversarial) {
      workers.push(newWorker(`honest-${HONEST_WORKERS + i}`, 'honest', backend, veteran()));
      return;
    }
    // The turncoat has earned its trust (TRUSTED_AFTER+ valid units before the run); the others are new accounts.
    const trust = kind === 'turncoat' ? veteran() : newTrust();
    workers.push(newWorker(`${kind}-${i}`, kind, backend, trust));
  });
  return workers;
}

function newWorker(account: string, kind: Kind, backend: Backend, trust: TrustState): Worker {
  return {
    account,
    // Every account on its own address: the worst case for the sybil pair (the address rule does not separate it).
    address: `addr-${account}`,
    kind,
    backend,
    trust,
    pending: [],
    vested: 0,
    vestedCheated: 0,
    forfeited: 0,
    unitsDone: 0,
  };
}

async function produce(worker: Worker, w: UnitWorld, round: number, recent: Submission[]): Promise<Submission> {
  const t0 = now();
  switch (worker.kind) {
    case 'honest':
      return fromOutput(worker, 'honest', false, await honestRun(w, worker.backend), now() - t0);
    case 'lazy':
      return lazyResult(worker, w);
    case 'stale': {
      if (worker.last && worker.last.stepsRun > 0)
        return { ...worker.last, row: 'stale', cheated: true, stepsRun: 0, ms: 0 };
      return fromOutput(worker, 'stale', false, await honestRun(w, worker.backend), now() - t0);
    }
    case 'half':
      return halfResult(worker, 'half', w);
    case 'scaled':
      return scaledResult(worker, w);
    case 'poison':
      return poisonResult(worker, w, POISON_EPS[worker.unitsDone % POISON_EPS.length]);
    case 'turncoat':
      // Cheats (half the work) from round 1 on, once trusted; it earned its trust before the run.
      if (round >= 1 && worker.trust.consecutiveValid >= TRUSTED_AFTER) return halfResult(worker, 'turncoat', w);
      return fromOutput(worker, 'turncoat', false, await honestRun(w, worker.backend), now() - t0);
    case 'sybil':
      return sybilResult(worker, w);
    case 'copycat': {
      const victim = recent.find((s) => s.worker !== worker && !s.cheated && s.states);
      if (worker.unitsDone % 3 === 2 || !victim) {
        // A result for a lease it does not hold: the lease token does not match.
        const o = victim ?? lazyResult(worker, w);
        return { ...o, worker, row: 'copycat', cheated: true, foreignLease: true, stepsRun: 0, ms: 0 };
      }
      return { ...victim, worker, row: 'copycat', cheated: true, stepsRun: 0, ms: 0 };
    }
  }
}

function asParty(s: Submission): DisputeParty & { deltaHash: string; delta: WeightSet } {
  return {
    account: s.worker.account,
    checkpoints: s.checkpoints,
    delta: s.delta,
    deltaHash: s.deltaHash,
    reveal: async (i) => {
      const state = s.states?.[i];
      if (!state) throw new Error('no such state kept');
      return state;
    },
  };
}

async function runFleet(
  model: object,
  dataset: Dataset,
  init: WeightSet,
  adversarial: boolean,
  log: (s: string) => void,
): Promise<FleetResult> {
  const t0 = now();
  const workers = makeWorkers(adversarial);
  const engine = new VerificationEngine({ rng: rand, revealTimeoutMs: 5_000 });
  const rows = new Map<string, RowStats>();
  const row = (name: string) => {
    let r = rows.get(name);
    if (!r) {
      r = newRow();
      rows.set(name, r);
    }
    return r;
  };
  const all = newCosts();
  const steady = newCosts();
  const honestAudits = { pairs: 0, crossBackend: 0, falsePositives: 0, worstDistance: 0 };
  let honestCheapFalsePositives = 0;
  let honestSuspects = 0;
  let honestUnits = 0;
  const disputes = { count: 0, refereeSteps: 0, segments: 0, reveals: 0 };
  const spotChecks = { count: 0, failed: 0, refereeSteps: 0 };
  const accuracy: number[] = [];
  let params = clone(init);
  let momentum: WeightSet | null = null;

  const penalize = (worker: Worker, round: number) => {
    worker.trust = recordFailure(worker.trust);
    // Forfeiture: every unvested credit of the loser is gone.
    worker.forfeited += worker.pending.length;
    worker.pending = [];
    void round;
  };
  const credit = (worker: Worker, round: number, cheated: boolean) => {
    worker.pending.push({ round, cheated });
  };
  const vest = (round: number) => {
    for (const w of workers) {
      const keep: typeof w.pending = [];
      for (const p of w.pending) {
        if (round - p.round >= VESTING_ROUNDS) {
          w.vested++;
          if (p.cheated) w.vestedCheated++;
        } else keep.push(p);
      }
      w.pending = keep;
    }
  };
  const noteDetection = (s: Submission) => {
    const r = row(s.row);
    r.detected++;
    if (r.firstDetectionAfter === null) r.firstDetectionAfter = r.cheatedSoFar;
  };

  for (let round = 0; round < ROUNDS; round++) {
    const order = workers
      .map((w) => ({ w, key: rand() }))
      .sort((x, y) => x.key - y.key)
      .slice(0, UNITS_PER_ROUND)
      .map((x) => x.w);
    const accepted: WeightSet[] = [];
    const recent: Submission[] = [];
    for (let u = 0; u < order.length; u++) {
      const worker = order[u];
      const unitId = `r${round}u${u}`;
      const world: UnitWorld = {
        model,
        dataset,
        spec: SPEC,
        start: params,
        indices: assignExamples(deriveDataSeed(SEED, round, u), H, B, dataset.trainExamples),
        unitId,
      };
      const steadyUnit = worker.kind === 'honest' && worker.trust.consecutiveValid >= TRUSTED_AFTER;
      const costs = [all, ...(steadyUnit ? [steady] : [])];
      // The audit is drawn at lease time (blind), before the result exists.
      const audit = engine.shouldAudit(worker.trust, JOB);
      const sub = await produce(worker, world, round, recent);
      worker.unitsDone++;
      worker.last = sub;
      const r = row(sub.row);
      r.submitted++;
      if (sub.cheated) {
        r.cheated++;
        r.cheatedSoFar++;
        r.stepsSaved += H - sub.stepsRun;
      }
      if (!sub.cheated) {
        for (const c of costs) {
          c.usefulSteps += H;
          c.usefulMs += sub.ms;
        }
      }
      if (worker.kind === 'honest') honestUnits++;

      // 1. The gateway: a result must come with the lease's token.
      if (sub.foreignLease) {
        r.caughtByCheapCheck++;
        noteDetection(sub);
        penalize(worker, round);
        accepted.push(await reissue(world, all));
        continue;
      }
      // 2. Cheap checks on every result.
      await useBackend(COORDINATOR_BACKEND);
      const tc = now();
      const cheap = await cheapCheck({
        model,
        dataset,
        loss: SPEC.loss,
        steps: H,
        batchSize: B,
        checkpointEvery: K,
        indices: world.indices,
        startWeights: params,
        delta: sub.delta,
        checkpoints: sub.checkpoints,
        losses: sub.losses,
      });
      for (const c of costs) {
        c.cheapMs += now() - tc;
        c.cheapForwardExamples += cheap.forwardExamples;
      }
      if (!cheap.ok && sub.cheated) {
        r.caughtByCheapCheck++;
      }
      if (!cheap.ok && !sub.cheated) {
        honestCheapFalsePositives++;
        log(`  honest result failed cheap check: ${cheap.reason}`);
      }
      // A statistical check failed: the coordinator audits the result whatever the draw (never refuses it).
      if (cheap.suspect && !sub.cheated) honestSuspects++;

      let winner: WeightSet | null = cheap.ok ? sub.delta : null;
      let primaryValid = cheap.ok;
      // 3. Audit: a second worker, another account on another address, does the same unit blind. A dispute winner
      //    is re-audited by yet another worker until it matches someone (at most MAX_REAUDITS times).
      if (audit || cheap.suspect) {
        if (sub.cheated) r.audited++;
        await useBackend(COORDINATOR_BACKEND);
        const referee = new TrainUnitReferee({
          model,
          spec: SPEC,
          startWeights: params,
          dataset,
          indices: world.indices,
        });
        const unit: UnitContext = { unitId, steps: H, checkpointEvery: K, startWeights: params, tolerance: TAU };
        const involved = new Set<Worker>([worker]);
        let holder = sub; // the result under audit: the primary's, then a dispute winner's
        let holderIsPrimary = true;
        winner = null;
        for (let attempt = 0; attempt <= MAX_REAUDITS; attempt++) {
          const partner = workers.find(
            (x) => x !== holder.worker && x.kind === 'sybil' && holder.worker.kind === 'sybil',
          );
          const eligible = workers.filter((x) => !involved.has(x) && engine.isEligibleAuditor(holder.worker, x));
          const auditor =
            partner && !involved.has(partner) && rand() < 0.5
              ? partner
              : eligible[Math.floor(rand() * eligible.length)];
          involved.add(auditor);
          const ta = now();
          const other = await produce(auditor, world, round, recent);
          auditor.unitsDone++;
          const auditMs = now() - ta;
          for (const c of costs) {
            c.auditSteps += other.stepsRun;
            c.auditMs += auditMs;
          }
          const ro = row(other.row);
          ro.submitted++;
          if (other.cheated) {
            ro.cheated++;
            ro.cheatedSoFar++;
            ro.audited++;
            ro.stepsSaved += H - other.stepsRun;
          }
          await useBackend(COORDINATOR_BACKEND);
          const tr = now();
          const s = await engine.settleAudit({ a: asParty(holder), b: asParty(other), unit, referee });
          const refMs = now() - tr;
          for (const c of costs) {
            c.refereeSteps += s.refereeSteps;
            c.refereeMs += refMs;
          }
          for (const sc of Object.values(s.spotChecks)) {
            spotChecks.count++;
            spotChecks.refereeSteps += sc?.refereeSteps ?? 0;
            if (sc && !sc.ok) spotChecks.failed++;
          }
          if (s.dispute) {
            disputes.count++;
            if (s.dispute.by === 'referee') {
              disputes.refereeSteps += s.dispute.refereeSteps;
              disputes.segments++;
            }
            disputes.reveals += s.dispute.reveals;
          }
          if (!holder.cheated && !other.cheated) {
            honestAudits.pairs++;
            if (holder.worker.backend !== other.worker.backend) honestAudits.crossBackend++;
            if (s.verdicts.a === 'invalid' || s.verdicts.b === 'invalid') {
              honestAudits.falsePositives++;
              log(`  honest audit false positive: ${JSON.stringify(s.reasons)}`);
            }
            honestAudits.worstDistance = Math.max(honestAudits.worstDistance, s.compare.deltaDistance);
          }
          if (process.env.VERIFY_DEBUG && holder.cheated && s.verdicts.a !== 'invalid') {
            log(
              `  DEBUG ${holder.row} not caught vs ${auditor.account}: ${JSON.stringify({ cmp: s.compare, d: s.dispute, v: s.verdicts })}`,
            );
          }
          // The auditor's own verdict: credit when valid; penalty when invalid; nothing yet on 'reaudit'.
          if (s.verdicts.b === 'valid') {
            auditor.trust = recordValid(auditor.trust);
            credit(auditor, round, other.cheated);
          } else if (s.verdicts.b === 'invalid') {
            if (other.cheated) {
              ro.detectedWhenAudited++;
              noteDetection(other);
            }
            penalize(auditor, round);
          }
          if (s.verdicts.a === 'invalid') {
            if (holderIsPrimary) primaryValid = false;
            else penalize(holder.worker, round);
            if (holder.cheated) {
              const rh = row(holder.row);
              if (holderIsPrimary) rh.detectedWhenAudited++;
              else {
                rh.detectedWhenAudited++;
                noteDetection(holder);
              }
            }
          }
          if (s.verdicts.a === 'valid') {
            if (!holderIsPrimary && s.verdicts.a === 'valid') {
              holder.worker.trust = recordValid(holder.worker.trust);
              credit(holder.worker, round, holder.cheated);
            }
            winner = holder.delta;
            break;
          }
          if (s.verdicts.b === 'valid') {
            winner = other.delta;
            break;
          }
          if (s.verdicts.a === 'reaudit') continue; // same holder, fresh auditor
          if (s.verdicts.b === 'reaudit') {
            holder = other;
            holderIsPrimary = false;
            continue;
          }
          break; // both lost: reissue
        }
        if (!cheap.ok) primaryValid = false;
        if (holderIsPrimary && winner !== sub.delta) primaryValid = primaryValid && winner === sub.delta;
        if (!primaryValid && winner === sub.delta) winner = null;
      }
      if (primaryValid) {
        worker.trust = recordValid(worker.trust);
        credit(worker, round, sub.cheated);
        recent.push(sub);
      } else {
        if (sub.cheated) noteDetection(sub);
        penalize(worker, round);
      }
      accepted.push(winner ?? (await reissue(world, all)));
    }
    const mean = aggregateDeltas(accepted, AGGREGATION);
    const next = outerStep(params, mean, momentum, OUTER);
    params = next.params;
    momentum = next.momentum;
    vest(round);
    await useBackend(COORDINATOR_BACKEND);
    const ev = await evaluateModel(model, params, dataset);
    accuracy.push(ev.accuracy);
    log(
      `  round ${round + 1}/${ROUNDS}: accuracy ${(100 * ev.accuracy).toFixed(2)}%  (${((now() - t0) / 1000).toFixed(0)} s)`,
    );
  }
  const credits = new Map<
    string,
    { kind: Kind; vested: number; vestedCheated: number; pending: number; forfeited: number }
  >();
  for (const w of workers) {
    credits.set(w.account, {
      kind: w.kind,
      vested: w.vested,
      vestedCheated: w.vestedCheated,
      pending: w.pending.length,
      forfeited: w.forfeited,
    });
  }
  return {
    accuracy,
    rows,
    honestAudits,
    honestCheapFalsePositives,
    honestSuspects,
    honestUnits,
    all,
    steady,
    disputes,
    spotChecks,
    credits,
    ms: now() - t0,
  };
}

/** A rejected unit goes back to the queue; an honest worker redoes it (cost of the attack, not of verification). */
async function reissue(w: UnitWorld, costs: Costs): Promise<WeightSet> {
  const o = await honestRun(w, 'wasm');
  costs.reissueSteps += H;
  return o.delta;
}

// ---- honest audit pairs ----------------------------------------------------------------------------------------

async function honestPairs(
  model: object,
  dataset: Dataset,
  starts: WeightSet[],
  count: number,
  backends: [Backend, Backend],
  log: (s: string) => void,
): Promise<{ pairs: number; falsePositives: number; cheapFalsePositives: number; distances: number[]; ms: number }> {
  const t0 = now();
  const spec: TrainUnitSpec = { ...SPEC, steps: PAIR_STEPS, batchSize: PAIR_B, checkpointEvery: PAIR_K };
  const engine = new VerificationEngine({ rng: rand });
  const distances: number[] = [];
  let falsePositives = 0;
  let cheapFalsePositives = 0;
  for (let i = 0; i < count; i++) {
    const start = starts[i % starts.length];
    const indices = assignExamples(deriveDataSeed(SEED + 1, i, 0), PAIR_STEPS, PAIR_B, dataset.trainExamples);
    const world: UnitWorld = { model, dataset, spec, start, indices, unitId: `pair${i}` };
    const outs: TrainUnitOutput[] = [];
    for (const b of backends) outs.push(await honestRun(world, b));
    await useBackend(COORDINATOR_BACKEND);
    for (const o of outs) {
      const c = await cheapCheck({
        model,
        dataset,
        loss: spec.loss,
        steps: spec.steps,
        batchSize: spec.batchSize,
        checkpointEvery: spec.checkpointEvery,
        indices,
        startWeights: start,
        delta: o.delta,
        checkpoints: o.checkpoints,
        losses: o.losses,
      });
      if (!c.ok) {
        cheapFalsePositives++;
        log(`  honest ${o.backend} result failed cheap check: ${c.reason}`);
      }
    }
    const referee = new TrainUnitReferee({ model, spec, startWeights: start, dataset, indices });
    const unit: UnitContext = {
      unitId: world.unitId,
      steps: spec.steps,
      checkpointEvery: spec.checkpointEvery,
      startWeights: start,
      tolerance: TAU,
    };
    const mk = (o: TrainUnitOutput, account: string) => ({
      account,
      checkpoints: o.checkpoints,
      delta: o.delta,
      deltaHash: o.deltaHash,
      reveal: async (j: number) => o.checkpointStates![j],
    });
    const s = await engine.settleAudit({ a: mk(outs[0], 'p'), b: mk(outs[1], 'q'), unit, referee });
    distances.push(relativeDistance(outs[0].delta, outs[1].delta));
    if (s.verdicts.a !== 'valid' || s.verdicts.b !== 'valid') {
      falsePositives++;
      log(`  honest pair ${i} false positive: ${JSON.stringify(s.reasons)}`);
    }
    if ((i + 1) % 200 === 0) log(`  ${i + 1}/${count} pairs (${((now() - t0) / 1000).toFixed(0)} s)`);
  }
  return { pairs: count, falsePositives, cheapFalsePositives, distances, ms: now() - t0 };
}

// ---- turncoat sampling -----------------------------------------------------------------------------------------

/**
 * The audit-sampling process alone: a turncoat becomes trusted (TRUSTED_AFTER valid units audited at p = 1, then
 * more honest units at 1/CV), then cheats on every unit. Each unit is audited with auditProbability(trust); an audit
 * of a cheated unit detects it (the fleet shows 100% detection when audited). Returns cheated units until detection.
 */
function turncoatSampling(
  seeds: number,
  honestUnits: number,
): { caughtWithin: number; mean: number; p99: number; max: number } {
  const counts: number[] = [];
  for (let seed = 0; seed < seeds; seed++) {
    const next = mulberry32(seed * 7919 + 1);
    const r = () => next() / 4294967296;
    let trust = newTrust();
    for (let u = 0; u < honestUnits; u++) {
      r(); // the audit draw of an honest unit: it passes either way
      trust = recordValid(trust);
    }
    let cheated = 0;
    for (;;) {
      cheated++;
      if (r() < auditProbability(trust, DEFAULT_MIN_AUDIT_PROBABILITY)) break;
      trust = recordValid(trust); // an unaudited cheat is accepted, and counts as valid
      if (cheated > 100_000) break;
    }
    counts.push(cheated);
  }
  counts.sort((a, b) => a - b);
  return {
    caughtWithin: counts.filter((c) => c <= TURNCOAT_WINDOW).length / seeds,
    mean: counts.reduce((a, b) => a + b, 0) / seeds,
    p99: counts[Math.floor(0.99 * seeds)],
    max: counts[seeds - 1],
  };
}

// ---- webgpu (optional) -----------------------------------------------------------------------------------------

async function tryWebGpu(): Promise<string | null> {
  try {
    const { chooseNodeBackend } = await import('../bin/node-backend.js');
    const choice = await chooseNodeBackend('webgpu');
    return choice.backend === 'webgpu' ? (choice.adapter ?? 'webgpu') : null;
  } catch {
    return null;
  }
}

// ---- main ------------------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const log = (s: string) => console.log(s);
  const tStart = now();
  await useBackend(COORDINATOR_BACKEND);
  const dataset = buildMnistDataset();
  let nanRows = 0;
  for (let r = 0; r < dataset.examples; r++) {
    let bad = false;
    for (let i = r * 784; i < (r + 1) * 784; i++) {
      if (!Number.isFinite(dataset.features[i])) {
        dataset.features[i] = 0;
        bad = true;
      }
    }
    if (bad) nanRows++;
  }
  if (nanRows > 0)
    log(`note: ${nanRows} MNIST images decode to NaN in the builder; zeroed here so training stays finite`);
  const model = mnistMlpModel(HIDDEN);
  const init = await seededInit(model, SEED);
  log(
    `bench:verify ${QUICK ? '(quick) ' : ''}— 784-${HIDDEN}-10 MLP, H=${H}, k=${K}, B=${B}, tau=${TAU}, ${ROUNDS} rounds x 30 units`,
  );

  log('fleet with 30% adversaries:');
  const adv = await runFleet(model, dataset, init, true, log);
  log('clean fleet (all honest):');
  const clean = await runFleet(model, dataset, init, false, log);

  // Honest pairs start from weights at several stages of the clean run's training.
  const fleetCross = adv.honestAudits.crossBackend + clean.honestAudits.crossBackend;
  const pairCount = Math.max(HONEST_PAIRS_TARGET - fleetCross, QUICK ? HONEST_PAIRS_TARGET : 0);
  log(`honest cpu-vs-wasm audit pairs: ${pairCount} small units (${PAIR_STEPS} steps, k=${PAIR_K}, B=${PAIR_B})`);
  const starts = [init];
  {
    let w = init;
    await useBackend('wasm');
    for (let i = 0; i < 5; i++) {
      const o = await trainUnit({
        model,
        spec: SPEC,
        startWeights: w,
        dataset,
        indices: assignExamples(9000 + i, H, B, dataset.trainExamples),
      });
      w = o.finalWeights;
      starts.push(w);
    }
  }
  const pairs = await honestPairs(model, dataset, starts, pairCount, ['cpu', 'wasm'], log);

  const turncoat = turncoatSampling(TURNCOAT_SEEDS, TRUSTED_AFTER + 5);
  log(
    `turncoat sampling: caught within ${TURNCOAT_WINDOW} cheated units in ${fmtPct(turncoat.caughtWithin)} of ${TURNCOAT_SEEDS} seeds`,
  );

  let webgpu: { adapter: string; pairs: number; falsePositives: number; worstDistance: number } | null = null;
  if (!QUICK && !SKIP_WEBGPU) {
    const adapter = await tryWebGpu();
    if (adapter) {
      log(`webgpu adapter: ${adapter}; running wasm-vs-webgpu pairs`);
      const g = await honestPairs(model, dataset, starts, 6, ['wasm', 'webgpu'], log);
      webgpu = {
        adapter,
        pairs: g.pairs,
        falsePositives: g.falsePositives + g.cheapFalsePositives,
        worstDistance: Math.max(...g.distances),
      };
    } else log('webgpu: no adapter, skipped');
  }

  // ---- figures ----
  const rowsOrder = [
    'lazy',
    'stale',
    'half',
    'scaled',
    ...POISON_EPS.map((e) => `poison ${fmtEps(e)}`),
    'turncoat',
    'sybil pair',
    'copycat',
  ];
  const table = rowsOrder.map((name) => {
    const r = adv.rows.get(name) ?? newRow();
    const accounts = [...adv.credits.values()].filter((c) =>
      name.startsWith('poison') ? c.kind === 'poison' : name === 'sybil pair' ? c.kind === 'sybil' : c.kind === name,
    );
    const kept = accounts.reduce((a, c) => a + c.vestedCheated, 0);
    return {
      adversary: name,
      unitsCheated: r.cheated,
      caughtByCheapChecks: r.caughtByCheapCheck,
      audited: r.audited,
      detectedWhenAudited: r.audited > 0 ? r.detectedWhenAudited / r.audited : Number.NaN,
      detectedOverall: r.cheated > 0 ? r.detected / r.cheated : Number.NaN,
      cheatedUntilFirstDetection: r.firstDetectionAfter,
      creditsKeptFromCheating: kept,
      creditsForfeited: accounts.reduce((a, c) => a + c.forfeited, 0),
      creditsVestedTotal: accounts.reduce((a, c) => a + c.vested, 0),
    };
  });
  const stepEq = (c: Costs) => c.cheapForwardExamples / (3 * B);
  const overhead = (c: Costs) => ({
    steps: (c.auditSteps + c.refereeSteps + stepEq(c)) / c.usefulSteps,
    ms: (c.auditMs + c.refereeMs + c.cheapMs) / c.usefulMs,
    auditShare: c.auditSteps / c.usefulSteps,
    refereeShare: c.refereeSteps / c.usefulSteps,
    cheapShare: stepEq(c) / c.usefulSteps,
  });
  // Steady state: a trusted, honest population (the clean fleet). Under attack: honest trusted units of the
  // adversarial fleet, where disputes and re-audits caused by adversarial auditors land on honest units too.
  const steadyOverhead = overhead(clean.steady);
  const underAttack = overhead(adv.steady);
  const expectedOverhead = DEFAULT_MIN_AUDIT_PROBABILITY * (1 + K / H) + 2 / 3 / H;
  const honestAuditTotal = pairs.pairs + adv.honestAudits.pairs + clean.honestAudits.pairs + (webgpu?.pairs ?? 0);
  const crossTotal = pairs.pairs + fleetCross + (webgpu?.pairs ?? 0);
  const falsePositives =
    pairs.falsePositives +
    pairs.cheapFalsePositives +
    adv.honestAudits.falsePositives +
    clean.honestAudits.falsePositives +
    adv.honestCheapFalsePositives +
    clean.honestCheapFalsePositives +
    (webgpu?.falsePositives ?? 0);
  const worstHonest = Math.max(
    ...pairs.distances,
    adv.honestAudits.worstDistance,
    clean.honestAudits.worstDistance,
    webgpu?.worstDistance ?? 0,
  );
  const accAdv = adv.accuracy[adv.accuracy.length - 1];
  const accClean = clean.accuracy[clean.accuracy.length - 1];
  const refereePerDispute = adv.disputes.segments > 0 ? adv.disputes.refereeSteps / adv.disputes.segments : 0;

  const detectable = table.filter((t) => !t.adversary.includes('below tolerance'));
  const acceptance = {
    zeroHonestFalsePositives: falsePositives === 0 && crossTotal >= (QUICK ? 0 : 1000),
    everyTypeDetectedWhenAudited: detectable.every((t) => t.audited === 0 || t.detectedWhenAudited === 1),
    turncoatCaughtWithin50: turncoat.caughtWithin >= 0.99,
    steadyOverheadAtMost15: steadyOverhead.steps <= 0.15,
    accuracyWithin1Point: Math.abs(accAdv - accClean) <= 0.01,
  };

  // ---- output ----
  const pad = (s: string, n: number) => s.padEnd(n);
  log('');
  log(
    `${pad('adversary', 26)}${pad('cheated', 9)}${pad('cheap', 7)}${pad('audited', 9)}${pad('det|aud', 9)}${pad('det all', 9)}${pad('1st det', 9)}${pad('kept', 6)}forfeited`,
  );
  for (const t of table) {
    log(
      `${pad(t.adversary, 26)}${pad(String(t.unitsCheated), 9)}${pad(String(t.caughtByCheapChecks), 7)}${pad(String(t.audited), 9)}${pad(fmtPct(t.detectedWhenAudited), 9)}${pad(fmtPct(t.detectedOverall), 9)}${pad(t.cheatedUntilFirstDetection === null ? '-' : String(t.cheatedUntilFirstDetection), 9)}${pad(String(t.creditsKeptFromCheating), 6)}${t.creditsForfeited}`,
    );
  }
  log('');
  log(
    `honest audits: ${honestAuditTotal} (${crossTotal} cross-backend), false positives ${falsePositives}, worst honest distance ${worstHonest.toExponential(2)} (tau ${TAU})`,
  );
  log(
    `steady-state overhead (trusted honest fleet): ${fmtPct(steadyOverhead.steps)} in steps (audit ${fmtPct(steadyOverhead.auditShare)}, spot checks ${fmtPct(steadyOverhead.refereeShare)}, cheap checks ${fmtPct(steadyOverhead.cheapShare)}), ${fmtPct(steadyOverhead.ms)} in ms; expected ${fmtPct(expectedOverhead)}; honest units under attack ${fmtPct(underAttack.steps)}`,
  );
  log(
    `disputes: ${adv.disputes.count}, referee segments ${adv.disputes.segments}, ${refereePerDispute.toFixed(1)} steps per referee ruling (H = ${H}, k = ${K}); spot checks ${adv.spotChecks.count} (${adv.spotChecks.failed} failed)`,
  );
  log(
    `accuracy: clean ${(100 * accClean).toFixed(2)}%, with 30% adversaries ${(100 * accAdv).toFixed(2)}% (diff ${(100 * (accAdv - accClean)).toFixed(2)} points)`,
  );
  log(
    `turncoat: mean ${turncoat.mean.toFixed(1)} cheated units to detection, p99 ${turncoat.p99}, max ${turncoat.max}`,
  );
  log(`acceptance: ${JSON.stringify(acceptance)}`);
  const totalS = (now() - tStart) / 1000;
  log(`total ${totalS.toFixed(0)} s`);

  const json = {
    quick: QUICK,
    config: {
      hidden: HIDDEN,
      H,
      K,
      B,
      rounds: ROUNDS,
      workers: 30,
      adversaries: 9,
      tau: TAU,
      aggregation: AGGREGATION,
      outer: OUTER,
      vestingRounds: VESTING_ROUNDS,
      minAuditProbability: DEFAULT_MIN_AUDIT_PROBABILITY,
    },
    table,
    honest: {
      audits: honestAuditTotal,
      crossBackend: crossTotal,
      falsePositives,
      // Flagged by a statistical cheap check and therefore audited (costs an audit, never a penalty).
      suspects: adv.honestSuspects + clean.honestSuspects,
      units: adv.honestUnits + clean.honestUnits,
      worstDistance: worstHonest,
      pairs: { count: pairs.pairs, steps: PAIR_STEPS, k: PAIR_K, batch: PAIR_B, ms: pairs.ms },
      webgpu,
    },
    overhead: {
      steady: steadyOverhead,
      expected: expectedOverhead,
      underAttack,
      adversarialFleetAll: overhead(adv.all),
      reissueSteps: adv.all.reissueSteps,
    },
    disputes: { ...adv.disputes, refereeStepsPerRuling: refereePerDispute },
    spotChecks: adv.spotChecks,
    accuracy: { clean: clean.accuracy, adversarial: adv.accuracy },
    turncoat,
    credits: Object.fromEntries(adv.credits),
    acceptance,
    seconds: totalS,
  };
  mkdirSync('bench/results', { recursive: true });
  writeFileSync('bench/results/verify.json', `${JSON.stringify(json, null, 2)}\n`);
  if (!QUICK) writeDocsSection(json, table);
}

type Json = Record<string, unknown>;

/** A table padded the way Biome formats Markdown, so `npm run lint` accepts the generated docs. */
function markdownTable(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(3, h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`;
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)];
}

function writeDocsSection(
  json: Json & {
    honest: Json;
    overhead: Json & { steady: Json };
    accuracy: { clean: number[]; adversarial: number[] };
  },
  table: Json[],
): void {
  const path = 'docs/BENCHMARKS.md';
  let doc = '';
  try {
    doc = readFileSync(path, 'utf8');
  } catch {
    doc = '# Benchmarks\n';
  }
  const lines: string[] = [];
  lines.push('## bench:verify');
  lines.push('');
  lines.push(
    `\`npm run bench:verify\` (${new Date().toISOString().slice(0, 10)}, 2 CPU cores, Node ${process.version}). In-process simulation with real tfjs training: 784-${HIDDEN}-10 MLP on MNIST, units of H = ${H} steps, k = ${K}, batch ${B}, SGD 0.1; ${ROUNDS} DiLoCo rounds of ${UNITS_PER_ROUND} units (a random ${UNITS_PER_ROUND} of the 30 workers each round; a rejected unit is reissued), trimmed-mean aggregation (0.2, clip 3), outer Nesterov 0.7/0.9; 9 of the 30 workers adversarial, one account per adversary type (the poison account cycles its eps, the sybil pair is two accounts); a third of the honest workers train on cpu, the rest on wasm; coordinator checks and referee on wasm. tau = ${TAU}, audit floor ${DEFAULT_MIN_AUDIT_PROBABILITY}, credits vest after ${VESTING_ROUNDS} rounds. Raw figures: bench/results/verify.json.`,
  );
  lines.push('');
  const header = [
    'adversary',
    'units cheated',
    'caught by cheap checks',
    'audited',
    'detected when audited',
    'detected overall',
    'cheated units until first detection',
    'credits kept from cheating',
    'credits forfeited',
  ];
  const body = table.map((t) => [
    String(t.adversary),
    String(t.unitsCheated),
    String(t.caughtByCheapChecks),
    String(t.audited),
    fmtPct(t.detectedWhenAudited as number),
    fmtPct(t.detectedOverall as number),
    t.cheatedUntilFirstDetection === null ? '-' : String(t.cheatedUntilFirstDetection),
    String(t.creditsKeptFromCheating),
    String(t.creditsForfeited),
  ]);
  lines.push(...markdownTable(header, body));
  const h = json.honest as {
    audits: number;
    crossBackend: number;
    falsePositives: number;
    suspects: number;
    units: number;
    worstDistance: number;
  };
  const st = json.overhead.steady as {
    steps: number;
    ms: number;
    auditShare: number;
    refereeShare: number;
    cheapShare: number;
  };
  const d = json.disputes as { count: number; segments: number; refereeStepsPerRuling: number };
  const tc = json.turncoat as { caughtWithin: number; mean: number; p99: number };
  const acc = json.accuracy;
  const a = acc.adversarial[acc.adversarial.length - 1];
  const c = acc.clean[acc.clean.length - 1];
  lines.push('');
  const g = (json.honest as { webgpu: { adapter: string; pairs: number; worstDistance: number } | null }).webgpu;
  const pairsInfo = (json.honest as { pairs: { count: number } }).pairs;
  const gpu = g
    ? `, plus ${g.pairs} wasm-vs-WebGPU pairs on ${g.adapter} (worst ${g.worstDistance.toExponential(2)})`
    : '';
  lines.push(
    `- Honest false positives: **${h.falsePositives}** in ${h.audits} honest audits, ${h.crossBackend} of them cross-backend (${pairsInfo.count} small cpu-vs-wasm units of ${PAIR_STEPS} steps, k = ${PAIR_K}, batch ${PAIR_B}, through cheap checks + settleAudit, plus the fleets' own audits${gpu}); worst honest relative distance ${h.worstDistance.toExponential(2)} vs tau ${TAU}.`,
  );
  lines.push(
    `- Honest results a statistical cheap check (final loss, progress) flagged as suspect: ${h.suspects} of ${h.units} honest fleet units. A suspect result is audited whatever the draw, never refused (caught-by-cheap-checks counts exact checks only).`,
  );
  const ua = json.overhead.underAttack as { steps: number };
  lines.push(
    `- Steady-state overhead (a trusted honest fleet): **${fmtPct(st.steps)}** of useful compute in steps (audits ${fmtPct(st.auditShare)}, spot checks ${fmtPct(st.refereeShare)}, cheap checks ${fmtPct(st.cheapShare)} as forward-pass step equivalents), ${fmtPct(st.ms)} in wall-clock ms; expected from the policy ${fmtPct(json.overhead.expected as number)} (p(1 + k/H) + 2/(3H)). Honest units in the adversarial fleet: ${fmtPct(ua.steps)} (disputes and re-audits caused by adversarial auditors).`,
  );
  lines.push(
    `- Disputes: ${d.count} (adversaries also act as auditors, so honest units see disputes too); referee rulings recomputed ${d.refereeStepsPerRuling.toFixed(1)} steps each (one segment: k = ${K} of the unit's H = ${H} steps).`,
  );
  lines.push(
    `- Turncoat (audit sampling over ${TURNCOAT_SEEDS} seeds): caught within ${TURNCOAT_WINDOW} cheated units in **${fmtPct(tc.caughtWithin)}** of runs; mean ${tc.mean.toFixed(1)}, p99 ${tc.p99} cheated units to detection.`,
  );
  lines.push(
    `- Accuracy after ${ROUNDS} rounds: clean ${(100 * c).toFixed(2)}%, with 30% adversaries ${(100 * a).toFixed(2)}% (**${(100 * (a - c)).toFixed(2)} points**).`,
  );
  lines.push(
    `- Acceptance: \`${JSON.stringify(json.acceptance)}\`; run time ${(json.seconds as number).toFixed(0)} s.`,
  );
  lines.push('');
  const section = lines.join('\n');
  const re = /## bench:verify\n[\s\S]*?(?=\n## |$)/;
  doc = re.test(doc) ? doc.replace(re, `${section}`) : `${doc.trimEnd()}\n\n${section}`;
  writeFileSync(path, doc.endsWith('\n') ? doc : `${doc}\n`);
}

if (process.argv.includes('--docs-only')) {
  // Rewrites the docs section from the last bench/results/verify.json without running anything.
  const json = JSON.parse(readFileSync('bench/results/verify.json', 'utf8'));
  writeDocsSection(json, json.table);
} else {
  await main();
}
