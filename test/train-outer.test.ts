import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { outerStep } from '../shared/train/outer-optimizer.js';
import type { WeightSet } from '../shared/train/types.js';
import { addWeights, hashWeights } from '../shared/train/weights-format.js';

function ws(...tensors: number[][]): WeightSet {
  return {
    names: tensors.map((_, i) => `t${i}`),
    shapes: tensors.map((t) => [t.length]),
    data: tensors.map((t) => Float32Array.from(t)),
  };
}

describe('DiLoCo outer step', () => {
  it('with lr = 1 and mu = 0 is exactly params + meanDelta (property over random float32 values)', () => {
    const f32 = fc.float({ noNaN: true, noDefaultInfinity: true, min: -1e6, max: 1e6 });
    fc.assert(
      fc.property(
        fc.array(fc.tuple(f32, f32, f32), { minLength: 1, maxLength: 40 }),
        fc.boolean(),
        (rows, nesterov) => {
          const params = ws(rows.map((r) => r[0]));
          const delta = ws(rows.map((r) => r[1]));
          const momentum = ws(rows.map((r) => r[2]));
          // Exact float32 equality; only the sign of a zero may differ (-0 + 0 vs -0 - 0), so zeros are folded.
          const fold = (w: WeightSet) => w.data.map((d) => Array.from(d, (v) => v + 0));
          const expected = fold(addWeights(params, delta));
          for (const buf of [null, momentum]) {
            const out = outerStep(params, delta, buf, { learningRate: 1, momentum: 0, nesterov });
            expect(fold(out.params)).toEqual(expected);
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it('applies heavy-ball momentum: m = mu m + g, params -= lr m', () => {
    const params = ws([1, 2]);
    const delta = ws([0.5, -1]);
    const m0 = ws([0.25, 0.5]);
    const { params: p, momentum: m } = outerStep(params, delta, m0, {
      learningRate: 0.5,
      momentum: 0.5,
      nesterov: false,
    });
    // g = -delta = [-0.5, 1]; m = 0.5*m0 + g = [-0.375, 1.25]; p = p - 0.5*m = [1.1875, 1.375]
    expect(Array.from(m.data[0])).toEqual([-0.375, 1.25]);
    expect(Array.from(p.data[0])).toEqual([1.1875, 1.375]);
  });

  it('applies Nesterov momentum: update = g + mu m', () => {
    const params = ws([1, 2]);
    const delta = ws([0.5, -1]);
    const m0 = ws([0.25, 0.5]);
    const { params: p, momentum: m } = outerStep(params, delta, m0, {
      learningRate: 0.5,
      momentum: 0.5,
      nesterov: true,
    });
    // m = [-0.375, 1.25]; update = g + 0.5 m = [-0.6875, 1.625]; p = p - 0.5 update = [1.34375, 1.1875]
    expect(Array.from(m.data[0])).toEqual([-0.375, 1.25]);
    expect(Array.from(p.data[0])).toEqual([1.34375, 1.1875]);
  });

  it('starts from a zero momentum buffer when none is given and leaves its inputs untouched', () => {
    const params = ws([1, 2], [3]);
    const delta = ws([0.5, -1], [2]);
    const first = outerStep(params, delta, null, { learningRate: 0.7, momentum: 0.9, nesterov: true });
    const zero = outerStep(params, delta, ws([0, 0], [0]), { learningRate: 0.7, momentum: 0.9, nesterov: true });
    expect(hashWeights(first.params)).toBe(hashWeights(zero.params));
    expect(hashWeights(first.momentum)).toBe(hashWeights(zero.momentum));
    expect(Array.from(params.data[0])).toEqual([1, 2]);
    expect(first.params.names).toEqual(['t0', 't1']);
  });

  it('rejects mismatched shapes', () => {
    expect(() => outerStep(ws([1, 2]), ws([1]), null, { learningRate: 1, momentum: 0, nesterov: false })).toThrow(
      /meanDelta does not match/,
    );
    expect(() => outerStep(ws([1]), ws([1]), ws([1, 2]), { learningRate: 1, momentum: 0, nesterov: false })).toThrow(
      /momentum buffer/,
    );
  });
});
