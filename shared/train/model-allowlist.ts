import { declaredInputShape, inferLayer, type Shape, ShapeError } from './model-shapes.js';

/**
 * Checks a requester's tfjs LayersModel JSON against an allow-list before anything builds it.
 * Only built-in layer classes, activations, initializers, regularizers and constraints pass; the check is pure
 * data inspection (nothing in the JSON is executed) and also bounds the size of the model.
 */

export const ALLOWED_LAYER_CLASSES: ReadonlySet<string> = new Set([
  'Dense',
  'Conv2D',
  'Conv1D',
  'DepthwiseConv2D',
  'SeparableConv2D',
  'MaxPooling2D',
  'AveragePooling2D',
  'MaxPooling1D',
  'AveragePooling1D',
  'GlobalAveragePooling2D',
  'GlobalMaxPooling2D',
  'Flatten',
  'Dropout',
  'Activation',
  'BatchNormalization',
  'LayerNormalization',
  'Reshape',
  'Embedding',
  'InputLayer',
  'ReLU',
  'LeakyReLU',
  'Softmax',
  'ZeroPadding2D',
  'Add',
  'Concatenate',
]);

/** Activation class names registered by tfjs-layers 4.x. */
export const ALLOWED_ACTIVATIONS: ReadonlySet<string> = new Set([
  'elu',
  'gelu',
  'gelu_new',
  'hardSigmoid',
  'linear',
  'logSoftmax',
  'mish',
  'relu',
  'relu6',
  'selu',
  'sigmoid',
  'softmax',
  'softplus',
  'softsign',
  'swish',
  'tanh',
]);

/** Initializer class names and the camelCase identifiers tfjs maps onto them. */
export const ALLOWED_INITIALIZERS: ReadonlySet<string> = new Set([
  'Constant',
  'GlorotNormal',
  'GlorotUniform',
  'HeNormal',
  'HeUniform',
  'Identity',
  'LeCunNormal',
  'LeCunUniform',
  'Ones',
  'Orthogonal',
  'RandomNormal',
  'RandomUniform',
  'TruncatedNormal',
  'VarianceScaling',
  'Zeros',
  'constant',
  'glorotNormal',
  'glorotUniform',
  'heNormal',
  'heUniform',
  'identity',
  'leCunNormal',
  'leCunUniform',
  'ones',
  'orthogonal',
  'randomNormal',
  'randomUniform',
  'truncatedNormal',
  'varianceScaling',
  'zeros',
]);

/**
 * Only the class form {class_name: 'L1L2', config: {l1, l2}}: a bare name ('l1l2') hides tfjs' default penalties
 * (0.01 each), and a penalty nobody sees in the JSON is one the coordinator's loss checks would not expect.
 */
export const ALLOWED_REGULARIZERS: ReadonlySet<string> = new Set(['L1L2']);

export const ALLOWED_CONSTRAINTS: ReadonlySet<string> = new Set([
  'MaxNorm',
  'MinMaxNorm',
  'NonNeg',
  'UnitNorm',
  'maxNorm',
  'minMaxNorm',
  'nonNeg',
  'unitNorm',
]);

const MODEL_CLASSES = new Set(['Sequential', 'Model', 'Functional']);
export const MAX_LAYERS = 256;
export const MAX_PARAMS = 50_000_000;
/** Per-example elements of any one layer output: bounds activation memory, which parameters alone do not. */
export const MAX_ACTIVATION_ELEMENTS = 16_777_216;
const MAX_JSON_CHARS = 4 * 1024 * 1024;
const MAX_DEPTH = 64;
const MAX_NODES = 200_000;
/** Keys that would reach Object.prototype when copied by tfjs' config conversion. */
const FORBIDDEN_KEYS = new Set(['__proto__', 'constructor', 'prototype']);

export interface ModelCheckError {
  path: string;
  message: string;
}

export type ModelCheckResult =
  | { ok: true; model: object; params: number; layers: number }
  | { ok: false; errors: ModelCheckError[] };

