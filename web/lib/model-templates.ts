/**
 * MNIST model templates as tfjs layers JSON (what `model.toJSON()` gives), written out as plain data so the
 * dashboard offers them without loading tfjs. They equal shared/train/templates.ts (which needs tfjs) exactly;
 * test/web-templates.test.ts checks that.
 */
export type TemplateId = 'mlp' | 'cnn';

type LayerJson = { class_name: string; config: Record<string, unknown> };

const glorot = {
  class_name: 'VarianceScaling',
  config: { scale: 1, mode: 'fan_avg', distribution: 'normal', seed: null },
};
const zeros = { class_name: 'Zeros', config: {} };

function dense(name: string, units: number, activation: string, inputSize?: number): LayerJson {
  const config: Record<string, unknown> = {
    units,
    activation,
    use_bias: true,
    kernel_initializer: glorot,
    bias_initializer: zeros,
    kernel_regularizer: null,
    bias_regularizer: null,
    activity_regularizer: null,
    kernel_constraint: null,
    bias_constraint: null,
    name,
    trainable: true,
  };
  if (inputSize !== undefined) Object.assign(config, { batch_input_shape: [null, inputSize], dtype: 'float32' });
  return { class_name: 'Dense', config };
}

function conv2d(name: string, filters: number, kernel: number): LayerJson {
  return {
    class_name: 'Conv2D',
    config: {
      filters,
      kernel_size: [kernel, kernel],
      strides: [1, 1],
      padding: 'valid',
      data_format: 'channels_last',
      dilation_rate: [1, 1],
      activation: 'relu',
      use_bias: true,
      kernel_initializer: glorot,
      bias_initializer: zeros,
      kernel_regularizer: null,
      bias_regularizer: null,
      activity_regularizer: null,
      kernel_constraint: null,
      bias_constraint: null,
      name,
      trainable: true,
    },
  };
}

function maxPool(name: string): LayerJson {
  return {
    class_name: 'MaxPooling2D',
    config: {
      pool_size: [2, 2],
      padding: 'valid',
      strides: [2, 2],
      data_format: 'channels_last',
      name,
      trainable: true,
    },
  };
}

function sequential(name: string, layers: LayerJson[]): object {
  return {
    class_name: 'Sequential',
    config: { name, layers },
    keras_version: 'tfjs-layers 4.22.0',
    backend: 'tensor_flow.js',
  };
}

/** 784 -> hidden (relu) -> 10 (softmax). */
export function mnistMlpJson(hidden = 128): object {
  return sequential(`mnist_mlp_${hidden}`, [dense('hidden', hidden, 'relu', 784), dense('output', 10, 'softmax')]);
}

/** 28x28x1 -> conv 5x5x8 -> pool -> conv 5x5x16 -> pool -> flatten -> 10 (softmax). */
export function mnistCnnJson(): object {
  return sequential('mnist_cnn', [
    {
      class_name: 'Reshape',
      config: {
        target_shape: [28, 28, 1],
        name: 'image',
        trainable: true,
        batch_input_shape: [null, 784],
        dtype: 'float32',
      },
    },
    conv2d('conv1', 8, 5),
    maxPool('pool1'),
    conv2d('conv2', 16, 5),
    maxPool('pool2'),
    { class_name: 'Flatten', config: { name: 'flatten', trainable: true } },
    dense('output', 10, 'softmax'),
  ]);
}

export const TEMPLATES: { id: TemplateId; label: string; build: () => object }[] = [
  { id: 'mlp', label: 'MLP for MNIST (784-128-10)', build: () => mnistMlpJson(128) },
  { id: 'cnn', label: 'CNN for MNIST (2 conv layers)', build: mnistCnnJson },
];
