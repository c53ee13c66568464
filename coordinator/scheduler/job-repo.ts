import { randomUUID } from 'node:crypto';
import type { JobSpec, JobView, RoundMetric } from '../../shared/protocol/job-spec.js';
import { effectiveCheckpointEvery } from '../../shared/train/train-unit.js';
import type { Queryable } from '../store/db.js';

/** A job row as stored. `round` counts completed rounds and is the index of the round in progress. */
export interface JobRow {
  id: string;
  owner: string | null;
  name: string;
  spec: JobSpec;
  status: JobView['status'];
  round: number;
  rounds: number;
  model_hash: string;
  dataset_id: string;
  weights_hash: string;
  momentum_hash: string | null;
  agg_claimed_at: number | null;
  error: string | null;
  created_at: Date | string;
  updated_at: Date | string;
}

export function newJobId(): string {
  return `job_${randomUUID().replaceAll('-', '').slice(0, 20)}`;
}

/** k for a job (H/8 unless set): a unit commits ceil(H / k) checkpoint hashes. */
export function checkpointEvery(spec: JobSpec): number {
  return effectiveCheckpointEvery(spec.localSteps, spec.verification.checkpointEvery);
}

export async function getJobRow(q: Queryable, id: string): Promise<JobRow | null> {
  const { rows } = await q.query<JobRow>('SELECT * FROM jobs WHERE id = $1', [id]);
  return rows[0] ?? null;
}

export async function jobView(q: Queryable, job: JobRow, includeSpec = false): Promise<JobView> {
  const [metrics, counts, workers] = await Promise.all([
    q.query<{
      round: number;
      loss: number;
      accuracy: number;
      examples: number | string;
      units: number;
      at: Date | string;
    }>('SELECT round, loss, accuracy, examples, units, at FROM round_metrics WHERE job_id = $1 ORDER BY round', [
      job.id,
    ]),
    q.query<{ done: number; current: number }>(
      `SELECT count(*) AS done, count(*) FILTER (WHERE round = $2) AS current
       FROM results WHERE job_id = $1 AND status = 'accepted'`,
      [job.id, job.round],
    ),
    q.query<{ n: number }>(
      `SELECT count(DISTINCT worker_id) AS n FROM leases WHERE job_id = $1 AND status = 'active' AND attached`,
      [job.id],
    ),
  ]);
  const perRound = job.spec.unitsPerRound;
  const current = job.status === 'running' || job.status === 'queued' ? Number(counts.rows[0]?.current ?? 0) : 0;
  const progress = job.status === 'completed' ? 1 : Math.min(1, (job.round + current / perRound) / job.rounds);
  const view: JobView = {
    id: job.id,
    name: job.name,
    status: job.status,
    round: job.round,
    rounds: job.rounds,
    progress,
    unitsDone: Number(counts.rows[0]?.done ?? 0),
    activeWorkers: Number(workers.rows[0]?.n ?? 0),
    metrics: metrics.rows.map(
      (m): RoundMetric => ({
        round: m.round,
        loss: m.loss,
        accuracy: m.accuracy,
        examples: Number(m.examples),
        units: m.units,
        at: new Date(m.at).toISOString(),
      }),
    ),
    dataset: job.dataset_id,
    createdAt: new Date(job.created_at).toISOString(),
    updatedAt: new Date(job.updated_at).toISOString(),
  };
  if (job.error) view.error = job.error;
  if (includeSpec) view.spec = job.spec;
  return view;
}
