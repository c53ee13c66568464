import { createClient } from '../../shared/protocol/api-client.js';

/** A worker account's credit as the coordinator reports it (GET /api/v1/accounts/:address), in whole credits. */
export const MICRO_PER_CREDIT = 1_000_000;

export interface CreditBalance {
  pending: number;
  vested: number;
}

export interface CreditReceipt {
  leaseId: string | null;
  state: string;
  amount: number;
  eventKey: string;
}

export async function fetchBalance(origin: string, address: string): Promise<CreditBalance> {
  const { balances } = await createClient({ baseUrl: origin }).account(address, 1);
  return { pending: balances.pending / MICRO_PER_CREDIT, vested: balances.vested / MICRO_PER_CREDIT };
}

/** The account's per-unit credit rows (newest first), each with the ledger event that posted it. */
export async function fetchCreditReceipts(origin: string, address: string): Promise<CreditReceipt[]> {
  const body = await createClient({ baseUrl: origin }).credits(address);
  return body.items.map((r) => ({
    leaseId: r.leaseId,
    state: r.state,
    amount: r.amount / MICRO_PER_CREDIT,
    eventKey: r.eventKey,
  }));
}

export function ledgerEventUrl(origin: string, eventKey: string): string {
  return `${origin}/api/v1/ledger/events/${encodeURIComponent(eventKey)}`;
}
