import { request } from 'node:http';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { CloseCode } from '../shared/protocol/messages.js';
import { encodeResultEnvelope } from '../shared/protocol/result-envelope.js';
import { postJob, smallMnistJob, startTestCoordinator, type TestCoordinator, testStore } from './helpers/cluster.js';
import { apiKeyFor, bearer, signedWorker, testIdentity } from './helpers/identities.js';
import { RawWorker } from './helpers/raw-worker.js';

/**
 * Unauthenticated memory and CPU exhaustion: oversize frames and bodies are refused from their declared length,
 * before they are read; a connection cannot queue frames without end; request rates are limited per address and per
 * account.
 */

const MiB = 1024 * 1024;

function closed(ws: WebSocket): Promise<{ code: number; reason: string }> {
  return new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: String(reason) })));
}

async function healthMs(url: string): Promise<number> {
  const t = Date.now();
  const res = await fetch(`${url}/api/v1/health`);
  expect(res.status).toBe(200);
  return Date.now() - t;
}

describe('frame, body and queue limits', () => {
  let c: TestCoordinator;

  beforeAll(async () => {
    c = await startTestCoordinator(testStore('pglite'));
  }, 120_000);

  afterAll(async () => {
    await c?.destroy();
  });

  it('a 48 MiB frame before hello is refused from its header (1009): no RSS blow-up, health answers meanwhile', async () => {
    const rssBefore = process.memoryUsage().rss;
    const ws = new WebSocket(`${c.url.replace('http', 'ws')}/api/v1/worker`);
    ws.on('error', () => {});
    const end = closed(ws);
    await new Promise<void>((resolve) => ws.once('open', () => resolve()));
    const t = Date.now();
    // A text frame: what used to be parsed as JSON in full.
    ws.send(`{"type":"hello","pad":"${'a'.repeat(48 * MiB)}"}`);
    const health = await healthMs(c.url);
    const { code } = await end;
    expect(code).toBe(CloseCode.TooLarge);
    expect(Date.now() - t).toBeLessThan(15_000);
    expect(health).toBeLessThan(5_000);
    // The 48 MiB string of this (client) side is in the same process; the server must not add its own copies.
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(400 * MiB);
  }, 60_000);

  it('after hello: a text frame over 64 KiB closes with 1009; a result frame over its unit model bound is refused', async () => {
    await postJob(c.url, smallMnistJob({ rounds: 1, unitsPerRound: 1, localSteps: 4 } as never));
    const w = await signedWorker(c.url, testIdentity('limits-worker'));
    try {
      const lease = await w.lease();
      // 784-32-10 MLP: ~100 KB of weights, so ~1.1 MiB for a result and ~1.3 MiB for a revealed state.
      const header = {
        type: 'result',
        leaseId: lease.leaseId,
        token: lease.token,
        deltaHash: '0'.repeat(64),
        finalHash: '0'.repeat(64),
        checkpoints: [],
        losses: [],
        examples: 0,
        flops: 0,
        backend: 'wasm',
        timings: { totalMs: 1, trainMs: 1 },
      };
      const answer = await w.submit(header as never, new Uint8Array(1.25 * MiB));
      expect(answer).toMatchObject({ type: 'reject', code: 'too_large' });
      // Over the connection's frame limit: refused from the frame header, the connection closes.
      w.ws.send(encodeResultEnvelope(header as never, new Uint8Array(8 * MiB)));
      expect((await w.closed).code).toBe(CloseCode.TooLarge);
    } finally {
      w.close();
    }
    const v = await signedWorker(c.url, testIdentity('limits-worker-2'));
    v.send({ type: 'progress', leaseId: 'x'.repeat(100 * 1024), step: 1 });
    expect((await v.closed).code).toBe(CloseCode.TooLarge);
  }, 120_000);

  it('an honest result of a lease from an earlier connection still fits the new connection’s frame limit', async () => {
    await postJob(c.url, smallMnistJob({ rounds: 1, unitsPerRound: 1, localSteps: 4 } as never));
    c.scheduler.verification.configure({ rng: () => 1, selfAuditAfterMs: null });
    const id = testIdentity('limits-reconnecter');
    const first = await signedWorker(c.url, id);
    const lease = await first.lease();
    const { out } = await first.train(lease);
    first.vanish();
    await first.closed;
    // A new connection, no resume: the coordinator sizes its limit from the account's open leases.
    const again = await signedWorker(c.url, id);
    try {
      expect(await again.submitRun(lease, out)).toMatchObject({ type: 'ack' });
    } finally {
      again.close();
    }
  }, 120_000);

  it('a connection that queues frames faster than they are served is closed (4429)', async () => {
    const w = await signedWorker(c.url, testIdentity('limits-flooder'));
    const frame = JSON.stringify({ type: 'progress', leaseId: 'lease_nothing', step: 1 });
    // One write of many frames: they arrive together, far faster than each is handled.
    w.ws.send(frame);
    const burst = Buffer.concat(
      Array.from({ length: 500 }, () => {
        const body = Buffer.from(frame);
        // A masked client text frame (the mask is zero, so the payload goes as is).
        return Buffer.concat([Buffer.from([0x81, 0x80 | 126, body.length >> 8, body.length & 0xff, 0, 0, 0, 0]), body]);
      }),
    );
    (w.ws as unknown as { _socket: import('node:net').Socket })._socket.write(burst);
    expect((await w.closed).code).toBe(CloseCode.Flooding);
  }, 60_000);

  it.each(['/api/v1/jobs', '/api/v1/datasets'])(
    'an unauthenticated 48 MiB POST %s is refused (413/401) without being read',
    async (path) => {
      const u = new URL(`${c.url}${path}`);
      const t = Date.now();
      const status = await new Promise<number>((resolve, reject) => {
        const req = request(
          {
            host: u.hostname,
            port: u.port,
            path: u.pathname,
            method: 'POST',
            headers: {
              'content-type': path.endsWith('datasets') ? 'application/octet-stream' : 'application/json',
              'content-length': String(48 * MiB),
            },
          },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
            // Never send the rest: end the connection (a pending upload would hold the coordinator's close).
            req.destroy();
          },
        );
        req.on('error', (err) =>
          err.message.includes('EPIPE') || err.message.includes('ECONNRESET') ? null : reject(err),
        );
        // Only the first 64 KiB is ever sent: the answer must come without the rest.
        req.write(Buffer.alloc(64 * 1024, 0x20));
      });
      expect([401, 413]).toContain(status);
      expect(Date.now() - t).toBeLessThan(10_000);
    },
    30_000,
  );
});