export interface CheckModelOptions {
  /** JSON pointer of the model within the request; default '/model'. */
  path?: string;
  maxParams?: number;
  maxLayers?: number;
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Rejects anything JSON could not have produced (functions, class instances) and hostile keys or nesting. */
function scanJson(value: unknown, path: string, errors: ModelCheckError[]): void {
  let nodes = 0;
  const walk = (v: unknown, p: string, depth: number): void => {
    if (errors.length > 20) return;
    if (++nodes > MAX_NODES) {
      if (nodes === MAX_NODES + 1) errors.push({ path, message: `model JSON has more than ${MAX_NODES} values` });
      return;
    }
    if (depth > MAX_DEPTH) {
      errors.push({ path: p, message: `nested deeper than ${MAX_DEPTH} levels` });
      return;
    }
    if (v === null || typeof v === 'string' || typeof v === 'boolean') return;
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) errors.push({ path: p, message: 'numbers must be finite' });
      return;
    }
    if (Array.isArray(v)) {
      v.forEach((x, i) => {
        walk(x, `${p}/${i}`, depth + 1);
      });
      return;
    }
    if (typeof v === 'object' && (Object.getPrototypeOf(v) === Object.prototype || Object.getPrototypeOf(v) === null)) {
      for (const key of Object.keys(v)) {
        if (FORBIDDEN_KEYS.has(key)) {
          errors.push({ path: `${p}/${escapePointer(key)}`, message: `key "${key}" is not allowed` });
          continue;
        }
        walk((v as Json)[key], `${p}/${escapePointer(key)}`, depth + 1);
      }
      return;
    }
    errors.push({ path: p, message: `value of type ${typeof v} is not JSON data` });
  };
  walk(value, path, 0);
}

