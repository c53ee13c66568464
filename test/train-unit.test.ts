import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildMnistDataset } from '../coordinator/store/builtin/mnist.js';
import { assignExamples } from '../shared/train/assign.js';
import { evaluateModel, forwardLoss } from '../shared/train/evaluate.js';
import { meanLoss } from '../shared/train/losses.js';
import { mnistCnnModel, mnistMlpModel } from '../shared/train/templates.js';
import { checkpointStepsFor, TrainAborted, trainUnit } from '../shared/train/train-unit.js';
import type { Dataset, TrainUnitInput, WeightSet } from '../shared/train/types.js';
import { applyWeights, hashWeights, weightsFromModel } from '../shared/train/weights-format.js';
import { initialWeights, smallMlp, spec, syntheticDataset } from './helpers/train-fixtures.js';

const ds = syntheticDataset();
const model = smallMlp(20, 4);
let w0: WeightSet;

function unitInput(overrides: Partial<TrainUnitInput> = {}): TrainUnitInput {
  const s = overrides.spec ?? spec();
  return {
    model,
    spec: s,
    startWeights: w0,
    dataset: ds,
    indices: assignExamples(7, s.steps, s.batchSize, ds.trainExamples),
    ...overrides,
  };
}

beforeAll(async () => {
  await tf.setBackend('cpu');
  await tf.ready();
  w0 = await initialWeights(model);
});

