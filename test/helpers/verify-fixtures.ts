import type { Coordinator } from '../../coordinator/app.js';
import type { LeaseMsg } from '../../shared/protocol/messages.js';
import { trainUnit } from '../../shared/train/train-unit.js';
import type { TrainUnitInput, TrainUnitOutput, WeightSet } from '../../shared/train/types.js';
import { hashWeights } from '../../shared/train/weights-format.js';
import { smallMnistJob } from './cluster.js';

/** Helpers of the verification integration tests (test/verify-integration-*.test.ts). */

/** A tiny job whose every unit is audited: 16 steps, a checkpoint every 2 (8 segments), momentum (slots in states). */
export function auditedJob(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return smallMnistJob({
    name: 'audited',
    optimizer: { type: 'momentum', learningRate: 0.05, momentum: 0.9 },
    batchSize: 16,
    localSteps: 16,
    unitsPerRound: 1,
    rounds: 1,
    targetAccuracy: undefined,
    verification: { minAuditProbability: 1, checkpointEvery: 2, tolerance: 0 },
    ...overrides,
  });
}

/**
 * A cheater that trains honestly up to `atStep` (a checkpoint boundary), pushes one output bias by eps x ||weights||
 * there, and trains on honestly from the poisoned state. Its commitments are self-consistent (every state it would
 * reveal hashes to what it committed) except that the state after `atStep` is not what training produces.
 */
export async function poisonedRun(
  inputs: Omit<TrainUnitInput, 'onStep' | 'shouldStop'>,
  atStep: number,
  eps: number,
): Promise<TrainUnitOutput & { checkpointStates: WeightSet[] }> {
  const head = await trainUnit({ ...inputs, toStep: atStep, keepCheckpointStates: true });
  const state = head.checkpointStates!.at(-1)!;
  const poisoned: WeightSet = { ...state, data: state.data.map((d) => d.slice()) };
  const bias = state.names.findIndex((n) => n.endsWith('bias') && state.data[state.names.indexOf(n)].length === 10);
  let norm = 0;
  for (let t = 0; t < inputs.startWeights.data.length; t++) for (const v of state.data[t]) norm += v * v;
  poisoned.data[bias][7] += eps * Math.sqrt(norm);
  const tail = await trainUnit({ ...inputs, fromStep: atStep, fromState: poisoned, keepCheckpointStates: true });
  const states = [...head.checkpointStates!.slice(0, -1), poisoned, ...tail.checkpointStates!];
  return {
    ...tail,
    losses: [...head.losses, ...tail.losses],
    checkpoints: states.map(hashWeights),
    checkpointStates: states,
    examples: head.examples + tail.examples,
  };
}

/** The shape of a lease message with its per-lease secrets left out: what an observer could compare. */
export function keyShape(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(keyShape);
  if (v && typeof v === 'object') {
    return Object.fromEntries(
      Object.keys(v)
        .sort()
        .map((k) => [k, keyShape((v as Record<string, unknown>)[k])]),
    );
  }
  return typeof v;
}

export function withoutSecrets(l: LeaseMsg): Omit<LeaseMsg, 'leaseId' | 'token' | 'deadline'> {
  const { leaseId: _l, token: _t, deadline: _d, ...rest } = l;
  return rest;
}

export interface EventRow {
  kind: string;
  account: string | null;
  result_id: string | null;
  outcome: string;
  reason: string | null;
  // biome-ignore lint/suspicious/noExplicitAny: JSON detail of a verification event, inspected field by field
  detail: any;
  round: number;
  idx: number;
}

export async function events(c: Coordinator, jobId: string, kind?: string): Promise<EventRow[]> {
  const { rows } = await c.db.query<EventRow>(
    `SELECT kind, account, result_id, outcome, reason, detail, round, idx FROM verification_events
     WHERE job_id = $1 AND ($2::text IS NULL OR kind = $2) ORDER BY at, id`,
    [jobId, kind ?? null],
  );
  return rows.map((r) => ({ ...r, detail: typeof r.detail === 'string' ? JSON.parse(r.detail) : r.detail }));
}

export async function resultsOf(
  c: Coordinator,
  jobId: string,
): Promise<
  {
    id: string;
    account: string;
    status: string;
    reason: string | null;
    role: string;
    round: number;
    idx: number;
    backend: string;
  }[]
> {
  const { rows } = await c.db.query<{
    id: string;
    account: string;
    status: string;
    reason: string | null;
    role: string;
    round: number;
    idx: number;
    backend: string;
  }>(
    'SELECT id, account, status, reason, role, round, idx, backend FROM results WHERE job_id = $1 ORDER BY created_at',
    [jobId],
  );
  return rows;
}
