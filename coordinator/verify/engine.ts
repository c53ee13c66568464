import type { WeightSet } from '../../shared/train/types.js';
import {
  type BisectContext,
  bisectDispute,
  checkpointCount,
  type DisputeParty,
  deltaBindingDistance,
  type PartyFault,
  type PartyId,
  RevealCache,
  type StateLayout,
  stepOfStateIndex,
} from '../../shared/verify/bisect.js';
import { relativeDistance, stateDistance } from '../../shared/verify/distance.js';
import { jobTolerance } from '../../shared/verify/tolerance.js';
import { auditProbability, recordFailure, recordValid, type TrustState } from '../../shared/verify/trust.js';
import { type Referee, ruleOnSegment, type SegmentResult } from './ruling.js';

/**
 * The verification policy the round scheduler calls. It owns no storage: the scheduler loads trust states and results
 * from its database, asks the engine what to do, and writes the verdicts back. Randomness is injectable so that runs
 * replay exactly in tests and in the benchmark.
 *
 * Flow per unit (see docs/VERIFICATION.md):
 *  1. every result: cheap checks (shared/verify/cheap-checks.ts); an exact check failed = invalid, no replication
 *     needed; only a statistical one failed = suspect, always audited;
 *  2. shouldAudit(trust, job): if true the unit is leased blind to a second worker (isEligibleAuditor);
 *  3. settleAudit(original, audit): compare -> match: spot check one random segment of one party (defeats colluding
 *     pairs that return the same fabricated result) | mismatch: bisect + referee on the first bad segment; a party
 *     that goes silent is judged by a referee run of the whole unit, never by its silence;
 *  4. apply verdicts: recordValid / recordFailure, consequencesFor(loser) -> reissue list + forfeit events.
 */

export interface JobVerificationPolicy {
  /** JobSpec.verification.minAuditProbability: the job can raise the audit rate, never lower the policy floor. */
  minAuditProbability: number;
  /** JobSpec.verification.tolerance: 0 = DEFAULT_TOLERANCE. */
  tolerance: number;
}

/** Who ran a result: audits go to a different account on a different network address. */
export interface WorkerIdentity {
  account: string;
  /** Network address (IP or /24 or /64 prefix, as the gateway records it). */
  address?: string;
}

/** The parts of a stored result that comparison needs. */
export interface ComparableResult {
  deltaHash: string;
  delta: WeightSet;
}

export interface CompareResult {
  verdict: 'match' | 'mismatch';
  how: 'identical' | 'within-tolerance' | 'beyond-tolerance';
  /** Relative distance of the deltas (0 when identical). */
  deltaDistance: number;
  /** Relative distance of the final weights when startWeights was given (always <= deltaDistance in practice). */
  finalDistance?: number;
}

export interface UnitContext {
  unitId: string;
  steps: number;
  checkpointEvery: number;
  startWeights: WeightSet;
  tolerance: number;
  /** The layout of every state of the unit (weights then optimizer slots); a revealed state of another is a fault. */
  stateLayout?: StateLayout;
}

export interface SpotCheckResult {
  ok: boolean;
  /** Steps [from, to) that were recomputed; absent when a reveal failed first. */
  segment?: [number, number];
  distance?: number;
  fault?: PartyFault;
  /** The party went silent (fault), so its delta was judged against the referee's run of the whole unit instead. */
  recomputed?: { distance: number; steps: number };
  reason: string;
  refereeSteps: number;
  reveals: number;
}

export type DisputeOutcome = 'a-wins' | 'b-wins' | 'both-lose' | 'no-fault';

/**
 * Reveal faults that prove nothing about the work: no answer in time, or "I no longer hold my states" (a closed tab, a
 * reloaded page, a crashed worker). A hash mismatch, a malformed state or an unbound delta are proof; silence is not.
 */
const SILENCE: ReadonlySet<PartyFault['code']> = new Set(['reveal-timeout', 'reveal-error']);

