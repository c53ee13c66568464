import * as tf from '@tensorflow/tfjs';
import { sha256HexAsync } from '../../shared/hash.js';
import type { JobSpec } from '../../shared/protocol/job-spec.js';
import { type EvaluateOptions, type EvaluateResult, evaluateModel } from '../../shared/train/evaluate.js';
import { trainUnit } from '../../shared/train/train-unit.js';
import type { Dataset, TrainUnitInput, TrainUnitOutput, TrainUnitSpec, WeightSet } from '../../shared/train/types.js';
import { encodeWeights, weightsFromModel } from '../../shared/train/weights-format.js';
import type { StateLayout } from '../../shared/verify/bisect.js';
import {
  type CheapCheckBounds,
  type CheapCheckInput,
  type CheapCheckResult,
  cheapCheck,
} from '../../shared/verify/cheap-checks.js';
import { type PreflightProblem, trialStep } from '../scheduler/preflight.js';
import { stateLayoutOf } from './state-layout.js';

/**
 * The tensor work the coordinator does, as named tasks. The compute pool (pool.ts) runs them in worker threads; the
 * in-process implementation (localCompute) runs them on the calling thread and is the reference the pool must equal.
 */

/** A unit (or a segment of one) the coordinator trains itself: self-audit, divergence check, referee. */
export type TrainRequest = Pick<
  TrainUnitInput,
  | 'model'
  | 'spec'
  | 'startWeights'
  | 'dataset'
  | 'indices'
  | 'fromStep'
  | 'fromState'
  | 'toStep'
  | 'keepCheckpointStates'
> & {
  /** Polled between steps: true abandons the run (it rejects with TrainAborted). */
  shouldStop?: () => boolean;
};

/** trainUnit's output, and how many steps the run actually took (the referee counts them). */
export type TrainResult = TrainUnitOutput & { stepsRun: number };

export interface EncodedWeights {
  bytes: Uint8Array;
  hash: string;
}

export async function encodeAndHash(w: WeightSet): Promise<EncodedWeights> {
  const bytes = encodeWeights(w);
  return { bytes, hash: await sha256HexAsync(bytes) };
}

export interface Compute {
  /** The initial weights tfjs gives a model built from its JSON. */
  buildInitialWeights(model: object): Promise<WeightSet>;
  trialStep(model: object, spec: JobSpec, dataset: Dataset, startWeights: WeightSet): Promise<PreflightProblem | null>;
  cheapCheck(input: CheapCheckInput, bounds: CheapCheckBounds): Promise<CheapCheckResult>;
  evaluate(model: object, weights: WeightSet, dataset: Dataset, opts: EvaluateOptions): Promise<EvaluateResult>;
  trainUnit(req: TrainRequest): Promise<TrainResult>;
  /** The weights blob (shared/train/weights-format.ts) and its sha256: megabytes to copy and hash. */
  encodeWeights(w: WeightSet): Promise<EncodedWeights>;
  /** Names and shapes of a unit's training states (weights, then optimizer slots): builds the model. */
  stateLayout(model: object, spec: TrainUnitSpec): Promise<StateLayout>;
  close(): Promise<void>;
}

export async function buildInitialWeights(model: object): Promise<WeightSet> {
  const built = await tf.models.modelFromJSON(model as Parameters<typeof tf.models.modelFromJSON>[0]);
  try {
    return weightsFromModel(built);
  } finally {
    built.dispose();
  }
}

export async function runTrainUnit(req: TrainRequest, yieldToEventLoop: boolean): Promise<TrainResult> {
  let stepsRun = 0;
  const { shouldStop, ...input } = req;
  const out = await trainUnit({
    ...input,
    yieldToEventLoop,
    ...(shouldStop ? { shouldStop } : {}),
    onStep: () => {
      stepsRun++;
    },
  });
  return { ...out, stepsRun };
}

/** The tasks on the calling thread (tests, tools, and a Scheduler built without a pool). */
export const localCompute: Compute = {
  buildInitialWeights,
  trialStep,
  cheapCheck,
  evaluate: evaluateModel,
  // Yield between steps: on the main thread sockets must keep being served while it trains.
  trainUnit: (req) => runTrainUnit(req, true),
  stateLayout: stateLayoutOf,
  encodeWeights: encodeAndHash,
  close: async () => {},
};
