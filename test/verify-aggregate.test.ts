import { describe, expect, it } from 'vitest';
import type { WeightSet } from '../shared/train/types.js';
import { aggregateDeltas, clipScales, l2Norm, medianOf, trimCount } from '../shared/verify/aggregate.js';

/** One tensor 'w' holding the given values (shape [n]) and one tensor 'b' with a single value. */
function ws(values: number[], bias = 0): WeightSet {
  return {
    names: ['w', 'b'],
    shapes: [[values.length], [1]],
    data: [Float32Array.from(values), Float32Array.of(bias)],
  };
}

describe('aggregation maths', () => {
  it('mean without clipping averages every coordinate', () => {
    const out = aggregateDeltas([ws([1, 2], 1), ws([3, 4], 3)], { method: 'mean', trimFraction: 0, clipFactor: 0 });
    expect(Array.from(out.data[0])).toEqual([2, 3]);
    expect(Array.from(out.data[1])).toEqual([2]);
    expect(out.names).toEqual(['w', 'b']);
    expect(out.shapes).toEqual([[2], [1]]);
  });

  it('trimmed mean drops trimFraction of the values at each end per coordinate', () => {
    // 5 deltas, trim 0.2 -> drop 1 lowest and 1 highest per coordinate.
    const deltas = [ws([1, -100]), ws([2, 5]), ws([3, 6]), ws([4, 7]), ws([1000, 8])];
    const out = aggregateDeltas(deltas, { method: 'trimmed', trimFraction: 0.2, clipFactor: 0 });
    expect(out.data[0][0]).toBeCloseTo((2 + 3 + 4) / 3, 6);
    expect(out.data[0][1]).toBeCloseTo((5 + 6 + 7) / 3, 6);
    expect(trimCount(5, 0.2)).toBe(1);
    expect(trimCount(4, 0.45)).toBe(1);
    expect(trimCount(3, 0.49)).toBe(1);
    expect(trimCount(10, 0.25)).toBe(2);
  });

  it('coordinate-wise median, odd and even counts', () => {
    const odd = aggregateDeltas([ws([1, 9]), ws([50, 2]), ws([3, 3])], {
      method: 'median',
      trimFraction: 0,
      clipFactor: 0,
    });
    expect(Array.from(odd.data[0])).toEqual([3, 3]);
    const even = aggregateDeltas([ws([1]), ws([2]), ws([10]), ws([-4])], {
      method: 'median',
      trimFraction: 0,
      clipFactor: 0,
    });
    expect(even.data[0][0]).toBeCloseTo(1.5, 6);
    expect(medianOf([5, 1, 3])).toBe(3);
    expect(medianOf([4, 1, 3, 2])).toBe(2.5);
  });

  it('clips a huge delta to clipFactor x the median norm before averaging', () => {
    // norms: 1, 1, 1, 100 -> median 1, bound 2 -> the outlier is scaled by 2/100.
    const deltas = [ws([1, 0]), ws([0, 1]), ws([1, 0]), ws([100, 0])];
    expect(clipScales(deltas.map(l2Norm), 2)).toEqual([1, 1, 1, 0.02]);
    const out = aggregateDeltas(deltas, { method: 'mean', trimFraction: 0, clipFactor: 2 });
    expect(out.data[0][0]).toBeCloseTo((1 + 0 + 1 + 2) / 4, 6);
    expect(out.data[0][1]).toBeCloseTo(1 / 4, 6);
    const unclipped = aggregateDeltas(deltas, { method: 'mean', trimFraction: 0, clipFactor: 0 });
    expect(unclipped.data[0][0]).toBeCloseTo(102 / 4, 5);
  });

  it('rejects empty lists, mismatched shapes and non-finite values', () => {
    const opts = { method: 'mean' as const, trimFraction: 0, clipFactor: 0 };
    expect(() => aggregateDeltas([], opts)).toThrow(/at least one/);
    expect(() => aggregateDeltas([ws([1, 2]), ws([1])], opts)).toThrow(/tensor 0/);
    expect(() => aggregateDeltas([ws([1, Number.NaN])], opts)).toThrow(/non-finite/);
  });

  it('is fast enough for a round: 20 deltas of a 784-128-10 MLP, trimmed mean', () => {
    const shapes = [[784, 128], [128], [128, 10], [10]];
    const make = (seed: number): WeightSet => ({
      names: ['a', 'b', 'c', 'd'],
      shapes,
      data: shapes.map((s) => {
        const len = s.reduce((x, y) => x * y, 1);
        const a = new Float32Array(len);
        for (let i = 0; i < len; i++) a[i] = Math.sin(seed * 7919 + i) * 0.01;
        return a;
      }),
    });
    const deltas = Array.from({ length: 20 }, (_, i) => make(i + 1));
    const t0 = performance.now();
    const out = aggregateDeltas(deltas, { method: 'trimmed', trimFraction: 0.2, clipFactor: 3 });
    const ms = performance.now() - t0;
    expect(out.data[0].length).toBe(784 * 128);
    expect(ms).toBeLessThan(2000);
  });
});
