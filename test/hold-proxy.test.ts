import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configFromEnv } from '../coordinator/config.js';
import { auditAddress } from '../coordinator/verify/network-address.js';
import { postJob, smallMnistJob, startTestCoordinator, type TestCoordinator, testStore } from './helpers/cluster.js';
import { testIdentity, workerSigner } from './helpers/identities.js';
import { RawWorker } from './helpers/raw-worker.js';

/**
 * Network addresses as identity: behind a reverse proxy TRUST_PROXY makes each client's own address the one the
 * coordinator sees (rate limits, the audit network rule); without it X-Forwarded-For is ignored, so a client cannot
 * pick its address. Private and loopback addresses tell nobody apart and count as unknown.
 */

const xff = (ip: string) => ({ 'x-forwarded-for': ip });

async function resultAddress(c: TestCoordinator, ip: string, label: string): Promise<string | null> {
  const who = testIdentity(label);
  const w = new RawWorker(c.url, who.address, xff(ip));
  await w.hello(undefined, workerSigner(who.privateKey));
  try {
    const { lease, answer } = await w.trainAndSubmit();
    expect(answer).toMatchObject({ type: 'ack' });
    const { rows } = await c.db.query<{ address: string | null }>('SELECT address FROM results WHERE lease_id = $1', [
      lease.leaseId,
    ]);
    return rows[0].address;
  } finally {
    w.close();
  }
}

async function statuses(url: string, ips: string[]): Promise<number[]> {
  const out: number[] = [];
  // Any route but the health probe, which is never limited.
  for (const ip of ips) out.push((await fetch(`${url}/api/v1/stats`, { headers: xff(ip) })).status);
  return out;
}

const job = () => smallMnistJob({ rounds: 1, unitsPerRound: 4, localSteps: 4, targetAccuracy: undefined } as never);

describe('behind a reverse proxy (TRUST_PROXY=127.0.0.1)', () => {
  let c: TestCoordinator;
  beforeAll(async () => {
    c = await startTestCoordinator(testStore('pglite'), { trustProxy: '127.0.0.1', rateLimitPerAddress: 30 });
    c.scheduler.verification.configure({ rng: () => 1, selfAuditAfterMs: null });
    await postJob(c.url, job());
  }, 120_000);
  afterAll(async () => {
    await c?.destroy();
  });

  it('each worker is seen at its own address (audit network rule), not the proxy’s', async () => {
    expect(await resultAddress(c, '203.0.113.7', 'proxy-w1')).toBe('203.0.113.0/24');
    expect(await resultAddress(c, '198.51.100.9', 'proxy-w2')).toBe('198.51.100.0/24');
  }, 120_000);

  it('rate limits count each client, not the proxy', async () => {
    const a = await statuses(c.url, Array(35).fill('192.0.2.10'));
    expect(a.at(-1)).toBe(429);
    expect(await statuses(c.url, ['192.0.2.77'])).toEqual([200]);
  });
});

describe('without TRUST_PROXY', () => {
  let c: TestCoordinator;
  beforeAll(async () => {
    c = await startTestCoordinator(testStore('pglite'), { rateLimitPerAddress: 30 });
    c.scheduler.verification.configure({ rng: () => 1, selfAuditAfterMs: null });
    await postJob(c.url, job());
  }, 120_000);
  afterAll(async () => {
    await c?.destroy();
  });

  it('a forged X-Forwarded-For is ignored: no chosen audit address, no way around the rate limit', async () => {
    // The socket's peer is loopback: unknown to the audit rule (the account rule still holds), whatever the header.
    expect(await resultAddress(c, '203.0.113.7', 'noproxy-w1')).toBeNull();
    const forged = await statuses(
      c.url,
      Array.from({ length: 35 }, (_, i) => `192.0.2.${i + 1}`),
    );
    expect(forged.at(-1)).toBe(429);
  }, 120_000);
});

describe('addresses that tell nobody apart', () => {
  it('private, shared and link-local ranges count as unknown; public ones by /24 and /64', () => {
    for (const ip of ['10.1.2.3', '172.16.0.1', '172.31.255.1', '192.168.1.20', '100.64.0.1', '169.254.1.1']) {
      expect(auditAddress(ip), ip).toBeUndefined();
    }
    for (const ip of ['fd12:3456::1', 'fe80::1', '::ffff:10.0.0.1']) expect(auditAddress(ip), ip).toBeUndefined();
    expect(auditAddress('172.32.0.1')).toBe('172.32.0.0/24');
    expect(auditAddress('8.8.8.8')).toBe('8.8.8.0/24');
  });

  it('TRUST_PROXY parses as Fastify takes it', () => {
    expect(configFromEnv({}).trustProxy).toBeUndefined();
    expect(configFromEnv({ TRUST_PROXY: 'true' }).trustProxy).toBe(true);
    expect(configFromEnv({ TRUST_PROXY: '2' }).trustProxy).toBe(2);
    expect(configFromEnv({ TRUST_PROXY: '10.0.0.0/8, 127.0.0.1' }).trustProxy).toBe('10.0.0.0/8,127.0.0.1');
  });
});
