/** Credits: the glue between scheduler events and the ledger (pricing, crediting, vesting, refunds, forfeits). */
export { CreditSweeper, type SweepReport } from './credit-sweeper.js';
export {
  type CreditRecord,
  Credits,
  type CreditsOptions,
  creditEventKey,
  type JobBilling,
} from './credits.js';
export { creditsMigrations } from './migrations.js';
export { toCredits, toMicro } from './money.js';
export { loadCoordinatorKey } from './signing-key.js';
export { readTrust, setTrustReader, type TrustReader } from './trust.js';
export type { CreditPort, ForfeitRequest } from './types.js';
