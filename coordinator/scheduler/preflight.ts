import type { JobSpec } from '../../shared/protocol/job-spec.js';
import { MAX_UNIT_EXAMPLES } from '../../shared/train/assign.js';
import { forwardLoss } from '../../shared/train/evaluate.js';
import { trainUnit } from '../../shared/train/train-unit.js';
import type { Dataset, WeightSet } from '../../shared/train/types.js';
import { DEFAULT_CHEAP_CHECK_BOUNDS, forwardMatchesTrainingLoss } from '../../shared/verify/cheap-checks.js';
import { TOLERANCE_FLOOR } from '../../shared/verify/tolerance.js';

/**
 * Preflight: what the coordinator proves about a job before any worker spends time on it. A job that an honest worker
 * cannot train, or whose honest results the coordinator's checks would refuse, is the requester's error: it is
 * refused at submit (400 with the field), never handed out to fail on volunteers.
 *
 * The same trial runs again at run time (JobFaultWatch) when workers fail a unit the same way: a job that fails it
 * then is failed and refunded, and those workers' failures count against nobody.
 */
export interface PreflightProblem {
  field: string;
  message: string;
}

/** Examples of the trial step: enough for a batch, small enough that a 50M-parameter model steps in a blink. */
const TRIAL_EXAMPLES = 2;

function checkUnitSize(spec: JobSpec): PreflightProblem | null {
  const examples = spec.localSteps * spec.batchSize;
  if (examples <= MAX_UNIT_EXAMPLES) return null;
  return {
    field: '/localSteps',
    message: `/localSteps x /batchSize = ${examples} examples per unit exceeds the limit of ${MAX_UNIT_EXAMPLES}`,
  };
}

/** Limits that need no tfjs: a unit's size and the verification tolerance. */
export function checkJobLimits(spec: JobSpec): PreflightProblem | null {
  const size = checkUnitSize(spec);
  if (size) return size;
  const tol = spec.verification.tolerance;
  if (tol > 0 && tol < TOLERANCE_FLOOR) {
    return {
      field: '/verification/tolerance',
      message:
        `/verification/tolerance ${tol} is below ${TOLERANCE_FLOOR}, the floor above honest cross-backend noise ` +
        '(0 picks the calibrated default)',
    };
  }
  return null;
}

/**
 * One training step of the job on the coordinator's own backend, from `startWeights`, on the first training examples:
 * the model builds, its output matches the dataset's classes, the loss accepts the labels, the loss is finite, and when
 * the coordinator checks results by a forward pass (losses[0], shared/verify/cheap-checks.ts), that forward pass
 * gives the loss training reports. Returns the first problem, or null.
 */
export async function trialStep(
  model: object,
  spec: JobSpec,
  dataset: Dataset,
  startWeights: WeightSet,
): Promise<PreflightProblem | null> {
  const size = checkUnitSize(spec);
  if (size) return size;
  const n = Math.min(TRIAL_EXAMPLES, spec.batchSize, dataset.trainExamples);
  if (n < 1) return { field: '/dataset', message: '/dataset has no training examples' };
  const indices = Int32Array.from({ length: n }, (_, i) => i);
  let reported: number;
  try {
    const out = await trainUnit({
      model,
      spec: { steps: 1, batchSize: n, checkpointEvery: 0, optimizer: spec.optimizer, loss: spec.loss },
      startWeights,
      dataset,
      indices,
    });
    reported = out.losses[0];
  } catch (err) {
    const message = (err as Error).message.replace(/^trainUnit: /, '');
    return { field: '/model', message: `/model cannot be trained on /dataset: ${message}` };
  }
  if (!Number.isFinite(reported)) {
    return { field: '/model', message: `/model gives a non-finite ${spec.loss} loss at its initial weights` };
  }
  if (forwardMatchesTrainingLoss(model)) {
    const recomputed = await forwardLoss(model, startWeights, dataset, indices, spec.loss);
    const tol = DEFAULT_CHEAP_CHECK_BOUNDS.firstLossRelTol * Math.max(1, Math.abs(recomputed));
    if (!(Math.abs(reported - recomputed) <= tol)) {
      return {
        field: '/model',
        message:
          `/model trains on a loss of ${reported.toPrecision(6)} where a forward pass gives ${recomputed.toPrecision(6)}: ` +
          'something adds to the training loss that the JSON does not declare, so honest results could not be checked',
      };
    }
  }
  return null;
}
