import type { WeightSet } from '../train/types.js';
import { hashWeights } from '../train/weights-format.js';
import { relativeDistance, stateDistance } from './distance.js';

/**
 * Dispute bisection. Two parties returned different results for the same unit. Each committed the hash of its full
 * training state (weights + optimizer slots) every k steps. Both start from the same state (the round's weights), and
 * they disagree at the end, so there is a first checkpoint where they part beyond tau. A binary search over the
 * checkpoints finds it with ~log2(H/k) reveals per party; the referee then recomputes only that one segment.
 *
 * A revealed state must hash to the committed value, arrive before the deadline, and (for the last checkpoint) be
 * consistent with the delta the party submitted. A party that breaks any of these loses at once.
 */

export type PartyId = 'a' | 'b';

/** One side of a dispute, as the coordinator sees it. The coordinator wires reveal() to a WebSocket request. */
export interface DisputeParty {
  account: string;
  /** Committed checkpoint hashes: checkpoints[i] is the state after min((i + 1) * k, steps) steps. */
  checkpoints: string[];
  /** The delta the party submitted (finalWeights - startWeights). */
  delta: WeightSet;
  /** Asks the party for its full state at checkpoint `index` (0-based into `checkpoints`). */
  reveal(index: number): Promise<WeightSet>;
}

export interface BisectContext {
  steps: number;
  checkpointEvery: number;
  tolerance: number;
  /** The round's weights: the shared start, and the base for checking final states against deltas. */
  startWeights: WeightSet;
  /** How long a party has to answer one reveal. */
  revealTimeoutMs: number;
  /** Canonical state hash; must be the function trainUnit uses for its checkpoints. */
  hashState?: (state: WeightSet) => string;
  /**
   * The layout every state of this unit has (the model's weights, then the optimizer's slots), as the coordinator
   * derives it from the model and optimizer. A revealed state of any other layout is the revealer's proven fault.
   * Without it, only the weights part (against startWeights) and each tensor's own consistency are checked.
   */
  stateLayout?: StateLayout;
}

/** Names and shapes of a full training state, in order. */
export interface StateLayout {
  names: string[];
  shapes: number[][];
}

/**
 * Why a party-supplied state cannot be compared with anything, or null when it is well formed: every tensor a
 * Float32Array whose length is the product of its shape, the weights part laid out like startWeights, and (when the
 * expected layout is known) exactly that layout. Checked at receipt, so that no comparison later throws on
 * party-supplied data: a malformed state is its sender's fault, never an error to retry.
 */
export function stateLayoutProblem(state: WeightSet, startWeights: WeightSet, layout?: StateLayout): string | null {
  if (!state || !Array.isArray(state.names) || !Array.isArray(state.shapes) || !Array.isArray(state.data)) {
    return 'not a weight set';
  }
  const n = state.data.length;
  if (state.names.length !== n || state.shapes.length !== n) {
    return `${state.names.length} names, ${state.shapes.length} shapes for ${n} tensors`;
  }
  for (let t = 0; t < n; t++) {
    const d = state.data[t];
    const shape = state.shapes[t];
    if (!(d instanceof Float32Array)) return `tensor ${t} is not float32`;
    if (!Array.isArray(shape) || !shape.every((x) => Number.isSafeInteger(x) && x >= 0)) {
      return `tensor ${t} has a bad shape`;
    }
    const size = shape.reduce((a, x) => a * x, 1);
    if (d.length !== size) return `tensor ${t} has ${d.length} values for shape [${shape.join(',')}]`;
  }
  const w = startWeights.data.length;
  if (n < w) return `${n} tensors, fewer than the model's ${w} weights`;
  for (let t = 0; t < w; t++) {
    if (state.data[t].length !== startWeights.data[t].length) {
      return `tensor ${t} has ${state.data[t].length} values, the model's weight ${startWeights.data[t].length}`;
    }
  }
  if (!layout) return null;
  if (n !== layout.names.length) return `${n} tensors, ${layout.names.length} expected`;
  for (let t = 0; t < n; t++) {
    if (state.names[t] !== layout.names[t]) return `tensor ${t} is "${state.names[t]}", "${layout.names[t]}" expected`;
    const got = state.shapes[t];
    const want = layout.shapes[t];
    if (got.length !== want.length || got.some((x, i) => x !== want[i])) {
      return `tensor ${t} has shape [${got.join(',')}], [${want.join(',')}] expected`;
    }
  }
  return null;
}

