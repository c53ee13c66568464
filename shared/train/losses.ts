import * as tf from '@tensorflow/tfjs';
import type { LossName } from '../protocol/job-spec.js';

/**
 * Losses over integer class labels, written out rather than taken from tfjs-layers so that the clipping epsilon is
 * a constant (layers caches the epsilon of whichever backend ran first). The formulas match Keras / tfjs-layers.
 */
export const LOSS_EPSILON = 1e-7;

function crossEntropy(oneHot: tf.Tensor, output: tf.Tensor): tf.Tensor {
  const probs = tf.clipByValue(tf.div(output, tf.sum(output, -1, true)), LOSS_EPSILON, 1 - LOSS_EPSILON);
  return tf.neg(tf.sum(tf.mul(oneHot, tf.log(probs)), -1));
}

/** Loss of each example: labels [B] int32, output [B, numClasses] (softmax probabilities for cross-entropy). */
export function perExampleLoss(loss: LossName, labels: tf.Tensor1D, output: tf.Tensor): tf.Tensor1D {
  return tf.tidy(() => {
    const numClasses = output.shape[output.shape.length - 1]!;
    // oneHot(..., 'float32') is wrong on the wasm backend (it writes int32 bits); cast instead.
    const oneHot = tf.cast(tf.oneHot(labels, numClasses), 'float32');
    switch (loss) {
      case 'categoricalCrossentropy':
        return crossEntropy(oneHot, output) as tf.Tensor1D;
      case 'sparseCategoricalCrossentropy':
        // Keras clips before renormalising for the sparse variant; kept for parity.
        return crossEntropy(oneHot, tf.clipByValue(output, LOSS_EPSILON, 1 - LOSS_EPSILON)) as tf.Tensor1D;
      case 'meanSquaredError':
        return tf.mean(tf.squaredDifference(output, oneHot), -1) as tf.Tensor1D;
      default:
        throw new Error(`unknown loss "${String(loss)}"`);
    }
  });
}

export function meanLoss(loss: LossName, labels: tf.Tensor1D, output: tf.Tensor): tf.Scalar {
  return tf.tidy(() => tf.mean(perExampleLoss(loss, labels, output)) as tf.Scalar);
}