/**
 * settleAudit's `reexecute` reason when earlier attempts of the settlement failed with errors: the whole run then
 * judges both deltas whether they match or not, and nothing a party reveals is used.
 */
export const SETTLE_ERRORS = 'settlement-errors';

/** See settleAudit's mayRunWhole. */
export type WholeRunGate = (accounts: string[]) => string | null;

/** A whole-unit run had to wait for the coordinator's work budget: nothing was ruled, retry later. */
export class WorkDeferred extends Error {}

function gate(mayRunWhole: WholeRunGate | undefined, accounts: string[]): void {
  const why = mayRunWhole?.(accounts);
  if (why) throw new WorkDeferred(why);
}

/** The referee's run of the whole unit, shared by every judgement of one settlement (computed at most once). */
type WholeRun = (() => Promise<SegmentResult>) & { readonly started: boolean };

export interface DisputeResolution {
  outcome: DisputeOutcome;
  /** How the outcome was reached. */
  /**
   * forfeit: a party proved itself wrong (a reveal that does not hash to its commitment, a malformed state, a delta
   * not bound to its final state); referee: one bisected segment recomputed; recompute: a party went silent, so the
   * referee ran the whole unit and judged each party's delta against it; final-states-agree: nothing to rule on.
   */
  by: 'forfeit' | 'referee' | 'recompute' | 'final-states-agree';
  /** by 'recompute': each judged party's delta distance from the referee's whole run. */
  distances?: Partial<Record<PartyId, number>>;
  losers: PartyId[];
  reason: string;
  segment?: [number, number];
  faults: PartyFault[];
  refereeSteps: number;
  reveals: number;
}

/**
 * valid: accept the result (matched an independent result and passed the spot check, or the dispute found no fault).
 * invalid: reject it; the account lost (consequencesFor).
 * reaudit: won a dispute, but winning against a cheater (or a silent party) confirms only the disputed segment, not the
 *   whole result. Hold it and lease the unit blind to one more auditor, then settleAudit(winner, newAuditor).
 */
export type Verdict = 'valid' | 'invalid' | 'reaudit';

export interface AuditSettlement {
  verdicts: Record<PartyId, Verdict>;
  compare: CompareResult;
  spotChecks: Partial<Record<PartyId, SpotCheckResult>>;
  dispute?: DisputeResolution;
  /** Per party, why it was found invalid (for the forfeit record and the worker's reject message). */
  reasons: Partial<Record<PartyId, string>>;
  refereeSteps: number;
  reveals: number;
  /** Why a match was re-executed in full (settleAudit's `reexecute`), when it was. */
  reexecuted?: string;
}

/** A record for the credits layer: this account forfeits its unvested credits because of this unit. */
export interface ForfeitEvent {
  account: string;
  unitId: string;
  reason: string;
  at: number;
}

/** A result of the loser still known to the scheduler. */
export interface OpenResult {
  resultId: string;
  unitId: string;
  /** Already folded into a round's aggregate (cannot be undone; its credits are forfeited instead). */
  aggregated: boolean;
}

export interface Consequences {
  trust: TrustState;
  forfeit: ForfeitEvent;
  /** Unaggregated results of the loser to drop; their units go back to the queue for another worker. */
  reissue: OpenResult[];
  /** Results already aggregated: nothing to undo in the model, their unvested credits are forfeited. */
  alreadyAggregated: OpenResult[];
}

export interface EngineOptions {
  /** Uniform [0, 1) source; Math.random by default. */
  rng?: () => number;
  /** Global floor of the audit probability for trusted accounts (DEFAULT_MIN_AUDIT_PROBABILITY unless set). */
  policyFloor?: number;
  /** Time a party has to answer one reveal request. */
  revealTimeoutMs?: number;
  /** Spot-check one random segment whenever an audit matches (on by default: it is the anti-collusion check). */
  spotCheckOnMatch?: boolean;
  now?: () => number;
}

export const DEFAULT_REVEAL_TIMEOUT_MS = 30_000;

