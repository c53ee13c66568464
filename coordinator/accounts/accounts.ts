import { type AccountLinkResult, verifyAccountLink } from '../../shared/identity/account-link.js';
import { type Address, isAddress, normalizeAddress } from '../../shared/identity/address.js';
import { type SiweErrorCode, type SiweResult, verifySiwe } from '../../shared/identity/siwe.js';
import type { Db } from '../store/db.js';
import { API_KEY_PREFIX, hashSecret, newId, newNonce, newSecret, SESSION_PREFIX, secretEquals } from './secrets.js';

export interface AccountsOptions {
  /** The authority (host[:port]) browsers and workers reach the coordinator on; SIWE messages must name it. */
  domain: string;
  /** EIP-155 chain id every message must carry. Default 1. */
  chainId?: number;
  /**
   * When set, a message's URI must equal it, or start with it when it ends with '/'. Unset: any http, https, ws or
   * wss URI whose authority is `domain` (what the nonce and challenge routes hand out).
   */
  uri?: string;
  sessionTtlMs?: number;
  nonceTtlMs?: number;
  challengeTtlMs?: number;
  maxApiKeysPerAccount?: number;
  now?: () => number;
}

export type SignInResult =
  | { ok: true; token: string; address: Address; expiresAt: number }
  | { ok: false; code: SiweErrorCode; reason: string; httpStatus: 400 | 401 };

export interface ApiKeyInfo {
  id: string;
  label: string;
  /** The first characters of the key, to recognise it in a list. */
  hint: string;
  createdAt: number;
  lastUsedAt: number | null;
  revokedAt: number | null;
}

export interface CreatedApiKey extends ApiKeyInfo {
  /** The plaintext key: shown once, never stored. */
  key: string;
}

export interface Principal {
  address: Address;
  via: 'session' | 'api_key';
  keyId?: string;
}

/** Shape of the worker hello fields the authenticator reads (matches shared/protocol HelloMsg). */
export interface HelloLike {
  account: string;
  auth?: { message: string; signature: string };
}

export class AccountsError extends Error {
  constructor(
    readonly code: string,
    readonly httpStatus: number,
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = 'AccountsError';
  }
}

type NonceVerdict = 'ok' | 'used' | 'unknown' | 'expired';
/** Nonces of one purpose never answer for another: a sign-in nonce cannot carry a link, nor the reverse. */
type NoncePurpose = 'siwe' | 'worker' | 'link';

/** Who may mint credit with the faucet: anyone in dev mode, otherwise only a request carrying an admin key. */
/** Whether `uri` is an http(s) or ws(s) URI on `domain` (host[:port], compared as URL hosts: default ports dropped). */
export function uriOnDomain(uri: string, domain: string): boolean {
  let u: URL;
  let d: URL;
  try {
    u = new URL(uri);
    d = new URL(`${u.protocol === 'https:' || u.protocol === 'wss:' ? 'https' : 'http'}://${domain}`);
  } catch {
    return false;
  }
  if (!['http:', 'https:', 'ws:', 'wss:'].includes(u.protocol) || u.username || u.password) return false;
  return u.host.toLowerCase() === d.host.toLowerCase();
}

export function faucetAllowed(opts: { devMode: boolean; isAdmin: boolean }): boolean {
  return opts.devMode || opts.isAdmin;
}

/** Constant-time check of a presented admin key against the configured ones (none configured: never admin). */
export function isAdminKey(presented: string | undefined, configured: readonly string[]): boolean {
  if (!presented) return false;
  let match = false;
  for (const key of configured) if (key.length > 0 && secretEquals(presented, key)) match = true;
  return match;
}

const SIWE_HTTP: Partial<Record<SiweErrorCode, 400>> = { malformed: 400 };

/**
 * Sign-in with Ethereum sessions, API keys and worker challenges on top of one Db (PGlite or PostgreSQL).
 * Nonces are single use even under concurrent sign-ins: consuming one is a conditional UPDATE that only one
 * transaction can win.
 */
export class Accounts {
  private readonly now: () => number;
  private readonly chainId: number;
  private readonly sessionTtlMs: number;
  private readonly nonceTtlMs: number;
  private readonly challengeTtlMs: number;
  private readonly maxKeys: number;