describe('rate limits', () => {
  let c: TestCoordinator;

  beforeAll(async () => {
    c = await startTestCoordinator(testStore('pglite'), {
      rateLimitPerAddress: 40,
      rateLimitPerAccount: 10,
      connectionTimeoutMs: 1500,
    });
  }, 120_000);

  afterAll(async () => {
    await c?.destroy();
  });

  it('a connection that starts a request and goes silent is closed (connection timeout)', async () => {
    const u = new URL(c.url);
    const sock = connect(Number(u.port), u.hostname);
    const gone = new Promise<number>((resolve) => sock.on('close', () => resolve(Date.now())));
    sock.on('error', () => {});
    await new Promise<void>((resolve) => sock.once('connect', () => resolve()));
    const t = Date.now();
    sock.write(
      'POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"a"',
    );
    expect((await gone) - t).toBeLessThan(15_000);
  }, 30_000);

  it('per account: over the limit gets 429 with the reason; other callers are not affected', async () => {
    const key = await apiKeyFor(c.url, testIdentity('limits-busy'));
    const statuses: number[] = [];
    let last: { message?: string } = {};
    for (let i = 0; i < 14; i++) {
      const res = await fetch(`${c.url}/api/v1/auth/me`, { headers: bearer(key) });
      statuses.push(res.status);
      last = (await res.json()) as { message?: string };
    }
    // Creating the key was the account's first request.
    expect(statuses.slice(0, 9).every((s) => s === 200)).toBe(true);
    expect(statuses.at(-1)).toBe(429);
    expect(last.message).toMatch(/too many requests from this account/);
    // Without that account's token: only the address limit, not yet reached.
    expect((await fetch(`${c.url}/api/v1/health`)).status).toBe(200);
  }, 60_000);

  it('per address: over the limit gets 429 with the reason, worker sockets included', async () => {
    let res: Response | undefined;
    // Any route but the health probe, which is never limited (monitors poll it from one address).
    for (let i = 0; i < 60; i++) {
      res = await fetch(`${c.url}/api/v1/stats`);
      if (res.status === 429) break;
    }
    expect((await fetch(`${c.url}/api/v1/health`)).status).toBe(200);
    expect(res?.status).toBe(429);
    const body = (await res!.json()) as { statusCode: number; message: string };
    expect(body).toMatchObject({ statusCode: 429 });
    expect(body.message).toMatch(/too many requests from this network address/);
    expect(res?.headers.get('retry-after')).toBeTruthy();
    // A worker connection from the same address is refused too (the upgrade is a request).
    const w = new RawWorker(c.url, testIdentity('limits-late').address);
    w.ws.on('error', () => {});
    const refused = await new Promise<boolean>((resolve) => {
      w.ws.once('unexpected-response', (_req, r) => resolve(r.statusCode === 429));
      w.ws.once('open', () => resolve(false));
    });
    expect(refused).toBe(true);
  }, 60_000);
});
