/**
 * Static shape and parameter inference over allow-listed tfjs layer configs, without building anything.
 * The allow-list uses it to refuse models whose parameter count (and so memory) would be too large before any
 * tfjs code ever sees them. Only channels_last layouts are understood; that is what tfjs runs in the browser.
 */

/** Shape without the batch dimension; null where unknown (e.g. variable sequence length). */
export type Shape = (number | null)[];

export class ShapeError extends Error {}

type Config = Record<string, unknown>;

function known(d: number | null, what: string): number {
  if (d === null) throw new ShapeError(`${what} is unknown`);
  return d;
}

function intList(v: unknown, rank: number, name: string, fallback?: number[]): number[] {
  if (v === undefined || v === null) {
    if (fallback) return fallback;
    throw new ShapeError(`${name} is missing`);
  }
  const list = typeof v === 'number' ? new Array(rank).fill(v) : v;
  if (!Array.isArray(list) || list.length !== rank || !list.every((x) => Number.isSafeInteger(x) && x > 0)) {
    throw new ShapeError(`${name} must be ${rank} positive integer(s)`);
  }
  return list as number[];
}

function positiveInt(v: unknown, name: string): number {
  if (!Number.isSafeInteger(v) || (v as number) < 1) throw new ShapeError(`${name} must be a positive integer`);
  return v as number;
}

function channelsLast(config: Config): void {
  const f = config.data_format;
  if (f !== undefined && f !== null && f !== 'channels_last') {
    throw new ShapeError(`data_format "${String(f)}" is not supported (use channels_last)`);
  }
}

function windowOut(n: number | null, k: number, s: number, d: number, padding: unknown): number | null {
  if (n === null) return null;
  if (padding === 'same' || padding === 'causal') return Math.ceil(n / s);
  if (padding !== 'valid' && padding !== undefined)
    throw new ShapeError(`padding "${String(padding)}" is not supported`);
  const span = (k - 1) * d + 1;
  if (n < span) throw new ShapeError(`window of ${span} does not fit an input of ${n}`);
  return Math.floor((n - span) / s) + 1;
}

function prod(shape: Shape, what: string): number {
  let p = 1;
  for (const d of shape) p *= known(d, what);
  return p;
}

function normAxis(axis: number, rank: number): number {
  // Shapes here exclude the batch dimension, so Keras' positive axes shift down by one.
  const a = axis < 0 ? rank + axis : axis - 1;
  if (a < 0 || a >= rank) throw new ShapeError(`axis ${axis} is out of range`);
  return a;
}

function convLike(config: Config, input: Shape, spatialRank: number): { spatial: (number | null)[]; cin: number } {
  channelsLast(config);
  if (input.length !== spatialRank + 1)
    throw new ShapeError(`expects a rank-${spatialRank + 1} input, got rank ${input.length}`);
  const k = intList(config.kernel_size, spatialRank, 'kernel_size');
  const s = intList(config.strides, spatialRank, 'strides', new Array(spatialRank).fill(1));
  const d = intList(config.dilation_rate, spatialRank, 'dilation_rate', new Array(spatialRank).fill(1));
  const spatial = k.map((kk, i) => windowOut(input[i], kk, s[i], d[i], config.padding));
  return { spatial, cin: known(input[spatialRank], 'input channel count') };
}

function pool(config: Config, input: Shape, spatialRank: number): Shape {
  channelsLast(config);
  if (input.length !== spatialRank + 1)
    throw new ShapeError(`expects a rank-${spatialRank + 1} input, got rank ${input.length}`);
  const k = intList(config.pool_size, spatialRank, 'pool_size', new Array(spatialRank).fill(2));
  const s = intList(config.strides, spatialRank, 'strides', k);
  return [...k.map((kk, i) => windowOut(input[i], kk, s[i], 1, config.padding)), input[spatialRank]];
}

function bias(config: Config, n: number): number {
  return config.use_bias === false ? 0 : n;
}

