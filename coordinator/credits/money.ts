import { MICRO_PER_CREDIT } from '../ledger/price.js';

/**
 * Amounts cross the API in credits (what people read and type) and live in the ledger as integer micro-credits
 * (1 credit = 1,000,000), so no float ever reaches a balance.
 */
export function toMicro(credits: number): number {
  const micro = Math.round(credits * MICRO_PER_CREDIT);
  if (!Number.isSafeInteger(micro) || micro < 0) throw new RangeError(`not a valid amount of credits: ${credits}`);
  return micro;
}

export function toCredits(micro: number): number {
  return micro / MICRO_PER_CREDIT;
}
