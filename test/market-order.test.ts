import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { toMicro } from '../coordinator/credits/money.js';
import { compareRank, marketWorkerRanking } from '../coordinator/market/index.js';
import type { LeaseMsg } from '../shared/protocol/messages.js';
import { postJob, smallMnistJob, startTestCoordinator, type TestCoordinator, testStore } from './helpers/cluster.js';
import { apiKeyFor, bearer, signedWorker, type TestIdentity, testIdentity } from './helpers/identities.js';
import type { RawWorker } from './helpers/raw-worker.js';
import { STORE_KINDS } from './helpers/stores.js';

/** "Cheapest reliable first": which waiting worker is offered new work first (worker-gateway ranked passes). */

beforeAll(async () => {
  await tf.setBackend('wasm');
  await tf.ready();
});

/** One request: the lease it brings, or null when the coordinator answers idle. */
async function tryLease(w: RawWorker): Promise<LeaseMsg | null> {
  w.send({ type: 'request' });
  for (;;) {
    const m = await w.next(10_000);
    if (m.type === 'lease') return m;
    if (m.type === 'idle') return null;
  }
}

async function postOffer(c: TestCoordinator, who: TestIdentity, price: number): Promise<void> {
  const r = await fetch(`${c.url}/api/v1/offers`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...bearer(await apiKeyFor(c.url, who)) },
    body: JSON.stringify({
      minPricePerTflop: price,
      deviceClass: 'webgpu-discrete',
      benchmark: { examplesPerSecond: 5000, backend: 'webgpu' },
      hoursAvailable: 8,
    }),
  });
  expect(r.status).toBe(201);
}

/** A signed worker that has asked once and been told idle: it waits for work to be pushed. */
async function idleWorker(c: TestCoordinator, who: TestIdentity): Promise<RawWorker> {
  const w = await signedWorker(c.url, who);
  expect(await tryLease(w)).toBeNull();
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
    await postOffer(c, a, 4);
    await postOffer(c, b, 0.5);
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
    await postOffer(c, pricey, 3);
    await postOffer(c, cheap, 1.5);
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
    for (const { who, price } of ids) await postOffer(c, who, price);
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
    await postOffer(c, flaky, 2);
    await postOffer(c, steady, 2);
    // The flaky worker takes two units and gives each back: reliability 0 of 2, known.
    const warmup = await post(oneRound({ name: 'warm-up', unitsPerRound: 1 }));
    const f = await connect(flaky, false);
    for (let i = 0; i < 2; i++) {
      const l = await tryLease(f);
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
    expect(await tryLease(f)).toBeNull();
    const s = await connect(steady);

    const job = await post(oneRound({ name: 'tie', unitsPerRound: 1 }));
    await s.nextOf('lease', 10_000);
    await new Promise((r) => setTimeout(r, 300));
    expect(await leaseAccounts(c, job.id)).toEqual([steady.address]);
  });
});
