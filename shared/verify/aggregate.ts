import type { WeightSet } from '../train/types.js';

/**
 * Robust aggregation of a round's deltas. Runs once per round on the coordinator, so it is written as plain
 * Float32Array loops with no allocation per coordinate.
 *
 * Order of operations:
 *  1. norm clipping: every delta whose L2 norm exceeds clipFactor x (median norm of the round) is scaled down to that
 *     bound, so a single huge (poisoned or buggy) delta cannot dominate any of the estimators below;
 *  2. the per-coordinate estimator: mean, trimmed mean (drop trimFraction of the values at each end) or median.
 */

export type AggregationMethod = 'mean' | 'trimmed' | 'median';

export interface AggregateOptions {
  method: AggregationMethod;
  /** Fraction of values dropped at EACH end of every coordinate for 'trimmed' (0..0.5). */
  trimFraction: number;
  /** Clip each delta's L2 norm to clipFactor x the round's median norm; 0 disables clipping. */
  clipFactor: number;
}

export const DEFAULT_AGGREGATION: AggregateOptions = { method: 'mean', trimFraction: 0.2, clipFactor: 3 };

/** Full L2 norm over every tensor of a weight set (accumulated in float64). */
export function l2Norm(w: WeightSet): number {
  let s = 0;
  for (const t of w.data) {
    for (let i = 0; i < t.length; i++) s += t[i] * t[i];
  }
  return Math.sqrt(s);
}

/** Median of a list of numbers (mean of the two middle values for an even count). */
export function medianOf(values: ArrayLike<number>): number {
  const n = values.length;
  if (n === 0) throw new Error('median of an empty list');
  const v = Float64Array.from(values).sort();
  return n % 2 === 1 ? v[(n - 1) / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/** Per-delta multipliers that clip norms to clipFactor x median norm (1 where no clipping happens). */
export function clipScales(norms: number[], clipFactor: number): number[] {
  if (!(clipFactor > 0) || norms.length === 0) return norms.map(() => 1);
  const bound = clipFactor * medianOf(norms);
  return norms.map((n) => (n > bound && n > 0 ? bound / n : 1));
}

/** How many values 'trimmed' drops at each end for n values; always leaves at least one value. */
export function trimCount(n: number, trimFraction: number): number {
  const k = Math.floor(Math.max(0, trimFraction) * n + 1e-9);
  return Math.min(k, Math.floor((n - 1) / 2));
}

function checkCompatible(deltas: WeightSet[]): void {
  const first = deltas[0];
  for (let d = 1; d < deltas.length; d++) {
    const w = deltas[d];
    if (w.data.length !== first.data.length) {
      throw new Error(`delta ${d} has ${w.data.length} tensors, expected ${first.data.length}`);
    }
    for (let t = 0; t < first.data.length; t++) {
      if (w.data[t].length !== first.data[t].length) {
        throw new Error(
          `delta ${d} tensor ${t} (${first.names[t]}) has ${w.data[t].length} values, expected ${first.data[t].length}`,
        );
      }
    }
  }
  for (let d = 0; d < deltas.length; d++) {
    for (const t of deltas[d].data) {
      for (let i = 0; i < t.length; i++) {
        if (!Number.isFinite(t[i])) throw new Error(`delta ${d} contains a non-finite value`);
      }
    }
  }
}

/** Sorts the first n values of buf in place: insertion sort for the small n of a round, native sort otherwise. */
function sortSmall(buf: Float64Array, n: number): void {
  if (n > 24) {
    buf.subarray(0, n).sort();
    return;
  }
  for (let i = 1; i < n; i++) {
    const x = buf[i];
    let j = i - 1;
    while (j >= 0 && buf[j] > x) {
      buf[j + 1] = buf[j];
      j--;
    }
    buf[j + 1] = x;
  }
}

/**
 * Aggregates deltas of identical shapes into one delta. Throws on an empty list, mismatched shapes or non-finite
 * values (the cheap checks reject such results before they get here).
 */
export function aggregateDeltas(deltas: WeightSet[], opts: AggregateOptions = DEFAULT_AGGREGATION): WeightSet {
  if (deltas.length === 0) throw new Error('aggregateDeltas needs at least one delta');
  checkCompatible(deltas);
  const n = deltas.length;
  const scales = clipScales(deltas.map(l2Norm), opts.clipFactor);
  const first = deltas[0];
  const out: Float32Array[] = [];
  const method = n <= 2 && opts.method !== 'mean' ? 'mean' : opts.method; // median/trim of <= 2 values is the mean
  const k = method === 'trimmed' ? trimCount(n, opts.trimFraction) : 0;
  const buf = new Float64Array(n);

  for (let t = 0; t < first.data.length; t++) {
    const len = first.data[t].length;
    const res = new Float32Array(len);
    const cols = deltas.map((d) => d.data[t]);
    if (method === 'mean' || (method === 'trimmed' && k === 0)) {
      const acc = new Float64Array(len);
      for (let d = 0; d < n; d++) {
        const c = cols[d];
        const s = scales[d];
        for (let i = 0; i < len; i++) acc[i] += c[i] * s;
      }
      for (let i = 0; i < len; i++) res[i] = acc[i] / n;
    } else if (method === 'trimmed') {
      const keep = n - 2 * k;
      for (let i = 0; i < len; i++) {
        for (let d = 0; d < n; d++) buf[d] = cols[d][i] * scales[d];
        sortSmall(buf, n);
        let s = 0;
        for (let j = k; j < n - k; j++) s += buf[j];
        res[i] = s / keep;
      }
    } else if (method === 'median') {
      const mid = n >> 1;
      const odd = n % 2 === 1;
      for (let i = 0; i < len; i++) {
        for (let d = 0; d < n; d++) buf[d] = cols[d][i] * scales[d];
        sortSmall(buf, n);
        res[i] = odd ? buf[mid] : (buf[mid - 1] + buf[mid]) / 2;
      }
    } else {
      throw new Error(`unknown aggregation method ${String(method)}`);
    }
    out.push(res);
  }
  return { names: [...first.names], shapes: first.shapes.map((s) => [...s]), data: out };
}
