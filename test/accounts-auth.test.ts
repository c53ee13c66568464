import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { personalSign } from '../shared/identity/index.js';
import type { ServerMessage } from '../shared/protocol/messages.js';
import { PROTOCOL_VERSION } from '../shared/protocol/messages.js';
import { encodeWeights } from '../shared/train/weights-format.js';
import { postJob, smallMnistJob, startTestCoordinator, type TestCoordinator, testStore } from './helpers/cluster.js';
import {
  apiKeyFor,
  bearer,
  getNonce,
  postSignIn,
  signedWorker,
  signIn,
  siweMessage,
  testIdentity,
  workerSigner,
} from './helpers/identities.js';
import { RawWorker } from './helpers/raw-worker.js';

beforeAll(async () => {
  await tf.setBackend('wasm');
  await tf.ready();
});

/** A hello that is expected to be refused: returns what the coordinator said and how it closed the socket. */
async function refusedHello(
  url: string,
  account: string,
  auth: (c: Extract<ServerMessage, { type: 'challenge' }>) => Promise<{ message: string; signature: string } | null>,
): Promise<{ error: ServerMessage; close: { code: number; reason: string } }> {
  const w = new RawWorker(url, account);
  await w.open();
  const challenge = await w.nextOf('challenge');
  const a = await auth(challenge);
  w.send({
    type: 'hello',
    protocol: PROTOCOL_VERSION,
    account,
    backend: 'wasm',
    capabilities: { backends: ['wasm'] },
    ...(a ? { auth: a } : {}),
  });
  const error = await w.next();
  if (error.type === 'welcome') {
    w.close();
    throw new Error('the hello was welcomed, not refused');
  }
  return { error, close: await w.closed };
}

