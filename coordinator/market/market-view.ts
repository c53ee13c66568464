import type { MarketView, OfferView, StatsView } from '../../shared/protocol/market-api.js';
import { toCredits } from '../credits/money.js';
import { readTrust } from '../credits/trust.js';
import type { Queryable } from '../store/db.js';
import { activeOffers } from './offers.js';
import { reliabilityOfMany } from './reliability.js';

/** Workers heartbeat every 10 s; one that missed three beats is not counted as online. */
const ONLINE_MS = 35_000;
/** Measured throughput looks at the accepted units of this window. */
const MEASURE_WINDOW_MS = 7 * 86_400_000;

export interface MarketSummaryOptions {
  /** Micro-credits per TFLOP. */
  defaultPricePerTflop: number;
  reliabilityMinLeases: number;
  now?: number;
}

async function onlineByAccount(q: Queryable, now: number): Promise<Map<string, number>> {
  const r = await q.query<{ account: string; n: number }>(
    `SELECT account, count(*)::int AS n FROM workers WHERE disconnected_at IS NULL AND last_seen > $1 GROUP BY account`,
    [now - ONLINE_MS],
  );
  return new Map(r.rows.map((row) => [row.account, Number(row.n)]));
}

/**
 * Throughput measured from real units: examples of accepted (or audit-confirmed) results over the time from lease to
 * result (download, training and upload: what a requester actually gets), per account.
 */
export async function measuredByAccount(
  q: Queryable,
  accounts: string[],
  now: number,
): Promise<Map<string, { examplesPerSecond: number | null; units: number }>> {
  const out = new Map<string, { examplesPerSecond: number | null; units: number }>(
    accounts.map((a) => [a, { examplesPerSecond: null, units: 0 }]),
  );
  if (accounts.length === 0) return out;
  const r = await q.query<{ account: string; units: number; examples: number; ms: number }>(
    `SELECT r.account, count(*)::int AS units, sum(r.examples)::float8 AS examples,
            sum(GREATEST(r.created_at - l.created_at, 1))::float8 AS ms
     FROM results r JOIN leases l ON l.id = r.lease_id
     WHERE r.status IN ('accepted', 'confirmed') AND r.created_at > $1 AND r.account = ANY($2::text[])
     GROUP BY r.account`,
    [now - MEASURE_WINDOW_MS, accounts],
  );
  for (const row of r.rows) {
    const ms = Number(row.ms);
    out.set(row.account, {
      examplesPerSecond: ms > 0 ? Math.round((Number(row.examples) / ms) * 1000 * 10) / 10 : null,
      units: Number(row.units),
    });
  }
  return out;
}

function quantile(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}

function buckets(sorted: number[], n = 5): { from: number; to: number; offers: number }[] {
  if (sorted.length === 0) return [];
  const lo = sorted[0];
  const hi = sorted[sorted.length - 1];
  if (lo === hi) return [{ from: lo, to: hi, offers: sorted.length }];
  const width = (hi - lo) / n;
  const out = Array.from({ length: n }, (_, i) => ({ from: lo + i * width, to: lo + (i + 1) * width, offers: 0 }));
  for (const v of sorted) out[Math.min(n - 1, Math.floor((v - lo) / width))].offers++;
  return out;
}

/** GET /api/v1/market: active offers with measured throughput, reliability and audit record; prices; capacity. */
export async function marketSummary(q: Queryable, opts: MarketSummaryOptions): Promise<MarketView> {
  const now = opts.now ?? Date.now();
  const offers = await activeOffers(q);
  const online = await onlineByAccount(q, now);
  const providers = [...new Set([...offers.map((o) => o.provider), ...online.keys()])];
  const [measured, reliability] = await Promise.all([
    measuredByAccount(q, providers, now),
    reliabilityOfMany(q, providers, opts.reliabilityMinLeases),
  ]);
  const views: OfferView[] = [];
  for (const o of offers) {
    views.push({
      id: o.id,
      provider: o.provider,
      minPricePerTflop: toCredits(o.minPricePerTflop),
      deviceClass: o.deviceClass,
      benchmark: { examplesPerSecond: o.benchmarkExamplesPerSecond, backend: o.benchmarkBackend },
      hoursAvailable: o.hoursAvailable,
      createdAt: o.createdAt,
      measured: measured.get(o.provider) ?? { examplesPerSecond: null, units: 0 },
      reliability: reliability.get(o.provider)!,
      audit: await readTrust(q, o.provider),
      online: online.get(o.provider) ?? 0,
    });
  }
  const prices = views.map((v) => v.minPricePerTflop).sort((a, b) => a - b);
  let measuredOnline = 0;
  for (const account of online.keys()) measuredOnline += measured.get(account)?.examplesPerSecond ?? 0;
  return {
    defaultPricePerTflop: toCredits(opts.defaultPricePerTflop),
    offers: views,
    priceDistribution: {
      offers: prices.length,
      min: quantile(prices, 0),
      p25: quantile(prices, 0.25),
      median: quantile(prices, 0.5),
      p75: quantile(prices, 0.75),
      max: prices.length ? prices[prices.length - 1] : null,
      buckets: buckets(prices),
    },
    capacity: {
      offers: views.length,
      hoursAvailable: views.reduce((s, v) => s + v.hoursAvailable, 0),
      benchmarkExamplesPerSecond: views.reduce((s, v) => s + v.benchmark.examplesPerSecond, 0),
      workersOnline: [...online.values()].reduce((s, n) => s + n, 0),
      accountsOnline: online.size,
      measuredExamplesPerSecond: Math.round(measuredOnline * 10) / 10,
    },
  };
}

/** GET /api/v1/stats: public network figures, no key needed. */
export async function networkStats(q: Queryable, now = Date.now()): Promise<StatsView> {
  const r = await q.query<{
    queued: number;
    running: number;
    completed: number;
    online: number;
    units: number;
    paid: number;
  }>(
    `SELECT (SELECT count(*)::int FROM jobs WHERE status = 'queued') AS queued,
            (SELECT count(*)::int FROM jobs WHERE status = 'running') AS running,
            (SELECT count(*)::int FROM jobs WHERE status = 'completed') AS completed,
            (SELECT count(*)::int FROM workers WHERE disconnected_at IS NULL AND last_seen > $1) AS online,
            (SELECT count(*)::int FROM results WHERE status = 'accepted') AS units,
            (SELECT COALESCE(sum(amount), 0)::bigint FROM ledger_credits WHERE status IN ('pending', 'vested')) AS paid`,
    [now - ONLINE_MS],
  );
  const row = r.rows[0];
  return {
    jobs: { queued: Number(row.queued), running: Number(row.running), completed: Number(row.completed) },
    workersOnline: Number(row.online),
    unitsDone: Number(row.units),
    creditsPaid: Number(row.paid),
  };
}
