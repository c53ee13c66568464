import * as tf from '@tensorflow/tfjs';
import { sha256Hex, sha256HexAsync } from '../hash.js';
import {
  allocateContainer,
  isDimArray,
  readContainer,
  readFloat32,
  shapeSize,
  writeFloat32,
} from './binary-container.js';
import type { WeightSet } from './types.js';

/**
 * SGW1: the canonical binary form of a WeightSet, so that equal weights always give equal bytes and equal hashes.
 *
 *   'SGW1' | u32 LE header length | JSON {"names":[...],"shapes":[[...],...]} | zero pad to 4 | float32 LE data
 *
 * The data section is every tensor's values, row-major, in `names` order, with nothing after the last one.
 */
export const WEIGHTS_MAGIC = 'SGW1';
const WHAT = 'weights (SGW1)';

function checkWeightSet(w: WeightSet): void {
  if (!w || !Array.isArray(w.names) || !Array.isArray(w.shapes) || !Array.isArray(w.data)) {
    throw new Error('WeightSet must have names, shapes and data arrays');
  }
  if (w.names.length !== w.shapes.length || w.names.length !== w.data.length) {
    throw new Error(
      `WeightSet has ${w.names.length} names, ${w.shapes.length} shapes and ${w.data.length} tensors; they must match`,
    );
  }
  for (let i = 0; i < w.names.length; i++) {
    if (typeof w.names[i] !== 'string') throw new Error(`WeightSet name ${i} is not a string`);
    if (!isDimArray(w.shapes[i], true))
      throw new Error(`WeightSet shape of "${w.names[i]}" is not a list of dimensions`);
    if (!(w.data[i] instanceof Float32Array))
      throw new Error(`WeightSet data of "${w.names[i]}" is not a Float32Array`);
    const size = shapeSize(w.shapes[i]);
    if (w.data[i].length !== size) {
      throw new Error(
        `WeightSet "${w.names[i]}" has ${w.data[i].length} values but shape [${w.shapes[i].join(',')}] needs ${size}`,
      );
    }
  }
}

export function encodeWeights(w: WeightSet): Uint8Array {
  checkWeightSet(w);
  // Key order is fixed by construction: the header bytes, and so the hash, never depend on object key order.
  const header = { names: w.names, shapes: w.shapes.map((s) => s.slice()) };
  let total = 0;
  for (const d of w.data) total += d.length;
  const { bytes, bodyOffset } = allocateContainer(WEIGHTS_MAGIC, header, total * 4);
  let offset = bodyOffset;
  for (const d of w.data) {
    writeFloat32(bytes, offset, d);
    offset += d.byteLength;
  }
  return bytes;
}

export function decodeWeights(bytes: Uint8Array): WeightSet {
  const { header, bodyOffset } = readContainer(bytes, WEIGHTS_MAGIC, WHAT);
  const { names, shapes } = header as { names?: unknown; shapes?: unknown };
  if (!Array.isArray(names) || !names.every((n) => typeof n === 'string')) {
    throw new Error(`${WHAT}: header.names must be an array of strings`);
  }
  if (!Array.isArray(shapes) || !shapes.every((s) => isDimArray(s, true))) {
    throw new Error(`${WHAT}: header.shapes must be an array of non-negative integer arrays`);
  }
  if (names.length !== shapes.length) {
    throw new Error(`${WHAT}: header has ${names.length} names but ${shapes.length} shapes`);
  }
  const sizes = (shapes as number[][]).map(shapeSize);
  const total = sizes.reduce((a, b) => a + b, 0);
  const expected = bodyOffset + total * 4;
  if (!Number.isSafeInteger(total) || bytes.length !== expected) {
    const how = bytes.length < expected ? 'truncated' : 'has trailing bytes';
    throw new Error(`${WHAT}: ${how}: header shapes need ${expected} bytes in all, got ${bytes.length}`);
  }
  const data: Float32Array[] = [];
  let offset = bodyOffset;
  for (const size of sizes) {
    data.push(readFloat32(bytes, offset, size));
    offset += size * 4;
  }
  return { names: names as string[], shapes: (shapes as number[][]).map((s) => s.slice()), data };
}

/** sha256 hex of the canonical bytes. */
export function hashWeights(w: WeightSet): string {
  return sha256Hex(encodeWeights(w));
}

/** hashWeights with native WebCrypto where available: the same value, faster for large models. */
export function hashWeightsAsync(w: WeightSet): Promise<string> {
  return sha256HexAsync(encodeWeights(w));
}

function assertSameShapes(a: WeightSet, b: WeightSet, op: string): void {
  if (!sameShapes(a, b)) throw new Error(`${op}: weight sets differ in tensor count or shapes`);
}