describe('sign-in with Ethereum over HTTP', () => {
  let c: TestCoordinator;
  const alice = testIdentity('alice');
  const mallory = testIdentity('mallory');
  beforeAll(async () => {
    c = await startTestCoordinator(testStore('pglite'));
  });
  afterAll(async () => {
    await c.destroy();
  });

  const refusal = async (res: Response) => ({ status: res.status, body: (await res.json()) as Record<string, string> });

  it('a message signed by a known key signs in; the session token works; the nonce is single use', async () => {
    const n = await getNonce(c.url);
    expect(n.domain).toBe(c.domain);
    expect(n.nonce).toMatch(/^[0-9a-f]{32}$/);
    const message = siweMessage(n, alice.address);
    const signature = personalSign(message, alice.privateKey);
    const res = await postSignIn(c.url, message, signature);
    expect(res.status).toBe(200);
    const session = (await res.json()) as { token: string; address: string; expiresAt: number };
    expect(session.address).toBe(alice.address);
    expect(session.expiresAt).toBeGreaterThan(Date.now());
    const me = await fetch(`${c.url}/api/v1/auth/me`, { headers: bearer(session.token) });
    expect(await me.json()).toEqual({ address: alice.address, via: 'session' });

    // Replaying the very same signed message: the nonce is spent.
    const replay = await refusal(await postSignIn(c.url, message, signature));
    expect(replay.status).toBe(401);
    expect(replay.body.message).toMatch(/nonce_reused/);

    // Sign-out ends the session.
    const out = await fetch(`${c.url}/api/v1/auth/signout`, { method: 'POST', headers: bearer(session.token) });
    expect(await out.json()).toEqual({ ok: true });
    expect((await fetch(`${c.url}/api/v1/auth/me`, { headers: bearer(session.token) })).status).toBe(401);
  });

  it('refuses forged, expired, wrong-domain, wrong-chain, other-address and unknown-nonce messages', async () => {
    const n = await getNonce(c.url);
    const message = siweMessage(n, alice.address);
    const good = personalSign(message, alice.privateKey);

    // Forged: a flipped bit in s recovers some other address (or none).
    const flipped = `${good.slice(0, 100)}${((Number.parseInt(good[100], 16) ^ 1) >>> 0).toString(16)}${good.slice(101)}`;
    let r = await refusal(await postSignIn(c.url, message, flipped));
    expect(r.status).toBe(401);
    expect(r.body.message).toMatch(/bad_signature|wrong_address/);
    expect(r.body.field).toBe('/signature');

    // Signed by another key than the address the message names.
    r = await refusal(await postSignIn(c.url, message, personalSign(message, mallory.privateKey)));
    expect(r.status).toBe(401);
    expect(r.body.message).toMatch(/wrong_address/);

    // The message text altered after signing.
    const altered = message.replace(alice.address, mallory.address);
    r = await refusal(await postSignIn(c.url, altered, good));
    expect(r.status).toBe(401);

    // Expired.
    const past = Date.now() - 3_600_000;
    const expired = siweMessage(n, alice.address, {
      issuedAt: new Date(past),
      expirationTime: new Date(past + 60_000),
    });
    r = await refusal(await postSignIn(c.url, expired, personalSign(expired, alice.privateKey)));
    expect(r.status).toBe(401);
    expect(r.body.message).toMatch(/expired/);

    // Another site's domain, another chain.
    const evil = siweMessage(n, alice.address, { domain: 'evil.example', uri: 'https://evil.example/' });
    r = await refusal(await postSignIn(c.url, evil, personalSign(evil, alice.privateKey)));
    expect(r.status).toBe(401);
    expect(r.body.message).toMatch(/wrong_domain/);
    const chain = siweMessage(n, alice.address, { chainId: 5 });
    r = await refusal(await postSignIn(c.url, chain, personalSign(chain, alice.privateKey)));
    expect(r.status).toBe(401);
    expect(r.body.message).toMatch(/wrong_chain/);

    // A nonce this server never issued.
    const made = siweMessage({ ...n, nonce: 'abcdef0123456789abcdef0123456789' }, alice.address);
    r = await refusal(await postSignIn(c.url, made, personalSign(made, alice.privateKey)));
    expect(r.status).toBe(401);
    expect(r.body.message).toMatch(/nonce_unknown/);

    // Not a SIWE message at all.
    r = await refusal(await postSignIn(c.url, 'hello', personalSign('hello', alice.privateKey)));
    expect(r.status).toBe(400);
    expect(r.body.message).toMatch(/malformed/);

    // None of the refused attempts spent the nonce: the honest signature still signs in with it.
    expect((await postSignIn(c.url, message, good)).status).toBe(200);
  });

  it('API keys: created, listed and revoked with a session; an API key cannot mint keys', async () => {
    const { token } = await signIn(c.url, alice);
    const json = { 'content-type': 'application/json' };
    let res = await fetch(`${c.url}/api/v1/keys`, {
      method: 'POST',
      headers: { ...json, ...bearer(token) },
      body: JSON.stringify({ label: 'ci' }),
    });
    expect(res.status).toBe(201);
    const created = (await res.json()) as { id: string; key: string; hint: string };
    expect(created.key.startsWith(created.hint)).toBe(true);
    expect((await (await fetch(`${c.url}/api/v1/auth/me`, { headers: bearer(created.key) })).json()).via).toBe(
      'api_key',
    );

    res = await fetch(`${c.url}/api/v1/keys`, {
      method: 'POST',
      headers: { ...json, ...bearer(created.key) },
      body: JSON.stringify({ label: 'x' }),
    });
    expect(res.status).toBe(403);
    res = await fetch(`${c.url}/api/v1/keys`, { method: 'POST', headers: json, body: JSON.stringify({ label: 'x' }) });
    expect(res.status).toBe(401);
    expect(((await res.json()) as { message: string }).message).toMatch(/Authorization: Bearer/);

    const list = (await (await fetch(`${c.url}/api/v1/keys`, { headers: bearer(token) })).json()) as {
      id: string;
      key?: string;
    }[];
    expect(list.map((k) => k.id)).toContain(created.id);
    expect(list.every((k) => k.key === undefined)).toBe(true);

    res = await fetch(`${c.url}/api/v1/keys/${created.id}`, { method: 'DELETE', headers: bearer(token) });
    expect(res.status).toBe(200);
    expect((await fetch(`${c.url}/api/v1/auth/me`, { headers: bearer(created.key) })).status).toBe(401);
    res = await fetch(`${c.url}/api/v1/keys/${created.id}`, { method: 'DELETE', headers: bearer(token) });
    expect(res.status).toBe(404);
  });

  it('isolation: no key -> 401; another account cannot read, cancel, list or download a job (404)', async () => {
    const job = await postJob(c.url, smallMnistJob({ rounds: 1, unitsPerRound: 1, targetAccuracy: undefined }));
    const mine = bearer(c.requester.apiKey);
    const theirs = bearer(await apiKeyFor(c.url, mallory));
    const routes: [string, string][] = [
      ['GET', `/api/v1/jobs/${job.id}`],
      ['POST', `/api/v1/jobs/${job.id}/cancel`],
      ['GET', `/api/v1/jobs/${job.id}/model/model.json`],
      ['GET', `/api/v1/jobs/${job.id}/model/weights-${'0'.repeat(64)}.bin`],
    ];
    for (const [method, url] of routes) {
      const none = await c.app.inject({ method: method as 'GET', url });
      expect(none.statusCode, `${method} ${url} without a key`).toBe(401);
      const bad = await c.app.inject({ method: method as 'GET', url, headers: bearer('sgk_not-a-real-key') });
      expect(bad.statusCode, `${method} ${url} with a bad key`).toBe(401);
      const other = await c.app.inject({ method: method as 'GET', url, headers: theirs });
      expect(other.statusCode, `${method} ${url} with another account's key`).toBe(404);
      expect(other.body).not.toContain(job.name);
    }
    let res = await c.app.inject({ method: 'GET', url: '/api/v1/jobs', headers: theirs });
    expect(res.json()).toEqual([]);
    expect((await c.app.inject({ method: 'GET', url: '/api/v1/jobs' })).statusCode).toBe(401);
    res = await c.app.inject({ method: 'POST', url: '/api/v1/jobs', payload: smallMnistJob() });
    expect(res.statusCode).toBe(401);
    res = await c.app.inject({
      method: 'POST',
      url: '/api/v1/datasets',
      headers: { 'content-type': 'application/octet-stream' },
      payload: Buffer.from('x'),
    });
    expect(res.statusCode).toBe(401);

    // The owner still sees, downloads and cancels it; the job is still running after the others' attempts.
    res = await c.app.inject({ method: 'GET', url: '/api/v1/jobs', headers: mine });
    expect(res.json().map((j: { id: string }) => j.id)).toEqual([job.id]);
    res = await c.app.inject({ method: 'GET', url: `/api/v1/jobs/${job.id}/model/model.json`, headers: mine });
    expect(res.statusCode).toBe(200);
    const weightsPath = res.json().weightsManifest[0].paths[0] as string;
    res = await c.app.inject({ method: 'GET', url: `/api/v1/jobs/${job.id}/model/${weightsPath}`, headers: theirs });
    expect(res.statusCode).toBe(404);
    res = await c.app.inject({ method: 'GET', url: `/api/v1/jobs/${job.id}/model/${weightsPath}`, headers: mine });
    expect(res.statusCode).toBe(200);
    res = await c.app.inject({ method: 'POST', url: `/api/v1/jobs/${job.id}/cancel`, headers: mine });
    expect(res.json().status).toBe('cancelled');

    // Public: network stats, the market, the datasets listing (built-ins only without a key).
    for (const url of ['/api/v1/stats', '/api/v1/market', '/api/v1/datasets', `/api/v1/accounts/${alice.address}`]) {
      expect((await c.app.inject({ method: 'GET', url })).statusCode, url).toBe(200);
    }
  });

  it('faucet works in development mode, within its limit', async () => {
    let res = await c.app.inject({
      method: 'POST',
      url: '/api/v1/faucet',
      payload: { address: alice.address.toLowerCase(), amount: 12.5 },
    });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ address: alice.address, deposited: 12_500_000 });
    const view = await c.app.inject({ method: 'GET', url: `/api/v1/accounts/${alice.address}` });
    expect(view.json().balances.available).toBe(12_500_000);
    expect(view.json().history.items[0]).toMatchObject({ eventKind: 'deposit', amount: 12_500_000 });
    res = await c.app.inject({
      method: 'POST',
      url: '/api/v1/faucet',
      payload: { address: alice.address, amount: 1e9 },
    });
    expect(res.statusCode).toBe(400);
    expect(res.json().field).toBe('/amount');
  });
});

