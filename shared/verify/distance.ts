import type { WeightSet } from '../train/types.js';

/**
 * Distances between two weight sets (deltas, final weights or full training states). Floats differ across backends in
 * the last bits, so results are never compared for equality: two honest results are "the same" when their relative
 * distance is below the tolerance tau (shared/verify/tolerance.ts).
 */

/** Below this norm two sets are treated as both ~zero, so the ratio does not blow up on empty deltas. */
export const TINY_NORM = 1e-12;

/** Throws unless a and b have the same tensor count and lengths (names are not compared: layer names may differ). */
export function assertSameLayout(a: WeightSet, b: WeightSet): void {
  if (a.data.length !== b.data.length) throw new Error(`tensor count differs: ${a.data.length} vs ${b.data.length}`);
  for (let t = 0; t < a.data.length; t++) {
    if (a.data[t].length !== b.data[t].length) {
      throw new Error(`tensor ${t} length differs: ${a.data[t].length} vs ${b.data[t].length}`);
    }
  }
}

/** Same tensor count and lengths, without throwing. */
export function sameLayout(a: WeightSet, b: WeightSet): boolean {
  if (a.data.length !== b.data.length) return false;
  return a.data.every((t, i) => t.length === b.data[i].length);
}

/**
 * ||a - b||2 / max(||a||2, ||b||2, TINY_NORM) over all tensors together. 0 for identical sets; Infinity when either
 * holds a non-finite value (a NaN result must never "match").
 */
export function relativeDistance(a: WeightSet, b: WeightSet): number {
  assertSameLayout(a, b);
  let diff = 0;
  let na = 0;
  let nb = 0;
  for (let t = 0; t < a.data.length; t++) {
    const x = a.data[t];
    const y = b.data[t];
    for (let i = 0; i < x.length; i++) {
      const d = x[i] - y[i];
      diff += d * d;
      na += x[i] * x[i];
      nb += y[i] * y[i];
    }
  }
  if (!Number.isFinite(diff) || !Number.isFinite(na) || !Number.isFinite(nb)) return Number.POSITIVE_INFINITY;
  return Math.sqrt(diff) / Math.max(Math.sqrt(na), Math.sqrt(nb), TINY_NORM);
}

/**
 * The largest per-tensor relative distance. Stricter than relativeDistance when one small tensor (a bias) is tampered
 * with while the big ones are honest; reported alongside the global figure for diagnostics.
 */
export function maxTensorRelativeDistance(a: WeightSet, b: WeightSet): number {
  assertSameLayout(a, b);
  let worst = 0;
  for (let t = 0; t < a.data.length; t++) {
    const single = relativeDistance(
      { names: [a.names[t]], shapes: [a.shapes[t]], data: [a.data[t]] },
      { names: [b.names[t]], shapes: [b.shapes[t]], data: [b.data[t]] },
    );
    if (single > worst) worst = single;
  }
  return worst;
}

/**
 * Distance between two full training states (weights then optimizer slots) of the same unit. Comparing raw states
 * would divide a cheat by the norm of the whole model: a poison of 3e-4 of the delta is ~1e-5 of the weights. So:
 *  - the weights part is compared as progress from the unit's start: ||a - b|| / max(||a - start||, ||b - start||);
 *  - the slots part (momentum, Adam moments), which starts at zero, is compared relative to its own norm;
 * and the larger of the two is returned. Infinity for non-finite values.
 */
export function stateDistance(a: WeightSet, b: WeightSet, startWeights: WeightSet): number {
  assertSameLayout(a, b);
  const n = startWeights.data.length;
  if (a.data.length < n) throw new Error(`state has ${a.data.length} tensors, fewer than the ${n} weights`);
  let diffW = 0;
  let progA = 0;
  let progB = 0;
  for (let t = 0; t < n; t++) {
    const x = a.data[t];
    const y = b.data[t];
    const s = startWeights.data[t];
    if (s.length !== x.length) throw new Error(`tensor ${t} length differs from the start weights`);
    for (let i = 0; i < x.length; i++) {
      const d = x[i] - y[i];
      diffW += d * d;
      progA += (x[i] - s[i]) ** 2;
      progB += (y[i] - s[i]) ** 2;
    }
  }
  let diffS = 0;
  let normA = 0;
  let normB = 0;
  for (let t = n; t < a.data.length; t++) {
    const x = a.data[t];
    const y = b.data[t];
    for (let i = 0; i < x.length; i++) {
      const d = x[i] - y[i];
      diffS += d * d;
      normA += x[i] * x[i];
      normB += y[i] * y[i];
    }
  }
  const all = [diffW, progA, progB, diffS, normA, normB];
  if (!all.every(Number.isFinite)) return Number.POSITIVE_INFINITY;
  const weights = Math.sqrt(diffW) / Math.max(Math.sqrt(progA), Math.sqrt(progB), TINY_NORM);
  const slots = Math.sqrt(diffS) / Math.max(Math.sqrt(normA), Math.sqrt(normB), TINY_NORM);
  return Math.max(weights, slots);
}
