import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  addressFromPrivateKey,
  buildSiweMessage,
  buildWorkerAuth,
  generatePrivateKey,
  type NonceVerdict,
  parseSiweMessage,
  personalSign,
  type SiweFields,
  verifySiwe,
} from '../shared/identity/index.js';

const KEY = '0x4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318';
const ADDRESS = '0x2c7536E3605D9C16a7a3D7b1898e529396a65c23';
const NOW = Date.parse('2026-03-01T12:00:00.000Z');

const fields = (over: Partial<SiweFields> = {}): SiweFields => ({
  domain: 'swarmgrad.test:8080',
  address: ADDRESS,
  statement: 'Sign in to swarmgrad.',
  uri: 'http://swarmgrad.test:8080/app',
  version: '1',
  chainId: 1,
  nonce: 'a1b2c3d4e5f6a7b8',
  issuedAt: new Date(NOW - 1_000),
  expirationTime: new Date(NOW + 600_000),
  ...over,
});

/** A nonce store that allows each issued nonce once. */
function nonceStore(issued: string[]) {
  const fresh = new Set(issued);
  const used = new Set<string>();
  return (nonce: string): NonceVerdict => {
    if (used.has(nonce)) return 'used';
    if (!fresh.has(nonce)) return 'unknown';
    fresh.delete(nonce);
    used.add(nonce);
    return 'ok';
  };
}

async function verify(message: string, signature: string, over: Partial<Parameters<typeof verifySiwe>[0]> = {}) {
  return verifySiwe({
    message,
    signature,
    expectedDomain: 'swarmgrad.test:8080',
    expectedChainId: 1,
    now: NOW,
    nonceCheck: nonceStore(['a1b2c3d4e5f6a7b8']),
    ...over,
  });
}

