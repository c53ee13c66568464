import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { uriOnDomain } from '../coordinator/accounts/index.js';
import { startCoordinator } from '../coordinator/app.js';
import { personalSign } from '../shared/identity/index.js';
import { CloseCode, PROTOCOL_VERSION } from '../shared/protocol/messages.js';
import { startTestCoordinator, type TestCoordinator, testStore } from './helpers/cluster.js';
import { getNonce, postSignIn, siweMessage, testIdentity, workerSigner } from './helpers/identities.js';
import { RawWorker } from './helpers/raw-worker.js';

/**
 * Sign-in messages are bound to this server by their URI as well as their domain (a message made for another site's
 * URI is refused with wrong_uri), and production refuses to start without PUBLIC_DOMAIN.
 */

describe('the SIWE message URI', () => {
  let c: TestCoordinator;
  const alice = testIdentity('uri-alice');

  beforeAll(async () => {
    c = await startTestCoordinator(testStore('pglite'));
  }, 120_000);
  afterAll(async () => {
    await c?.destroy();
  });

  it('a sign-in whose URI is another site is refused (wrong_uri, /message); the nonce survives for a good one', async () => {
    const n = await getNonce(c.url);
    const forged = siweMessage(n, alice.address, { uri: 'https://evil.example/login' });
    const res = await postSignIn(c.url, forged, personalSign(forged, alice.privateKey));
    expect(res.status).toBe(401);
    const body = (await res.json()) as { message: string; field: string };
    expect(body.message).toMatch(/wrong_uri/);
    expect(body.field).toBe('/message');
    // The URI the nonce route handed out (http://<domain>/) signs in.
    const good = siweMessage(n, alice.address);
    const ok = await postSignIn(c.url, good, personalSign(good, alice.privateKey));
    expect(ok.status).toBe(200);
  });

  it('a worker hello signed over another site’s URI is refused (4401, wrong_uri)', async () => {
    const w = new RawWorker(c.url, alice.address);
    await w.open();
    const challenge = await w.nextOf('challenge');
    const auth = await workerSigner(alice.privateKey)({ ...challenge, uri: 'wss://evil.example/api/v1/worker' });
    w.send({
      type: 'hello',
      protocol: PROTOCOL_VERSION,
      account: alice.address,
      backend: 'wasm',
      capabilities: { backends: ['wasm'] },
      auth,
    });
    expect((await w.nextOf('error')).message).toMatch(/wrong_uri/);
    expect((await w.closed).code).toBe(CloseCode.Unauthorized);
  });

  it('uriOnDomain: http(s)/ws(s) on this authority only', () => {
    expect(uriOnDomain('http://localhost:8080/', 'localhost:8080')).toBe(true);
    expect(uriOnDomain('ws://localhost:8080/api/v1/worker', 'localhost:8080')).toBe(true);
    expect(uriOnDomain('https://Swarm.Example.org/', 'swarm.example.org')).toBe(true);
    expect(uriOnDomain('https://swarm.example.org:443/x', 'swarm.example.org')).toBe(true);
    expect(uriOnDomain('http://localhost:8081/', 'localhost:8080')).toBe(false);
    expect(uriOnDomain('https://swarm.example.org.evil.com/', 'swarm.example.org')).toBe(false);
    expect(uriOnDomain('https://swarm.example.org@evil.com/', 'swarm.example.org')).toBe(false);
    expect(uriOnDomain('https://user:pw@swarm.example.org/', 'swarm.example.org')).toBe(false);
    expect(uriOnDomain('javascript:alert(1)', 'swarm.example.org')).toBe(false);
    expect(uriOnDomain('not a uri', 'swarm.example.org')).toBe(false);
  });
});

describe('production without PUBLIC_DOMAIN', () => {
  it('refuses to start, saying what to set', async () => {
    await expect(
      startCoordinator({ ...testStore('pglite'), devMode: false, publicDomain: undefined, port: 0 }),
    ).rejects.toThrow(/PUBLIC_DOMAIN is required when NODE_ENV=production/);
  });
});
