import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestCoordinator, type TestCoordinator, testStore } from './helpers/cluster.js';
import { bearer, testIdentity } from './helpers/identities.js';

/**
 * Bad input is the client's fault: an address with a broken EIP-55 checksum or a NUL character anywhere in a request
 * gets a 400 naming the field, never a 500.
 */

interface ErrorBody {
  statusCode: number;
  message: string;
  field?: string;
}

describe('bad input gets 4xx with the field, never 500', () => {
  let c: TestCoordinator;

  beforeAll(async () => {
    c = await startTestCoordinator(testStore('pglite'));
  }, 120_000);
  afterAll(async () => {
    await c?.destroy();
  });

  it('an address with a bad EIP-55 checksum (faucet)', async () => {
    const good = testIdentity('checksum').address;
    // Flip the case of one letter: still 40 hex digits, but the checksum no longer holds.
    const i = good.slice(2).search(/[a-fA-F]/) + 2;
    const ch = good[i];
    const bad = good.slice(0, i) + (ch === ch.toUpperCase() ? ch.toLowerCase() : ch.toUpperCase()) + good.slice(i + 1);
    const res = await fetch(`${c.url}/api/v1/faucet`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ address: bad, amount: 1 }),
    });
    expect(res.status).toBe(400);
    const body = (await res.json()) as ErrorBody;
    expect(body.field).toBe('/address');
    expect(body.message).toMatch(/EIP-55/);
  });

  it('a job id with %00, and NUL characters in a body or a query', async () => {
    const auth = bearer(c.requester.apiKey);
    for (const path of ['/api/v1/jobs/job%00x', '/api/v1/jobs/%00/cancel']) {
      const method = path.endsWith('cancel') ? 'POST' : 'GET';
      const res = await fetch(`${c.url}${path}`, { method, headers: auth });
      expect(res.status, path).toBe(400);
      expect(((await res.json()) as ErrorBody).field, path).toBe('/id');
    }
    const acct = await fetch(`${c.url}/api/v1/accounts/${testIdentity('q').address}?cursor=a%00b`);
    expect(acct.status).toBe(400);
    expect(((await acct.json()) as ErrorBody).field).toBe('/cursor');
    const res = await fetch(`${c.url}/api/v1/keys`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...auth },
      body: JSON.stringify({ label: 'bad\u0000label' }),
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as ErrorBody).field).toBe('/label');
  });
});
