import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeWeights } from '../shared/train/weights-format.js';
import { postJob, smallMnistJob, startTestCoordinator, type TestCoordinator, testStore } from './helpers/cluster.js';
import { bearer, postOffer, signedWorker, testIdentity } from './helpers/identities.js';
import { RawWorker } from './helpers/raw-worker.js';
import { STORE_KINDS } from './helpers/stores.js';

beforeAll(async () => {
  await tf.setBackend('wasm');
  await tf.ready();
});

async function jobOf(c: TestCoordinator, leaseId: string): Promise<string> {
  const r = await c.db.query<{ job_id: string }>('SELECT job_id FROM leases WHERE id = $1', [leaseId]);
  return r.rows[0].job_id;
}

const oneRound = (over: Record<string, unknown>) =>
  smallMnistJob({ rounds: 1, targetAccuracy: undefined, ...over } as never);

describe.each(STORE_KINDS)('marketplace lease filters on %s', (kind) => {
  let c: TestCoordinator;
  beforeAll(async () => {
    c = await startTestCoordinator(testStore(kind), { reliabilityMinLeases: 5 });
  });
  afterAll(async () => {
    await c.destroy();
  });

  it('a job with maxPricePerTflop is never leased to a worker whose offer is above it', async () => {
    const pricey = testIdentity(`pricey-${kind}`);
    const fair = testIdentity(`fair-${kind}`);
    expect((await postOffer(c.url, pricey, 5)).status).toBe(201);
    expect((await postOffer(c.url, fair, 1.5)).status).toBe(201);
    // A bad offer is refused with the field to blame.
    const bad = await fetch(`${c.url}/api/v1/offers`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...bearer(c.requester.apiKey) },
      body: JSON.stringify({
        minPricePerTflop: -1,
        deviceClass: 'x',
        benchmark: { examplesPerSecond: 1 },
        hoursAvailable: 1,
      }),
    });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { field: string }).field).toBe('/minPricePerTflop');

    const capped = await postJob(
      c.url,
      oneRound({ name: 'capped', unitsPerRound: 3, market: { maxPricePerTflop: 2 }, budget: 1 }),
    );
    const p = await signedWorker(c.url, pricey);
    // Nothing else to do: the pricey worker is idle, asked again and again.
    for (let i = 0; i < 3; i++) expect(await p.tryLease()).toBeNull();

    // Once an open job exists, the pricey worker gets that one, never the capped one.
    const open = await postJob(c.url, oneRound({ name: 'open', unitsPerRound: 2, budget: 1 }));
    const got = await p.tryLease();
    expect(got).not.toBeNull();
    expect(await jobOf(c, got!.leaseId)).toBe(open.id);

    // A worker whose offer is under the cap gets the capped job's units (it is older, so first) and is paid at its
    // own offer, not the cap.
    const f = await signedWorker(c.url, fair);
    const lease = await f.tryLease();
    expect(lease).not.toBeNull();
    expect(await jobOf(c, lease!.leaseId)).toBe(capped.id);
    const { out } = await f.train(lease!);
    const payload = encodeWeights(out.delta);
    expect((await f.submit(RawWorker.header(lease!, out, payload), payload)).type).toBe('ack');

    const cappedLeases = await c.db.query<{ account: string }>(
      'SELECT DISTINCT account FROM leases WHERE job_id = $1',
      [capped.id],
    );
    expect(cappedLeases.rows.map((r) => r.account)).not.toContain(pricey.address);
    // Pricing at acceptance (the hook the scheduler calls in the accepting transaction): the worker's own offer,
    // never above the job's cap; volunteers without an offer get the default price.
    const priceAt = async (jobId: string, account: string) => {
      const resultId = `res_price_${jobId}_${account}`;
      await c.db.tx((q) =>
        c.credits.recordAcceptance(
          q,
          { resultId, jobId, owner: null, round: 0, unit: 0, account, flops: 1, examples: 1 },
          Date.now(),
        ),
      );
      const r = await c.db.query<{ price_per_tflop: number; price: number }>(
        'SELECT price_per_tflop, price FROM credit_intents WHERE result_id = $1',
        [resultId],
      );
      await c.db.query('DELETE FROM credit_intents WHERE result_id = $1', [resultId]);
      return [Number(r.rows[0].price_per_tflop), Number(r.rows[0].price)];
    };
    // 117,273,600 FLOP per unit: 1.5 credits/TFLOP -> 175.9, 5 -> 586.4, capped at 2 -> 234.5, default 1 -> 117.3.
    expect(await priceAt(capped.id, fair.address)).toEqual([1_500_000, 176]);
    expect(await priceAt(open.id, pricey.address)).toEqual([5_000_000, 586]);
    expect(await priceAt(capped.id, pricey.address)).toEqual([2_000_000, 235]);
    expect(await priceAt(open.id, testIdentity('no-offer').address)).toEqual([1_000_000, 117]);

    const market = (await (await fetch(`${c.url}/api/v1/market`)).json()) as {
      offers: { provider: string; minPricePerTflop: number; online: number }[];
      priceDistribution: { offers: number; min: number; max: number; median: number };
      capacity: { offers: number; hoursAvailable: number; workersOnline: number; benchmarkExamplesPerSecond: number };
      defaultPricePerTflop: number;
    };
    expect(market.offers.map((o) => [o.provider, o.minPricePerTflop])).toEqual([
      [fair.address, 1.5],
      [pricey.address, 5],
    ]);
    expect(market.priceDistribution).toMatchObject({ offers: 2, min: 1.5, max: 5 });
    expect(market.capacity).toMatchObject({ offers: 2, hoursAvailable: 16, benchmarkExamplesPerSecond: 10_000 });
    expect(market.capacity.workersOnline).toBeGreaterThanOrEqual(2);
    expect(market.defaultPricePerTflop).toBe(1);

    // Cancel both so the next test starts from an empty queue.
    for (const j of [capped, open]) {
      await c.app.inject({ method: 'POST', url: `/api/v1/jobs/${j.id}/cancel`, headers: bearer(c.requester.apiKey) });
    }
    p.close();
    f.close();
  });

  it('a job with minReliability skips workers below it; newcomers count as reliable', async () => {
    const flaky = testIdentity(`flaky-${kind}`);
    const fresh = testIdentity(`fresh-${kind}`);
    // The flaky worker takes five units and gives each back: 0 of 5 finished leases completed. (It takes the same
    // unit back each time: the cool-down on units given back, test/lease-terms.test.ts, is off here.)
    c.scheduler.givenBackCooldownMs = 0;
    const warmup = await postJob(c.url, oneRound({ name: 'warm-up', unitsPerRound: 1 }));
    const u = await signedWorker(c.url, flaky);
    for (let i = 0; i < 5; i++) {
      const l = await u.tryLease();
      expect(l).not.toBeNull();
      u.send({ type: 'release', leaseId: l!.leaseId });
      await new Promise((r) => setTimeout(r, 100));
    }
    const view = (await (await fetch(`${c.url}/api/v1/accounts/${flaky.address}`)).json()) as {
      reliability: { value: number; known: boolean; finished: number };
    };
    expect(view.reliability).toEqual({ value: 0, known: true, completed: 0, finished: 5 });
    await c.app.inject({
      method: 'POST',
      url: `/api/v1/jobs/${warmup.id}/cancel`,
      headers: bearer(c.requester.apiKey),
    });

    const strict = await postJob(
      c.url,
      oneRound({ name: 'strict', unitsPerRound: 2, market: { minReliability: 0.8 } }),
    );
    for (let i = 0; i < 3; i++) expect(await u.tryLease()).toBeNull();
    const n = await signedWorker(c.url, fresh);
    const l = await n.tryLease();
    expect(l).not.toBeNull();
    expect(await jobOf(c, l!.leaseId)).toBe(strict.id);
    // Still nothing for the flaky worker, even with a unit of the job free.
    expect(await u.tryLease()).toBeNull();
    const strictLeases = await c.db.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM leases WHERE job_id = $1 AND account = $2',
      [strict.id, flaky.address],
    );
    expect(strictLeases.rows[0].n).toBe(0);
    await c.app.inject({
      method: 'POST',
      url: `/api/v1/jobs/${strict.id}/cancel`,
      headers: bearer(c.requester.apiKey),
    });
    u.close();
    n.close();
  });

  it('a job whose escrow cannot pay one more unit is not leased', async () => {
    // One unit at the default price costs 117 micro-credits; 200 pay for one, not two.
    const tight = await postJob(c.url, oneRound({ name: 'tight', unitsPerRound: 3, budget: 0.0002 }));
    const a = await signedWorker(c.url, `tight-a-${kind}`);
    const b = await signedWorker(c.url, `tight-b-${kind}`);
    const first = await a.tryLease();
    expect(first).not.toBeNull();
    expect(await jobOf(c, first!.leaseId)).toBe(tight.id);
    // While that unit is in flight, the rest of the escrow (83) cannot pay another.
    expect(await b.tryLease()).toBeNull();
    const res = await c.app.inject({
      method: 'GET',
      url: `/api/v1/jobs/${tight.id}`,
      headers: bearer(c.requester.apiKey),
    });
    expect(res.json().billing).toMatchObject({ budget: 200, escrow: 200, spent: 0 });
    a.close();
    b.close();
  });
});
