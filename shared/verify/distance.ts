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
