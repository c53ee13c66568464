import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';

/**
 * The coordinator evaluates rounds and referees disputes with the same tfjs code as workers. wasm is the fastest
 * backend available in plain Node (no native tfjs-node); cpu is the fallback.
 */
export async function initTfBackend(preferred = process.env.TF_BACKEND ?? 'wasm'): Promise<string> {
  if (tf.getBackend() === preferred) return preferred;
  try {
    if (await tf.setBackend(preferred)) {
      await tf.ready();
      return tf.getBackend();
    }
  } catch {
    // fall through to cpu
  }
  await tf.setBackend('cpu');
  await tf.ready();
  return tf.getBackend();
}
