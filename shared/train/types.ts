import type { InnerOptimizer, LossName } from '../protocol/job-spec.js';

/**
 * Contracts of the shared training core. Browser, headless worker and coordinator (evaluation, referee) all use them.
 */

/** A named list of float32 tensors in model.getWeights() order. */
export interface WeightSet {
  names: string[];
  shapes: number[][];
  /** One Float32Array per tensor, row-major. */
  data: Float32Array[];
}

/** A dataset decoded from the binary format (shared/train/dataset-format.ts). */
export interface Dataset {
  name: string;
  featureShape: number[];
  numClasses: number;
  examples: number;
  /** Examples [0, trainExamples) train; [trainExamples, examples) are held out for evaluation. */
  trainExamples: number;
  /** Features as float32, examples x prod(featureShape). */
  features: Float32Array;
  /** Class labels as int32. */
  labels: Int32Array;
}

export interface TrainUnitSpec {
  steps: number;
  batchSize: number;
  checkpointEvery: number;
  optimizer: InnerOptimizer;
  loss: LossName;
}

export interface TrainUnitInput {
  /** tfjs `model.toJSON()` object (already checked against the allow-list). */
  model: object;
  spec: TrainUnitSpec;
  /** Weights the unit starts from (the round's weights). */
  startWeights: WeightSet;
  dataset: Dataset;
  /** Example indices, steps x batchSize long, from assignExamples(). Step s uses [s*B, (s+1)*B). */
  indices: Int32Array;
  /** Resume from a checkpoint state instead of startWeights (referee / dispute segment). */
  fromStep?: number;
  fromState?: WeightSet;
  /** Stop after this step (exclusive); default spec.steps. */
  toStep?: number;
  /** Keep full checkpoint states (weights + optimizer slots) so disputes can be answered. */
  keepCheckpointStates?: boolean;
  onStep?: (step: number, loss: number) => void | Promise<void>;
  /** Checked between steps; return true to abandon (throws TrainAborted). */
  shouldStop?: () => boolean;
  /** Reported back in the output (e.g. the WebGPU adapter description); the caller knows it, tfjs does not. */
  adapter?: string;
  /** Give the event loop a macrotask turn at every loss read (keeps a Node coordinator or a page responsive). */
  yieldToEventLoop?: boolean;
}

export interface TrainUnitOutput {
  /** finalWeights - startWeights, per tensor. */
  delta: WeightSet;
  finalWeights: WeightSet;
  losses: number[];
  /** sha256 hex of the canonical training state (weights + optimizer slots) after every checkpointEvery steps. */
  checkpoints: string[];
  /** Full states matching `checkpoints`, when keepCheckpointStates. */
  checkpointStates?: WeightSet[];
  finalHash: string;
  deltaHash: string;
  examples: number;
  flops: number;
  backend: string;
  adapter?: string;
  /** checkpointMs: part of trainMs spent reading, encoding and hashing checkpoint states (verification cost). */
  timings: { totalMs: number; trainMs: number; setupMs: number; checkpointMs?: number };
  /** The step each entry of `checkpoints` belongs to (after that many steps from the unit's start). */
  checkpointSteps?: number[];
  /** Steps actually run: [fromStep, toStep). */
  fromStep?: number;
  toStep?: number;
  /** sha256 of the full training state after toStep (equals the last checkpoint when toStep is a boundary). */
  finalStateHash?: string;
}
