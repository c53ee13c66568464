import { sha256Hex } from '../hash.js';
import {
  alignTo4,
  allocateContainer,
  isDimArray,
  readContainer,
  readFloat32,
  readInt32,
  shapeSize,
  writeFloat32,
  writeInt32,
} from './binary-container.js';
import type { Dataset } from './types.js';

/**
 * SGD1: the binary dataset format (documented in docs/DATASET_FORMAT.md). A dataset's id is the sha256 of its bytes.
 *
 *   'SGD1' | u32 LE header length | JSON header | zero pad to 4 | features | zero pad to 4 | labels
 *
 * features: examples x prod(featureShape) values, float32 LE or uint8 (decoded as u8 * featureScale)
 * labels:   examples values, int32 LE or uint8, each in [0, numClasses)
 */
export const DATASET_MAGIC = 'SGD1';
const WHAT = 'dataset (SGD1)';

export type FeatureDtype = 'float32' | 'uint8';
export type LabelDtype = 'int32' | 'uint8';

export interface DatasetHeader {
  name: string;
  examples: number;
  trainExamples: number;
  featureShape: number[];
  featureDtype: FeatureDtype;
  /** uint8 features decode to value * featureScale; 1 for float32. */
  featureScale: number;
  numClasses: number;
  labelDtype: LabelDtype;
}

export interface DatasetDescription extends DatasetHeader {
  /** sha256 hex of the file bytes: the dataset's content address. */
  id: string;
  bytes: number;
  evalExamples: number;
}

export interface EncodeDatasetOptions {
  featureDtype?: FeatureDtype;
  /** Quantisation step for uint8 features; default 1/255 (features in [0, 1]). */
  featureScale?: number;
}

/** Limits keep a hostile header from asking for absurd allocations before the size check. */
const MAX_NAME_LENGTH = 200;
const MAX_CLASSES = 1_000_000;
const MAX_FEATURE_RANK = 8;

function featureBytes(h: DatasetHeader): number {
  return h.examples * shapeSize(h.featureShape) * (h.featureDtype === 'float32' ? 4 : 1);
}

function labelBytes(h: DatasetHeader): number {
  return h.examples * (h.labelDtype === 'int32' ? 4 : 1);
}

function totalBytes(h: DatasetHeader, bodyOffset: number): number {
  return bodyOffset + alignTo4(featureBytes(h)) + labelBytes(h);
}

/** The header with keys in the canonical order, so equal datasets encode to equal bytes. */
function canonicalHeader(h: DatasetHeader): DatasetHeader {
  return {
    name: h.name,
    examples: h.examples,
    trainExamples: h.trainExamples,
    featureShape: h.featureShape.slice(),
    featureDtype: h.featureDtype,
    featureScale: h.featureScale,
    numClasses: h.numClasses,
    labelDtype: h.labelDtype,
  };
}

function validateHeader(raw: unknown): DatasetHeader {
  const h = raw as Record<string, unknown>;
  const fail = (field: string, why: string): never => {
    throw new Error(`${WHAT}: header.${field} ${why}`);
  };
  if (typeof h.name !== 'string' || h.name.length === 0 || h.name.length > MAX_NAME_LENGTH) {
    fail('name', `must be a string of 1 to ${MAX_NAME_LENGTH} characters`);
  }
  if (!Number.isSafeInteger(h.examples) || (h.examples as number) < 1) fail('examples', 'must be an integer >= 1');
  const examples = h.examples as number;
  if (
    !Number.isSafeInteger(h.trainExamples) ||
    (h.trainExamples as number) < 1 ||
    (h.trainExamples as number) > examples
  ) {
    fail('trainExamples', `must be an integer in [1, examples=${examples}]`);
  }
  if (!isDimArray(h.featureShape, false) || h.featureShape.length < 1 || h.featureShape.length > MAX_FEATURE_RANK) {
    fail('featureShape', `must be 1 to ${MAX_FEATURE_RANK} positive integers`);
  }
  if (h.featureDtype !== 'float32' && h.featureDtype !== 'uint8') fail('featureDtype', "must be 'float32' or 'uint8'");
  if (typeof h.featureScale !== 'number' || !Number.isFinite(h.featureScale) || h.featureScale <= 0) {
    fail('featureScale', 'must be a finite number > 0');
  }
  if (!Number.isSafeInteger(h.numClasses) || (h.numClasses as number) < 1 || (h.numClasses as number) > MAX_CLASSES) {
    fail('numClasses', `must be an integer in [1, ${MAX_CLASSES}]`);
  }
  if (h.labelDtype !== 'int32' && h.labelDtype !== 'uint8') fail('labelDtype', "must be 'int32' or 'uint8'");
  if (h.labelDtype === 'uint8' && (h.numClasses as number) > 256)
    fail('labelDtype', "'uint8' allows at most 256 classes");
  const header = h as unknown as DatasetHeader;
  if (!Number.isSafeInteger(featureBytes(header))) fail('featureShape', 'gives a feature section too large to address');
  return canonicalHeader(header);
}