  constructor(
    private readonly db: Db,
    private readonly opts: AccountsOptions,
  ) {
    this.now = opts.now ?? Date.now;
    this.chainId = opts.chainId ?? 1;
    this.sessionTtlMs = opts.sessionTtlMs ?? 7 * 86_400_000;
    this.nonceTtlMs = opts.nonceTtlMs ?? 10 * 60_000;
    this.challengeTtlMs = opts.challengeTtlMs ?? 5 * 60_000;
    this.maxKeys = opts.maxApiKeysPerAccount ?? 100;
  }

  /** What a client needs to build its SIWE message. */
  get siweParams(): { domain: string; chainId: number; uri?: string } {
    return { domain: this.opts.domain, chainId: this.chainId, uri: this.opts.uri };
  }

  /** A fresh sign-in nonce (GET /api/v1/auth/nonce). */
  async issueNonce(): Promise<{ nonce: string; expiresAt: number }> {
    return this.insertNonce('siwe', this.nonceTtlMs);
  }

  /** A fresh worker challenge: the nonce of the SIWE message the worker signs into hello.auth. */
  async issueWorkerChallenge(): Promise<{ challenge: string; expiresAt: number; domain: string; chainId: number }> {
    const { nonce, expiresAt } = await this.insertNonce('worker', this.challengeTtlMs);
    return { challenge: nonce, expiresAt, domain: this.opts.domain, chainId: this.chainId };
  }

  /** A fresh account-link nonce (GET /api/v1/accounts/link-nonce); valid as long as a sign-in nonce. */
  async issueLinkNonce(): Promise<{ nonce: string; expiresAt: number }> {
    return this.insertNonce('link', this.nonceTtlMs);
  }

  /**
   * Checks a signed account-link message (shared/identity/account-link.ts): this domain, chain and URI, within
   * its time window, From's and To's personal_sign signatures, and finally a link nonce, consumed once.
   */
  async verifyAccountLink(input: {
    message: string;
    localSignature: string;
    walletSignature: string;
  }): Promise<AccountLinkResult> {
    return verifyAccountLink({
      ...input,
      expectedDomain: this.opts.domain,
      expectedChainId: this.chainId,
      expectedUri: this.opts.uri ?? ((uri: string) => uriOnDomain(uri, this.opts.domain)),
      now: this.now(),
      maxAgeMs: this.nonceTtlMs + 60_000,
      nonceCheck: (nonce, msg) => this.consumeNonce(nonce, 'link', msg.from),
    });
  }

  /** Verifies a signed SIWE message, consumes its nonce and opens a session. */
  async signIn(input: { message: string; signature: string }): Promise<SignInResult> {
    const r = await this.verify(input.message, input.signature, 'siwe', {});
    if (!r.ok) return { ...r, httpStatus: SIWE_HTTP[r.code] ?? 401 };
    const token = newSecret(SESSION_PREFIX);
    const now = this.now();
    const expiresAt = now + this.sessionTtlMs;
    await this.db.query(
      'INSERT INTO auth_sessions (token_hash, address, created_at, expires_at) VALUES ($1, $2, $3, $4)',
      [hashSecret(token), r.address, now, expiresAt],
    );
    return { ok: true, token, address: r.address, expiresAt };
  }

  async authenticateSession(token: string | undefined): Promise<{ address: Address; expiresAt: number } | null> {
    if (typeof token !== 'string' || !token.startsWith(SESSION_PREFIX)) return null;
    const r = await this.db.query<{ address: Address; expires_at: number }>(
      'SELECT address, expires_at FROM auth_sessions WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > $2',
      [hashSecret(token), this.now()],
    );
    return r.rows.length ? { address: r.rows[0].address, expiresAt: Number(r.rows[0].expires_at) } : null;
  }

  async signOut(token: string): Promise<boolean> {
    const r = await this.db.query(
      'UPDATE auth_sessions SET revoked_at = $2 WHERE token_hash = $1 AND revoked_at IS NULL',
      [hashSecret(token), this.now()],
    );
    return r.rowCount > 0;
  }

