import type { Migration } from './migrate.js';

/** Core tables: datasets, jobs, the units of each round, leases, results, round metrics, connected workers, blobs. */
export const coreMigrations: Migration[] = [
  {
    id: '0001_core',
    sql: `
CREATE TABLE datasets (
  id text PRIMARY KEY,
  name text NOT NULL,
  examples integer NOT NULL,
  train_examples integer NOT NULL,
  feature_shape jsonb NOT NULL,
  num_classes integer NOT NULL,
  bytes bigint NOT NULL,
  builtin boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX datasets_builtin_name ON datasets (name) WHERE builtin;

CREATE TABLE jobs (
  id text PRIMARY KEY,
  owner text,
  name text NOT NULL,
  spec jsonb NOT NULL,
  status text NOT NULL,
  round integer NOT NULL DEFAULT 0,
  rounds integer NOT NULL,
  model_hash text NOT NULL,
  dataset_id text NOT NULL REFERENCES datasets (id),
  weights_hash text NOT NULL,
  momentum_hash text,
  agg_claimed_at bigint,
  error text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobs_active ON jobs (created_at) WHERE status IN ('queued', 'running');

CREATE TABLE units (
  job_id text NOT NULL REFERENCES jobs (id),
  round integer NOT NULL,
  idx integer NOT NULL,
  status text NOT NULL DEFAULT 'pending',
  data_seed bigint NOT NULL,
  attempts integer NOT NULL DEFAULT 0,
  result_id text,
  PRIMARY KEY (job_id, round, idx)
);
CREATE INDEX units_pending ON units (job_id, round) WHERE status = 'pending';

CREATE TABLE leases (
  id text PRIMARY KEY,
  token text NOT NULL,
  job_id text NOT NULL,
  round integer NOT NULL,
  idx integer NOT NULL,
  worker_id text,
  account text NOT NULL,
  status text NOT NULL,
  attached boolean NOT NULL DEFAULT true,
  deadline bigint NOT NULL,
  progress_step integer NOT NULL DEFAULT 0,
  created_at bigint NOT NULL,
  ended_at bigint,
  end_reason text
);
CREATE INDEX leases_active ON leases (deadline) WHERE status = 'active';
CREATE INDEX leases_unit ON leases (job_id, round, idx);
CREATE INDEX leases_worker ON leases (worker_id) WHERE status = 'active';

CREATE TABLE results (
  id text PRIMARY KEY,
  lease_id text NOT NULL UNIQUE,
  job_id text NOT NULL,
  round integer NOT NULL,
  idx integer NOT NULL,
  account text NOT NULL,
  status text NOT NULL,
  reason text,
  delta_hash text,
  final_hash text,
  checkpoints jsonb,
  losses jsonb,
  examples integer NOT NULL DEFAULT 0,
  flops double precision NOT NULL DEFAULT 0,
  backend text,
  created_at bigint NOT NULL
);
CREATE UNIQUE INDEX results_one_accepted_per_unit ON results (job_id, round, idx) WHERE status = 'accepted';
CREATE INDEX results_job ON results (job_id, round);

CREATE TABLE round_metrics (
  job_id text NOT NULL,
  round integer NOT NULL,
  loss double precision NOT NULL,
  accuracy double precision NOT NULL,
  examples integer NOT NULL,
  units integer NOT NULL,
  at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (job_id, round)
);

CREATE TABLE workers (
  id text PRIMARY KEY,
  account text NOT NULL,
  backend text NOT NULL,
  adapter text,
  replica text NOT NULL,
  connected_at bigint NOT NULL,
  last_seen bigint NOT NULL,
  disconnected_at bigint
)`,
  },
  {
    // Content-addressed blobs for replicas on one PostgreSQL (store/blobs.ts DbBlobStore). Created on PGlite too,
    // so both stores keep one schema, but left empty there: PGlite keeps blobs as files.
    id: '0010_blobs',
    sql: `
CREATE TABLE blobs (
  hash text PRIMARY KEY,
  bytes bytea NOT NULL,
  size integer NOT NULL,
  created_at bigint NOT NULL
)`,
  },
  {
    // Who uploaded which dataset, and when: ownership (only uploaders see and use a dataset) and the daily quota.
    id: '0020_dataset_uploads',
    sql: `
CREATE TABLE dataset_uploads (
  owner text NOT NULL,
  dataset_id text NOT NULL,
  bytes bigint NOT NULL,
  at bigint NOT NULL
);
CREATE INDEX dataset_uploads_owner ON dataset_uploads (owner, at);
CREATE INDEX dataset_uploads_dataset ON dataset_uploads (dataset_id, owner)`,
  },
  {
    // Lease terms fixed by the coordinator when it issues a lease (docs/PROTOCOL.md, leases): the role the lease was
    // issued for ('primary' or 'audit' of the result in audit_of) and the price per TFLOP its result is credited at
    // (null: the job pays nothing). A result counts only in the role its live lease was issued for. Examples are
    // the coordinator's count (steps x batch per unit); a round of the largest allowed job exceeds 2^31. The index
    // serves the per-account lease bound (scheduler/lease-limits.ts).
    id: '0021_lease_terms',
    sql: `
ALTER TABLE leases ADD COLUMN role text NOT NULL DEFAULT 'primary';
ALTER TABLE leases ADD COLUMN audit_of text;
ALTER TABLE leases ADD COLUMN price_per_tflop bigint;
ALTER TABLE leases ADD COLUMN address text;
CREATE INDEX leases_account ON leases (account, status);
ALTER TABLE results ALTER COLUMN examples TYPE bigint;
ALTER TABLE round_metrics ALTER COLUMN examples TYPE bigint`,
  },
];
