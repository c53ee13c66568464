import * as tf from '@tensorflow/tfjs';
import type { LossName } from '../protocol/job-spec.js';
import { batchSource } from './device-dataset.js';
import { perExampleLoss } from './losses.js';
import { withModel } from './model-cache.js';
import type { Dataset, WeightSet } from './types.js';
import { applyWeights } from './weights-format.js';

/** Forward-only evaluation on the current backend (inference mode: no dropout, batch-norm moving statistics). */

export interface EvaluateOptions {
  /** Example range [from, to); default the held-out split [trainExamples, examples). */
  from?: number;
  to?: number;
  batchSize?: number;
  loss?: LossName;
}

export interface EvaluateResult {
  loss: number;
  accuracy: number;
  examples: number;
}

const DEFAULT_EVAL_BATCH = 256;

/** Sums loss and correct predictions over `indices` in batches; returns float64 totals read once at the end. */
async function sumOver(
  model: tf.LayersModel,
  dataset: Dataset,
  indices: Int32Array,
  loss: LossName,
  batchSize: number,
): Promise<{ lossSum: number; correct: number }> {
  const source = batchSource(dataset);
  const parts: tf.Tensor[] = [];
  try {
    for (let start = 0; start < indices.length; start += batchSize) {
      parts.push(
        tf.tidy(() => {
          const { x, y } = source.batch(indices.subarray(start, Math.min(indices.length, start + batchSize)));
          const out = model.predict(x) as tf.Tensor;
          const lossSum = tf.sum(perExampleLoss(loss, y, out));
          const correct = tf.sum(tf.cast(tf.equal(tf.argMax(out, -1), y), 'float32'));
          return tf.stack([lossSum, correct]);
        }),
      );
    }
    const stacked = tf.stack(parts);
    const values = await stacked.data();
    stacked.dispose();
    let lossSum = 0;
    let correct = 0;
    for (let i = 0; i < parts.length; i++) {
      lossSum += values[2 * i];
      correct += values[2 * i + 1];
    }
    return { lossSum, correct };
  } finally {
    tf.dispose(parts);
  }
}

function checkIndices(dataset: Dataset, indices: Int32Array): void {
  for (let i = 0; i < indices.length; i++) {
    if (!(indices[i] >= 0 && indices[i] < dataset.examples)) {
      throw new Error(`example index ${indices[i]} is outside [0, ${dataset.examples})`);
    }
  }
}

/** Mean loss and accuracy of `weights` on a range of examples (default: the held-out split). */
export async function evaluateModel(
  model: object,
  weights: WeightSet,
  dataset: Dataset,
  opts: EvaluateOptions = {},
): Promise<EvaluateResult> {
  const from = opts.from ?? dataset.trainExamples;
  const to = opts.to ?? dataset.examples;
  if (!Number.isSafeInteger(from) || !Number.isSafeInteger(to) || from < 0 || to > dataset.examples || to < from) {
    throw new Error(`evaluateModel: range [${from}, ${to}) is not inside [0, ${dataset.examples})`);
  }
  const examples = to - from;
  if (examples === 0) return { loss: Number.NaN, accuracy: Number.NaN, examples: 0 };
  const indices = new Int32Array(examples);
  for (let i = 0; i < examples; i++) indices[i] = from + i;
  const batchSize = opts.batchSize ?? DEFAULT_EVAL_BATCH;
  return withModel(model, async (m) => {
    applyWeights(m, weights);
    const { lossSum, correct } = await sumOver(m, dataset, indices, opts.loss ?? 'categoricalCrossentropy', batchSize);
    return { loss: lossSum / examples, accuracy: correct / examples, examples };
  });
}

/** Mean loss of `weights` on the given examples: a cheap forward-only check for the verification layer. */
export async function forwardLoss(
  model: object,
  weights: WeightSet,
  dataset: Dataset,
  indices: Int32Array,
  loss: LossName = 'categoricalCrossentropy',
): Promise<number> {
  if (indices.length === 0) throw new Error('forwardLoss: no examples given');
  checkIndices(dataset, indices);
  return withModel(model, async (m) => {
    applyWeights(m, weights);
    const { lossSum } = await sumOver(m, dataset, indices, loss, DEFAULT_EVAL_BATCH);
    return lossSum / indices.length;
  });
}
