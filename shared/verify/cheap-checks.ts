import type { LossName } from '../protocol/job-spec.js';
import { forwardLoss } from '../train/evaluate.js';
import type { Dataset, WeightSet } from '../train/types.js';
import { l2Norm } from './aggregate.js';
import { checkpointCount } from './bisect.js';

/**
 * Checks run on EVERY result, at no replication cost: a few array scans and forward passes over two or three batches
 * (batch 0, the last batch, and the last batch again at the round's weights when the progress check runs): about one
 * training step (a step is ~3 forward passes), i.e. ~3% of a 32-step unit. They stop naive garbage (wrong shapes, NaN, zero or
 * exploded deltas, a result computed from other weights or other data) before it costs an audit; anything subtler
 * is left to audits and disputes.
 *
 * Loss-trace consistency uses what trainUnit reports: losses[s] is the loss of batch s at the weights BEFORE step s.
 *  - first loss: losses[0] is the loss of the round's weights on batch 0, so the coordinator can recompute it exactly
 *    (up to cross-backend float noise). A stale replay (other start weights) or a copied result (other batch) fails.
 *  - final loss: the returned weights (start + delta) evaluated on the last batch give a loss that, for an honest
 *    run, is at most about the loss the worker reported for the last steps (one more step on that very batch lowers
 *    it). A generous band keeps honest results safe; exploded or scaled-up deltas land far above it.
 *  - progress: when the reported losses claim strong progress (the first quarter's mean loss is 1.25x the last
 *    quarter's and at least 0.25 above it, over quarters of >= 4 steps), the returned weights must lower the loss on
 *    the last batch compared with the round's weights by at least 2% (give or take 0.02). Honest units that fall that fast improve it by far more (45% in the
 *    first MNIST round); a random delta of the same norm changes it by about +-1%. Flat or noisy curves (late
 *    training, short units, tiny learning rates) skip the check: per-batch noise there can make an honest final
 *    loss come out a few percent worse.
 *
 * Two kinds of failure. Exact checks (structure, the first loss) cannot fail for honest work: the result is
 * refused. The final-loss and progress checks are statistics about one batch, and honest units do fail them now and
 * then (seen on MNIST: a unit that starts from weights just after a large outer Nesterov step can lower its early
 * batches' losses by 30% yet end 20% worse on its last batch); the delta-norm bound and the zero-delta test are
 * heuristics too. Their
 * failure makes the result SUSPECT: it is never
 * refused or punished for it, but always audited, and the audit's exact comparison decides.
 */

export type CheapCheckCode =
  | 'ok'
  | 'bad-commitments'
  | 'bad-losses'
  | 'bad-delta-shape'
  | 'non-finite-delta'
  | 'zero-delta'
  | 'delta-too-large'
  | 'first-loss-mismatch'
  | 'final-loss-inconsistent'
  | 'no-progress';

/** Statistical checks: failing one makes a result suspect (audited), never refused. */
export const SUSPECT_CODES: ReadonlySet<CheapCheckCode> = new Set([
  'final-loss-inconsistent',
  'no-progress',
  // ||delta|| > 10 ||weights|| is a bound, not a proof: Adam at a high learning rate over many local steps moves each
  // weight by up to lr per step, which can exceed ten times a small initial norm.
  'delta-too-large',
  // Honest training returns an all-zero delta once a too-high learning rate has killed every ReLU (seen live: every
  // unit of round 2 of an SGD job at lr 10); a lazy worker returns one too. Only an audit tells them apart.
  'zero-delta',
]);

export interface CheapCheckResult {
  /** False only for a failed exact check: the result is refused. */
  ok: boolean;
  /** A statistical check failed (code and reason say which): the result must be audited before it counts. */
  suspect: boolean;
  code: CheapCheckCode;
  reason: string;
  /** Loss figures the forward passes produced (absent when an earlier check already failed). */
  firstLoss?: { reported: number; recomputed: number; exact: boolean };
  finalLoss?: { trailingMax: number; recomputed: number; bound: number };
  progress?: { claimed: boolean; startLoss: number; finalLoss: number; improvement: number };
  /** Examples run through forward passes (cost accounting). */
  forwardExamples: number;
}

