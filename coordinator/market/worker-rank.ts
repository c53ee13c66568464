import type { WorkerIdentity } from '../scheduler/hooks.js';
import type { Queryable } from '../store/db.js';
import { measuredByAccount } from './market-view.js';
import { reliabilityOfMany } from './reliability.js';

export interface WorkerRankOptions {
  /** Micro-credits per TFLOP for workers without an offer. */
  defaultPricePerTflop: number;
  reliabilityMinLeases: number;
}

/** What a worker is ranked by: its account's price, reliability and measured throughput. */
export interface RankKey {
  /** Micro-credits per TFLOP: the active offer's minimum, or the default donation price. */
  price: number;
  /** 0..1; unknown counts as 1 (reliability.ts), so newcomers are not starved. */
  reliability: number;
  /** Examples per second of accepted units (last 7 days); null before any. */
  measured: number | null;
}

/**
 * "Cheapest reliable first": lower price first, then higher reliability, then higher measured throughput (measured
 * before unmeasured). Equal keys keep the caller's order (connection order), as Array.prototype.sort is stable.
 */
export function compareRank(a: RankKey, b: RankKey): number {
  if (a.price !== b.price) return a.price - b.price;
  if (a.reliability !== b.reliability) return b.reliability - a.reliability;
  return (b.measured ?? -1) - (a.measured ?? -1);
}

export async function rankKeys(
  q: Queryable,
  accounts: string[],
  opts: WorkerRankOptions,
): Promise<Map<string, RankKey>> {
  const unique = [...new Set(accounts)];
  const [prices, reliability, measured] = await Promise.all([
    q.query<{ provider: string; p: number }>(
      `SELECT provider, min_price_per_tflop AS p FROM market_offers
       WHERE withdrawn_at IS NULL AND provider = ANY($1::text[])`,
      [unique],
    ),
    reliabilityOfMany(q, unique, opts.reliabilityMinLeases),
    measuredByAccount(q, unique, Date.now()),
  ]);
  const price = new Map(prices.rows.map((r) => [r.provider, Number(r.p)]));
  return new Map(
    unique.map((a) => [
      a,
      {
        price: price.get(a) ?? opts.defaultPricePerTflop,
        reliability: reliability.get(a)?.value ?? 1,
        measured: measured.get(a)?.examplesPerSecond ?? null,
      },
    ]),
  );
}

/**
 * The gateway's `rankWorkers` for the marketplace: orders the workers waiting for work so the cheapest reliable one
 * is offered a new unit first. Three batched queries per call, whatever the number of workers.
 */
export function marketWorkerRanking(
  q: Queryable,
  opts: WorkerRankOptions,
): (workers: WorkerIdentity[]) => Promise<WorkerIdentity[]> {
  return async (workers) => {
    if (workers.length < 2) return workers;
    const keys = await rankKeys(
      q,
      workers.map((w) => w.account),
      opts,
    );
    return [...workers].sort((a, b) => compareRank(keys.get(a.account)!, keys.get(b.account)!));
  };
}
