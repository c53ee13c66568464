import * as tf from '@tensorflow/tfjs';
import type { Dataset } from './types.js';

/**
 * Where batches come from. On CPU-memory backends (cpu, wasm) rows are copied in JS and uploaded per batch: a
 * memcpy per row beats tfjs' generic gather kernel several times over. On GPU backends the dataset is uploaded
 * once and batches are gathered on the device, so each step only uploads its indices.
 */

/** Backends whose tensors live in CPU memory. */
export const HOST_MEMORY_BACKENDS: ReadonlySet<string> = new Set(['cpu', 'wasm', 'tensorflow']);

interface DeviceDataset {
  backend: string;
  /** [examples, ...featureShape] float32. */
  features: tf.Tensor;
  /** [examples] int32. */
  labels: tf.Tensor1D;
}

const MAX_RESIDENT = 2;
const resident: { dataset: Dataset; device: DeviceDataset }[] = [];

function deviceDataset(dataset: Dataset): DeviceDataset {
  const backend = tf.getBackend();
  const i = resident.findIndex((r) => r.dataset === dataset && r.device.backend === backend);
  if (i >= 0) {
    const [hit] = resident.splice(i, 1);
    resident.push(hit);
    return hit.device;
  }
  const device: DeviceDataset = {
    backend,
    features: tf.tensor(dataset.features, [dataset.examples, ...dataset.featureShape], 'float32'),
    labels: tf.tensor1d(dataset.labels, 'int32'),
  };
  resident.push({ dataset, device });
  while (resident.length > MAX_RESIDENT) {
    const old = resident.shift()!;
    tf.dispose([old.device.features, old.device.labels]);
  }
  return device;
}

/** A batch source for one dataset on the current backend. */
export interface BatchSource {
  /** Features [n, ...featureShape] and int32 labels [n] of the given example indices (new tensors). */
  batch(indices: Int32Array): { x: tf.Tensor; y: tf.Tensor1D };
}

export function batchSource(dataset: Dataset): BatchSource {
  const featureShape = dataset.featureShape;
  const width = featureShape.reduce((a, b) => a * b, 1);
  if (HOST_MEMORY_BACKENDS.has(tf.getBackend())) {
    return {
      batch(indices) {
        const x = new Float32Array(indices.length * width);
        const y = new Int32Array(indices.length);
        for (let i = 0; i < indices.length; i++) {
          const row = indices[i];
          x.set(dataset.features.subarray(row * width, (row + 1) * width), i * width);
          y[i] = dataset.labels[row];
        }
        return { x: tf.tensor(x, [indices.length, ...featureShape], 'float32'), y: tf.tensor1d(y, 'int32') };
      },
    };
  }
  const device = deviceDataset(dataset);
  return {
    batch(indices) {
      return tf.tidy(() => {
        const idx = tf.tensor1d(indices, 'int32');
        return { x: tf.gather(device.features, idx), y: tf.gather(device.labels, idx) as tf.Tensor1D };
      });
    },
  };
}

/** Drops every dataset uploaded to a device (tests, memory pressure). */
export function clearDeviceDatasets(): void {
  for (const r of resident.splice(0)) tf.dispose([r.device.features, r.device.labels]);
}
