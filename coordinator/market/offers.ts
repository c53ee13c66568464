import { randomBytes } from 'node:crypto';
import type { OfferInput } from '../../shared/protocol/market-api.js';
import { toMicro } from '../credits/money.js';
import type { Db, Queryable } from '../store/db.js';

export interface Offer {
  id: string;
  provider: string;
  /** Micro-credits per TFLOP. */
  minPricePerTflop: number;
  deviceClass: string;
  benchmarkExamplesPerSecond: number;
  benchmarkBackend: string | null;
  hoursAvailable: number;
  createdAt: number;
  withdrawnAt: number | null;
}

function toOffer(row: Record<string, unknown>): Offer {
  return {
    id: String(row.id),
    provider: String(row.provider),
    minPricePerTflop: Number(row.min_price_per_tflop),
    deviceClass: String(row.device_class),
    benchmarkExamplesPerSecond: Number(row.benchmark_examples_per_second),
    benchmarkBackend: (row.benchmark_backend as string | null) ?? null,
    hoursAvailable: Number(row.hours_available),
    createdAt: Number(row.created_at),
    withdrawnAt: row.withdrawn_at === null ? null : Number(row.withdrawn_at),
  };
}

/** Provider offers. One active offer per account: posting a new one withdraws the previous one. */
export class Offers {
  constructor(
    private readonly db: Db,
    private readonly now: () => number = Date.now,
  ) {}

  async post(provider: string, input: OfferInput): Promise<Offer> {
    const id = `off_${randomBytes(8).toString('hex')}`;
    const at = this.now();
    return this.db.tx(async (q) => {
      // Serialise per provider: the partial unique index would otherwise fail one of two concurrent posts.
      await q.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`market_offers:${provider}`]);
      await q.query('UPDATE market_offers SET withdrawn_at = $2 WHERE provider = $1 AND withdrawn_at IS NULL', [
        provider,
        at,
      ]);
      const r = await q.query(
        `INSERT INTO market_offers (id, provider, min_price_per_tflop, device_class, benchmark_examples_per_second,
                                    benchmark_backend, hours_available, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *`,
        [
          id,
          provider,
          toMicro(input.minPricePerTflop),
          input.deviceClass,
          input.benchmark.examplesPerSecond,
          input.benchmark.backend ?? null,
          input.hoursAvailable,
          at,
        ],
      );
      return toOffer(r.rows[0]);
    });
  }

  /** Withdraws the provider's own offer; false when it has no such active offer. */
  async withdraw(provider: string, id: string): Promise<boolean> {
    const r = await this.db.query(
      'UPDATE market_offers SET withdrawn_at = $3 WHERE id = $1 AND provider = $2 AND withdrawn_at IS NULL',
      [id, provider, this.now()],
    );
    return r.rowCount > 0;
  }

  active(): Promise<Offer[]> {
    return activeOffers(this.db);
  }

  async activeFor(provider: string, q: Queryable = this.db): Promise<Offer | null> {
    const r = await q.query('SELECT * FROM market_offers WHERE provider = $1 AND withdrawn_at IS NULL', [provider]);
    return r.rows.length ? toOffer(r.rows[0]) : null;
  }
}

/** Active offers, cheapest first. */
export async function activeOffers(q: Queryable): Promise<Offer[]> {
  const r = await q.query(
    'SELECT * FROM market_offers WHERE withdrawn_at IS NULL ORDER BY min_price_per_tflop, created_at, id',
  );
  return r.rows.map(toOffer);
}

/**
 * Price per TFLOP a worker of `account` is paid, micro-credits: its active offer's minimum, or the network's default
 * donation price for volunteers without one.
 */
export async function workerPricePerTflop(q: Queryable, account: string, defaultPrice: number): Promise<number> {
  const r = await q.query<{ p: number }>(
    'SELECT min_price_per_tflop AS p FROM market_offers WHERE provider = $1 AND withdrawn_at IS NULL',
    [account],
  );
  return r.rows.length ? Number(r.rows[0].p) : defaultPrice;
}
