/** Identity primitives shared by the browser, headless workers and the coordinator. */
export * from './account-link.js';
export * from './address.js';
export * from './hex.js';
export * from './payout-statement.js';
export * from './personal-sign.js';
export * from './signature.js';
export * from './siwe.js';
export * from './typed-data.js';
export * from './worker-auth.js';