function quantise(features: Float32Array, scale: number): Uint8Array {
  const out = new Uint8Array(features.length);
  for (let i = 0; i < features.length; i++) {
    const q = Math.round(features[i] / scale);
    if (!(q >= 0 && q <= 255)) {
      throw new Error(
        `encodeDataset: feature ${i} = ${features[i]} does not fit uint8 with featureScale ${scale} (needs 0..${255 * scale})`,
      );
    }
    out[i] = q;
  }
  return out;
}

export function encodeDataset(ds: Dataset, opts: EncodeDatasetOptions = {}): Uint8Array {
  const featureDtype = opts.featureDtype ?? 'float32';
  const featureScale = featureDtype === 'uint8' ? (opts.featureScale ?? 1 / 255) : 1;
  const header = validateHeader({
    name: ds.name,
    examples: ds.examples,
    trainExamples: ds.trainExamples,
    featureShape: ds.featureShape,
    featureDtype,
    featureScale,
    numClasses: ds.numClasses,
    labelDtype: ds.numClasses <= 256 ? 'uint8' : 'int32',
  });
  const perExample = shapeSize(header.featureShape);
  if (!(ds.features instanceof Float32Array) || ds.features.length !== header.examples * perExample) {
    throw new Error(`encodeDataset: features must be a Float32Array of examples x ${perExample} values`);
  }
  if (!(ds.labels instanceof Int32Array) || ds.labels.length !== header.examples) {
    throw new Error(`encodeDataset: labels must be an Int32Array of ${header.examples} values`);
  }
  checkLabels(ds.labels, header.numClasses, 'encodeDataset');

  const fBytes = featureBytes(header);
  const { bytes, bodyOffset } = allocateContainer(DATASET_MAGIC, header, alignTo4(fBytes) + labelBytes(header));
  if (featureDtype === 'float32') writeFloat32(bytes, bodyOffset, ds.features);
  else bytes.set(quantise(ds.features, featureScale), bodyOffset);
  const labelOffset = bodyOffset + alignTo4(fBytes);
  if (header.labelDtype === 'int32') writeInt32(bytes, labelOffset, ds.labels);
  else bytes.set(Uint8Array.from(ds.labels), labelOffset);
  return bytes;
}

function checkLabels(labels: ArrayLike<number>, numClasses: number, what: string): void {
  for (let i = 0; i < labels.length; i++) {
    const y = labels[i];
    if (!(y >= 0 && y < numClasses))
      throw new Error(`${what}: label ${i} = ${y} is outside [0, numClasses=${numClasses})`);
  }
}

function parse(bytes: Uint8Array): { header: DatasetHeader; bodyOffset: number } {
  const { header: raw, bodyOffset } = readContainer(bytes, DATASET_MAGIC, WHAT);
  const header = validateHeader(raw);
  const expected = totalBytes(header, bodyOffset);
  if (bytes.length !== expected) {
    const how = bytes.length < expected ? 'truncated' : 'has trailing bytes';
    throw new Error(
      `${WHAT}: ${how}: header (${header.examples} examples of [${header.featureShape.join(',')}] ${header.featureDtype}, ` +
        `${header.labelDtype} labels) needs ${expected} bytes, got ${bytes.length}`,
    );
  }
  const fEnd = bodyOffset + featureBytes(header);
  for (let i = fEnd; i < bodyOffset + alignTo4(featureBytes(header)); i++) {
    if (bytes[i] !== 0) throw new Error(`${WHAT}: feature padding byte at offset ${i} is not zero`);
  }
  return { header, bodyOffset };
}

/** Header fields and id without decoding the features (cheap even for large files apart from hashing). */
export function describeDataset(bytes: Uint8Array): DatasetDescription {
  const { header } = parse(bytes);
  return { ...header, id: sha256Hex(bytes), bytes: bytes.length, evalExamples: header.examples - header.trainExamples };
}

/** The content address of a dataset file. */
export function datasetId(bytes: Uint8Array): string {
  return sha256Hex(bytes);
}

export function decodeDataset(bytes: Uint8Array): Dataset {
  const { header, bodyOffset } = parse(bytes);
  const count = header.examples * shapeSize(header.featureShape);
  let features: Float32Array;
  if (header.featureDtype === 'float32') {
    features = readFloat32(bytes, bodyOffset, count);
  } else {
    // A lookup table makes decoding exact and identical everywhere: each byte maps to one float32.
    const table = new Float32Array(256);
    for (let q = 0; q < 256; q++) table[q] = q * header.featureScale;
    features = new Float32Array(count);
    const src = bytes.subarray(bodyOffset, bodyOffset + count);
    for (let i = 0; i < count; i++) features[i] = table[src[i]];
  }
  const labelOffset = bodyOffset + alignTo4(featureBytes(header));
  const labels =
    header.labelDtype === 'int32'
      ? readInt32(bytes, labelOffset, header.examples)
      : Int32Array.from(bytes.subarray(labelOffset, labelOffset + header.examples));
  checkLabels(labels, header.numClasses, WHAT);
  if (header.featureDtype === 'float32') {
    for (let i = 0; i < features.length; i++) {
      if (!Number.isFinite(features[i])) throw new Error(`${WHAT}: feature value ${i} is not finite`);
    }
  }
  return {
    name: header.name,
    featureShape: header.featureShape,
    numClasses: header.numClasses,
    examples: header.examples,
    trainExamples: header.trainExamples,
    features,
    labels,
  };
}
