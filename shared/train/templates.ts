import * as tf from '@tensorflow/tfjs';

/**
 * Ready-made model JSON for the built-in MNIST dataset. Layers and the model are named explicitly so the JSON
 * (and so the model cache key and the weight names) is the same on every call, in every process.
 * Building needs an initialised tfjs backend (await tf.ready() / tf.setBackend() first).
 */

function toJson(model: tf.LayersModel): object {
  try {
    return model.toJSON(null, false) as object;
  } finally {
    model.dispose();
  }
}

/** 784 -> hidden (relu) -> 10 (softmax). */
export function mnistMlpModel(hidden = 128): object {
  if (!Number.isSafeInteger(hidden) || hidden < 1) throw new Error('mnistMlpModel: hidden must be a positive integer');
  const model = tf.sequential({ name: `mnist_mlp_${hidden}` });
  model.add(tf.layers.dense({ name: 'hidden', inputShape: [784], units: hidden, activation: 'relu' }));
  model.add(tf.layers.dense({ name: 'output', units: 10, activation: 'softmax' }));
  return toJson(model);
}

/**
 * A small CNN over the flat 784 features: reshape to 28x28x1, two conv/pool blocks, dense softmax.
 * Trains on cpu, webgl and webgpu; the wasm backend lacks convolution gradients (see backend-support.ts).
 */
export function mnistCnnModel(): object {
  const model = tf.sequential({ name: 'mnist_cnn' });
  model.add(tf.layers.reshape({ name: 'image', inputShape: [784], targetShape: [28, 28, 1] }));
  model.add(tf.layers.conv2d({ name: 'conv1', filters: 8, kernelSize: 5, activation: 'relu' }));
  model.add(tf.layers.maxPooling2d({ name: 'pool1', poolSize: 2 }));
  model.add(tf.layers.conv2d({ name: 'conv2', filters: 16, kernelSize: 5, activation: 'relu' }));
  model.add(tf.layers.maxPooling2d({ name: 'pool2', poolSize: 2 }));
  model.add(tf.layers.flatten({ name: 'flatten' }));
  model.add(tf.layers.dense({ name: 'output', units: 10, activation: 'softmax' }));
  return toJson(model);
}