describe('production mode', () => {
  let c: TestCoordinator;
  const admin = 'admin-secret-for-tests';
  beforeAll(async () => {
    c = await startTestCoordinator(testStore('pglite'), {
      devMode: false,
      adminKeys: [admin],
      publicDomain: 'swarmgrad.test',
    });
  });
  afterAll(async () => {
    await c.destroy();
  });

  it('faucet only with an admin key; a job needs a budget; a budget above the balance is 402', async () => {
    const bob = testIdentity('bob');
    let res = await c.app.inject({
      method: 'POST',
      url: '/api/v1/faucet',
      payload: { address: bob.address, amount: 1 },
    });
    expect(res.statusCode).toBe(403);
    res = await c.app.inject({
      method: 'POST',
      url: '/api/v1/faucet',
      headers: bearer(c.requester.apiKey),
      payload: { address: bob.address, amount: 1 },
    });
    expect(res.statusCode).toBe(403);
    res = await c.app.inject({
      method: 'POST',
      url: '/api/v1/faucet',
      headers: bearer(admin),
      payload: { address: bob.address, amount: 3 },
    });
    expect(res.statusCode).toBe(200);
    expect(res.json().available).toBe(3_000_000);

    const bobKey = bearer(await apiKeyFor(c.url, bob));
    res = await c.app.inject({ method: 'POST', url: '/api/v1/jobs', headers: bobKey, payload: smallMnistJob() });
    expect(res.statusCode).toBe(400);
    expect(res.json().field).toBe('/budget');

    res = await c.app.inject({
      method: 'POST',
      url: '/api/v1/jobs',
      headers: bobKey,
      payload: smallMnistJob({ budget: 5 }),
    });
    expect(res.statusCode).toBe(402);
    expect(res.json()).toMatchObject({ statusCode: 402, error: 'Payment Required', field: '/budget' });
    expect(res.json().message).toMatch(/budget of 5 credits exceeds your available balance of 3 credits/);
    // Nothing was escrowed and no job exists.
    expect((await c.ledger.balances(bob.address)).available).toBe(3_000_000);
    expect((await c.app.inject({ method: 'GET', url: '/api/v1/jobs', headers: bobKey })).json()).toEqual([]);

    res = await c.app.inject({
      method: 'POST',
      url: '/api/v1/jobs',
      headers: bobKey,
      payload: smallMnistJob({ budget: 2 }),
    });
    expect(res.statusCode).toBe(201);
    expect(res.json().billing).toMatchObject({ budget: 2_000_000, escrow: 2_000_000, spent: 0, closed: false });
    const balances = await c.ledger.balances(bob.address);
    expect(balances).toMatchObject({ available: 1_000_000, escrow: 2_000_000 });

    // A job that cannot be created after its escrow (bad initial weights) gives the escrow straight back.
    res = await c.app.inject({
      method: 'POST',
      url: '/api/v1/jobs',
      headers: bobKey,
      payload: smallMnistJob({ budget: 1, initialWeights: 'a'.repeat(64) }),
    });
    expect(res.statusCode).toBe(404);
    expect(res.json().field).toBe('/initialWeights');
    expect((await c.ledger.balances(bob.address)).available).toBe(1_000_000);
    expect((await c.ledger.checkIntegrity()).ok).toBe(true);
  });
});