export class VerificationEngine {
  private readonly rng: () => number;
  private readonly policyFloor: number | undefined;
  private readonly revealTimeoutMs: number;
  private readonly spotCheckOnMatch: boolean;
  private readonly now: () => number;

  constructor(opts: EngineOptions = {}) {
    this.rng = opts.rng ?? Math.random;
    this.policyFloor = opts.policyFloor;
    this.revealTimeoutMs = opts.revealTimeoutMs ?? DEFAULT_REVEAL_TIMEOUT_MS;
    this.spotCheckOnMatch = opts.spotCheckOnMatch ?? true;
    this.now = opts.now ?? Date.now;
  }

  /** The tau a job uses. */
  tolerance(job: JobVerificationPolicy): number {
    return jobTolerance(job.tolerance);
  }

  auditProbability(trust: TrustState, job: JobVerificationPolicy): number {
    return this.policyFloor === undefined
      ? auditProbability(trust, job.minAuditProbability)
      : auditProbability(trust, job.minAuditProbability, this.policyFloor);
  }

  /** Draw once per result (or per lease) whether the unit also goes to an auditor. */
  shouldAudit(trust: TrustState, job: JobVerificationPolicy): boolean {
    return this.rng() < this.auditProbability(trust, job);
  }

  /** An auditor must be another account on another network address than the worker it checks. */
  isEligibleAuditor(original: WorkerIdentity, candidate: WorkerIdentity): boolean {
    if (candidate.account === original.account) return false;
    if (original.address && candidate.address && original.address === candidate.address) return false;
    return true;
  }

  /**
   * Bit-identical deltas match at once; otherwise the relative distance of the deltas must be <= tau. (The distance
   * of final weights, start + delta, is the same difference over a larger norm, so it never decides anything the
   * delta distance has not; it is reported when startWeights is given.)
   */
  compare(a: ComparableResult, b: ComparableResult, tolerance: number, startWeights?: WeightSet): CompareResult {
    if (a.deltaHash === b.deltaHash) return { verdict: 'match', how: 'identical', deltaDistance: 0, finalDistance: 0 };
    const deltaDistance = relativeDistance(a.delta, b.delta);
    let finalDistance: number | undefined;
    if (startWeights) {
      let diff = 0;
      let na = 0;
      let nb = 0;
      for (let t = 0; t < startWeights.data.length; t++) {
        const s = startWeights.data[t];
        const da = a.delta.data[t];
        const db = b.delta.data[t];
        for (let i = 0; i < s.length; i++) {
          const fa = s[i] + da[i];
          const fb = s[i] + db[i];
          diff += (fa - fb) ** 2;
          na += fa * fa;
          nb += fb * fb;
        }
      }
      finalDistance = Math.sqrt(diff) / Math.max(Math.sqrt(na), Math.sqrt(nb), 1e-12);
    }
    const ok = deltaDistance <= tolerance && (finalDistance === undefined || finalDistance <= tolerance);
    return {
      verdict: ok ? 'match' : 'mismatch',
      how: ok ? 'within-tolerance' : 'beyond-tolerance',
      deltaDistance,
      finalDistance,
    };
  }

  private bisectContext(unit: UnitContext): BisectContext {
    return {
      steps: unit.steps,
      checkpointEvery: unit.checkpointEvery,
      tolerance: unit.tolerance,
      startWeights: unit.startWeights,
      revealTimeoutMs: this.revealTimeoutMs,
      stateLayout: unit.stateLayout,
    };
  }

