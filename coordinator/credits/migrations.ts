import type { Migration } from '../store/migrate.js';

/**
 * The glue between the scheduler and the ledger. Times are unix ms, amounts integer micro-credits.
 *
 * - credit_jobs: what a job pays with: its budget, the FLOP estimate of one unit and the marketplace filters.
 * - credit_intents: one row per accepted result, written in the transaction that accepts it (an outbox): the price is
 *   fixed at acceptance, and the credit sweeper turns open rows into ledger credits, exactly once, after commit.
 * - credit_unverified_workers: connections admitted without a signed challenge (requireWorkerAuth off); their results
 *   are never credited.
 */
export const creditsMigrations: Migration[] = [
  {
    id: '0300_market_credits',
    sql: `
CREATE TABLE credit_jobs (
  job_id text PRIMARY KEY,
  requester text NOT NULL,
  budget bigint NOT NULL,
  unit_flops bigint NOT NULL,
  max_price bigint,
  min_reliability double precision,
  created_at bigint NOT NULL
);

CREATE TABLE credit_intents (
  result_id text PRIMARY KEY,
  job_id text NOT NULL,
  worker text NOT NULL,
  price_per_tflop bigint NOT NULL,
  flops bigint NOT NULL,
  price bigint NOT NULL,
  accepted_at bigint NOT NULL,
  vest_at bigint NOT NULL,
  state text NOT NULL CHECK (state IN ('open', 'credited', 'rejected', 'skipped')),
  reason text,
  settled_at bigint
);
CREATE INDEX credit_intents_open ON credit_intents (accepted_at) WHERE state = 'open';
CREATE INDEX credit_intents_job ON credit_intents (job_id, state);
CREATE INDEX credit_intents_worker ON credit_intents (worker, state);

CREATE TABLE credit_unverified_workers (
  worker_id text PRIMARY KEY,
  account text NOT NULL,
  at bigint NOT NULL
)
`,
  },
  {
    // hello.payTo: the account a connection's credit is paid to when it is not the signer (the widget). Only routes
    // credit; the connection's account (trust, forfeits, reveals) stays the key that signed.
    id: '0320_credit_payees',
    sql: `
CREATE TABLE credit_worker_payees (
  worker_id text PRIMARY KEY,
  pay_to text NOT NULL,
  at bigint NOT NULL
);
ALTER TABLE credit_intents ADD COLUMN payee text;
CREATE INDEX credit_intents_payee ON credit_intents (payee) WHERE payee IS NOT NULL
`,
  },
];