describe('workers prove their account on the socket', () => {
  let c: TestCoordinator;
  const carol = testIdentity('carol');
  const dave = testIdentity('dave');
  beforeAll(async () => {
    c = await startTestCoordinator(testStore('pglite'));
    await postJob(c.url, smallMnistJob({ rounds: 1, unitsPerRound: 3, targetAccuracy: undefined }));
  });
  afterAll(async () => {
    await c.destroy();
  });

  const leasesOf = async (account: string) =>
    Number(
      (
        await c.db.query<{ n: number }>('SELECT count(*)::int AS n FROM leases WHERE lower(account) = lower($1)', [
          account,
        ])
      ).rows[0].n,
    );

  it('refuses (4401) before any lease: no signature, another key, another domain, a replayed answer', async () => {
    let r = await refusedHello(c.url, carol.address, async () => null);
    expect(r.error).toMatchObject({ type: 'error', code: 'unauthorized' });
    expect(r.close.code).toBe(4401);

    r = await refusedHello(c.url, carol.address, workerSigner(dave.privateKey));
    expect(r.close.code).toBe(4401);
    expect((r.error as { message: string }).message).toMatch(/wrong_address/);

    r = await refusedHello(c.url, carol.address, workerSigner(carol.privateKey, { domain: 'evil.example' }));
    expect(r.close.code).toBe(4401);
    expect((r.error as { message: string }).message).toMatch(/wrong_domain/);

    r = await refusedHello(
      c.url,
      carol.address,
      workerSigner(carol.privateKey, { now: new Date(Date.now() - 3_600_000), ttlMs: 60_000 }),
    );
    expect(r.close.code).toBe(4401);
    expect((r.error as { message: string }).message).toMatch(/expired/);

    // A valid answer captured from one connection does not open another (its challenge is bound and spent).
    let captured: { message: string; signature: string } | null = null;
    const honest = await signedWorker(c.url, dave);
    r = await refusedHello(c.url, carol.address, async (ch) => {
      captured = await workerSigner(carol.privateKey)(ch);
      // Spoil r (v 27 -> 00 would be an equivalent encoding, not a forgery).
      const sig = captured.signature;
      return {
        message: captured.message,
        signature: `${sig.slice(0, 10)}${sig[10] === '0' ? '1' : '0'}${sig.slice(11)}`,
      };
    });
    expect(r.close.code).toBe(4401);
    r = await refusedHello(c.url, carol.address, async () => captured);
    expect(r.close.code).toBe(4401);
    expect((r.error as { message: string }).message).toMatch(/nonce/);
    honest.close();

    expect(await leasesOf(carol.address)).toBe(0);
  });

  it('a signed worker is welcomed under its checksummed address; one account runs many workers at once', async () => {
    const w1 = await signedWorker(c.url, carol);
    const w2 = await signedWorker(c.url, carol);
    const [l1, l2] = await Promise.all([w1.lease(), w2.lease()]);
    expect(l1.leaseId).not.toBe(l2.leaseId);
    const units = await c.db.query<{ account: string; idx: number; worker_id: string }>(
      `SELECT account, idx, worker_id FROM leases WHERE id = ANY($1::text[])`,
      [[l1.leaseId, l2.leaseId]],
    );
    expect(units.rows.map((u) => u.account)).toEqual([carol.address, carol.address]);
    expect(new Set(units.rows.map((u) => u.idx)).size).toBe(2);
    expect(new Set(units.rows.map((u) => u.worker_id)).size).toBe(2);

    // Both results are taken (acked), each under the account that proved itself.
    for (const [w, l] of [
      [w1, l1],
      [w2, l2],
    ] as const) {
      const { out } = await w.train(l);
      const payload = encodeWeights(out.delta);
      expect((await w.submit(RawWorker.header(l, out, payload), payload)).type).toBe('ack');
    }
    const accepted = await c.db.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM results WHERE account = $1 AND status <> 'rejected'`,
      [carol.address],
    );
    expect(accepted.rows[0].n).toBe(2);
    w1.close();
    w2.close();
  });
});

describe('development: requireWorkerAuth off', () => {
  it('admits an unsigned hello under the account it names, but never credits its results', async () => {
    const c = await startTestCoordinator(testStore('pglite'), { requireWorkerAuth: false });
    try {
      const job = await postJob(
        c.url,
        smallMnistJob({ rounds: 1, unitsPerRound: 1, targetAccuracy: undefined, budget: 1 } as never),
      );
      const claimed = testIdentity('someone-else');
      const w = new RawWorker(c.url, claimed.address);
      await w.hello();
      const lease = await w.lease();
      const { out } = await w.train(lease);
      const payload = encodeWeights(out.delta);
      expect((await w.submit(RawWorker.header(lease, out, payload), payload)).type).toBe('ack');
      const result = await c.db.query<{ id: string }>('SELECT id FROM results WHERE lease_id = $1', [lease.leaseId]);
      // What the scheduler's acceptance hook records for it (now or once verification finalises it): skipped.
      await c.db.tx((q) =>
        c.credits.recordAcceptance(
          q,
          {
            resultId: result.rows[0].id,
            jobId: job.id,
            owner: c.requester.address,
            round: 0,
            unit: 0,
            account: claimed.address,
            flops: out.flops,
            examples: out.examples,
          },
          Date.now(),
        ),
      );
      const intent = await c.db.query<{ state: string; reason: string }>(
        'SELECT state, reason FROM credit_intents WHERE result_id = $1',
        [result.rows[0].id],
      );
      expect(intent.rows[0]).toEqual({ state: 'skipped', reason: expect.stringMatching(/did not prove/) });
      await c.credits.sweeper.sweep();
      expect(await c.ledger.balances(claimed.address)).toMatchObject({ pending: 0, vested: 0 });
      w.close();
    } finally {
      await c.destroy();
    }
  });
});