describe('EIP-4361 message text', () => {
  it('writes the exact layout with a statement and optional fields', () => {
    const text = buildSiweMessage(
      fields({
        scheme: 'https',
        notBefore: '2026-03-01T11:00:00Z',
        requestId: 'req-1',
        resources: ['ipfs://bafy/x', 'https://swarmgrad.test/tos'],
      }),
    );
    expect(text).toBe(
      [
        'https://swarmgrad.test:8080 wants you to sign in with your Ethereum account:',
        ADDRESS,
        '',
        'Sign in to swarmgrad.',
        '',
        'URI: http://swarmgrad.test:8080/app',
        'Version: 1',
        'Chain ID: 1',
        'Nonce: a1b2c3d4e5f6a7b8',
        'Issued At: 2026-03-01T11:59:59.000Z',
        'Expiration Time: 2026-03-01T12:10:00.000Z',
        'Not Before: 2026-03-01T11:00:00Z',
        'Request ID: req-1',
        'Resources:',
        '- ipfs://bafy/x',
        '- https://swarmgrad.test/tos',
      ].join('\n'),
    );
  });

  it('writes two empty lines where the statement is absent, and checksums the address', () => {
    const text = buildSiweMessage(
      fields({ statement: undefined, expirationTime: undefined, address: ADDRESS.toLowerCase() }),
    );
    expect(text).toBe(
      `swarmgrad.test:8080 wants you to sign in with your Ethereum account:\n${ADDRESS}\n\n\nURI: http://swarmgrad.test:8080/app\nVersion: 1\nChain ID: 1\nNonce: a1b2c3d4e5f6a7b8\nIssued At: 2026-03-01T11:59:59.000Z`,
    );
    expect(parseSiweMessage(text).statement).toBeUndefined();
  });

  it('parses the example message of the specification', () => {
    const text = [
      'service.org wants you to sign in with your Ethereum account:',
      '0xC02aaA39b223FE8D0A0e5C4F27eAD9083C756Cc2',
      '',
      'I accept the ServiceOrg Terms of Service: https://service.org/tos',
      '',
      'URI: https://service.org/login',
      'Version: 1',
      'Chain ID: 1',
      'Nonce: 32891756',
      'Issued At: 2021-09-30T16:25:24Z',
      'Resources:',
      '- ipfs://bafybeiemxf5abjwjbikoz4mc3a3dla6ual3jsgpdr4cjr3oz3evfyavhwq/',
      '- https://example.com/my-web2-claim.json',
    ].join('\n');
    const msg = parseSiweMessage(text);
    expect(msg).toMatchObject({
      domain: 'service.org',
      chainId: 1,
      nonce: '32891756',
      issuedAt: '2021-09-30T16:25:24Z',
    });
    expect(msg.resources).toHaveLength(2);
    expect(buildSiweMessage(msg)).toBe(text);
  });

  it('round-trips random valid fields exactly', () => {
    const alnum = fc.stringMatching(/^[A-Za-z0-9]{8,24}$/);
    const date = fc.integer({ min: 0, max: 4_102_444_800_000 }).map((t) => new Date(t).toISOString());
    fc.assert(
      fc.property(
        fc.record({
          statement: fc.option(fc.stringMatching(/^[A-Za-z0-9 .,:/?#@!$&'()*+;=-]{1,60}$/), { nil: undefined }),
          chainId: fc.integer({ min: 1, max: 2 ** 40 }),
          nonce: alnum,
          issuedAt: date,
          expirationTime: fc.option(date, { nil: undefined }),
          notBefore: fc.option(date, { nil: undefined }),
          requestId: fc.option(fc.stringMatching(/^[A-Za-z0-9._~-]{0,20}$/), { nil: undefined }),
          resources: fc.option(fc.array(fc.webUrl(), { maxLength: 3 }), { nil: undefined }),
        }),
        (r) => {
          const f = fields(r);
          const text = buildSiweMessage(f);
          const parsed = parseSiweMessage(text);
          expect(buildSiweMessage(parsed)).toBe(text);
          expect(parsed.nonce).toBe(r.nonce);
          expect(parsed.chainId).toBe(r.chainId);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('rejects every deviation from the layout', () => {
    const good = buildSiweMessage(fields());
    const bad = [
      good.replace(ADDRESS, ADDRESS.toLowerCase()),
      good.replace('Version: 1', 'Version: 2'),
      good.replace('Chain ID: 1', 'Chain ID: one'),
      good.replace('Nonce: a1b2c3d4e5f6a7b8', 'Nonce: short'),
      good.replace('Issued At: 2026-03-01T11:59:59.000Z', 'Issued At: yesterday'),
      good.replace('\nVersion: 1', ''),
      good.replace('URI: ', 'Uri: '),
      `${good}\n`,
      `${good}\nExtra: field`,
      good.replace(/\n/g, '\r\n'),
      good.replace('Sign in to swarmgrad.', 'two\nlines'),
      good.replace(' wants you to sign in', ' would like you to sign in'),
      good.replace('\n\nSign in', '\nSign in'),
      // Fields out of their fixed order.
      good.replace('Version: 1\nChain ID: 1', 'Chain ID: 1\nVersion: 1'),
    ];
    for (const text of bad) expect(() => parseSiweMessage(text), text).toThrow();
    expect(() => buildSiweMessage(fields({ nonce: 'abc' }))).toThrow(/nonce/);
    expect(() => buildSiweMessage(fields({ domain: 'a b' }))).toThrow(/domain/);
    expect(() => buildSiweMessage(fields({ statement: 'a\nb' }))).toThrow(/statement/);
    expect(() => buildSiweMessage(fields({ address: '0x123' }))).toThrow(/address/);
  });
});

describe('verifySiwe', () => {
  const good = buildSiweMessage(fields());
  const sig = personalSign(good, KEY);

  it('accepts a correct sign-in and returns the checksummed address', async () => {
    const r = await verify(good, sig);
    expect(r).toMatchObject({ ok: true, address: ADDRESS });
  });

  it('refuses a replayed nonce', async () => {
    const nonceCheck = nonceStore(['a1b2c3d4e5f6a7b8']);
    expect((await verify(good, sig, { nonceCheck })).ok).toBe(true);
    expect(await verify(good, sig, { nonceCheck })).toMatchObject({ ok: false, code: 'nonce_reused' });
  });

  it('refuses a nonce the server never issued', async () => {
    const r = await verify(good, sig, { nonceCheck: nonceStore(['zzzzzzzzzzzz']) });
    expect(r).toMatchObject({ ok: false, code: 'nonce_unknown' });
  });

  it('refuses a forged message (text changed after signing)', async () => {
    const forged = good.replace('Sign in to swarmgrad.', 'Sign in to swarmgrad!');
    const r = await verify(forged, sig);
    expect(r).toMatchObject({ ok: false, code: 'wrong_address' });
  });

  it('refuses a signature from another key than the message names', async () => {
    const other = generatePrivateKey();
    const r = await verify(good, personalSign(good, other));
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.code).toBe('wrong_address');
      expect(r.reason).toContain(addressFromPrivateKey(other));
    }
  });

  it('refuses garbage signatures', async () => {
    for (const s of ['0x', '0x1234', `0x${'00'.repeat(65)}`, `${sig.slice(0, 130)}05`, 'not hex']) {
      expect(await verify(good, s)).toMatchObject({ ok: false, code: 'bad_signature' });
    }
  });

  it('refuses an expired message, a message issued too long ago, and a message without expiry', async () => {
    expect(await verify(good, sig, { now: NOW + 600_000 })).toMatchObject({ ok: false, code: 'expired' });
    const old = buildSiweMessage(
      fields({ issuedAt: new Date(NOW - 2 * 86_400_000), expirationTime: new Date(NOW + 60_000) }),
    );
    expect(await verify(old, personalSign(old, KEY))).toMatchObject({ ok: false, code: 'expired' });
    const noExpiry = buildSiweMessage(fields({ expirationTime: undefined }));
    expect(await verify(noExpiry, personalSign(noExpiry, KEY))).toMatchObject({
      ok: false,
      code: 'missing_expiration',
    });
    expect((await verify(noExpiry, personalSign(noExpiry, KEY), { requireExpiration: false })).ok).toBe(true);
  });

  it('refuses a message not valid yet (not-before or issued in the future)', async () => {
    const nb = buildSiweMessage(fields({ notBefore: new Date(NOW + 300_000) }));
    expect(await verify(nb, personalSign(nb, KEY))).toMatchObject({ ok: false, code: 'not_yet_valid' });
    const future = buildSiweMessage(fields({ issuedAt: new Date(NOW + 120_000) }));
    expect(await verify(future, personalSign(future, KEY))).toMatchObject({ ok: false, code: 'not_yet_valid' });
    const skewed = buildSiweMessage(fields({ issuedAt: new Date(NOW + 30_000) }));
    expect((await verify(skewed, personalSign(skewed, KEY))).ok).toBe(true);
  });

  it('refuses a wrong domain, chain, URI or expected address', async () => {
    expect(await verify(good, sig, { expectedDomain: 'evil.test' })).toMatchObject({ ok: false, code: 'wrong_domain' });
    expect(await verify(good, sig, { expectedChainId: 5 })).toMatchObject({ ok: false, code: 'wrong_chain' });
    expect(await verify(good, sig, { expectedUri: 'http://swarmgrad.test:8080/other' })).toMatchObject({
      ok: false,
      code: 'wrong_uri',
    });
    expect((await verify(good, sig, { expectedUri: 'http://swarmgrad.test:8080/' })).ok).toBe(true);
    const someoneElse = addressFromPrivateKey(generatePrivateKey());
    expect(await verify(good, sig, { expectedAddress: someoneElse })).toMatchObject({
      ok: false,
      code: 'wrong_address',
    });
  });

  it('refuses a malformed message with the reason', async () => {
    const r = await verify(`${good}\nsurprise`, sig);
    expect(r).toMatchObject({ ok: false, code: 'malformed' });
  });

  it('does not burn the nonce when another check fails', async () => {
    const nonceCheck = nonceStore(['a1b2c3d4e5f6a7b8']);
    expect((await verify(good, personalSign(good, generatePrivateKey()), { nonceCheck })).ok).toBe(false);
    expect((await verify(good, sig, { nonceCheck })).ok).toBe(true);
  });
});

describe('worker challenge answer', () => {
  it('builds a SIWE answer that verifies against the challenge and the hello account', async () => {
    const key = generatePrivateKey();
    const challenge = 'c0ffee00c0ffee00c0ffee00';
    const auth = buildWorkerAuth({
      privateKey: key,
      domain: 'swarmgrad.test:8080',
      uri: 'ws://swarmgrad.test:8080/api/v1/worker',
      chainId: 1,
      challenge,
      now: new Date(NOW),
    });
    const r = await verify(auth.message, auth.signature, {
      expectedNonce: challenge,
      expectedAddress: auth.address,
      nonceCheck: nonceStore([challenge]),
    });
    expect(r).toMatchObject({ ok: true, address: addressFromPrivateKey(key) });
    const wrongChallenge = await verify(auth.message, auth.signature, {
      expectedNonce: 'otherchallenge00',
      nonceCheck: nonceStore([challenge]),
    });
    expect(wrongChallenge).toMatchObject({ ok: false, code: 'nonce_unknown' });
  });
});
