import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { toMicro } from '../coordinator/credits/money.js';
import { compareRank, marketWorkerRanking } from '../coordinator/market/index.js';
import { postJob, smallMnistJob, startTestCoordinator, type TestCoordinator, testStore } from './helpers/cluster.js';
import { bearer, postOffer, signedWorker, type TestIdentity, testIdentity } from './helpers/identities.js';
import type { RawWorker } from './helpers/raw-worker.js';
import { STORE_KINDS } from './helpers/stores.js';

/** "Cheapest reliable first": which waiting worker is offered new work first (worker-gateway ranked passes). */

beforeAll(async () => {
  await tf.setBackend('wasm');
  await tf.ready();
});

/** A signed worker that has asked once and been told idle: it waits for work to be pushed. */
async function idleWorker(c: TestCoordinator, who: TestIdentity): Promise<RawWorker> {
  const w = await signedWorker(c.url, who);
  expect(await w.tryLease()).toBeNull();
  return w;
}

async function leaseAccounts(c: TestCoordinator, jobId: string): Promise<string[]> {
  const r = await c.db.query<{ account: string }>('SELECT account FROM leases WHERE job_id = $1 ORDER BY created_at', [
    jobId,
  ]);
  return r.rows.map((row) => row.account);
}

const oneRound = (over: Record<string, unknown>) =>
  smallMnistJob({ rounds: 1, targetAccuracy: undefined, ...over } as never);

async function cancel(c: TestCoordinator, jobId: string): Promise<void> {
  await c.app.inject({ method: 'POST', url: `/api/v1/jobs/${jobId}/cancel`, headers: bearer(c.requester.apiKey) });
}

describe('compareRank', () => {
  it('orders by price, then reliability, then measured throughput (measured before unmeasured)', () => {
    const keys = [
      { id: 'pricey', price: 3, reliability: 1, measured: 900 },
      { id: 'flaky', price: 1, reliability: 0.5, measured: 900 },
      { id: 'new', price: 1, reliability: 1, measured: null },
      { id: 'slow', price: 1, reliability: 1, measured: 10 },
      { id: 'fast', price: 1, reliability: 1, measured: 50 },
    ];
    expect([...keys].sort(compareRank).map((k) => k.id)).toEqual(['fast', 'slow', 'new', 'flaky', 'pricey']);
  });
});

describe.each(STORE_KINDS)('cheapest reliable first on %s', (kind) => {
  let c: TestCoordinator;
  beforeAll(async () => {
    c = await startTestCoordinator(testStore(kind), { reliabilityMinLeases: 2 });
  });
  afterAll(async () => {
    await c.destroy();
  });
  // Each test leaves an empty queue and no workers behind, pass or fail, so one failure cannot cascade.
  const open: { workers: RawWorker[]; jobs: string[] } = { workers: [], jobs: [] };
  afterEach(async () => {
    for (const id of open.jobs.splice(0)) await cancel(c, id);
    for (const w of open.workers.splice(0)) w.close();
  });
  const connect = async (who: TestIdentity, idle = true): Promise<RawWorker> => {
    const w = idle ? await idleWorker(c, who) : await signedWorker(c.url, who);
    open.workers.push(w);
    return w;
  };
  const post = async (spec: Record<string, unknown>) => {
    const job = await postJob(c.url, spec);
    open.jobs.push(job.id);
    return job;
  };

  it('ranks by the offer price, volunteers without an offer at the default price', async () => {
    const a = testIdentity(`rank-a-${kind}`);
    const b = testIdentity(`rank-b-${kind}`);
    const v = testIdentity(`rank-volunteer-${kind}`);
    expect((await postOffer(c.url, a, 4)).status).toBe(201);
    expect((await postOffer(c.url, b, 0.5)).status).toBe(201);
    const rank = marketWorkerRanking(c.db, { defaultPricePerTflop: toMicro(1), reliabilityMinLeases: 2 });
    const order = await rank([
      { workerId: 'w1', account: a.address },
      { workerId: 'w2', account: v.address },
      { workerId: 'w3', account: b.address },
    ]);
    expect(order.map((w) => w.workerId)).toEqual(['w3', 'w2', 'w1']);
  });

  it('a new unit goes to the cheaper of two idle workers, even when the expensive one connected first', async () => {
    const pricey = testIdentity(`order-pricey-${kind}`);
    const cheap = testIdentity(`order-cheap-${kind}`);
    expect((await postOffer(c.url, pricey, 3)).status).toBe(201);
    expect((await postOffer(c.url, cheap, 1.5)).status).toBe(201);
    await connect(pricey);
    const ch = await connect(cheap);

    const job = await post(oneRound({ name: 'one unit', unitsPerRound: 1 }));
    const lease = await ch.nextOf('lease', 10_000);
    expect(await leaseAccounts(c, job.id)).toEqual([cheap.address]);
    expect((await c.db.query('SELECT 1 FROM leases WHERE id = $1', [lease.leaseId])).rows).toHaveLength(1);
    // The expensive worker was passed over, not leased to.
    await new Promise((r) => setTimeout(r, 300));
    expect(await leaseAccounts(c, job.id)).toEqual([cheap.address]);
  });

  it('a round of fewer units than idle workers goes to the cheapest ones', async () => {
    const ids = [3, 2.5, 1.5, 2].map((price, i) => ({ who: testIdentity(`round-${i}-${kind}`), price }));
    for (const { who, price } of ids) expect((await postOffer(c.url, who, price)).status).toBe(201);
    // Most expensive first in connection order.
    const workers: RawWorker[] = [];
    for (const { who } of ids) workers.push(await connect(who));

    const job = await post(oneRound({ name: 'two units', unitsPerRound: 2 }));
    await Promise.all([workers[2].nextOf('lease', 10_000), workers[3].nextOf('lease', 10_000)]);
    await new Promise((r) => setTimeout(r, 300));
    expect(await leaseAccounts(c, job.id)).toEqual([ids[2].who.address, ids[3].who.address]);
  });

  it('at the same price, the reliable worker gets the unit before the unreliable one', async () => {
    const flaky = testIdentity(`tie-flaky-${kind}`);
    const steady = testIdentity(`tie-steady-${kind}`);
    expect((await postOffer(c.url, flaky, 2)).status).toBe(201);
    expect((await postOffer(c.url, steady, 2)).status).toBe(201);
    // The flaky worker takes two units and gives each back: reliability 0 of 2, known. (It takes the same unit back:
    // the cool-down on units given back, test/lease-terms.test.ts, is off here.)
    c.scheduler.givenBackCooldownMs = 0;
    const warmup = await post(oneRound({ name: 'warm-up', unitsPerRound: 1 }));
    const f = await connect(flaky, false);
    for (let i = 0; i < 2; i++) {
      const l = await f.tryLease();
      expect(l).not.toBeNull();
      f.send({ type: 'release', leaseId: l!.leaseId });
      await new Promise((r) => setTimeout(r, 100));
    }
    await cancel(c, warmup.id);
    const view = (await (await fetch(`${c.url}/api/v1/accounts/${flaky.address}`)).json()) as {
      reliability: { value: number; known: boolean };
    };
    expect(view.reliability).toMatchObject({ value: 0, known: true });
    // The flaky worker is idle and connected first; the steady one (a newcomer, reliability 1) second.
    expect(await f.tryLease()).toBeNull();
    const s = await connect(steady);

    const job = await post(oneRound({ name: 'tie', unitsPerRound: 1 }));
    await s.nextOf('lease', 10_000);
    await new Promise((r) => setTimeout(r, 300));
    expect(await leaseAccounts(c, job.id)).toEqual([steady.address]);
  });
});
