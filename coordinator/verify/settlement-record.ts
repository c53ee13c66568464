import type { PartyId } from '../../shared/verify/bisect.js';
import type { AuditSettlement } from './engine.js';
import { RevealShutdown } from './reveal-hub.js';
import type { ResultRow } from './verdicts.js';

/** How a settlement is recorded and read: outcome line, JSON detail for verification_events, shutdown detection. */
export function checkpointsOf(r: ResultRow): string[] {
  return typeof r.checkpoints === 'string' ? (JSON.parse(r.checkpoints) as string[]) : r.checkpoints;
}

/** A reveal failed because this coordinator is shutting down: not a party's fault, so no ruling. */
export function shutdownFault(s: AuditSettlement): boolean {
  const faults = [
    ...(s.dispute?.faults ?? []),
    ...Object.values(s.spotChecks).flatMap((c) => (c?.fault ? [c.fault] : [])),
  ];
  return faults.some((f) => f.reason.includes(new RevealShutdown().message));
}

export function settlementOutcome(s: AuditSettlement): string {
  const v = `${s.verdicts.a}/${s.verdicts.b}`;
  if (!s.dispute) return `${s.compare.verdict} (${v})`;
  return `dispute ${s.dispute.outcome} by ${s.dispute.by} (${v})`;
}

/** A JSON-safe account of a settlement (no weights), for verification_events.detail. */
export function describeSettlement(s: AuditSettlement, parties: Record<PartyId, ResultRow>): object {
  const who = (id: PartyId) => ({
    account: parties[id].account,
    resultId: parties[id].id,
    backend: parties[id].backend,
    verdict: s.verdicts[id],
    reason: s.reasons[id] ?? null,
  });
  return {
    parties: { a: who('a'), b: who('b') },
    compare: s.compare,
    spotChecks: Object.fromEntries(
      Object.entries(s.spotChecks).map(([id, c]) => [
        id,
        c && {
          ok: c.ok,
          segment: c.segment ?? null,
          distance: c.distance ?? null,
          reason: c.reason,
          refereeSteps: c.refereeSteps,
          reveals: c.reveals,
          fault: c.fault ?? null,
          recomputed: c.recomputed ?? null,
        },
      ]),
    ),
    dispute: s.dispute
      ? {
          outcome: s.dispute.outcome,
          by: s.dispute.by,
          losers: s.dispute.losers.map((id) => parties[id].account),
          reason: s.dispute.reason,
          segment: s.dispute.segment ?? null,
          faults: s.dispute.faults,
          distances: s.dispute.distances ?? null,
          refereeSteps: s.dispute.refereeSteps,
          reveals: s.dispute.reveals,
        }
      : null,
    reexecuted: s.reexecuted ?? null,
    refereeSteps: s.refereeSteps,
    reveals: s.reveals,
  };
}
