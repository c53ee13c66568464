import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Accounts, accountsMigrations, faucetAllowed, isAdminKey } from '../coordinator/accounts/index.js';
import type { Db } from '../coordinator/store/db.js';
import { runMigrations } from '../coordinator/store/migrate.js';
import {
  addressFromPrivateKey,
  buildSiweMessage,
  buildWorkerAuth,
  generatePrivateKey,
  personalSign,
} from '../shared/identity/index.js';
import { dropTestDb, openPooledTestDb, STORE_KINDS } from './helpers/stores.js';

/**
 * openTestDb for PGlite; for PostgreSQL the search_path also rides in the connection options so that every pooled
 * connection (including the one openDb used to create the schema) works inside the test schema.
 */
const DOMAIN = 'swarmgrad.test:8080';
const T0 = Date.parse('2026-03-01T12:00:00.000Z');

describe.each(STORE_KINDS)('accounts on %s', (kind) => {
  let db: Db & { schema?: string };
  let clock = T0;
  let accounts: Accounts;
  const key = generatePrivateKey();
  const address = addressFromPrivateKey(key);

  beforeAll(async () => {
    db = await openPooledTestDb(kind);
    await runMigrations(db, accountsMigrations);
    accounts = new Accounts(db, { domain: DOMAIN, chainId: 1, now: () => clock });
  });
  afterAll(async () => {
    await dropTestDb(db);
  });

  const signedSignIn = async (signer = key, over: Partial<Parameters<typeof buildSiweMessage>[0]> = {}) => {
    const { nonce } = await accounts.issueNonce();
    const message = buildSiweMessage({
      domain: DOMAIN,
      address: addressFromPrivateKey(signer),
      statement: 'Sign in to swarmgrad.',
      uri: `http://${DOMAIN}/`,
      version: '1',
      chainId: 1,
      nonce,
      issuedAt: new Date(clock),
      expirationTime: new Date(clock + 600_000),
      ...over,
    });
    return { message, signature: personalSign(message, signer) };
  };

  it('signs in with a fresh nonce and authenticates the session token', async () => {
    const r = await accounts.signIn(await signedSignIn());
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.address).toBe(address);
    expect(r.token).toMatch(/^sgs_[A-Za-z0-9_-]{43}$/);
    expect(await accounts.authenticateSession(r.token)).toMatchObject({ address });
    expect(await accounts.authenticateBearer(`Bearer ${r.token}`)).toMatchObject({ address, via: 'session' });
    expect(await accounts.authenticateSession(`${r.token.slice(0, -1)}x`)).toBeNull();
  });

  it('stores only hashes of session tokens', async () => {
    const r = await accounts.signIn(await signedSignIn());
    if (!r.ok) throw new Error(r.reason);
    const rows = await db.query<{ token_hash: string }>('SELECT token_hash FROM auth_sessions');
    expect(rows.rows.some((row) => row.token_hash === r.token)).toBe(false);
    expect(rows.rows.every((row) => /^[0-9a-f]{64}$/.test(row.token_hash))).toBe(true);
  });

  it('refuses a replayed sign-in (the nonce is single use), even when replayed concurrently', async () => {
    const signed = await signedSignIn();
    const results = await Promise.all(Array.from({ length: 6 }, () => accounts.signIn(signed)));
    expect(results.filter((r) => r.ok)).toHaveLength(1);
    for (const r of results.filter((x) => !x.ok)) expect(r).toMatchObject({ code: 'nonce_reused', httpStatus: 401 });
  });

  it('refuses a nonce it never issued, and an expired nonce', async () => {
    const forgedNonce = buildSiweMessage({
      domain: DOMAIN,
      address,
      uri: `http://${DOMAIN}/`,
      version: '1',
      chainId: 1,
      nonce: 'abcdefabcdefabcdef',
      issuedAt: new Date(clock),
      expirationTime: new Date(clock + 600_000),
    });
    expect(await accounts.signIn({ message: forgedNonce, signature: personalSign(forgedNonce, key) })).toMatchObject({
      ok: false,
      code: 'nonce_unknown',
    });
    const signed = await signedSignIn(key, { expirationTime: new Date(clock + 3_600_000) });
    clock += 10 * 60_000 + 1_000;
    try {
      expect(await accounts.signIn(signed)).toMatchObject({ ok: false, code: 'nonce_expired' });
    } finally {
      clock = T0;
    }
  });

  it('refuses forged, foreign, wrong-domain, wrong-chain and expired messages without burning the nonce', async () => {
    const good = await signedSignIn();
    const other = generatePrivateKey();
    expect(
      await accounts.signIn({ message: good.message, signature: personalSign(good.message, other) }),
    ).toMatchObject({
      ok: false,
      code: 'wrong_address',
    });
    const tampered = good.message.replace('Sign in to swarmgrad.', 'Sign in to swarmgrad!');
    expect(await accounts.signIn({ message: tampered, signature: good.signature })).toMatchObject({
      ok: false,
      code: 'wrong_address',
    });
    expect(await accounts.signIn(await signedSignIn(key, { domain: 'evil.test' }))).toMatchObject({
      code: 'wrong_domain',
    });
    expect(await accounts.signIn(await signedSignIn(key, { chainId: 5 }))).toMatchObject({ code: 'wrong_chain' });
    expect(
      await accounts.signIn(
        await signedSignIn(key, { issuedAt: new Date(clock - 60_000), expirationTime: new Date(clock - 1) }),
      ),
    ).toMatchObject({ code: 'expired' });
    expect(await accounts.signIn({ message: 'hello', signature: '0x00' })).toMatchObject({
      code: 'malformed',
      httpStatus: 400,
    });
    // None of the failures consumed the good message's nonce.
    expect((await accounts.signIn(good)).ok).toBe(true);
  });

  it('expires and revokes sessions', async () => {
    const r = await accounts.signIn(await signedSignIn());
    if (!r.ok) throw new Error(r.reason);
    clock = r.expiresAt;
    expect(await accounts.authenticateSession(r.token)).toBeNull();
    clock = T0;
    expect(await accounts.authenticateSession(r.token)).not.toBeNull();
    expect(await accounts.signOut(r.token)).toBe(true);
    expect(await accounts.authenticateSession(r.token)).toBeNull();
    expect(await accounts.signOut(r.token)).toBe(false);
  });

  it('creates, lists, authenticates and revokes API keys per account', async () => {
    const created = await accounts.createApiKey(address, ' ci pipeline ');
    expect(created.key).toMatch(/^sgk_[A-Za-z0-9_-]{43}$/);
    expect(created.label).toBe('ci pipeline');
    expect(await accounts.authenticateApiKey(created.key)).toEqual({ address, keyId: created.id });
    expect(await accounts.authenticateBearer(`Bearer ${created.key}`)).toMatchObject({ address, via: 'api_key' });
    const listed = await accounts.listApiKeys(address);
    const mine = listed.find((k) => k.id === created.id)!;
    expect(mine.hint).toBe(created.key.slice(0, 10));
    expect(mine.lastUsedAt).toBe(clock);
    expect(JSON.stringify(listed)).not.toContain(created.key);
    const stored = await db.query('SELECT * FROM api_keys');
    expect(JSON.stringify(stored.rows)).not.toContain(created.key);

    const stranger = addressFromPrivateKey(generatePrivateKey());
    expect(await accounts.revokeApiKey(stranger, created.id)).toBe(false);
    expect(await accounts.authenticateApiKey(created.key)).not.toBeNull();
    expect(await accounts.revokeApiKey(address, created.id)).toBe(true);
    expect(await accounts.authenticateApiKey(created.key)).toBeNull();
    expect(await accounts.authenticateApiKey('sgk_nope')).toBeNull();
    expect(await accounts.authenticateApiKey(undefined)).toBeNull();
    await expect(accounts.createApiKey(address, '')).rejects.toMatchObject({ code: 'invalid_label', httpStatus: 400 });
    await expect(accounts.createApiKey('0x12', 'x')).rejects.toMatchObject({ code: 'invalid_address' });
  });

  it('caps active API keys per account', async () => {
    const small = new Accounts(db, { domain: DOMAIN, maxApiKeysPerAccount: 2, now: () => clock });
    const owner = addressFromPrivateKey(generatePrivateKey());
    await small.createApiKey(owner, 'a');
    const b = await small.createApiKey(owner, 'b');
    await expect(small.createApiKey(owner, 'c')).rejects.toMatchObject({ code: 'too_many_keys' });
    await small.revokeApiKey(owner, b.id);
    await expect(small.createApiKey(owner, 'c')).resolves.toMatchObject({ label: 'c' });
  });

  describe('worker challenge', () => {
    const answer = async (workerKey: string, over: { challenge?: string; domain?: string; now?: Date } = {}) => {
      const { challenge } = await accounts.issueWorkerChallenge();
      return {
        challenge,
        ...buildWorkerAuth({
          privateKey: workerKey as `0x${string}`,
          domain: over.domain ?? DOMAIN,
          uri: `ws://${DOMAIN}/api/v1/worker`,
          chainId: 1,
          challenge: over.challenge ?? challenge,
          now: over.now ?? new Date(clock),
        }),
      };
    };

    it('accepts a signed answer once, for the address that signed it', async () => {
      const a = await answer(key);
      expect(await accounts.verifyWorkerChallenge(a)).toMatchObject({ ok: true, address });
      expect(await accounts.verifyWorkerChallenge(a)).toMatchObject({ ok: false, code: 'nonce_reused' });
    });

    it('lets one account run many workers, each with its own challenge', async () => {
      const answers = await Promise.all([answer(key), answer(key), answer(key)]);
      const results = await Promise.all(answers.map((a) => accounts.verifyWorkerChallenge(a)));
      expect(results.every((r) => r.ok)).toBe(true);
    });

    it('refuses an answer for another account, a bound challenge mismatch, a sign-in nonce and a stale answer', async () => {
      const a = await answer(key);
      const stranger = addressFromPrivateKey(generatePrivateKey());
      expect(await accounts.verifyWorkerChallenge({ ...a, address: stranger })).toMatchObject({
        ok: false,
        code: 'wrong_address',
      });
      expect(await accounts.verifyWorkerChallenge({ ...a, challenge: 'ffffffffffffffff' })).toMatchObject({
        code: 'nonce_unknown',
      });
      const { nonce } = await accounts.issueNonce();
      const withSignInNonce = await answer(key, { challenge: nonce });
      expect(await accounts.verifyWorkerChallenge(withSignInNonce)).toMatchObject({ code: 'nonce_unknown' });
      const b = await answer(key);
      clock += 6 * 60_000;
      try {
        expect((await accounts.verifyWorkerChallenge(b)).ok).toBe(false);
      } finally {
        clock = T0;
      }
      // Still usable by its owner after the refusals above.
      expect((await accounts.verifyWorkerChallenge(a)).ok).toBe(true);
    });

    it('plugs into the gateway as a hello authenticator', async () => {
      const hello = accounts.helloAuthenticator();
      const a = await answer(key);
      expect(
        await hello({ account: address.toLowerCase(), auth: { message: a.message, signature: a.signature } }),
      ).toEqual({
        account: address,
        verified: true,
      });
      expect(await hello({ account: address })).toMatchObject({ error: expect.stringContaining('hello.auth') });
      const forged = await answer(generatePrivateKey());
      const r = await hello({ account: address, auth: { message: forged.message, signature: forged.signature } });
      expect(r).toMatchObject({ error: expect.stringContaining('wrong_address') });
      expect(await accounts.helloAuthenticator({ allowUnauthenticated: true })({ account: 'dev' })).toEqual({
        account: 'dev',
        verified: false,
      });
    });
  });
});

describe('faucet and admin permission', () => {
  it('allows the faucet in dev mode or for admins only', () => {
    expect(faucetAllowed({ devMode: true, isAdmin: false })).toBe(true);
    expect(faucetAllowed({ devMode: false, isAdmin: true })).toBe(true);
    expect(faucetAllowed({ devMode: false, isAdmin: false })).toBe(false);
  });

  it('matches admin keys exactly, never with none configured', () => {
    expect(isAdminKey('s3cret-admin', ['other', 's3cret-admin'])).toBe(true);
    expect(isAdminKey('s3cret-admin ', ['s3cret-admin'])).toBe(false);
    expect(isAdminKey(undefined, ['s3cret-admin'])).toBe(false);
    expect(isAdminKey('', [''])).toBe(false);
    expect(isAdminKey('anything', [])).toBe(false);
  });
});