/** True when both sets hold the same number of tensors with the same shapes (names are not compared). */
export function sameShapes(a: WeightSet, b: WeightSet): boolean {
  if (a.shapes.length !== b.shapes.length || a.data.length !== b.data.length) return false;
  for (let i = 0; i < a.shapes.length; i++) {
    const sa = a.shapes[i];
    const sb = b.shapes[i];
    if (sa.length !== sb.length || sa.some((d, j) => d !== sb[j])) return false;
    if (a.data[i].length !== b.data[i].length) return false;
  }
  return true;
}

function zipWith(a: WeightSet, b: WeightSet, op: string, f: (x: number, y: number) => number): WeightSet {
  assertSameShapes(a, b, op);
  const data = a.data.map((da, i) => {
    const db = b.data[i];
    const out = new Float32Array(da.length);
    for (let j = 0; j < da.length; j++) out[j] = f(da[j], db[j]);
    return out;
  });
  return { names: a.names.slice(), shapes: a.shapes.map((s) => s.slice()), data };
}

/** a - b per element (float32 rounding), names from a. */
export function subtractWeights(a: WeightSet, b: WeightSet): WeightSet {
  return zipWith(a, b, 'subtractWeights', (x, y) => x - y);
}

/** a + b per element (float32 rounding), names from a. */
export function addWeights(a: WeightSet, b: WeightSet): WeightSet {
  return zipWith(a, b, 'addWeights', (x, y) => x + y);
}

export function scaleWeights(w: WeightSet, factor: number): WeightSet {
  return {
    names: w.names.slice(),
    shapes: w.shapes.map((s) => s.slice()),
    data: w.data.map((d) => {
      const out = new Float32Array(d.length);
      for (let j = 0; j < d.length; j++) out[j] = d[j] * factor;
      return out;
    }),
  };
}

/** Global L2 norm over every tensor, accumulated in float64. */
export function weightsNorm(w: WeightSet): number {
  let sum = 0;
  for (const d of w.data) for (let j = 0; j < d.length; j++) sum += d[j] * d[j];
  return Math.sqrt(sum);
}

export function allFinite(w: WeightSet): boolean {
  for (const d of w.data) for (let j = 0; j < d.length; j++) if (!Number.isFinite(d[j])) return false;
  return true;
}

export function cloneWeights(w: WeightSet): WeightSet {
  return { names: w.names.slice(), shapes: w.shapes.map((s) => s.slice()), data: w.data.map((d) => d.slice()) };
}

/** Stable weight names: `originalName` survives rebuilding a model, `name` gets a `_1` suffix each time. */
export function modelWeightNames(model: tf.LayersModel): string[] {
  return model.weights.map((v) => v.originalName ?? v.name);
}

/** Reads a model's weights (model.getWeights() order) synchronously. */
export function weightsFromModel(model: tf.LayersModel): WeightSet {
  const tensors = model.getWeights();
  return {
    names: modelWeightNames(model),
    shapes: tensors.map((t) => t.shape.slice()),
    // getWeights() returns the variables' own tensors: read them, never dispose them.
    data: tensors.map((t) => Float32Array.from(t.dataSync() as Float32Array)),
  };
}

/** Same as weightsFromModel but reads without blocking (matters on WebGPU, where dataSync stalls the thread). */
export async function weightsFromModelAsync(model: tf.LayersModel): Promise<WeightSet> {
  const tensors = model.getWeights();
  const data = await Promise.all(tensors.map(async (t) => Float32Array.from((await t.data()) as Float32Array)));
  return { names: modelWeightNames(model), shapes: tensors.map((t) => t.shape.slice()), data };
}

/** Sets a model's weights by position; shapes must match exactly (names are informative only). */
export function applyWeights(model: tf.LayersModel, w: WeightSet): void {
  checkWeightSet(w);
  const vars = model.weights;
  if (vars.length !== w.data.length) {
    throw new Error(`applyWeights: model has ${vars.length} weight tensors, weight set has ${w.data.length}`);
  }
  for (let i = 0; i < vars.length; i++) {
    const want = vars[i].shape;
    const got = w.shapes[i];
    if (want.length !== got.length || want.some((d, j) => d !== got[j])) {
      throw new Error(
        `applyWeights: tensor ${i} ("${vars[i].originalName ?? vars[i].name}") has shape [${want.join(',')}], weight set gives [${got.join(',')}]`,
      );
    }
  }
  const tensors = w.data.map((d, i) => tf.tensor(d, w.shapes[i], 'float32'));
  try {
    model.setWeights(tensors);
  } finally {
    // Variables keep their own reference to the data, so the temporaries can go.
    tf.dispose(tensors);
  }
}