  /**
   * Recomputes one random segment of a party's run: the party reveals its final state (which must be bound to its
   * delta) and the states at both ends of the segment (which must hash to its commitments); the referee recomputes the
   * segment from the first and must land within tau of the second. Cost: k steps and 2-3 reveals.
   */
  async spotCheck(
    party: DisputeParty,
    unit: UnitContext,
    referee: Referee,
    segmentIndex?: number,
  ): Promise<SpotCheckResult> {
    const n = checkpointCount(unit.steps, unit.checkpointEvery);
    if (party.checkpoints.length !== n) {
      return {
        ok: false,
        reason: `${party.checkpoints.length} checkpoints committed, ${n} expected`,
        fault: { party: 'a', code: 'reveal-bad-shape', reason: 'wrong checkpoint count' },
        refereeSteps: 0,
        reveals: 0,
      };
    }
    const j = segmentIndex ?? 1 + Math.floor(this.rng() * n); // state index at the segment's end, 1..n
    const cache = new RevealCache({ a: party, b: party }, this.bisectContext(unit));
    const fail = (fault: PartyFault): SpotCheckResult => ({
      ok: false,
      fault,
      reason: fault.reason,
      refereeSteps: 0,
      reveals: cache.count,
    });
    let finalState: WeightSet;
    let fromState: WeightSet | null;
    let endState: WeightSet;
    try {
      finalState = await cache.get('a', n - 1);
      fromState = j === 1 ? null : await cache.get('a', j - 2);
      endState = await cache.get('a', j - 1);
    } catch (err) {
      const fault = (err as { fault?: PartyFault }).fault;
      if (fault) return fail(fault);
      throw err;
    }
    const binding = deltaBindingDistance(finalState, unit.startWeights, party.delta);
    if (!(binding <= unit.tolerance)) {
      return fail({
        party: 'a',
        code: 'delta-not-bound',
        reason: `${party.account}: submitted delta is ${binding.toExponential(2)} away from its committed final state`,
      });
    }
    const segment: [number, number] = [
      stepOfStateIndex(j - 1, unit.steps, unit.checkpointEvery),
      stepOfStateIndex(j, unit.steps, unit.checkpointEvery),
    ];
    const rec = await referee.recomputeSegment({ fromStep: segment[0], toStep: segment[1], fromState });
    const distance = stateDistance(rec.state, endState, unit.startWeights);
    const ok = distance <= unit.tolerance;
    return {
      ok,
      segment,
      distance,
      reason: ok
        ? 'segment reproduced'
        : `${party.account}: steps [${segment[0]}, ${segment[1]}) do not reproduce its checkpoint (distance ${distance.toExponential(2)})`,
      refereeSteps: rec.steps,
      reveals: cache.count,
    };
  }

  /** Bisects to the first disagreeing segment and has the referee recompute exactly that segment. */
  async resolveDispute(
    parties: Record<PartyId, DisputeParty>,
    unit: UnitContext,
    referee: Referee,
    opts: { whole?: WholeRun; stop?: () => boolean; mayRunWhole?: WholeRunGate } = {},
  ): Promise<DisputeResolution> {
    const bis = await bisectDispute(parties, this.bisectContext(unit));
    if (bis.kind === 'forfeit' && bis.faults.some((f) => SILENCE.has(f.code)) && !opts.stop?.()) {
      const silent = bis.faults.filter((f) => SILENCE.has(f.code)).map((f) => parties[f.party].account);
      const whole = opts.whole ?? wholeRunOf(referee, unit);
      if (!whole.started) gate(opts.mayRunWhole, silent);
      return this.judgeByWholeRun(parties, unit, whole, bis.faults, bis.reveals);
    }
    if (bis.kind === 'forfeit') {
      const losers = [...new Set(bis.faults.map((f) => f.party))];
      const outcome: DisputeOutcome = losers.length === 2 ? 'both-lose' : losers[0] === 'a' ? 'b-wins' : 'a-wins';
      return {
        outcome,
        by: 'forfeit',
        losers,
        reason: bis.faults.map((f) => f.reason).join('; '),
        faults: bis.faults,
        refereeSteps: 0,
        reveals: bis.reveals,
      };
    }
    if (bis.kind === 'agree') {
      return {
        outcome: 'no-fault',
        by: 'final-states-agree',
        losers: [],
        reason: 'final states agree within tolerance',
        faults: [],
        refereeSteps: 0,
        reveals: bis.reveals,
      };
    }
    const rec = await referee.recomputeSegment({
      fromStep: bis.segment[0],
      toStep: bis.segment[1],
      fromState: bis.agreedState,
    });
    const ruling = ruleOnSegment(rec.state, bis.endStates, unit.tolerance, unit.startWeights);
    const where = `steps [${bis.segment[0]}, ${bis.segment[1]})`;
    const base = {
      by: 'referee' as const,
      segment: bis.segment,
      faults: [],
      refereeSteps: rec.steps,
      reveals: bis.reveals,
    };
    if (ruling.kind === 'winner') {
      return {
        ...base,
        outcome: ruling.winner === 'a' ? 'a-wins' : 'b-wins',
        losers: [ruling.loser],
        reason: `${parties[ruling.loser].account}: ${where} do not reproduce (distance ${ruling.distances[ruling.loser].toExponential(2)})`,
      };
    }
    if (ruling.kind === 'both-lose') {
      return {
        ...base,
        outcome: 'both-lose',
        losers: ['a', 'b'],
        reason: `neither party reproduces ${where} (distances ${ruling.distances.a.toExponential(2)}, ${ruling.distances.b.toExponential(2)})`,
      };
    }
    return { ...base, outcome: 'no-fault', losers: [], reason: `both reproduce ${where} within tolerance` };
  }

