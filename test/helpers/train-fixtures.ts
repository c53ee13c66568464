import * as tf from '@tensorflow/tfjs';
import type { Dataset, TrainUnitSpec, WeightSet } from '../../shared/train/types.js';
import { weightsFromModel } from '../../shared/train/weights-format.js';

/** Small deterministic fixtures for the training-core tests (no randomness from Math.random). */

/** A classification dataset whose classes are learnable: class c lights up feature block c. */
export function syntheticDataset(examples = 600, features = 20, classes = 4): Dataset {
  const x = new Float32Array(examples * features);
  const y = new Int32Array(examples);
  let s = 12345;
  const rand = () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return s / 4294967296;
  };
  for (let i = 0; i < examples; i++) {
    const c = i % classes;
    y[i] = c;
    for (let f = 0; f < features; f++) {
      x[i * features + f] = rand() * 0.5 + (Math.floor((f * classes) / features) === c ? 0.8 : 0);
    }
  }
  return {
    name: 'synthetic',
    featureShape: [features],
    numClasses: classes,
    examples,
    trainExamples: Math.floor(examples * 0.8),
    features: x,
    labels: y,
  };
}

/** A small MLP as model JSON, optionally with dropout or batch normalisation between the layers. */
export function smallMlp(inputs: number, classes: number, extra: 'none' | 'dropout' | 'batchnorm' = 'none'): object {
  const model = tf.sequential({ name: `small_${extra}` });
  model.add(tf.layers.dense({ name: 'h', inputShape: [inputs], units: 16, activation: 'relu' }));
  if (extra === 'dropout') model.add(tf.layers.dropout({ name: 'drop', rate: 0.3 }));
  if (extra === 'batchnorm') model.add(tf.layers.batchNormalization({ name: 'bn' }));
  model.add(tf.layers.dense({ name: 'out', units: classes, activation: 'softmax' }));
  const json = model.toJSON(null, false) as object;
  model.dispose();
  return json;
}

/** Initial weights of a model JSON from a seeded initializer-independent fill (same on every backend). */
export function seededWeights(modelJson: object, shapesFrom: tf.LayersModel, seed = 1): WeightSet {
  void modelJson;
  const w = weightsFromModel(shapesFrom);
  let s = seed >>> 0;
  for (const d of w.data) {
    for (let i = 0; i < d.length; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      d[i] = (s / 4294967296 - 0.5) * 0.4;
    }
  }
  // Batch-norm moving variance must stay positive.
  w.names.forEach((n, t) => {
    if (n.endsWith('moving_variance')) w.data[t].fill(1);
  });
  return w;
}

export async function initialWeights(modelJson: object, seed = 1): Promise<WeightSet> {
  const model = await tf.models.modelFromJSON(modelJson as Parameters<typeof tf.models.modelFromJSON>[0]);
  const w = seededWeights(modelJson, model, seed);
  model.dispose();
  return w;
}

export function spec(overrides: Partial<TrainUnitSpec> = {}): TrainUnitSpec {
  return {
    steps: 12,
    batchSize: 16,
    checkpointEvery: 4,
    optimizer: { type: 'sgd', learningRate: 0.1 },
    loss: 'categoricalCrossentropy',
    ...overrides,
  };
}

export function relativeDistance(a: WeightSet, b: WeightSet): number {
  let diff = 0;
  let na = 0;
  let nb = 0;
  a.data.forEach((da, t) => {
    const db = b.data[t];
    for (let i = 0; i < da.length; i++) {
      diff += (da[i] - db[i]) ** 2;
      na += da[i] ** 2;
      nb += db[i] ** 2;
    }
  });
  return Math.sqrt(diff) / Math.max(Math.sqrt(na), Math.sqrt(nb), 1e-30);
}