/** Output shape and parameter count of one layer given its input shapes. */
export function inferLayer(className: string, config: Config, inputs: Shape[]): { output: Shape; params: number } {
  const input = inputs[0];
  const same = { output: input, params: 0 };
  switch (className) {
    case 'Dense': {
      const units = positiveInt(config.units, 'units');
      const cin = known(input[input.length - 1], 'input last dimension');
      return { output: [...input.slice(0, -1), units], params: cin * units + bias(config, units) };
    }
    case 'Conv1D':
    case 'Conv2D': {
      const rank = className === 'Conv1D' ? 1 : 2;
      const filters = positiveInt(config.filters, 'filters');
      const { spatial, cin } = convLike(config, input, rank);
      const k = intList(config.kernel_size, rank, 'kernel_size');
      return {
        output: [...spatial, filters],
        params: k.reduce((a, b) => a * b, 1) * cin * filters + bias(config, filters),
      };
    }
    case 'DepthwiseConv2D': {
      const dm = config.depth_multiplier === undefined ? 1 : positiveInt(config.depth_multiplier, 'depth_multiplier');
      const { spatial, cin } = convLike(config, input, 2);
      const k = intList(config.kernel_size, 2, 'kernel_size');
      return { output: [...spatial, cin * dm], params: k[0] * k[1] * cin * dm + bias(config, cin * dm) };
    }
    case 'SeparableConv2D': {
      const dm = config.depth_multiplier === undefined ? 1 : positiveInt(config.depth_multiplier, 'depth_multiplier');
      const filters = positiveInt(config.filters, 'filters');
      const { spatial, cin } = convLike(config, input, 2);
      const k = intList(config.kernel_size, 2, 'kernel_size');
      return {
        output: [...spatial, filters],
        params: k[0] * k[1] * cin * dm + cin * dm * filters + bias(config, filters),
      };
    }
    case 'MaxPooling1D':
    case 'AveragePooling1D':
      return { output: pool(config, input, 1), params: 0 };
    case 'MaxPooling2D':
    case 'AveragePooling2D':
      return { output: pool(config, input, 2), params: 0 };
    case 'GlobalAveragePooling2D':
    case 'GlobalMaxPooling2D':
      channelsLast(config);
      if (input.length !== 3) throw new ShapeError(`expects a rank-3 input, got rank ${input.length}`);
      return { output: [input[2]], params: 0 };
    case 'Flatten':
      return { output: [input.every((d) => d !== null) ? prod(input, 'input') : null], params: 0 };
    case 'Dropout':
    case 'Activation':
    case 'ReLU':
    case 'LeakyReLU':
    case 'Softmax':
      return same;
    case 'BatchNormalization': {
      const axis = typeof config.axis === 'number' ? config.axis : -1;
      const c = known(input[normAxis(axis, input.length)], 'normalised dimension');
      const perChannel = 2 + (config.center === false ? 0 : 1) + (config.scale === false ? 0 : 1);
      return { output: input, params: c * perChannel };
    }
    case 'LayerNormalization': {
      const axes = Array.isArray(config.axis) ? config.axis : [typeof config.axis === 'number' ? config.axis : -1];
      let size = 1;
      for (const a of axes) {
        if (!Number.isSafeInteger(a)) throw new ShapeError('axis must be integers');
        size *= known(input[normAxis(a as number, input.length)], 'normalised dimension');
      }
      return { output: input, params: size * ((config.center === false ? 0 : 1) + (config.scale === false ? 0 : 1)) };
    }
    case 'Reshape': {
      const target = config.target_shape;
      if (!Array.isArray(target) || !target.every((d) => Number.isSafeInteger(d) && (d > 0 || d === -1))) {
        throw new ShapeError('target_shape must be positive integers and at most one -1');
      }
      const unknowns = target.filter((d) => d === -1).length;
      if (unknowns > 1) throw new ShapeError('target_shape may hold at most one -1');
      if (unknowns === 0) return { output: target as number[], params: 0 };
      const total = prod(input, 'input');
      const rest = (target as number[]).filter((d) => d !== -1).reduce((a, b) => a * b, 1);
      if (total % rest !== 0) throw new ShapeError(`cannot reshape ${total} values into [${target.join(',')}]`);
      return { output: (target as number[]).map((d) => (d === -1 ? total / rest : d)), params: 0 };
    }
    case 'Embedding': {
      const inputDim = positiveInt(config.input_dim, 'input_dim');
      const outputDim = positiveInt(config.output_dim, 'output_dim');
      return { output: [...input, outputDim], params: inputDim * outputDim };
    }
    case 'ZeroPadding2D': {
      channelsLast(config);
      if (input.length !== 3) throw new ShapeError(`expects a rank-3 input, got rank ${input.length}`);
      const p = config.padding ?? 1;
      let pads: number[][];
      if (typeof p === 'number')
        pads = [
          [p, p],
          [p, p],
        ];
      else if (Array.isArray(p) && p.length === 2 && p.every((x) => typeof x === 'number'))
        pads = [
          [p[0], p[0]],
          [p[1], p[1]],
        ];
      else if (Array.isArray(p) && p.length === 2 && p.every((x) => Array.isArray(x) && x.length === 2))
        pads = p as number[][];
      else throw new ShapeError('padding must be a number, [h, w] or [[top, bottom], [left, right]]');
      if (!pads.flat().every((x) => Number.isSafeInteger(x) && x >= 0))
        throw new ShapeError('padding must be non-negative integers');
      const add = (d: number | null, pair: number[]) => (d === null ? null : d + pair[0] + pair[1]);
      return { output: [add(input[0], pads[0]), add(input[1], pads[1]), input[2]], params: 0 };
    }
    case 'Add': {
      if (inputs.length < 2) throw new ShapeError('needs at least two inputs');
      for (const other of inputs) {
        if (other.length !== input.length || other.some((d, i) => d !== null && input[i] !== null && d !== input[i])) {
          throw new ShapeError(`inputs [${input.join(',')}] and [${other.join(',')}] differ`);
        }
      }
      return same;
    }
    case 'Concatenate': {
      if (inputs.length < 2) throw new ShapeError('needs at least two inputs');
      const axis = normAxis(typeof config.axis === 'number' ? config.axis : -1, input.length);
      let sum: number | null = 0;
      for (const other of inputs) {
        if (other.length !== input.length) throw new ShapeError('inputs differ in rank');
        sum = sum === null || other[axis] === null ? null : sum + (other[axis] as number);
      }
      const output = input.slice();
      output[axis] = sum;
      return { output, params: 0 };
    }
    default:
      throw new ShapeError(`no shape rule for layer class "${className}"`);
  }
}

/** The declared input shape of a layer config (batch dimension dropped), if it has one. */
export function declaredInputShape(config: Config): Shape | null {
  const s = config.batch_input_shape ?? config.batch_shape;
  if (Array.isArray(s) && s.length >= 2 && s.every((d) => d === null || (Number.isSafeInteger(d) && d > 0))) {
    return (s as (number | null)[]).slice(1);
  }
  if (
    Array.isArray(config.input_shape) &&
    config.input_shape.every((d) => d === null || (Number.isSafeInteger(d) && d > 0))
  ) {
    return (config.input_shape as (number | null)[]).slice();
  }
  if (Number.isSafeInteger(config.input_length) && (config.input_length as number) > 0) {
    return [config.input_length as number];
  }
  return null;
}