  /**
   * A party went silent during a dispute: silence is not guilt (an honest volunteer may have closed the tab). The
   * referee runs the whole unit once (H steps) and every party without a proven fault must have submitted a delta
   * within tau of it; a party with a proven fault loses as before.
   */
  private async judgeByWholeRun(
    parties: Record<PartyId, DisputeParty>,
    unit: UnitContext,
    whole: WholeRun,
    faults: PartyFault[],
    reveals: number,
  ): Promise<DisputeResolution> {
    const run = await whole();
    const proven = new Set(faults.filter((f) => !SILENCE.has(f.code)).map((f) => f.party));
    const losers: PartyId[] = [];
    const distances: Partial<Record<PartyId, number>> = {};
    const why: string[] = [];
    for (const id of ['a', 'b'] as const) {
      if (proven.has(id)) {
        losers.push(id);
        why.push(...faults.filter((f) => f.party === id).map((f) => f.reason));
        continue;
      }
      const d = deltaBindingDistance(run.state, unit.startWeights, parties[id].delta);
      distances[id] = d;
      if (!(d <= unit.tolerance)) {
        losers.push(id);
        why.push(`${parties[id].account}: its delta is ${d.toExponential(2)} from the referee's run of the whole unit`);
      }
    }
    const outcome: DisputeOutcome =
      losers.length === 2 ? 'both-lose' : losers.length === 0 ? 'no-fault' : losers[0] === 'a' ? 'b-wins' : 'a-wins';
    const silent = faults.filter((f) => SILENCE.has(f.code)).map((f) => parties[f.party].account);
    return {
      outcome,
      by: 'recompute',
      losers,
      reason:
        why.length > 0
          ? why.join('; ')
          : `${silent.join(', ')} went silent; every delta reproduces the referee's run of the whole unit`,
      faults,
      distances,
      refereeSteps: run.steps,
      reveals,
    };
  }

