import type { Migration } from '../store/migrate.js';

/**
 * Ledger tables. Times are unix milliseconds (bigint) so both stores return plain numbers; amounts are integer
 * micro-credits (bigint). No foreign keys to the core tables: job and result ids are plain text references.
 */
export const ledgerMigrations: Migration[] = [
  {
    id: '0100_ledger',
    sql: `
CREATE TABLE ledger_accounts (
  id text PRIMARY KEY,
  kind text NOT NULL CHECK (kind IN ('available', 'escrow', 'pending', 'vested', 'treasury', 'issuance')),
  owner text NOT NULL,
  balance bigint NOT NULL DEFAULT 0,
  -- Carries an upsert's amount past the CHECK, which PostgreSQL applies to the proposed row before ON CONFLICT.
  delta bigint NOT NULL DEFAULT 0,
  CONSTRAINT ledger_balance_non_negative CHECK (kind = 'issuance' OR balance >= 0)
);
CREATE INDEX ledger_accounts_owner ON ledger_accounts (owner);

CREATE TABLE ledger_events (
  event_key text PRIMARY KEY,
  kind text NOT NULL,
  fingerprint text NOT NULL,
  job_id text,
  result_id text,
  memo text,
  created_at bigint NOT NULL
);
CREATE INDEX ledger_events_job ON ledger_events (job_id) WHERE job_id IS NOT NULL;

CREATE TABLE ledger_entries (
  id bigserial PRIMARY KEY,
  event_key text NOT NULL REFERENCES ledger_events (event_key),
  account_id text NOT NULL REFERENCES ledger_accounts (id),
  owner text NOT NULL,
  amount bigint NOT NULL CHECK (amount <> 0),
  created_at bigint NOT NULL
);
CREATE INDEX ledger_entries_event ON ledger_entries (event_key);
CREATE INDEX ledger_entries_account ON ledger_entries (account_id, id);
CREATE INDEX ledger_entries_owner ON ledger_entries (owner, id);

CREATE TABLE ledger_jobs (
  job_id text PRIMARY KEY,
  requester text NOT NULL,
  status text NOT NULL CHECK (status IN ('open', 'closed')),
  created_at bigint NOT NULL,
  closed_at bigint
);

CREATE TABLE ledger_credits (
  result_id text PRIMARY KEY,
  job_id text NOT NULL,
  worker text NOT NULL,
  amount bigint NOT NULL CHECK (amount >= 0),
  vest_at bigint NOT NULL,
  status text NOT NULL CHECK (status IN ('pending', 'vested', 'forfeited')),
  credited_at bigint NOT NULL,
  settled_at bigint,
  settle_event text
);
CREATE INDEX ledger_credits_due ON ledger_credits (vest_at) WHERE status = 'pending';
CREATE INDEX ledger_credits_worker_pending ON ledger_credits (worker, job_id) WHERE status = 'pending';
CREATE INDEX ledger_credits_job ON ledger_credits (job_id);

CREATE TABLE ledger_statements (
  account text NOT NULL,
  statement_id bigint NOT NULL,
  vested bigint NOT NULL,
  issued_at bigint NOT NULL,
  chain_id bigint NOT NULL,
  digest text NOT NULL,
  signature text NOT NULL,
  signer text NOT NULL,
  PRIMARY KEY (account, statement_id)
)
`,
  },
  {
    // Account links (docs/LEDGER.md): a credit's `payee` is the account whose pending / vested balances hold it,
    // `worker` stays the account that did the work (forfeits and trust follow the worker).
    id: '0110_ledger_links',
    sql: `
ALTER TABLE ledger_credits ADD COLUMN payee text;
UPDATE ledger_credits SET payee = worker;
ALTER TABLE ledger_credits ALTER COLUMN payee SET NOT NULL;
CREATE INDEX ledger_credits_payee_pending ON ledger_credits (payee) WHERE status = 'pending';

CREATE TABLE ledger_links (
  local text PRIMARY KEY,
  wallet text NOT NULL,
  event_key text NOT NULL REFERENCES ledger_events (event_key),
  pending_moved bigint NOT NULL,
  vested_moved bigint NOT NULL,
  vested_kept bigint NOT NULL,
  message text,
  local_signature text,
  wallet_signature text,
  created_at bigint NOT NULL,
  CHECK (local <> wallet)
);
CREATE INDEX ledger_links_wallet ON ledger_links (wallet)
`,
  },
];
