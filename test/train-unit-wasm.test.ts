import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildMnistDataset } from '../coordinator/store/builtin/mnist.js';
import { assignExamples } from '../shared/train/assign.js';
import { canTrainOn, missingTrainingKernels } from '../shared/train/backend-support.js';
import { mnistCnnModel, mnistMlpModel } from '../shared/train/templates.js';
import { trainUnit } from '../shared/train/train-unit.js';
import type { TrainUnitInput, TrainUnitOutput, WeightSet } from '../shared/train/types.js';
import { registerWasmGradientKernels } from '../shared/train/wasm-gradient-kernels.js';
import { stateDistance } from '../shared/verify/distance.js';
import { DEFAULT_TOLERANCE } from '../shared/verify/tolerance.js';
import { initialWeights, relativeDistance, smallMlp, spec, syntheticDataset } from './helpers/train-fixtures.js';

const ds = syntheticDataset();
let model: object;
let w0: WeightSet;

function input(overrides: Partial<TrainUnitInput> = {}): TrainUnitInput {
  const s = spec({
    steps: 40,
    batchSize: 16,
    checkpointEvery: 10,
    optimizer: { type: 'momentum', learningRate: 0.05 },
  });
  return {
    model,
    spec: s,
    startWeights: w0,
    dataset: ds,
    indices: assignExamples(3, 40, 16, ds.trainExamples),
    ...overrides,
  };
}

async function onBackend(name: string, run: () => Promise<TrainUnitOutput>): Promise<TrainUnitOutput> {
  await tf.setBackend(name);
  await tf.ready();
  return run();
}

beforeAll(async () => {
  // Importing the wasm backend makes it the default, and it must be initialised before any tensor exists.
  await tf.setBackend('cpu');
  model = smallMlp(20, 4);
  w0 = await initialWeights(model);
});

describe('trainUnit on wasm', () => {
  it('is bit-deterministic and resumes exactly from a checkpoint', async () => {
    const a = await onBackend('wasm', () => trainUnit(input({ keepCheckpointStates: true })));
    expect(a.backend).toBe('wasm');
    const b = await trainUnit(input());
    expect(b.finalHash).toBe(a.finalHash);
    expect(b.checkpoints).toEqual(a.checkpoints);
    expect(b.losses).toEqual(a.losses);
    const seg = await trainUnit(input({ fromStep: 20, fromState: a.checkpointStates![1], toStep: 30 }));
    expect(seg.checkpoints).toEqual([a.checkpoints[2]]);
    const before = tf.memory().numTensors;
    await trainUnit(input());
    expect(tf.memory().numTensors).toBe(before);
  });

  it('matches cpu closely (relative delta distance < 1e-4) without being required to match bit for bit', async () => {
    const wasm = await onBackend('wasm', () => trainUnit(input()));
    const cpu = await onBackend('cpu', () => trainUnit(input()));
    expect(cpu.backend).toBe('cpu');
    expect(relativeDistance(cpu.delta, wasm.delta)).toBeLessThan(1e-4);
    // Both really trained: the delta is far from zero relative to the tolerance.
    const norm = Math.sqrt(cpu.delta.data.flatMap((d) => Array.from(d)).reduce((s, v) => s + v * v, 0));
    expect(norm).toBeGreaterThan(0.01);
    // And a cached cpu model is not disturbed by the detour through wasm.
    const again = await trainUnit(input());
    expect(again.finalHash).toBe(cpu.finalHash);
  });

  it('refuses up front, by name, a model the backend cannot train (a gradient kernel is missing)', async () => {
    await tf.setBackend('wasm');
    const cnn = mnistCnnModel();
    expect(canTrainOn(mnistMlpModel(), 'wasm')).toBe(true);
    expect(missingTrainingKernels(cnn, 'wasm')).toEqual([]);
    // Take the bridged kernel away again: the refusal names what is missing, before any tensor is made.
    tf.unregisterKernel('Conv2DBackpropFilter', 'wasm');
    try {
      expect(missingTrainingKernels(cnn, 'wasm').map((m) => `${m.layer}:${m.kernel}`)).toEqual([
        'conv1:Conv2DBackpropFilter',
        'conv2:Conv2DBackpropFilter',
      ]);
      const before = tf.memory().numTensors;
      await expect(
        trainUnit({
          model: cnn,
          spec: spec({ steps: 2, batchSize: 4 }),
          startWeights: w0,
          dataset: ds,
          indices: assignExamples(1, 2, 4, ds.trainExamples),
        }),
      ).rejects.toThrow(
        /the "wasm" backend cannot train this model: it lacks Conv2DBackpropFilter \(needed by Conv2D "conv1", Conv2D "conv2"\)/,
      );
      expect(tf.memory().numTensors).toBe(before);
    } finally {
      expect(registerWasmGradientKernels()).toEqual(['Conv2DBackpropFilter']);
    }
  });
});