  /**
   * Settles an audited unit: original ('a') vs auditor ('b'). Returns a verdict per party; the caller applies
   * applyVerdict() to each account's trust and consequencesFor() to each loser.
   */
  async settleAudit(input: {
    a: DisputeParty & ComparableResult;
    b: DisputeParty & ComparableResult;
    unit: UnitContext;
    referee: Referee;
    /** True once the caller is shutting down: a silent party is then not judged (no whole-unit run). */
    stop?: () => boolean;
    /**
     * Re-execute a match in full: the referee runs the whole unit and judges both deltas against it, instead of one
     * spot-checked segment. A pair that copies one result (or fabricates one chain) matches itself; only the
     * coordinator's own run can tell (drawn for a random share of matches and for every match of a watched pair).
     */
    reexecute?: string | null;
    /**
     * Asked before the referee runs the whole unit because of a silent party (the accounts named): a reason to wait
     * (the coordinator's work budget for the job or the account is spent) or null. On a reason settleAudit throws
     * WorkDeferred and rules nothing: the caller retries later.
     */
    mayRunWhole?: WholeRunGate;
  }): Promise<AuditSettlement> {
    const { a, b, unit, referee, stop } = input;
    const whole = wholeRunOf(referee, unit);
    const cmp = this.compare(a, b, unit.tolerance);
    const settlement: AuditSettlement = {
      verdicts: { a: 'valid', b: 'valid' },
      compare: cmp,
      spotChecks: {},
      reasons: {},
      refereeSteps: 0,
      reveals: 0,
    };
    const parties = { a, b };
    const spot = async (id: PartyId): Promise<boolean> => {
      let r = await this.spotCheck(parties[id], unit, referee);
      if (!r.ok && r.fault && SILENCE.has(r.fault.code) && !stop?.()) {
        // Silent when asked for its states: judge its delta against the referee's whole run instead.
        if (!whole.started) gate(input.mayRunWhole, [parties[id].account]);
        const run = await whole();
        const distance = deltaBindingDistance(run.state, unit.startWeights, parties[id].delta);
        const ok = distance <= unit.tolerance;
        r = {
          ...r,
          ok,
          recomputed: { distance, steps: run.steps },
          refereeSteps: r.refereeSteps + run.steps,
          reason: ok
            ? `went silent (${r.fault?.code}); its delta reproduces the referee's run of the whole unit`
            : `went silent (${r.fault?.code}) and its delta is ${distance.toExponential(2)} from the referee's run of the whole unit`,
        };
      }
      settlement.spotChecks[id] = r;
      settlement.refereeSteps += r.refereeSteps;
      settlement.reveals += r.reveals;
      if (!r.ok) {
        settlement.verdicts[id] = 'invalid';
        settlement.reasons[id] = `spot check: ${r.reason}`;
      }
      return r.ok;
    };

    if (input.reexecute && (cmp.verdict === 'match' || input.reexecute === SETTLE_ERRORS)) {
      settlement.reexecuted = input.reexecute;
      const run = await whole();
      settlement.refereeSteps += run.steps;
      for (const id of ['a', 'b'] as const) {
        const distance = deltaBindingDistance(run.state, unit.startWeights, parties[id].delta);
        const ok = distance <= unit.tolerance;
        settlement.spotChecks[id] = {
          ok,
          distance,
          recomputed: { distance, steps: run.steps },
          reason: ok
            ? `${parties[id].account}: re-executed in full; the delta reproduces the referee's run of the whole unit`
            : `${parties[id].account}: re-executed in full; the delta is ${distance.toExponential(2)} from the referee's run of the whole unit`,
          refereeSteps: id === 'a' ? run.steps : 0,
          reveals: 0,
        };
        if (!ok) {
          settlement.verdicts[id] = 'invalid';
          settlement.reasons[id] = `re-execution: ${settlement.spotChecks[id]?.reason}`;
        }
      }
      return settlement;
    }
    if (cmp.verdict === 'match') {
      if (!this.spotCheckOnMatch) return settlement;
      // Results agree; a colluding pair agrees too, so check one party's work directly. If it fails, the other
      // party's matching result is not condemned by association: it gets its own spot check, or, when its bytes are
      // the very bytes just proven wrong, the judgement of those bytes (twins).
      const first: PartyId = this.rng() < 0.5 ? 'a' : 'b';
      const other: PartyId = first === 'a' ? 'b' : 'a';
      if (await spot(first)) return settlement;
      if (cmp.how === 'identical') await this.judgeTwin(parties[other], other, unit, whole, settlement);
      else await spot(other);
      return settlement;
    }

    const d = await this.resolveDispute(parties, unit, referee, { whole, stop, mayRunWhole: input.mayRunWhole });
    settlement.dispute = d;
    settlement.refereeSteps += d.refereeSteps;
    settlement.reveals += d.reveals;
    for (const id of d.losers) {
      settlement.verdicts[id] = 'invalid';
      settlement.reasons[id] = `dispute: ${d.reason}`;
    }
    // Winning against a cheater confirms the disputed segment only: the winner's result needs one more independent
    // match before it is accepted. After a whole-unit run the winner's delta is verified outright (stays valid).
    if (d.losers.length === 1 && d.by !== 'recompute') {
      const winner: PartyId = d.losers[0] === 'a' ? 'b' : 'a';
      settlement.verdicts[winner] = 'reaudit';
      settlement.reasons[winner] = 'won a dispute; needs one more independent match';
    }
    return settlement;
  }

