import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { checkModelJson, MAX_LAYERS } from '../shared/train/model-allowlist.js';
import { mnistCnnModel, mnistMlpModel } from '../shared/train/templates.js';

// biome-ignore lint/suspicious/noExplicitAny: tests poke into arbitrary model JSON
type Json = Record<string, any>;

function mutable(model: object): Json {
  return JSON.parse(JSON.stringify(model));
}

function errorsOf(model: unknown): { path: string; message: string }[] {
  const r = checkModelJson(model);
  if (r.ok) throw new Error('expected the model to be rejected');
  return r.errors;
}

describe('model allow-list', () => {
  it('accepts the templates, as objects and as the string model.toJSON() returns', () => {
    for (const model of [mnistMlpModel(), mnistMlpModel(256), mnistCnnModel()]) {
      const r = checkModelJson(model);
      expect(r.ok).toBe(true);
      expect(checkModelJson(JSON.stringify(model)).ok).toBe(true);
    }
  });

  it('counts parameters exactly like tfjs for sequential and functional models', async () => {
    const input = tf.input({ shape: [16, 16, 3] });
    let x = tf.layers.conv2d({ filters: 4, kernelSize: 3, activation: 'relu' }).apply(input) as tf.SymbolicTensor;
    x = tf.layers.depthwiseConv2d({ kernelSize: 3, depthMultiplier: 2 }).apply(x) as tf.SymbolicTensor;
    x = tf.layers.separableConv2d({ filters: 3, kernelSize: 3, padding: 'same' }).apply(x) as tf.SymbolicTensor;
    x = tf.layers.zeroPadding2d({ padding: 1 }).apply(x) as tf.SymbolicTensor;
    x = tf.layers.batchNormalization().apply(x) as tf.SymbolicTensor;
    const a = tf.layers.averagePooling2d({ poolSize: 2 }).apply(x) as tf.SymbolicTensor;
    const b = tf.layers.leakyReLU().apply(a) as tf.SymbolicTensor;
    const sum = tf.layers.add().apply([a, b]) as tf.SymbolicTensor;
    const cat = tf.layers.concatenate().apply([sum, a]) as tf.SymbolicTensor;
    const pooled = tf.layers.globalMaxPooling2d({}).apply(cat) as tf.SymbolicTensor;
    const out = tf.layers.dense({ units: 5, activation: 'softmax' }).apply(pooled) as tf.SymbolicTensor;
    const functional = tf.model({ inputs: input, outputs: out });

    const seq = tf.sequential();
    seq.add(tf.layers.embedding({ inputDim: 100, outputDim: 8, inputLength: 6 }));
    seq.add(tf.layers.conv1d({ filters: 4, kernelSize: 2 }));
    seq.add(tf.layers.maxPooling1d({ poolSize: 2 }));
    seq.add(tf.layers.layerNormalization());
    seq.add(tf.layers.flatten());
    seq.add(tf.layers.dropout({ rate: 0.1 }));
    seq.add(tf.layers.dense({ units: 3 }));
    seq.add(tf.layers.softmax());

    for (const model of [functional, seq]) {
      const r = checkModelJson(model.toJSON(null, false));
      expect(r.ok && r.params).toBe(model.countParams());
    }
    const cnn = await tf.models.modelFromJSON(mnistCnnModel() as never);
    const r = checkModelJson(mnistCnnModel());
    expect(r.ok && r.params).toBe(cnn.countParams());
    tf.dispose([functional, seq, cnn].flatMap((m) => m.weights.map((w) => w.read())));
  });

  it('unwraps {modelTopology} and returns the bare topology for modelFromJSON', () => {
    const r = checkModelJson({ modelTopology: mnistMlpModel(), format: 'layers-model', weightsManifest: [] });
    expect(r.ok).toBe(true);
    if (r.ok) expect((r.model as Json).class_name).toBe('Sequential');
    const bad = mutable({ modelTopology: mnistMlpModel() });
    bad.modelTopology.config.layers[0].class_name = 'Lambda';
    expect(errorsOf(bad)).toEqual([
      { path: '/model/modelTopology/config/layers/0/class_name', message: 'layer class "Lambda" is not allowed' },
    ]);
  });

  it('rejects a Lambda or custom layer by name with its JSON pointer', () => {
    const model = mutable(mnistMlpModel());
    model.config.layers.splice(1, 0, { class_name: 'Lambda', config: { name: 'evil', function: 'return 1' } });
    model.config.layers.push({ class_name: 'MyCustomLayer', config: { name: 'custom' } });
    expect(errorsOf(model)).toEqual([
      { path: '/model/config/layers/1/class_name', message: 'layer class "Lambda" is not allowed' },
      { path: '/model/config/layers/3/class_name', message: 'layer class "MyCustomLayer" is not allowed' },
    ]);
    expect(errorsOf(JSON.stringify(model))[0].path).toBe('/model/config/layers/1/class_name');
  });

  it('rejects unknown activations, initializers, regularizers and constraints', () => {
    const model = mutable(mnistMlpModel());
    model.config.layers[0].config.activation = 'exec';
    model.config.layers[0].config.kernel_initializer = { class_name: 'Evil', config: {} };
    model.config.layers[1].config.kernel_regularizer = { class_name: 'CustomReg', config: {} };
    model.config.layers[1].config.bias_constraint = 'myConstraint';
    expect(errorsOf(model)).toEqual([
      { path: '/model/config/layers/0/config/activation', message: 'activation "exec" is not allowed' },
      {
        path: '/model/config/layers/0/config/kernel_initializer/class_name',
        message: 'initializer "Evil" is not allowed',
      },
      {
        path: '/model/config/layers/1/config/kernel_regularizer/class_name',
        message: 'regularizer "CustomReg" is not allowed',
      },
      { path: '/model/config/layers/1/config/bias_constraint', message: 'constraint "myConstraint" is not allowed' },
    ]);
  });

  it('takes regularizers in class form only, and checks camelCase keys like snake_case ones (issue 9 #7)', () => {
    const byName = mutable(mnistMlpModel());
    byName.config.layers[0].config.kernel_regularizer = 'l1l2';
    expect(errorsOf(byName)).toEqual([
      {
        path: '/model/config/layers/0/config/kernel_regularizer',
        message: 'regularizer "l1l2" must be given as {"class_name": "L1L2", "config": {"l1": ..., "l2": ...}}',
      },
    ]);
    const camel = mutable(mnistMlpModel());
    camel.config.layers[0].config.kernelInitializer = { class_name: 'Evil', config: {} };
    camel.config.layers[1].config.biasRegularizer = 'l1l2';
    expect(errorsOf(camel).map((e) => e.path)).toEqual([
      '/model/config/layers/0/config/kernelInitializer/class_name',
      '/model/config/layers/1/config/biasRegularizer',
    ]);
  });

  it('accepts built-in regularizers, constraints and initializers', () => {
    const seq = tf.sequential({ name: 'reg' });
    seq.add(
      tf.layers.dense({
        inputShape: [4],
        units: 3,
        activation: 'tanh',
        kernelRegularizer: tf.regularizers.l1l2({ l1: 0.01, l2: 0.01 }),
        kernelConstraint: tf.constraints.maxNorm({ maxValue: 2 }),
        kernelInitializer: 'heUniform',
      }),
    );
    expect(checkModelJson(seq.toJSON(null, false)).ok).toBe(true);
  });

  it('rejects structural problems: no layers, too many layers, wrong model class, bad JSON', () => {
    expect(errorsOf({ class_name: 'Sequential', config: {} })).toEqual([
      { path: '/model/config/layers', message: 'layers array is missing' },
    ]);
    const many = mutable(mnistMlpModel());
    const relu = { class_name: 'ReLU', config: { name: 'r', trainable: true } };
    for (let i = 0; i < MAX_LAYERS; i++)
      many.config.layers.push({ ...relu, config: { ...relu.config, name: `r${i}` } });
    expect(errorsOf(many)[0].message).toMatch(/at most 256 are allowed/);
    expect(errorsOf({ class_name: 'Evil', config: { layers: [] } })[0]).toEqual({
      path: '/model/class_name',
      message: 'model class "Evil" is not allowed (Sequential, Model or Functional)',
    });
    expect(errorsOf('{not json')[0].message).toMatch(/not valid JSON/);
    expect(errorsOf(42)[0].path).toBe('/model');
  });

  it('rejects prototype-polluting keys and non-JSON values without touching them', () => {
    const polluted = `{"class_name":"Sequential","config":{"layers":[{"class_name":"Dense","config":{"__proto__":{"polluted":1},"units":2}}]}}`;
    expect(errorsOf(polluted)).toEqual([
      { path: '/model/config/layers/0/config/__proto__', message: 'key "__proto__" is not allowed' },
    ]);
    expect(({} as Json).polluted).toBeUndefined();
    const withFunction = mutable(mnistMlpModel());
    withFunction.config.layers[0].config.activation = () => 'boom';
    expect(errorsOf(withFunction)[0]).toEqual({
      path: '/model/config/layers/0/config/activation',
      message: 'value of type function is not JSON data',
    });
  });

  it('bounds the parameter count (50M) and refuses models whose size cannot be inferred', () => {
    // Edited JSON rather than a built model: building 78M parameters is exactly what the check exists to avoid.
    const huge = mutable(mnistMlpModel());
    huge.config.layers[0].config.units = 100_000;
    const errors = errorsOf(huge);
    expect(errors).toEqual([
      { path: '/model', message: 'model has 78500000 parameters; at most 50000000 are allowed' },
    ]);
    const noInput = mutable(mnistMlpModel());
    delete noInput.config.layers[0].config.batch_input_shape;
    expect(errorsOf(noInput)[0].message).toMatch(/needs an input shape/);
    const hugeEmbedding = {
      class_name: 'Sequential',
      config: {
        layers: [{ class_name: 'Embedding', config: { input_dim: 1e7, output_dim: 64, batch_input_shape: [null, 4] } }],
      },
    };
    expect(errorsOf(hugeEmbedding)[0].message).toMatch(/640000000 parameters/);
  });
});
