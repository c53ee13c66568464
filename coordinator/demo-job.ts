import type { JobSpec } from '../shared/protocol/job-spec.js';
import { mnistMlpModel } from '../shared/train/templates.js';

/**
 * The demo job `npm start` queues: an MNIST MLP trained DiLoCo-style to 95% held-out accuracy. Units are short
 * (H = 40 steps of 32 examples) so a browser tab finishes one in seconds.
 */
export function demoJobSpec(overrides: Partial<JobSpec> = {}): JobSpec {
  return {
    name: 'MNIST digits (demo)',
    model: mnistMlpModel(128),
    dataset: 'mnist',
    loss: 'categoricalCrossentropy',
    optimizer: { type: 'adam', learningRate: 0.002 },
    batchSize: 32,
    localSteps: 40,
    unitsPerRound: 4,
    rounds: 60,
    targetAccuracy: 0.95,
    outer: { learningRate: 1, momentum: 0.5, nesterov: true },
    aggregation: { method: 'mean', trimFraction: 0.2, clipFactor: 3 },
    verification: { minAuditProbability: 0.1, checkpointEvery: 0, tolerance: 0 },
    seed: 7,
    unitDeadlineMs: 120_000,
    ...overrides,
  };
}
