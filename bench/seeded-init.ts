import { mulberry32 } from '../shared/train/assign.js';
import { withModel } from '../shared/train/model-cache.js';
import type { WeightSet } from '../shared/train/types.js';
import { weightsFromModel } from '../shared/train/weights-format.js';

/**
 * Seeded initial weights (glorot-uniform kernels, zero biases) for benchmarks that compare a clean run with an
 * attacked one: both start from the same point.
 */
export async function seededInit(model: object, seed: number): Promise<WeightSet> {
  const shape = await withModel(model, async (m) => weightsFromModel(m));
  const next = mulberry32(seed);
  return {
    names: shape.names,
    shapes: shape.shapes,
    data: shape.shapes.map((s) => {
      const len = s.reduce((a, b) => a * b, 1);
      const limit = s.length === 2 ? Math.sqrt(6 / (s[0] + s[1])) : 0;
      return Float32Array.from({ length: len }, () => ((next() / 4294967296) * 2 - 1) * limit);
    }),
  };
}