describe('gradient kernels wasm lacks, bridged to the cpu kernels', () => {
  it('give the cpu values for conv filter, depthwise and segment-sum gradients, and leak nothing', async () => {
    const x = tf.tidy(() => tf.randomUniform([2, 7, 7, 3], -1, 1, 'float32', 5));
    const f = tf.tidy(() => tf.randomUniform([3, 3, 3, 4], -1, 1, 'float32', 6));
    const df = tf.tidy(() => tf.randomUniform([3, 3, 3, 2], -1, 1, 'float32', 7));
    const seg = tf.tidy(() => tf.randomUniform([6, 5], -1, 1, 'float32', 8));
    const run = async (backend: string) => {
      await tf.setBackend(backend);
      await tf.ready();
      const before = tf.memory().numTensors;
      const [gx, gf] = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
        tf
          .conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 1, 'same')
          .square()
          .sum(),
      )([x, f]);
      const [dx, dw] = tf.grads((a: tf.Tensor, b: tf.Tensor) =>
        tf.depthwiseConv2d(a as tf.Tensor4D, b as tf.Tensor4D, 1, 'valid').sum(),
      )([x, df]);
      const ids = tf.tensor1d([0, 2, 0, 1, 2, 2], 'int32');
      const s = tf.unsortedSegmentSum(seg, ids, 3);
      const out = await Promise.all([gx, gf, dx, dw, s].map((t) => t.data()));
      tf.dispose([gx, gf, dx, dw, s, ids]);
      expect(tf.memory().numTensors).toBe(before);
      return out.map((d) => Array.from(d as Float32Array));
    };
    const cpu = await run('cpu');
    const wasm = await run('wasm');
    for (let i = 0; i < cpu.length; i++) {
      const scale = Math.max(...cpu[i].map(Math.abs));
      const worst = Math.max(...cpu[i].map((v, j) => Math.abs(v - wasm[i][j])));
      expect(worst / scale, `output ${i}`).toBeLessThan(1e-5);
    }
  });

  it('let the CNN template train on wasm: bit-deterministic, close to cpu, and a segment recomputed on wasm lands on the cpu checkpoint', async () => {
    const cnn = mnistCnnModel();
    const mnist = buildMnistDataset();
    await tf.setBackend('cpu');
    const start = await initialWeights(cnn, 3);
    const cnnInput = (overrides: Partial<TrainUnitInput> = {}): TrainUnitInput => ({
      model: cnn,
      spec: spec({ steps: 6, batchSize: 8, checkpointEvery: 2, optimizer: { type: 'momentum', learningRate: 0.05 } }),
      startWeights: start,
      dataset: mnist,
      indices: assignExamples(11, 6, 8, mnist.trainExamples),
      ...overrides,
    });
    const cpu = await onBackend('cpu', () => trainUnit(cnnInput({ keepCheckpointStates: true })));
    const wasm = await onBackend('wasm', () => trainUnit(cnnInput()));
    expect(wasm.backend).toBe('wasm');
    expect((await trainUnit(cnnInput())).finalHash).toBe(wasm.finalHash);
    expect(relativeDistance(cpu.delta, wasm.delta)).toBeLessThan(1e-4);
    expect(wasm.losses.every(Number.isFinite)).toBe(true);
    // What the coordinator's referee does in a dispute over a CNN unit: steps [2, 4) from the cpu worker's state.
    const seg = await trainUnit(
      cnnInput({ fromStep: 2, fromState: cpu.checkpointStates![0], toStep: 4, keepCheckpointStates: true }),
    );
    expect(stateDistance(seg.checkpointStates![0], cpu.checkpointStates![1], start)).toBeLessThan(DEFAULT_TOLERANCE);
  });
});
