import type { Migration } from '../store/migrate.js';

/**
 * Verification state in the store (docs/VERIFICATION.md, "Integration").
 *
 * - units.audit_of: the result that waits for an independent copy of its unit (the unit is leasable again, but only
 *   to other accounts and addresses); audit_since: when it started waiting (self-audit fallback).
 *   units.status 'verifying': both copies are in and the coordinator settles them; settle_claimed_at is the claim
 *   of the replica doing it (retaken when stale, e.g. after a restart).
 * - results.status gains 'pending' (passed cheap checks, waits for its audit or settlement) and 'confirmed' (a valid
 *   independent copy of a unit whose aggregated result is another one); results.role says which lease it answered
 *   ('primary' or 'audit'), results.address the network address it came from, final_at when it became final and
 *   valid (guards against crediting a result twice).
 * - account_trust: adaptive trust per account (shared/verify/trust.ts).
 * - verification_events: what verification decided and why (audits, disputes, cheap-check failures, reissues) and
 *   the forfeit records for the credits layer (id = the forfeit's idempotency key).
 * - verification_costs: the compute verification spent per unit, to report its overhead: primary_steps (H once the
 *   unit has its accepted result), worker_steps (H per result that passed cheap checks: the accepted one, audit copies
 *   and re-audits), self_audit_steps, referee_steps, cheap_examples (forward passes of the cheap checks), reveals.
 */
export const verifyMigrations: Migration[] = [
  {
    id: '0400_verify_core',
    sql: `
ALTER TABLE units ADD COLUMN audit_of text;
ALTER TABLE units ADD COLUMN audit_since bigint;
ALTER TABLE units ADD COLUMN settle_claimed_at bigint;
CREATE INDEX units_verifying ON units (job_id, round) WHERE status = 'verifying';
CREATE INDEX units_awaiting_audit ON units (audit_since) WHERE audit_of IS NOT NULL;

ALTER TABLE results ADD COLUMN address text;
ALTER TABLE results ADD COLUMN role text NOT NULL DEFAULT 'primary';
ALTER TABLE results ADD COLUMN final_at bigint;
CREATE INDEX results_account_open ON results (account) WHERE status IN ('accepted', 'pending', 'confirmed');

CREATE TABLE account_trust (
  account text PRIMARY KEY,
  consecutive_valid integer NOT NULL DEFAULT 0,
  total_valid integer NOT NULL DEFAULT 0,
  failures integer NOT NULL DEFAULT 0,
  last_failure_at bigint,
  updated_at bigint NOT NULL
);

CREATE TABLE verification_events (
  id text PRIMARY KEY,
  kind text NOT NULL,
  job_id text,
  round integer,
  idx integer,
  account text,
  result_id text,
  outcome text,
  reason text,
  detail jsonb,
  at bigint NOT NULL,
  delivered_at bigint
);
CREATE INDEX verification_events_unit ON verification_events (job_id, round, idx);
CREATE INDEX verification_events_account ON verification_events (account, at);
CREATE INDEX verification_events_undelivered ON verification_events (at) WHERE kind = 'forfeit' AND delivered_at IS NULL;

CREATE TABLE verification_costs (
  job_id text NOT NULL,
  round integer NOT NULL,
  idx integer NOT NULL,
  primary_steps bigint NOT NULL DEFAULT 0,
  worker_steps bigint NOT NULL DEFAULT 0,
  self_audit_steps bigint NOT NULL DEFAULT 0,
  referee_steps bigint NOT NULL DEFAULT 0,
  cheap_examples bigint NOT NULL DEFAULT 0,
  batch_size integer NOT NULL DEFAULT 1,
  reveals integer NOT NULL DEFAULT 0,
  audits integer NOT NULL DEFAULT 0,
  disputes integer NOT NULL DEFAULT 0,
  settle_ms double precision NOT NULL DEFAULT 0,
  PRIMARY KEY (job_id, round, idx)
)`,
  },
  {
    // Replicas on one PostgreSQL: a state revealed to replica B for a request of replica A waits here until A takes
    // it (verify/reveal-relay.ts; NOTIFY payloads are far too small for a state).
    id: '0401_reveal_relay',
    sql: `
CREATE TABLE reveal_answers (
  request_id text PRIMARY KEY,
  bytes bytea NOT NULL,
  created_at bigint NOT NULL
)`,
  },
];