  /** A new API key for a signed-in account; the plaintext is in the result only. */
  async createApiKey(address: string, label: string): Promise<CreatedApiKey> {
    const owner = this.address(address);
    if (typeof label !== 'string' || label.trim().length === 0 || label.length > 100) {
      throw new AccountsError('invalid_label', 400, 'label must be 1 to 100 characters', 'label');
    }
    const key = newSecret(API_KEY_PREFIX);
    const info: ApiKeyInfo = {
      id: newId('key_'),
      label: label.trim(),
      hint: key.slice(0, API_KEY_PREFIX.length + 6),
      createdAt: this.now(),
      lastUsedAt: null,
      revokedAt: null,
    };
    await this.db.tx(async (q) => {
      // Serialise key creation per account so the limit holds under concurrent requests.
      await q.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`api_keys:${owner}`]);
      const n = await q.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM api_keys WHERE address = $1 AND revoked_at IS NULL',
        [owner],
      );
      if (Number(n.rows[0].n) >= this.maxKeys) {
        throw new AccountsError('too_many_keys', 409, `an account may hold ${this.maxKeys} active API keys`);
      }
      await q.query(
        'INSERT INTO api_keys (id, address, label, key_hash, hint, created_at) VALUES ($1, $2, $3, $4, $5, $6)',
        [info.id, owner, info.label, hashSecret(key), info.hint, info.createdAt],
      );
    });
    return { ...info, key };
  }

  async listApiKeys(address: string): Promise<ApiKeyInfo[]> {
    const r = await this.db.query(
      `SELECT id, label, hint, created_at, last_used_at, revoked_at FROM api_keys WHERE address = $1
       ORDER BY created_at, id`,
      [this.address(address)],
    );
    return r.rows.map((row) => ({
      id: String(row.id),
      label: String(row.label),
      hint: String(row.hint),
      createdAt: Number(row.created_at),
      lastUsedAt: row.last_used_at === null ? null : Number(row.last_used_at),
      revokedAt: row.revoked_at === null ? null : Number(row.revoked_at),
    }));
  }

  /** Revokes one of the account's own keys; false when it has no such active key. */
  async revokeApiKey(address: string, keyId: string): Promise<boolean> {
    const r = await this.db.query(
      'UPDATE api_keys SET revoked_at = $3 WHERE id = $1 AND address = $2 AND revoked_at IS NULL',
      [keyId, this.address(address), this.now()],
    );
    return r.rowCount > 0;
  }

  async authenticateApiKey(key: string | undefined): Promise<{ address: Address; keyId: string } | null> {
    if (typeof key !== 'string' || !key.startsWith(API_KEY_PREFIX) || key.length > 200) return null;
    const now = this.now();
    const r = await this.db.query<{ id: string; address: Address; last_used_at: number | null }>(
      'SELECT id, address, last_used_at FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL',
      [hashSecret(key)],
    );
    if (r.rows.length === 0) return null;
    const row = r.rows[0];
    // last_used_at at minute resolution: one write per key per minute, not one per request.
    if (row.last_used_at === null || Number(row.last_used_at) < now - 60_000) {
      await this.db.query('UPDATE api_keys SET last_used_at = $2 WHERE id = $1', [row.id, now]);
    }
    return { address: row.address, keyId: row.id };
  }

  /** `Authorization: Bearer <token>`: a session token (sgs_…) or an API key (sgk_…). */
  async authenticateBearer(header: string | undefined): Promise<Principal | null> {
    const token = header?.startsWith('Bearer ') ? header.slice(7).trim() : header?.trim();
    if (!token) return null;
    if (token.startsWith(SESSION_PREFIX)) {
      const s = await this.authenticateSession(token);
      return s ? { address: s.address, via: 'session' } : null;
    }
    const k = await this.authenticateApiKey(token);
    return k ? { address: k.address, via: 'api_key', keyId: k.keyId } : null;
  }

  /**
   * Checks a worker's hello.auth: a SIWE message for this domain and chain, signed by `address` (the hello's
   * account), whose nonce is an unused worker challenge (and equals `challenge` when the caller bound one to the
   * connection). The challenge is consumed on success.
   */
  async verifyWorkerChallenge(input: {
    address: string;
    message: string;
    signature: string;
    challenge?: string;
  }): Promise<SiweResult> {
    if (!isAddress(input.address)) {
      return { ok: false, code: 'wrong_address', reason: 'hello.account must be a 0x address' };
    }
    return this.verify(input.message, input.signature, 'worker', {
      expectedAddress: input.address,
      expectedNonce: input.challenge,
    });
  }

  /**
   * The function the worker gateway calls on hello (GatewayOptions.authenticate): returns the proven, checksummed
   * account, or an error that the gateway sends before closing with 4401. With allowUnauthenticated (dev only) a
   * hello without auth passes, marked verified: false, and must not be credited.
   */
  helloAuthenticator(opts: { allowUnauthenticated?: boolean } = {}) {
    return async (hello: HelloLike): Promise<{ account: string; verified: boolean } | { error: string }> => {
      if (!hello.auth) {
        if (opts.allowUnauthenticated) return { account: hello.account, verified: false };
        return {
          error: 'unauthorized: hello.auth must answer a worker challenge (POST /api/v1/auth/worker-challenge)',
        };
      }
      const r = await this.verifyWorkerChallenge({ address: hello.account, ...hello.auth });
      return r.ok ? { account: r.address, verified: true } : { error: `unauthorized (${r.code}): ${r.reason}` };
    };
  }

  /** Deletes nonces and sessions past their expiry (run it now and then). */
  async purgeExpired(): Promise<{ nonces: number; sessions: number }> {
    const now = this.now();
    const n = await this.db.query('DELETE FROM auth_nonces WHERE expires_at < $1', [now - 86_400_000]);
    const s = await this.db.query('DELETE FROM auth_sessions WHERE expires_at < $1', [now]);
    return { nonces: n.rowCount, sessions: s.rowCount };
  }

  private address(value: string): Address {
    if (!isAddress(value)) throw new AccountsError('invalid_address', 400, 'address must be a 0x address', 'address');
    return normalizeAddress(value);
  }

  private async insertNonce(purpose: NoncePurpose, ttlMs: number): Promise<{ nonce: string; expiresAt: number }> {
    const nonce = newNonce();
    const now = this.now();
    const expiresAt = now + ttlMs;
    await this.db.query('INSERT INTO auth_nonces (nonce, purpose, created_at, expires_at) VALUES ($1, $2, $3, $4)', [
      nonce,
      purpose,
      now,
      expiresAt,
    ]);
    return { nonce, expiresAt };
  }

  private async verify(
    message: string,
    signature: string,
    purpose: 'siwe' | 'worker',
    extra: { expectedAddress?: string; expectedNonce?: string },
  ): Promise<SiweResult> {
    if (typeof message !== 'string' || typeof signature !== 'string') {
      return { ok: false, code: 'malformed', reason: 'message and signature must be strings' };
    }
    return verifySiwe({
      message,
      signature,
      expectedDomain: this.opts.domain,
      expectedChainId: this.chainId,
      expectedUri: this.opts.uri ?? ((uri: string) => uriOnDomain(uri, this.opts.domain)),
      ...extra,
      now: this.now(),
      maxAgeMs: purpose === 'worker' ? this.challengeTtlMs + 60_000 : this.nonceTtlMs + 60_000,
      nonceCheck: (nonce, msg) => this.consumeNonce(nonce, purpose, msg.address),
    });
  }

  private async consumeNonce(nonce: string, purpose: NoncePurpose, by: string): Promise<NonceVerdict> {
    const now = this.now();
    const r = await this.db.query(
      `UPDATE auth_nonces SET used_at = $3, used_by = $4
       WHERE nonce = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3`,
      [nonce, purpose, now, by],
    );
    if (r.rowCount > 0) return 'ok';
    const seen = await this.db.query<{ used_at: number | null; purpose: string }>(
      'SELECT used_at, purpose FROM auth_nonces WHERE nonce = $1',
      [nonce],
    );
    const row = seen.rows[0];
    if (!row || row.purpose !== purpose) return 'unknown';
    return row.used_at !== null ? 'used' : 'expired';
  }
}