  /**
   * Identical bytes share one verdict on the bytes. A fresh random segment of the twin would pass with probability
   * 1 - 1/n even when the bytes are poisoned (a pair can poison different segments of two trajectories that end in
   * the same delta), so the bytes themselves are judged: the referee's whole run of the unit (computed once per
   * settlement). Bytes off that run convict the twin too; bytes on it clear the twin, whose partner stays convicted
   * for the false states it revealed.
   */
  private async judgeTwin(
    party: DisputeParty,
    id: PartyId,
    unit: UnitContext,
    whole: WholeRun,
    settlement: AuditSettlement,
  ): Promise<void> {
    const fresh = !whole.started;
    const run = await whole();
    const distance = deltaBindingDistance(run.state, unit.startWeights, party.delta);
    const ok = distance <= unit.tolerance;
    const steps = fresh ? run.steps : 0;
    settlement.spotChecks[id] = {
      ok,
      recomputed: { distance, steps: run.steps },
      distance,
      reason: ok
        ? `${party.account}: the same bytes as a result that failed its spot check, and they reproduce the referee's run of the whole unit`
        : `${party.account}: the same bytes as a result that failed its spot check, ${distance.toExponential(2)} from the referee's run of the whole unit`,
      refereeSteps: steps,
      reveals: 0,
    };
    settlement.refereeSteps += steps;
    if (!ok) {
      settlement.verdicts[id] = 'invalid';
      settlement.reasons[id] = `identical to a result proven wrong: ${settlement.spotChecks[id]?.reason}`;
    }
  }

  /** Trust after a verdict ('reaudit' leaves it unchanged until the re-audit settles). */
  applyVerdict(trust: TrustState, verdict: Verdict): TrustState {
    if (verdict === 'reaudit') return trust;
    return verdict === 'valid' ? recordValid(trust) : recordFailure(trust);
  }

  /**
   * What happens to a loser: trust reset, a forfeit record for the credits layer, and its other results sorted into
   * those to drop and reissue (not yet aggregated) and those already aggregated (credits forfeited, model kept).
   */
  consequencesFor(
    loser: { account: string; unitId: string; trust: TrustState },
    reason: string,
    openResults: OpenResult[],
  ): Consequences {
    const others = openResults.filter((r) => r.unitId !== loser.unitId);
    return {
      trust: recordFailure(loser.trust),
      forfeit: { account: loser.account, unitId: loser.unitId, reason, at: this.now() },
      reissue: others.filter((r) => !r.aggregated),
      alreadyAggregated: others.filter((r) => r.aggregated),
    };
  }
}

/** The referee's run of the whole unit from its start weights, computed on first use and then remembered. */
function wholeRunOf(referee: Referee, unit: UnitContext): WholeRun {
  let run: Promise<SegmentResult> | null = null;
  const get = () => {
    run ??= referee.recomputeSegment({ fromStep: 0, toStep: unit.steps, fromState: null });
    return run;
  };
  return Object.defineProperty(get, 'started', { get: () => run !== null }) as WholeRun;
}
