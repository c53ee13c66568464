import type { WeightSet } from './types.js';
import { sameShapes } from './weights-format.js';

/**
 * DiLoCo outer step over the round's mean delta, in plain float32 arithmetic (the coordinator runs it; no tfjs).
 *
 *   g = -meanDelta                       (the outer "gradient": deltas point downhill already)
 *   m = mu * m + g
 *   update = nesterov ? g + mu * m : m
 *   params = params - lr * update
 *
 * With lr = 1 and mu = 0 this is params + meanDelta exactly in float32 (each step is a negation or adds zero, so no
 * rounding is introduced; only the sign of a zero result can differ).
 */

export interface OuterStepOptions {
  learningRate: number;
  momentum: number;
  nesterov: boolean;
}

export function outerStep(
  params: WeightSet,
  meanDelta: WeightSet,
  momentumBuf: WeightSet | null,
  opts: OuterStepOptions,
): { params: WeightSet; momentum: WeightSet } {
  const { learningRate: lr, momentum: mu, nesterov } = opts;
  if (!Number.isFinite(lr) || !Number.isFinite(mu))
    throw new Error('outerStep: learningRate and momentum must be finite');
  if (!sameShapes(params, meanDelta)) throw new Error('outerStep: meanDelta does not match the parameters in shape');
  if (momentumBuf && !sameShapes(params, momentumBuf)) {
    throw new Error('outerStep: momentum buffer does not match the parameters in shape');
  }
  const newParams: Float32Array[] = [];
  const newMomentum: Float32Array[] = [];
  for (let t = 0; t < params.data.length; t++) {
    const p = params.data[t];
    const d = meanDelta.data[t];
    const mOld = momentumBuf ? momentumBuf.data[t] : null;
    const pOut = new Float32Array(p.length);
    const mOut = new Float32Array(p.length);
    for (let i = 0; i < p.length; i++) {
      const g = -d[i];
      // Math.fround after each operation keeps the arithmetic float32, as the stored buffers are.
      const m = mOld ? Math.fround(Math.fround(mu * mOld[i]) + g) : g;
      mOut[i] = m;
      const update = nesterov ? Math.fround(g + Math.fround(mu * m)) : m;
      pOut[i] = p[i] - Math.fround(lr * update);
    }
    newParams.push(pOut);
    newMomentum.push(mOut);
  }
  const meta = { names: params.names.slice(), shapes: params.shapes.map((s) => s.slice()) };
  return {
    params: { ...meta, data: newParams },
    momentum: { names: meta.names.slice(), shapes: meta.shapes, data: newMomentum },
  };
}
