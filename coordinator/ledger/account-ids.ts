/**
 * Ledger account kinds and their ids. An id names its owner and kind so a posting reads on its own:
 * `requester:0xAb…:available`, `job:<jobId>:escrow`, `worker:0xAb…:pending`, `worker:0xAb…:vested`, `treasury:fees`,
 * and `issuance:faucet`, the one account allowed below zero (every deposit is minted from it, so all sums stay 0).
 */
export type AccountKind = 'available' | 'escrow' | 'pending' | 'vested' | 'treasury' | 'issuance';

export interface AccountRef {
  id: string;
  kind: AccountKind;
  /** A checksummed address, or 'treasury' / 'issuance' for the system accounts. */
  owner: string;
}

export const requesterAvailable = (address: string): AccountRef => ({
  id: `requester:${address}:available`,
  kind: 'available',
  owner: address,
});

/** A job's escrow belongs to its requester: it shows in the requester's balances and history. */
export const jobEscrow = (jobId: string, requester: string): AccountRef => ({
  id: `job:${jobId}:escrow`,
  kind: 'escrow',
  owner: requester,
});

export const workerPending = (address: string): AccountRef => ({
  id: `worker:${address}:pending`,
  kind: 'pending',
  owner: address,
});

export const workerVested = (address: string): AccountRef => ({
  id: `worker:${address}:vested`,
  kind: 'vested',
  owner: address,
});

export const TREASURY: AccountRef = { id: 'treasury:fees', kind: 'treasury', owner: 'treasury' };
export const ISSUANCE: AccountRef = { id: 'issuance:faucet', kind: 'issuance', owner: 'issuance' };

export const escrowId = (jobId: string): string => `job:${jobId}:escrow`;
