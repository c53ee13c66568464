/** The double-entry ledger: accounts, postings, job escrow, unit credits, vesting, forfeits, payout statements. */
export * from './account-ids.js';
export { CreditBatcher, type CreditBatcherOptions } from './credit-batcher.js';
export * from './errors.js';
export type {
  AccountLinks,
  Balances,
  Credit,
  CreditRejectCode,
  CreditStatus,
  ForfeitInput,
  ForfeitResult,
  HistoryItem,
  IntegrityReport,
  LinkInput,
  LinkResult,
  PostingResult,
  RefundResult,
} from './ledger.js';
export {
  type CreditOutcome,
  type CreditUnitInput,
  checkCreditInput,
  Ledger,
  type LedgerOptions,
  linkEventKey,
} from './ledger.js';
export { ledgerMigrations } from './migrations.js';
export type { Posting } from './postings.js';
export { MICRO_PER_CREDIT, unitPrice } from './price.js';
export { issuePayoutStatement, listPayoutStatements, type PayoutSigner } from './statement.js';
