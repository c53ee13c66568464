import * as tf from '@tensorflow/tfjs';
import type { BackendName, BenchmarkResult } from '../lib/settings.js';
import { activateBackend } from './backends.js';

/**
 * A short training benchmark per backend: an MNIST-shaped MLP (784-128-10) trained on random data, batch 32. Two
 * warm-up steps compile kernels; then steps run until ~400 ms have passed (at least 3, at most 40).
 */
export async function benchmarkBackend(backend: BackendName, budgetMs = 400): Promise<BenchmarkResult> {
  const start = performance.now();
  try {
    await activateBackend(backend);
    const batch = 32;
    const model = tf.sequential({
      layers: [
        tf.layers.dense({ inputShape: [784], units: 128, activation: 'relu' }),
        tf.layers.dense({ units: 10, activation: 'softmax' }),
      ],
    });
    model.compile({ optimizer: tf.train.sgd(0.05), loss: 'categoricalCrossentropy' });
    const x = tf.randomUniform([batch, 784]);
    const y = tf.oneHot(tf.randomUniform([batch], 0, 10, 'int32') as tf.Tensor1D, 10);
    try {
      for (let i = 0; i < 2; i++) await model.trainOnBatch(x, y);
      let steps = 0;
      const t0 = performance.now();
      let loss = 0;
      while (steps < 3 || (performance.now() - t0 < budgetMs && steps < 40)) {
        loss = (await model.trainOnBatch(x, y)) as number;
        steps++;
      }
      const ms = performance.now() - t0;
      if (!Number.isFinite(loss)) throw new Error(`non-finite loss ${loss}`);
      return { backend, examplesPerSecond: (steps * batch * 1000) / ms, ms: performance.now() - start };
    } finally {
      x.dispose();
      y.dispose();
      model.dispose();
    }
  } catch (err) {
    return {
      backend,
      examplesPerSecond: 0,
      ms: performance.now() - start,
      error: err instanceof Error ? err.message : String(err),
    };
  }
}
