import * as tf from '@tensorflow/tfjs';
import { registerWasmGradientKernels } from './wasm-gradient-kernels.js';

// Wherever training code runs (browser worker, headless worker, coordinator), wasm gets the gradient kernels it lacks
// before anyone asks what it can train.
registerWasmGradientKernels();

/**
 * Which allow-listed layers a backend can train. tfjs backends do not implement every gradient kernel: the wasm
 * backend (4.22) has no Conv2DBackpropFilter, no depthwise-convolution gradients and no UnsortedSegmentSum (the
 * gradient of an embedding lookup); wasm-gradient-kernels.ts bridges those to the cpu kernels. Knowing what a backend
 * lacks before a unit starts lets a worker pick a backend (or decline the job) instead of failing mid-unit.
 */

const CONV = ['Conv2D', 'Conv2DBackpropFilter', 'Conv2DBackpropInput'];
const DEPTHWISE = [
  'DepthwiseConv2dNative',
  'DepthwiseConv2dNativeBackpropFilter',
  'DepthwiseConv2dNativeBackpropInput',
];

/** Kernels (forward and gradient) each layer class needs beyond the elementwise basics every backend has. */
const TRAINING_KERNELS: Record<string, string[]> = {
  Dense: ['BatchMatMul'],
  Conv1D: CONV,
  Conv2D: CONV,
  DepthwiseConv2D: DEPTHWISE,
  SeparableConv2D: [...DEPTHWISE, ...CONV],
  MaxPooling1D: ['MaxPool', 'MaxPoolGrad'],
  MaxPooling2D: ['MaxPool', 'MaxPoolGrad'],
  AveragePooling1D: ['AvgPool', 'AvgPoolGrad'],
  AveragePooling2D: ['AvgPool', 'AvgPoolGrad'],
  Embedding: ['GatherV2', 'UnsortedSegmentSum'],
};

export interface MissingKernel {
  layer: string;
  className: string;
  kernel: string;
}

function layersOf(model: object): { name: string; className: string }[] {
  let topology = model as { modelTopology?: unknown; model_config?: unknown; config?: { layers?: unknown } };
  if (topology.modelTopology && typeof topology.modelTopology === 'object')
    topology = topology.modelTopology as typeof topology;
  if (topology.model_config && typeof topology.model_config === 'object')
    topology = topology.model_config as typeof topology;
  const layers = Array.isArray(topology.config?.layers) ? (topology.config.layers as unknown[]) : [];
  return layers.map((l, i) => {
    const layer = l as { class_name?: unknown; name?: unknown; config?: { name?: unknown } };
    const name = typeof layer.name === 'string' ? layer.name : layer.config?.name;
    return { name: typeof name === 'string' ? name : `#${i}`, className: String(layer.class_name) };
  });
}

/** The kernels a backend lacks to train this model JSON (empty: it can train it). */
export function missingTrainingKernels(model: object, backend: string = tf.getBackend()): MissingKernel[] {
  const missing: MissingKernel[] = [];
  for (const { name, className } of layersOf(model)) {
    for (const kernel of TRAINING_KERNELS[className] ?? []) {
      if (!tf.getKernel(kernel, backend)) missing.push({ layer: name, className, kernel });
    }
  }
  return missing;
}

/** True when `backend` implements every kernel this model needs for training. */
export function canTrainOn(model: object, backend: string = tf.getBackend()): boolean {
  return missingTrainingKernels(model, backend).length === 0;
}

/** Throws a clear error naming the missing kernels and layers, if any. */
export function assertCanTrainOn(model: object, backend: string = tf.getBackend()): void {
  const missing = missingTrainingKernels(model, backend);
  if (missing.length === 0) return;
  const kernels = [...new Set(missing.map((m) => m.kernel))].join(', ');
  const layers = [...new Set(missing.map((m) => `${m.className} "${m.layer}"`))].join(', ');
  throw new Error(
    `the "${backend}" backend cannot train this model: it lacks ${kernels} (needed by ${layers}); use cpu, webgl or webgpu`,
  );
}
