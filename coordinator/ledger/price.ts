import { InvalidArgument } from './errors.js';

export const MICRO_PER_CREDIT = 1_000_000;
const FLOP_PER_TFLOP = 1_000_000_000_000n;

/**
 * Price of a work unit in integer micro-credits: FLOP estimate x price per TFLOP, rounded half up. Exact integer
 * arithmetic (BigInt) so large FLOP counts do not lose cents to float rounding.
 *
 * @param flops estimated floating-point operations of the unit (rounded to an integer first)
 * @param pricePerTflop micro-credits per 10^12 FLOP (non-negative integer)
 */
export function unitPrice(flops: number, pricePerTflop: number): number {
  if (!Number.isFinite(flops) || flops < 0) throw new InvalidArgument('flops', 'must be a finite number >= 0');
  if (!Number.isSafeInteger(pricePerTflop) || pricePerTflop < 0) {
    throw new InvalidArgument('pricePerTflop', 'must be a non-negative integer of micro-credits');
  }
  const product = BigInt(Math.round(flops)) * BigInt(pricePerTflop);
  const price = (product + FLOP_PER_TFLOP / 2n) / FLOP_PER_TFLOP;
  if (price > BigInt(Number.MAX_SAFE_INTEGER))
    throw new InvalidArgument('flops', 'unit price exceeds 2^53 micro-credits');
  return Number(price);
}