/**
 * A transport marks a reveal it could not take as a state (bytes that do not parse, an answer to another request)
 * with `malformed`: like a malformed state, it is the revealer's proven fault, not silence.
 */
export interface MalformedRevealError extends Error {
  malformed: true;
}

export function malformedReveal(message: string): MalformedRevealError {
  return Object.assign(new Error(message), { malformed: true as const });
}

export interface PartyFault {
  party: PartyId;
  code: 'reveal-timeout' | 'reveal-error' | 'reveal-hash-mismatch' | 'reveal-bad-shape' | 'delta-not-bound';
  reason: string;
}

export type BisectOutcome =
  /** A party broke the reveal rules; it loses without any recomputation. */
  | { kind: 'forfeit'; faults: PartyFault[]; reveals: number }
  /** Final states agree within tau: there is no real dispute (the deltas differ only in noise). */
  | { kind: 'agree'; reveals: number }
  | {
      kind: 'segment';
      /** Steps [fromStep, toStep) hold the first disagreement. */
      segment: [number, number];
      /** State index (0 = start, i = checkpoints[i - 1]) where the segment starts and ends. */
      fromIndex: number;
      toIndex: number;
      /** The state both agree on at fromStep; null means the unit's start (startWeights, fresh optimizer). */
      agreedState: WeightSet | null;
      /** Each party's revealed state at toStep: the referee rules by comparing its recomputation with these. */
      endStates: Record<PartyId, WeightSet>;
      reveals: number;
    };

/** Number of checkpoints a unit commits: one every k steps, the last one at the final step. */
export function checkpointCount(steps: number, k: number): number {
  return Math.ceil(steps / k);
}

/** Step at which state index j is taken (0 = start). */
export function stepOfStateIndex(j: number, steps: number, k: number): number {
  return Math.min(j * k, steps);
}

class FaultError extends Error {
  constructor(readonly fault: PartyFault) {
    super(fault.reason);
  }
}

/** Resolves with the reveal or rejects with a timeout; clears its timer either way. */
export async function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The weights part of a state: trainUnit lays a state out as the model's weights first, then optimizer slots. */
export function weightsOfState(state: WeightSet, weightTensors: number): WeightSet {
  return {
    names: state.names.slice(0, weightTensors),
    shapes: state.shapes.slice(0, weightTensors),
    data: state.data.slice(0, weightTensors),
  };
}

/** Relative distance between the delta a final state implies and the delta a party submitted. */
export function deltaBindingDistance(finalState: WeightSet, startWeights: WeightSet, delta: WeightSet): number {
  const w = weightsOfState(finalState, startWeights.data.length);
  const implied: WeightSet = {
    names: w.names,
    shapes: w.shapes,
    data: w.data.map((d, t) => {
      const s = startWeights.data[t];
      if (d.length !== s.length) throw new Error(`state tensor ${t} has ${d.length} values, weights ${s.length}`);
      const out = new Float32Array(d.length);
      for (let i = 0; i < d.length; i++) out[i] = d[i] - s[i];
      return out;
    }),
  };
  return relativeDistance(implied, delta);
}

/**
 * Reveals checkpoint states and remembers them. Every reveal is checked against the party's commitment.
 */
export class RevealCache {
  private readonly cache = new Map<string, WeightSet>();
  count = 0;

  constructor(
    private readonly parties: Record<PartyId, DisputeParty>,
    private readonly ctx: BisectContext,
  ) {}

  async get(party: PartyId, index: number): Promise<WeightSet> {
    const key = `${party}:${index}`;
    const hit = this.cache.get(key);
    if (hit) return hit;
    const p = this.parties[party];
    this.count++;
    let state: WeightSet;
    try {
      state = await withDeadline(p.reveal(index), this.ctx.revealTimeoutMs, `reveal of checkpoint ${index}`);
    } catch (err) {
      const msg = (err as Error).message ?? String(err);
      const code = (err as Partial<MalformedRevealError>).malformed
        ? 'reveal-bad-shape'
        : /no answer within/.test(msg)
          ? 'reveal-timeout'
          : 'reveal-error';
      throw new FaultError({ party, code, reason: `${p.account}: ${msg}` });
    }
    const problem = stateLayoutProblem(state, this.ctx.startWeights, this.ctx.stateLayout);
    if (problem) {
      throw new FaultError({
        party,
        code: 'reveal-bad-shape',
        reason: `${p.account}: state ${index} is malformed (${problem})`,
      });
    }
    let hash: string;
    try {
      hash = (this.ctx.hashState ?? hashWeights)(state);
    } catch (err) {
      throw new FaultError({
        party,
        code: 'reveal-bad-shape',
        reason: `${p.account}: state ${index} is malformed (${(err as Error).message})`,
      });
    }
    if (hash !== p.checkpoints[index]) {
      throw new FaultError({
        party,
        code: 'reveal-hash-mismatch',
        reason: `${p.account}: revealed state ${index} hashes to ${hash.slice(0, 12)}…, committed ${String(p.checkpoints[index]).slice(0, 12)}…`,
      });
    }
    this.cache.set(key, state);
    return state;
  }
}

