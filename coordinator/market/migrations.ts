import type { Migration } from '../store/migrate.js';

/**
 * Marketplace offers: what a provider asks per TFLOP and what it says it brings. One active offer per provider
 * account (a new one replaces it); withdrawn offers stay for the record. Prices are integer micro-credits per TFLOP.
 * The index on leases (account, created_at) serves the per-account reliability query on every lease request.
 */
export const marketMigrations: Migration[] = [
  {
    id: '0300_market_offers',
    sql: `
CREATE TABLE market_offers (
  id text PRIMARY KEY,
  provider text NOT NULL,
  min_price_per_tflop bigint NOT NULL CHECK (min_price_per_tflop >= 0),
  device_class text NOT NULL,
  benchmark_examples_per_second double precision NOT NULL,
  benchmark_backend text,
  hours_available double precision NOT NULL,
  created_at bigint NOT NULL,
  withdrawn_at bigint
);
CREATE UNIQUE INDEX market_offers_one_active ON market_offers (provider) WHERE withdrawn_at IS NULL;

CREATE INDEX market_leases_account ON leases (account, created_at)
`,
  },
];
