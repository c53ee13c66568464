/** Accounts: SIWE sign-in sessions, API keys, worker challenges, faucet permission. */
export * from './accounts.js';
export { accountsMigrations } from './migrations.js';
export { API_KEY_PREFIX, SESSION_PREFIX } from './secrets.js';
