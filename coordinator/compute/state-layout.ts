import type * as tf from '@tensorflow/tfjs';
import { InnerOptimizerState } from '../../shared/train/inner-optimizer.js';
import { withModel } from '../../shared/train/model-cache.js';
import type { TrainUnitSpec } from '../../shared/train/types.js';
import { modelWeightNames } from '../../shared/train/weights-format.js';
import type { StateLayout } from '../../shared/verify/bisect.js';

/**
 * The layout of every training state of a unit: the model's weights, then the inner optimizer's slots, named and
 * shaped exactly as trainUnit lays them out (it builds the same InnerOptimizerState). Revealed states are checked
 * against it at receipt (shared/verify/bisect.ts, stateLayoutProblem).
 */
export async function stateLayoutOf(model: object, spec: TrainUnitSpec): Promise<StateLayout> {
  return withModel(model, async (m: tf.LayersModel) => {
    const trainable = m.trainableWeights;
    const opt = new InnerOptimizerState(
      spec.optimizer,
      trainable.map((w) => w.read() as tf.Variable),
      trainable.map((w) => w.originalName ?? w.name),
    );
    try {
      return {
        names: [...modelWeightNames(m), ...opt.slots.map((s) => s.name)],
        shapes: [
          ...m.weights.map((w) => w.shape.map((d) => d ?? 1)),
          ...opt.slots.map((s) => s.variable.shape.slice()),
        ],
      };
    } finally {
      opt.dispose();
    }
  });
}
