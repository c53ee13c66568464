import type { Migration } from '../store/migrate.js';

/**
 * Sign-in state: single-use nonces (SIWE sign-in and worker challenges), sessions and API keys. Secrets are never
 * stored: sessions and keys are kept as sha256 hex of the token. Times are unix milliseconds.
 */
export const accountsMigrations: Migration[] = [
  {
    id: '0200_accounts',
    sql: `
CREATE TABLE auth_nonces (
  nonce text PRIMARY KEY,
  purpose text NOT NULL CHECK (purpose IN ('siwe', 'worker')),
  created_at bigint NOT NULL,
  expires_at bigint NOT NULL,
  used_at bigint,
  used_by text
);
CREATE INDEX auth_nonces_expires ON auth_nonces (expires_at);

CREATE TABLE auth_sessions (
  token_hash text PRIMARY KEY,
  address text NOT NULL,
  created_at bigint NOT NULL,
  expires_at bigint NOT NULL,
  revoked_at bigint
);
CREATE INDEX auth_sessions_address ON auth_sessions (address);
CREATE INDEX auth_sessions_expires ON auth_sessions (expires_at);

CREATE TABLE api_keys (
  id text PRIMARY KEY,
  address text NOT NULL,
  label text NOT NULL,
  key_hash text NOT NULL UNIQUE,
  hint text NOT NULL,
  created_at bigint NOT NULL,
  last_used_at bigint,
  revoked_at bigint
);
CREATE INDEX api_keys_address ON api_keys (address)
`,
  },
  {
    // Account links (POST /api/v1/accounts/link) carry a nonce of their own purpose.
    id: '0210_link_nonces',
    sql: `
ALTER TABLE auth_nonces DROP CONSTRAINT auth_nonces_purpose_check;
ALTER TABLE auth_nonces ADD CONSTRAINT auth_nonces_purpose_check CHECK (purpose IN ('siwe', 'worker', 'link'))
`,
  },
];