export interface CheapCheckBounds {
  /** Relative tolerance of losses[0] against the recomputed loss when the forward pass is exact. */
  firstLossRelTol: number;
  /** The final loss may be at most finalLossFactor x the largest trailing loss + finalLossSlack. */
  finalLossFactor: number;
  finalLossSlack: number;
  /** How many reported losses at the end count as "trailing". */
  trailingSteps: number;
  /** ||delta|| may be at most maxDeltaRatio x ||startWeights||. */
  maxDeltaRatio: number;
  /** The reported curve "claims progress" when mean(first quarter) > (1 + claimedProgress) x mean(last quarter). */
  claimedProgress: number;
  /** ...and the two quarter means must also differ by at least this much in absolute loss units. */
  claimedProgressAbs: number;
  /** Quarters shorter than this are too noisy to claim anything: the progress check is skipped. */
  minQuarterSteps: number;
  /**
   * Then the last batch's loss must drop by at least this fraction from the round's weights to the returned ones,
   * give or take progressSlack (absolute): tiny losses late in training move by noise of that size.
   */
  minRelativeImprovement: number;
  progressSlack: number;
  /**
   * Fraction of the last batch the final-loss and progress checks evaluate (both use the same part). Keep it at 1: the
   * reported losses are means over whole batches, and half a batch of an honest unit can have a loss well above its
   * batch's mean (measured on MNIST: up to 1.8x the trailing maximum at 0.5, never above it at 1), which the
   * final-loss bound would reject.
   */
  tailFraction: number;
}

export const DEFAULT_CHEAP_CHECK_BOUNDS: CheapCheckBounds = {
  firstLossRelTol: 1e-3,
  finalLossFactor: 1.5,
  finalLossSlack: 0.1,
  trailingSteps: 4,
  maxDeltaRatio: 10,
  claimedProgress: 0.25,
  claimedProgressAbs: 0.25,
  minQuarterSteps: 4,
  minRelativeImprovement: 0.02,
  progressSlack: 0.02,
  tailFraction: 1,
};

export interface CheapCheckInput {
  model: object;
  dataset: Dataset;
  loss: LossName;
  steps: number;
  batchSize: number;
  /** Effective k (never 0). */
  checkpointEvery: number;
  /** The unit's example indices (assignExamples), steps x batchSize. */
  indices: Int32Array;
  startWeights: WeightSet;
  delta: WeightSet;
  checkpoints: readonly string[];
  losses: readonly number[];
}

const HEX64 = /^[0-9a-f]{64}$/;

/** Layers that behave differently in training, and config keys that add penalties to the training loss. */
const TRAINING_ONLY_LAYERS =
  /"class_name":"(Dropout|SpatialDropout1D|SpatialDropout2D|SpatialDropout3D|AlphaDropout|GaussianDropout|GaussianNoise|BatchNormalization)"/;
