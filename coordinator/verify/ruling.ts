import type { WeightSet } from '../../shared/train/types.js';
import type { PartyId } from '../../shared/verify/bisect.js';
import { stateDistance } from '../../shared/verify/distance.js';

/**
 * What a referee is and how it rules. Kept apart from the trainUnit-backed implementation (referee.ts) so the
 * engine and its tests depend only on this contract.
 */

export interface SegmentRequest {
  fromStep: number;
  toStep: number;
  /** Full state (weights + optimizer slots) at fromStep; null = the unit's start weights with a fresh optimizer. */
  fromState: WeightSet | null;
}

export interface SegmentResult {
  /** Full state at toStep, laid out like a checkpoint state. */
  state: WeightSet;
  /** Optimizer steps actually run (the benchmark asserts this equals toStep - fromStep). */
  steps: number;
  ms: number;
}

/** Recomputes a segment of a unit. The coordinator's implementation trains with tfjs; tests may count calls. */
export interface Referee {
  recomputeSegment(req: SegmentRequest): Promise<SegmentResult>;
}

export type Ruling =
  | { kind: 'winner'; winner: PartyId; loser: PartyId; distances: Record<PartyId, number> }
  | { kind: 'both-lose'; distances: Record<PartyId, number> }
  | { kind: 'both-match'; distances: Record<PartyId, number> };

/** Whose end state does the referee's recomputation reproduce within tau (stateDistance, progress from the start)? */
export function ruleOnSegment(
  refState: WeightSet,
  endStates: Record<PartyId, WeightSet>,
  tolerance: number,
  startWeights: WeightSet,
): Ruling {
  const distances = {
    a: stateDistance(refState, endStates.a, startWeights),
    b: stateDistance(refState, endStates.b, startWeights),
  };
  const okA = distances.a <= tolerance;
  const okB = distances.b <= tolerance;
  if (okA && okB) return { kind: 'both-match', distances };
  if (okA) return { kind: 'winner', winner: 'a', loser: 'b', distances };
  if (okB) return { kind: 'winner', winner: 'b', loser: 'a', distances };
  return { kind: 'both-lose', distances };
}
