import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { assignExamples } from '../shared/train/assign.js';
import { canTrainOn, missingTrainingKernels } from '../shared/train/backend-support.js';
import { mnistCnnModel, mnistMlpModel } from '../shared/train/templates.js';
import { trainUnit } from '../shared/train/train-unit.js';
import type { TrainUnitInput, TrainUnitOutput, WeightSet } from '../shared/train/types.js';
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

  it('refuses up front, by name, a model the wasm backend cannot train (convolution gradients are missing)', async () => {
    await tf.setBackend('wasm');
    const cnn = mnistCnnModel();
    expect(canTrainOn(mnistMlpModel(), 'wasm')).toBe(true);
    expect(canTrainOn(cnn, 'cpu')).toBe(true);
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
  });
});
