import type { Dataset, TrainUnitSpec, WeightSet } from '../../shared/train/types.js';
import { type Compute, localCompute } from '../compute/tasks.js';
import type { Referee, SegmentRequest, SegmentResult } from './ruling.js';

/**
 * The referee recomputes ONE segment of a unit on the coordinator, from a state both parties agree on, and rules
 * whose end state it reproduces. Bisection keeps that to one segment; the whole unit is recomputed only when a party
 * went silent and its delta must be judged without its states (engine.ts, judgeByWholeRun).
 */

/** Everything needed to re-run any part of one unit: the same inputs the workers got. */
export interface UnitInputs {
  model: object;
  spec: TrainUnitSpec;
  startWeights: WeightSet;
  dataset: Dataset;
  indices: Int32Array;
  /** Give the event loop a turn between steps (the live coordinator keeps serving sockets while it referees). */
  yieldToEventLoop?: boolean;
  /** Polled between steps: true aborts the recomputation (trainUnit throws TrainAborted), e.g. on shutdown. */
  shouldStop?: () => boolean;
}

/**
 * A Referee over trainUnit for one unit. It counts every step it runs (`stepsRun`) so callers can prove that a
 * dispute cost one segment and not a whole unit.
 */
export class TrainUnitReferee implements Referee {
  stepsRun = 0;
  segments = 0;

  /** `compute`: where the recomputation runs (the coordinator's compute pool; in process by default). */
  constructor(
    private readonly unit: UnitInputs,
    private readonly compute: Compute = localCompute,
  ) {}

  async recomputeSegment(req: SegmentRequest): Promise<SegmentResult> {
    const { spec } = this.unit;
    if (!(req.fromStep >= 0 && req.toStep > req.fromStep && req.toStep <= spec.steps)) {
      throw new Error(`bad segment [${req.fromStep}, ${req.toStep}) for a unit of ${spec.steps} steps`);
    }
    const t0 = performance.now();
    const out = await this.compute.trainUnit({
      ...this.unit,
      ...(req.fromState ? { fromStep: req.fromStep, fromState: req.fromState } : { fromStep: req.fromStep }),
      toStep: req.toStep,
      keepCheckpointStates: true,
    });
    const steps = out.stepsRun;
    this.stepsRun += steps;
    this.segments++;
    const states = out.checkpointStates;
    if (!states || states.length === 0) throw new Error('trainUnit returned no checkpoint state for the segment');
    return { state: states[states.length - 1], steps, ms: performance.now() - t0 };
  }
}

export { stateLayoutOf } from '../compute/state-layout.js';
export { type Referee, type Ruling, ruleOnSegment, type SegmentRequest, type SegmentResult } from './ruling.js';