/** Reveals the same checkpoint from both parties at once; a fault from either (or both) ends the dispute. */
async function revealBoth(cache: RevealCache, index: number): Promise<Record<PartyId, WeightSet>> {
  const [ra, rb] = await Promise.allSettled([cache.get('a', index), cache.get('b', index)]);
  const faults: PartyFault[] = [];
  for (const r of [ra, rb]) {
    if (r.status === 'rejected') {
      if (r.reason instanceof FaultError) faults.push(r.reason.fault);
      else throw r.reason;
    }
  }
  if (faults.length > 0) throw new MultiFault(faults);
  return { a: (ra as PromiseFulfilledResult<WeightSet>).value, b: (rb as PromiseFulfilledResult<WeightSet>).value };
}

class MultiFault extends Error {
  constructor(readonly faults: PartyFault[]) {
    super(faults.map((f) => f.reason).join('; '));
  }
}

/**
 * Finds the first segment where the parties disagree beyond tau. Both parties must have committed the same number of
 * checkpoints (the cheap checks reject any other count before a dispute can start).
 */
export async function bisectDispute(
  parties: Record<PartyId, DisputeParty>,
  ctx: BisectContext,
): Promise<BisectOutcome> {
  const k = ctx.checkpointEvery;
  const n = checkpointCount(ctx.steps, k);
  for (const id of ['a', 'b'] as const) {
    if (parties[id].checkpoints.length !== n) {
      return {
        kind: 'forfeit',
        faults: [
          {
            party: id,
            code: 'reveal-bad-shape',
            reason: `${parties[id].account}: ${parties[id].checkpoints.length} checkpoints committed, ${n} expected`,
          },
        ],
        reveals: 0,
      };
    }
  }
  const cache = new RevealCache(parties, ctx);
  const stateAt = (j: number) => revealBoth(cache, j - 1);
  const agreeAt = async (j: number): Promise<boolean> => {
    if (j === 0) return true;
    if (parties.a.checkpoints[j - 1] === parties.b.checkpoints[j - 1]) return true; // bit-identical states
    const s = await stateAt(j);
    return stateDistance(s.a, s.b, ctx.startWeights) <= ctx.tolerance;
  };

  try {
    // The final states come first: they bind each party's checkpoints to the delta it submitted.
    const finals = await stateAt(n);
    const faults: PartyFault[] = [];
    for (const id of ['a', 'b'] as const) {
      const d = deltaBindingDistance(finals[id], ctx.startWeights, parties[id].delta);
      if (!(d <= ctx.tolerance)) {
        faults.push({
          party: id,
          code: 'delta-not-bound',
          reason: `${parties[id].account}: submitted delta is ${d.toExponential(2)} away from its committed final state`,
        });
      }
    }
    if (faults.length > 0) return { kind: 'forfeit', faults, reveals: cache.count };
    if (stateDistance(finals.a, finals.b, ctx.startWeights) <= ctx.tolerance)
      return { kind: 'agree', reveals: cache.count };

    let lo = 0; // agree
    let hi = n; // disagree
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (await agreeAt(mid)) lo = mid;
      else hi = mid;
    }
    const ends = await stateAt(hi);
    const agreedState = lo === 0 ? null : (await stateAt(lo)).a;
    return {
      kind: 'segment',
      segment: [stepOfStateIndex(lo, ctx.steps, k), stepOfStateIndex(hi, ctx.steps, k)],
      fromIndex: lo,
      toIndex: hi,
      agreedState,
      endStates: ends,
      reveals: cache.count,
    };
  } catch (err) {
    if (err instanceof MultiFault) return { kind: 'forfeit', faults: err.faults, reveals: cache.count };
    throw err;
  }
}