function escapePointer(key: string): string {
  return key.replace(/~/g, '~0').replace(/\//g, '~1');
}

function checkNamed(
  value: unknown,
  path: string,
  kind: string,
  allowed: ReadonlySet<string>,
  errors: ModelCheckError[],
  allowNull: boolean,
): void {
  if (value === null || value === undefined) {
    if (!allowNull) errors.push({ path, message: `${kind} is missing` });
    return;
  }
  if (typeof value === 'string') {
    if (!allowed.has(value)) errors.push({ path, message: `${kind} "${value}" is not allowed` });
    return;
  }
  if (!isObject(value)) {
    errors.push({ path, message: `${kind} must be a name or {class_name, config}` });
    return;
  }
  const cls = value.class_name ?? value.className;
  const clsPath = `${path}/${value.class_name !== undefined ? 'class_name' : 'className'}`;
  if (typeof cls !== 'string') {
    errors.push({ path: clsPath, message: `${kind} class_name must be a string` });
  } else if (!allowed.has(cls)) {
    errors.push({ path: clsPath, message: `${kind} "${cls}" is not allowed` });
  }
  const config = value.config;
  if (config !== undefined && config !== null) {
    if (!isObject(config)) {
      errors.push({ path: `${path}/config`, message: `${kind} config must be an object` });
      return;
    }
    for (const [k, v] of Object.entries(config)) {
      const ok =
        v === null ||
        ['number', 'string', 'boolean'].includes(typeof v) ||
        (Array.isArray(v) && v.every((x) => typeof x === 'number'));
      if (!ok)
        errors.push({
          path: `${path}/config/${escapePointer(k)}`,
          message: `${kind} config values must be plain numbers, strings or booleans`,
        });
    }
  }
}

function checkLayerConfig(config: Json, path: string, errors: ModelCheckError[]): void {
  for (const [rawKey, value] of Object.entries(config)) {
    const p = `${path}/${escapePointer(rawKey)}`;
    // tfjs reads camelCase keys as readily as snake_case ones: check both spellings alike.
    const key = rawKey.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
    if (key === 'activation' || key.endsWith('_activation')) {
      checkNamed(value, p, 'activation', ALLOWED_ACTIVATIONS, errors, true);
    } else if (key.endsWith('_initializer')) {
      checkNamed(value, p, 'initializer', ALLOWED_INITIALIZERS, errors, true);
    } else if (key.endsWith('_regularizer')) {
      if (typeof value === 'string') {
        errors.push({
          path: p,
          message: `regularizer "${value}" must be given as {"class_name": "L1L2", "config": {"l1": ..., "l2": ...}}`,
        });
      } else checkNamed(value, p, 'regularizer', ALLOWED_REGULARIZERS, errors, true);
    } else if (key.endsWith('_constraint')) {
      checkNamed(value, p, 'constraint', ALLOWED_CONSTRAINTS, errors, true);
    } else if (key === 'dtype') {
      if (value !== null && value !== 'float32' && value !== 'int32') {
        errors.push({ path: p, message: `dtype "${String(value)}" is not allowed (float32 or int32)` });
      }
    }
  }
}

interface LayerInfo {
  index: number;
  className: string;
  config: Json;
  name: string;
  inbound: unknown;
}

/** Shape inference over the layer graph: parameters and activation sizes, or the reason it cannot be bounded. */
function boundModel(
  functional: boolean,
  layers: LayerInfo[],
  layersPath: string,
  maxParams: number,
  errors: ModelCheckError[],
): number {
  let params = 0;
  const fail = (layer: LayerInfo, message: string) =>
    errors.push({
      path: `${layersPath}/${layer.index}`,
      message: `layer ${layer.index} (${layer.className}): ${message}`,
    });
  const account = (layer: LayerInfo, inputs: Shape[]): Shape | null => {
    try {
      const { output, params: p } = inferLayer(layer.className, layer.config, inputs);
      params += p;
      const elements = output.reduce<number>((a, d) => a * (d ?? 1), 1);
      if (elements > MAX_ACTIVATION_ELEMENTS) {
        fail(layer, `output of ${elements} elements per example exceeds ${MAX_ACTIVATION_ELEMENTS}`);
        return null;
      }
      return output;
    } catch (err) {
      if (!(err instanceof ShapeError)) throw err;
      fail(layer, `${err.message}, so the model size cannot be bounded`);
      return null;
    }
  };

  if (!functional) {
    let shape: Shape | null = null;
    for (const layer of layers) {
      const declared = declaredInputShape(layer.config);
      if (layer.className === 'InputLayer') {
        shape = declared;
        if (!shape) {
          fail(layer, 'InputLayer needs batch_input_shape');
          return params;
        }
        continue;
      }
      if (shape === null) {
        shape = declared;
        if (!shape) {
          fail(layer, 'the first layer needs an input shape (batch_input_shape)');
          return params;
        }
      }
      shape = account(layer, [shape]);
      if (!shape) return params;
      if (params > maxParams) break;
    }
  } else {
    // outputs[name][nodeIndex] = output shape; layers are resolved as soon as all their inputs are known.
    const outputs = new Map<string, Shape[]>();
    const counted = new Set<string>();
    let pending = layers.slice();
    while (pending.length > 0) {
      const next: LayerInfo[] = [];
      for (const layer of pending) {
        if (layer.className === 'InputLayer') {
          const declared = declaredInputShape(layer.config);
          if (!declared) {
            fail(layer, 'InputLayer needs batch_input_shape');
            return params;
          }
          outputs.set(layer.name, [declared]);
          continue;
        }
        const nodes = layer.inbound as unknown[][][];
        const shapes: Shape[] = [];
        let ready = true;
        for (const node of nodes) {
          const inputs: Shape[] = [];
          for (const ref of node) {
            const s = outputs.get(ref[0] as string)?.[ref[1] as number];
            if (!s) ready = false;
            else inputs.push(s);
          }
          if (!ready) break;
          const before = params;
          const out = account(layer, inputs);
          if (!out) return params;
          // A shared layer owns its weights once, however many times it is called.
          if (counted.has(layer.name)) params = before;
          counted.add(layer.name);
          shapes.push(out);
        }
        if (ready) outputs.set(layer.name, shapes);
        else next.push(layer);
      }
      if (next.length === pending.length) {
        fail(next[0], 'its inputs never resolve (a cycle or a missing layer)');
        return params;
      }
      pending = next;
    }
  }
  return params;
}

function checkInboundNodes(layer: LayerInfo, path: string, names: Set<string>, errors: ModelCheckError[]): void {
  const nodes = layer.inbound;
  if (!Array.isArray(nodes)) {
    errors.push({ path: `${path}/inbound_nodes`, message: 'inbound_nodes must be an array' });
    return;
  }
  if (layer.className !== 'InputLayer' && nodes.length === 0) {
    errors.push({ path: `${path}/inbound_nodes`, message: 'a functional layer needs inbound_nodes' });
  }
  nodes.forEach((node, n) => {
    if (!Array.isArray(node) || node.length === 0) {
      errors.push({ path: `${path}/inbound_nodes/${n}`, message: 'a node must be a non-empty array of inputs' });
      return;
    }
    node.forEach((ref, r) => {
      const p = `${path}/inbound_nodes/${n}/${r}`;
      if (
        !Array.isArray(ref) ||
        ref.length < 3 ||
        typeof ref[0] !== 'string' ||
        !Number.isSafeInteger(ref[1]) ||
        !Number.isSafeInteger(ref[2])
      ) {
        errors.push({ path: p, message: 'an input must be [layerName, nodeIndex, tensorIndex, kwargs?]' });
      } else if (!names.has(ref[0])) {
        errors.push({ path: p, message: `input layer "${ref[0]}" does not exist` });
      } else if (ref[2] !== 0) {
        errors.push({ path: p, message: 'allow-listed layers have a single output (tensorIndex 0)' });
      }
    });
  });
}

/**
 * Accepts `model.toJSON(null, false)` (an object), `model.toJSON()` (a string), or either wrapped as
 * {modelTopology: ...} (model.json artifacts) or {model_config: ...} (Keras). Returns the bare topology
 * {class_name, config, ...} ready for `tf.models.modelFromJSON`, or every problem found with its JSON pointer.
 */
export function checkModelJson(model: unknown, opts: CheckModelOptions = {}): ModelCheckResult {
  let path = opts.path ?? '/model';
  const maxParams = opts.maxParams ?? MAX_PARAMS;
  const maxLayers = opts.maxLayers ?? MAX_LAYERS;
  const errors: ModelCheckError[] = [];
  const failWith = (p: string, message: string): ModelCheckResult => ({ ok: false, errors: [{ path: p, message }] });

  let value = model;
  if (typeof value === 'string') {
    if (value.length > MAX_JSON_CHARS) return failWith(path, `model JSON is longer than ${MAX_JSON_CHARS} characters`);
    try {
      value = JSON.parse(value);
    } catch (err) {
      return failWith(path, `model is not valid JSON: ${(err as Error).message}`);
    }
  }
  if (!isObject(value)) return failWith(path, 'model must be a tfjs LayersModel JSON object (model.toJSON())');
  scanJson(value, path, errors);
  if (errors.length > 0) return { ok: false, errors };

  let topology: Json = value;
  for (const wrapper of ['modelTopology', 'model_config']) {
    if (isObject(topology[wrapper])) {
      path = `${path}/${wrapper}`;
      topology = topology[wrapper] as Json;
    }
  }
  const cls = topology.class_name;
  if (typeof cls !== 'string' || !MODEL_CLASSES.has(cls)) {
    return failWith(
      `${path}/class_name`,
      typeof cls === 'string'
        ? `model class "${cls}" is not allowed (Sequential, Model or Functional)`
        : 'class_name is missing',
    );
  }
  const config = topology.config;
  if (!isObject(config)) return failWith(`${path}/config`, 'config object is missing');
  const layersPath = `${path}/config/layers`;
  if (!Array.isArray(config.layers)) return failWith(layersPath, 'layers array is missing');
  if (config.layers.length === 0) return failWith(layersPath, 'model has no layers');
  if (config.layers.length > maxLayers) {
    return failWith(layersPath, `model has ${config.layers.length} layers; at most ${maxLayers} are allowed`);
  }

  const functional = cls !== 'Sequential';
  const infos: LayerInfo[] = [];
  const names = new Set<string>();
  config.layers.forEach((layer: unknown, i: number) => {
    const lp = `${layersPath}/${i}`;
    if (!isObject(layer)) {
      errors.push({ path: lp, message: 'layer must be an object' });
      return;
    }
    const layerClass = layer.class_name;
    if (typeof layerClass !== 'string') {
      errors.push({ path: `${lp}/class_name`, message: 'layer class_name is missing' });
      return;
    }
    if (!ALLOWED_LAYER_CLASSES.has(layerClass)) {
      errors.push({ path: `${lp}/class_name`, message: `layer class "${layerClass}" is not allowed` });
      return;
    }
    const layerConfig = layer.config;
    if (!isObject(layerConfig)) {
      errors.push({ path: `${lp}/config`, message: 'layer config object is missing' });
      return;
    }
    checkLayerConfig(layerConfig, `${lp}/config`, errors);
    const name = typeof layer.name === 'string' ? layer.name : layerConfig.name;
    if (functional && typeof name !== 'string') {
      errors.push({ path: `${lp}/name`, message: 'a functional layer needs a name' });
      return;
    }
    if (typeof name === 'string') {
      if (names.has(name)) errors.push({ path: `${lp}/name`, message: `layer name "${name}" is used twice` });
      names.add(name);
    }
    infos.push({
      index: i,
      className: layerClass,
      config: layerConfig,
      name: String(name),
      inbound: layer.inbound_nodes,
    });
  });
  if (functional) {
    for (const info of infos) checkInboundNodes(info, `${layersPath}/${info.index}`, names, errors);
    for (const key of ['input_layers', 'output_layers']) {
      const refs = config[key];
      if (!Array.isArray(refs) || refs.length === 0) {
        errors.push({ path: `${path}/config/${key}`, message: `${key} must be a non-empty array` });
        continue;
      }
      refs.forEach((ref, r) => {
        if (!Array.isArray(ref) || typeof ref[0] !== 'string' || !names.has(ref[0])) {
          errors.push({ path: `${path}/config/${key}/${r}`, message: 'must name a layer of this model' });
        }
      });
    }
  }
  if (errors.length > 0) return { ok: false, errors };

  const params = boundModel(functional, infos, layersPath, maxParams, errors);
  if (errors.length > 0) return { ok: false, errors };
  if (params > maxParams) {
    return failWith(path, `model has ${params} parameters; at most ${maxParams} are allowed`);
  }
  // A copy: the caller may keep or mutate its input; the checked model must stay what was checked.
  return { ok: true, model: JSON.parse(JSON.stringify(topology)), params, layers: infos.length };
}
