import { sha256 } from '@noble/hashes/sha2.js';

/**
 * Deterministic data assignment: the coordinator, the worker and any referee derive the same example indices for a
 * unit from (job seed, round, unit index) alone, so indices never need to be trusted from a worker.
 */

/** Units larger than this (steps x batchSize examples) are a spec error, not something to allocate. */
export const MAX_UNIT_EXAMPLES = 1 << 27;
const MAX_ASSIGNED = MAX_UNIT_EXAMPLES;

/**
 * uint31 seed of one unit's data: the first 4 bytes (big-endian) of
 * sha256("swarmgrad/data/v1:<jobSeed>:<round>:<unitIndex>") with the top bit cleared.
 */
export function deriveDataSeed(jobSeed: number, round: number, unitIndex: number): number {
  for (const [name, v] of [
    ['jobSeed', jobSeed],
    ['round', round],
    ['unitIndex', unitIndex],
  ] as const) {
    if (!Number.isSafeInteger(v) || v < 0) throw new Error(`deriveDataSeed: ${name} must be a non-negative integer`);
  }
  const digest = sha256(new TextEncoder().encode(`swarmgrad/data/v1:${jobSeed}:${round}:${unitIndex}`));
  return ((digest[0] << 24) | (digest[1] << 16) | (digest[2] << 8) | digest[3]) >>> 1;
}

/** mulberry32: a tiny 32-bit PRNG with good enough statistics for shuffling; exact integer arithmetic everywhere. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** Uniform integer in [0, n) from a uint32 source, by exact floating-point scaling (n < 2^32). */
function below(next: () => number, n: number): number {
  return Math.floor((next() / 4294967296) * n);
}

/**
 * steps x batchSize example indices in [0, trainExamples). The unit walks a seeded permutation of the training set,
 * so it sees distinct examples until it has seen them all, then continues with a fresh permutation.
 */
export function assignExamples(dataSeed: number, steps: number, batchSize: number, trainExamples: number): Int32Array {
  if (!Number.isSafeInteger(steps) || steps < 1) throw new Error('assignExamples: steps must be a positive integer');
  if (!Number.isSafeInteger(batchSize) || batchSize < 1)
    throw new Error('assignExamples: batchSize must be a positive integer');
  if (!Number.isSafeInteger(trainExamples) || trainExamples < 1 || trainExamples > 2 ** 31 - 1) {
    throw new Error('assignExamples: trainExamples must be a positive int32');
  }
  const total = steps * batchSize;
  if (total > MAX_ASSIGNED) throw new Error(`assignExamples: steps x batchSize = ${total} exceeds ${MAX_ASSIGNED}`);
  const next = mulberry32(dataSeed);
  const out = new Int32Array(total);
  const perm = new Int32Array(trainExamples);
  let filled = 0;
  while (filled < total) {
    for (let i = 0; i < trainExamples; i++) perm[i] = i;
    // Partial Fisher-Yates: only as many positions as this pass still needs are drawn.
    const take = Math.min(trainExamples, total - filled);
    for (let i = 0; i < take; i++) {
      const j = i + below(next, trainExamples - i);
      const tmp = perm[i];
      perm[i] = perm[j];
      perm[j] = tmp;
      out[filled++] = perm[i];
    }
  }
  return out;
}

/** The indices of steps [from, to): a view, not a copy. */
export function indicesForStepRange(indices: Int32Array, batchSize: number, from: number, to: number): Int32Array {
  if (
    !Number.isSafeInteger(from) ||
    !Number.isSafeInteger(to) ||
    from < 0 ||
    to < from ||
    to * batchSize > indices.length
  ) {
    throw new Error(
      `indicesForStepRange: steps [${from}, ${to}) with batch ${batchSize} are outside ${indices.length / batchSize} steps`,
    );
  }
  return indices.subarray(from * batchSize, to * batchSize);
}