const REGULARIZER = /"(kernel|bias|activity|depthwise|pointwise|recurrent)_regularizer":\{/;

/**
 * True when an inference forward pass reproduces the training loss at the same weights (no dropout/noise/batch-norm,
 * no regularisation penalties), so losses[0] can be checked tightly.
 */
export function forwardMatchesTrainingLoss(model: object): boolean {
  const json = JSON.stringify(model);
  return !TRAINING_ONLY_LAYERS.test(json) && !REGULARIZER.test(json);
}

function fail(code: CheapCheckCode, reason: string, extra: Partial<CheapCheckResult> = {}): CheapCheckResult {
  const suspect = SUSPECT_CODES.has(code);
  return { ok: suspect, suspect, code, reason, forwardExamples: 0, ...extra };
}

/** Structure-only checks (no tfjs): commitments, losses, delta shape, finiteness and norm. */
export function checkStructure(input: CheapCheckInput, bounds = DEFAULT_CHEAP_CHECK_BOUNDS): CheapCheckResult | null {
  const { steps, checkpointEvery: k, checkpoints, losses, delta, startWeights } = input;
  const expected = checkpointCount(steps, k);
  if (checkpoints.length !== expected) {
    return fail(
      'bad-commitments',
      `expected ${expected} checkpoint hashes (one every ${k} of ${steps} steps), got ${checkpoints.length}`,
    );
  }
  const badHex = checkpoints.findIndex((c) => typeof c !== 'string' || !HEX64.test(c));
  if (badHex >= 0) return fail('bad-commitments', `checkpoint ${badHex} is not 64 lower-case hex digits`);
  if (losses.length !== steps) return fail('bad-losses', `expected ${steps} losses, got ${losses.length}`);
  const badLoss = losses.findIndex((l) => typeof l !== 'number' || !Number.isFinite(l) || l < 0);
  if (badLoss >= 0)
    return fail('bad-losses', `loss ${badLoss} (${losses[badLoss]}) is not a finite non-negative number`);

  if (delta.data.length !== startWeights.data.length) {
    return fail('bad-delta-shape', `delta has ${delta.data.length} tensors, the model has ${startWeights.data.length}`);
  }
  for (let t = 0; t < delta.data.length; t++) {
    if (delta.data[t].length !== startWeights.data[t].length) {
      return fail(
        'bad-delta-shape',
        `delta tensor ${t} has ${delta.data[t].length} values, expected ${startWeights.data[t].length}`,
      );
    }
  }
  const norm = l2Norm(delta);
  if (!Number.isFinite(norm)) return fail('non-finite-delta', 'delta contains NaN or infinite values');
  if (norm === 0) return fail('zero-delta', 'delta is all zeros (a dead network, or no training at all)');
  const wNorm = l2Norm(startWeights);
  if (wNorm > 0 && norm > bounds.maxDeltaRatio * wNorm) {
    return fail(
      'delta-too-large',
      `||delta|| = ${norm.toExponential(3)} exceeds ${bounds.maxDeltaRatio} x ||weights|| = ${wNorm.toExponential(3)}`,
    );
  }
  return null;
}

function addInto(a: WeightSet, b: WeightSet): WeightSet {
  return {
    names: a.names,
    shapes: a.shapes,
    data: a.data.map((d, t) => {
      const e = b.data[t];
      const out = new Float32Array(d.length);
      for (let i = 0; i < d.length; i++) out[i] = d[i] + e[i];
      return out;
    }),
  };
}

/** All cheap checks. Runs forward passes on the current tfjs backend. */
export async function cheapCheck(
  input: CheapCheckInput,
  bounds: CheapCheckBounds = DEFAULT_CHEAP_CHECK_BOUNDS,
): Promise<CheapCheckResult> {
  const structural = checkStructure(input, bounds);
  // A suspect bound (the delta norm) still runs the exact checks below: any of those failing refuses the result.
  if (structural && !structural.suspect) return structural;
  const { model, dataset, loss, steps, batchSize: B, indices, losses } = input;
  if (indices.length !== steps * B)
    throw new Error(`cheapCheck: indices has ${indices.length} entries, expected ${steps * B}`);

  const exact = forwardMatchesTrainingLoss(model);
  let forwardExamples = 0;
  let firstLoss: CheapCheckResult['firstLoss'];
  if (exact) {
    const recomputed = await forwardLoss(model, input.startWeights, dataset, indices.subarray(0, B), loss);
    forwardExamples += B;
    firstLoss = { reported: losses[0], recomputed, exact };
    if (!(Math.abs(losses[0] - recomputed) <= bounds.firstLossRelTol * Math.max(1, Math.abs(recomputed)))) {
      return fail(
        'first-loss-mismatch',
        `losses[0] = ${losses[0].toPrecision(6)} but the round's weights give ${recomputed.toPrecision(6)} on batch 0: other weights or other data`,
        { firstLoss, forwardExamples },
      );
    }
  }

  // Everything below is statistical: a result already suspect is audited anyway, so it needs no more forward passes.
  if (structural) return { ...structural, firstLoss, forwardExamples };

  const finalWeights = addInto(input.startWeights, input.delta);
  const tail = Math.max(1, Math.ceil(B * bounds.tailFraction));
  const lastBatch = indices.subarray((steps - 1) * B, (steps - 1) * B + tail);
  const recomputed = await forwardLoss(model, finalWeights, dataset, lastBatch, loss);
  forwardExamples += tail;
  const trailing = losses.slice(Math.max(0, steps - bounds.trailingSteps));
  const trailingMax = Math.max(...trailing);
  const bound = bounds.finalLossFactor * trailingMax + bounds.finalLossSlack;
  const finalLoss = { trailingMax, recomputed, bound };
  if (!(recomputed <= bound)) {
    return fail(
      'final-loss-inconsistent',
      `start + delta gives loss ${recomputed.toPrecision(4)} on the last batch, above ${bound.toPrecision(4)} allowed by the reported trailing losses (max ${trailingMax.toPrecision(4)})`,
      { firstLoss, finalLoss, forwardExamples },
    );
  }

  const quarter = Math.max(1, Math.floor(steps / 4));
  const mean = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const early = mean(losses.slice(0, quarter));
  const late = mean(losses.slice(steps - quarter));
  const claimed =
    quarter >= bounds.minQuarterSteps &&
    early > (1 + bounds.claimedProgress) * late &&
    early - late >= bounds.claimedProgressAbs;
  let progress: CheapCheckResult['progress'];
  if (claimed) {
    const startLoss = await forwardLoss(model, input.startWeights, dataset, lastBatch, loss);
    forwardExamples += tail;
    const improvement = startLoss > 0 ? (startLoss - recomputed) / startLoss : 0;
    progress = { claimed, startLoss, finalLoss: recomputed, improvement };
    if (!(recomputed <= startLoss * (1 - bounds.minRelativeImprovement) + bounds.progressSlack)) {
      return fail(
        'no-progress',
        `the reported losses fall, but the returned weights lower the last batch's loss by only ${(improvement * 100).toFixed(2)}% (${startLoss.toPrecision(4)} -> ${recomputed.toPrecision(4)})`,
        { firstLoss, finalLoss, progress, forwardExamples },
      );
    }
  }
  return { ok: true, suspect: false, code: 'ok', reason: 'passed', firstLoss, finalLoss, progress, forwardExamples };
}