describe('trainUnit on cpu', () => {
  it('is bit-deterministic and reports consistent hashes', async () => {
    const a = await trainUnit(unitInput());
    const b = await trainUnit(unitInput());
    expect(b.finalHash).toBe(a.finalHash);
    expect(b.deltaHash).toBe(a.deltaHash);
    expect(b.checkpoints).toEqual(a.checkpoints);
    expect(b.losses).toEqual(a.losses);
    expect(a.losses).toHaveLength(12);
    expect(a.checkpoints).toHaveLength(3);
    expect(a.checkpointSteps).toEqual([4, 8, 12]);
    expect(a.finalStateHash).toBe(a.checkpoints[2]);
    expect(a.finalHash).toBe(hashWeights(a.finalWeights));
    expect(a.deltaHash).toBe(hashWeights(a.delta));
    expect(a.delta.data[0][3]).toBe(Math.fround(a.finalWeights.data[0][3] - w0.data[0][3]));
    expect(a.finalWeights.names).toEqual(['h/kernel', 'h/bias', 'out/kernel', 'out/bias']);
    expect(a.examples).toBe(12 * 16);
    expect(a.flops).toBe(6 * (20 * 16 + 16 + 16 * 4 + 4) * 12 * 16);
    expect(a.backend).toBe('cpu');
    expect(a.finalHash).not.toBe(hashWeights(w0));
    // Different data gives different weights.
    const c = await trainUnit(unitInput({ indices: assignExamples(8, 12, 16, ds.trainExamples) }));
    expect(c.finalHash).not.toBe(a.finalHash);
  });

  it('checkpoints after every k steps and after a final partial interval', async () => {
    expect(checkpointStepsFor(10, 4)).toEqual([4, 8, 10]);
    expect(checkpointStepsFor(10, 4, 4, 6)).toEqual([6]);
    expect(checkpointStepsFor(16, 0)).toEqual([2, 4, 6, 8, 10, 12, 14, 16]);
    const out = await trainUnit(unitInput({ spec: spec({ steps: 10, checkpointEvery: 4 }) }));
    expect(out.checkpointSteps).toEqual([4, 8, 10]);
    expect(out.checkpoints).toHaveLength(3);
  });

  for (const type of ['sgd', 'momentum', 'adam'] as const) {
    it(`${type}: updates exactly like tf.train.${type} in a plain loop`, async () => {
      const s = spec({ steps: 5, optimizer: { type, learningRate: type === 'adam' ? 0.01 : 0.1, momentum: 0.9 } });
      const input = unitInput({ spec: s });
      const out = await trainUnit(input);

      const ref = await tf.models.modelFromJSON(model as never);
      applyWeights(ref, w0);
      const opt =
        type === 'sgd' ? tf.train.sgd(0.1) : type === 'momentum' ? tf.train.momentum(0.1, 0.9) : tf.train.adam(0.01);
      const vars = ref.trainableWeights.map((v) => v.read() as tf.Variable);
      for (let step = 0; step < s.steps; step++) {
        const rows = Array.from(input.indices.subarray(step * 16, (step + 1) * 16));
        tf.tidy(() => {
          const x = tf.tensor2d(rows.map((r) => Array.from(ds.features.subarray(r * 20, (r + 1) * 20))));
          const y = tf.tensor1d(
            rows.map((r) => ds.labels[r]),
            'int32',
          );
          opt.minimize(
            () => meanLoss('categoricalCrossentropy', y, ref.apply(x, { training: true }) as tf.Tensor),
            false,
            vars,
          );
        });
      }
      expect(hashWeights(out.finalWeights)).toBe(hashWeights(weightsFromModel(ref)));
      opt.dispose();
      ref.dispose();
    });
  }

  for (const type of ['sgd', 'momentum', 'adam'] as const) {
    it(`${type}: a segment resumed from a checkpoint state reproduces the full run bit-exactly`, async () => {
      const s = spec({ steps: 12, checkpointEvery: 4, optimizer: { type, learningRate: 0.05, momentum: 0.8 } });
      const full = await trainUnit(unitInput({ spec: s, keepCheckpointStates: true }));
      const states = full.checkpointStates!;
      expect(states).toHaveLength(3);
      expect(states.map(hashWeights)).toEqual(full.checkpoints);
      const slotCount = { sgd: 0, momentum: 4, adam: 10 }[type];
      expect(states[0].names).toHaveLength(4 + slotCount);
      if (type !== 'sgd') expect(states[0].names[4]).toMatch(/^@opt\/h\/kernel\//);

      // Segment [4, 8) from the state at 4 reproduces checkpoint 8.
      const seg = await trainUnit(
        unitInput({ spec: s, fromStep: 4, fromState: states[0], toStep: 8, keepCheckpointStates: true }),
      );
      expect(seg.checkpointSteps).toEqual([8]);
      expect(seg.checkpoints).toEqual([full.checkpoints[1]]);
      expect(seg.losses).toEqual(full.losses.slice(4, 8));
      expect(seg.examples).toBe(4 * 16);

      // A segment may end between boundaries; its end state continues the run exactly.
      const a = await trainUnit(
        unitInput({ spec: s, fromStep: 4, fromState: states[0], toStep: 6, keepCheckpointStates: true }),
      );
      expect(a.checkpointSteps).toEqual([6]);
      const b = await trainUnit(unitInput({ spec: s, fromStep: 6, fromState: a.checkpointStates![0] }));
      expect(b.checkpointSteps).toEqual([8, 12]);
      expect(b.checkpoints).toEqual(full.checkpoints.slice(1));
      expect(b.finalHash).toBe(full.finalHash);
      expect(b.deltaHash).toBe(full.deltaHash);
    });
  }

  it('keeps training reproducible with dropout (seeded per step) and batch norm (moving stats in the state)', async () => {
    for (const extra of ['dropout', 'batchnorm'] as const) {
      const m = smallMlp(20, 4, extra);
      const w = await initialWeights(m);
      const input = unitInput({ model: m, startWeights: w, keepCheckpointStates: true });
      const a = await trainUnit(input);
      const b = await trainUnit(input);
      expect(b.checkpoints).toEqual(a.checkpoints);
      const seg = await trainUnit({ ...input, fromStep: 4, fromState: a.checkpointStates![0], toStep: 12 });
      expect(seg.checkpoints).toEqual(a.checkpoints.slice(1));
      if (extra === 'batchnorm') {
        const mv = a.finalWeights.names.indexOf('bn/moving_mean');
        expect(mv).toBeGreaterThan(0);
        expect(a.delta.data[mv].some((v) => v !== 0)).toBe(true);
      }
    }
  });

  it('leaks no tensors, including when aborted or when onStep throws', async () => {
    await trainUnit(unitInput());
    const before = tf.memory().numTensors;
    for (const type of ['sgd', 'momentum', 'adam'] as const) {
      const s = spec({ optimizer: { type, learningRate: 0.01 } });
      const full = await trainUnit(unitInput({ spec: s, keepCheckpointStates: true }));
      await trainUnit(unitInput({ spec: s, fromStep: 4, fromState: full.checkpointStates![0] }));
      expect(tf.memory().numTensors).toBe(before);
    }
    let calls = 0;
    await expect(trainUnit(unitInput({ shouldStop: () => ++calls > 5 }))).rejects.toBeInstanceOf(TrainAborted);
    expect(tf.memory().numTensors).toBe(before);
    await expect(
      trainUnit(
        unitInput({
          onStep: (step) => {
            if (step === 3) throw new Error('worker went away');
          },
        }),
      ),
    ).rejects.toThrow('worker went away');
    expect(tf.memory().numTensors).toBe(before);
    await evaluateModel(model, w0, ds);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('calls onStep once per step, in order, with the recorded loss', async () => {
    const seen: [number, number][] = [];
    const out = await trainUnit(unitInput({ onStep: (s, l) => void seen.push([s, l]), fromStep: 0, toStep: 6 }));
    expect(seen.map(([s]) => s)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(seen.map(([, l]) => l)).toEqual(out.losses);
  });

  it('rejects inconsistent input with a clear error', async () => {
    await expect(trainUnit(unitInput({ indices: new Int32Array(5) }))).rejects.toThrow(/steps x batchSize = 192/);
    const bad = assignExamples(7, 12, 16, ds.trainExamples);
    bad[20] = ds.trainExamples;
    await expect(trainUnit(unitInput({ indices: bad }))).rejects.toThrow(
      /index 20 = 480 is outside the training split/,
    );
    await expect(trainUnit(unitInput({ fromStep: 4 }))).rejects.toThrow(/needs fromState/);
    await expect(trainUnit(unitInput({ fromStep: 4, toStep: 4, fromState: w0 }))).rejects.toThrow(/step range/);
    await expect(
      trainUnit(
        unitInput({ fromStep: 4, fromState: w0, spec: spec({ optimizer: { type: 'adam', learningRate: 0.1 } }) }),
      ),
    ).rejects.toThrow(/fromState holds/);
    await expect(trainUnit(unitInput({ dataset: { ...ds, numClasses: 3 } }))).rejects.toThrow(
      /does not match \[batch, 3 classes\]/,
    );
    const wrong = { ...w0, shapes: w0.shapes.map((s, i) => (i === 0 ? [16, 20] : s)) };
    await expect(trainUnit(unitInput({ startWeights: wrong }))).rejects.toThrow(
      /has shape \[20,16\], weight set gives \[16,20\]/,
    );
  });
});

describe('training MNIST', () => {
  let mnist: Dataset;
  beforeAll(() => {
    mnist = buildMnistDataset();
  });

  it('reduces the loss and raises held-out accuracy in a short run', async () => {
    const m = mnistMlpModel(32);
    const w = await initialWeights(m, 3);
    const s = spec({ steps: 60, batchSize: 32, checkpointEvery: 20, optimizer: { type: 'sgd', learningRate: 0.2 } });
    const before = await evaluateModel(m, w, mnist);
    const out = await trainUnit({
      model: m,
      spec: s,
      startWeights: w,
      dataset: mnist,
      indices: assignExamples(11, 60, 32, mnist.trainExamples),
    });
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    expect(mean(out.losses.slice(-10))).toBeLessThan(mean(out.losses.slice(0, 10)) * 0.6);
    const after = await evaluateModel(m, out.finalWeights, mnist);
    expect(before.examples).toBe(1000);
    expect(after.accuracy).toBeGreaterThan(before.accuracy + 0.3);
    expect(after.loss).toBeLessThan(before.loss);
    const probe = Int32Array.from({ length: 64 }, (_, i) => 9000 + i);
    expect(await forwardLoss(m, out.finalWeights, mnist, probe)).toBeLessThan(await forwardLoss(m, w, mnist, probe));
    const part = await evaluateModel(m, out.finalWeights, mnist, { from: 0, to: 100, batchSize: 7 });
    expect(part.examples).toBe(100);
  });

  it('trains the CNN template too (stable JSON and weight names, finite losses)', async () => {
    const m = mnistCnnModel();
    expect(JSON.stringify(mnistCnnModel())).toBe(JSON.stringify(m));
    const w = await initialWeights(m, 5);
    const out = await trainUnit({
      model: m,
      // The cpu backend's convolution gradients are slow: two small steps prove the path works.
      spec: spec({ steps: 2, batchSize: 4, checkpointEvery: 1, optimizer: { type: 'adam', learningRate: 0.01 } }),
      startWeights: w,
      dataset: mnist,
      indices: assignExamples(2, 2, 4, mnist.trainExamples),
    });
    expect(out.finalWeights.names).toEqual([
      'conv1/kernel',
      'conv1/bias',
      'conv2/kernel',
      'conv2/bias',
      'output/kernel',
      'output/bias',
    ]);
    expect(out.checkpoints).toHaveLength(2);
    expect(out.losses.every(Number.isFinite)).toBe(true);
  });
});
