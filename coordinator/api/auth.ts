import { Type } from '@sinclair/typebox';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { isAddress, normalizeAddress } from '../../shared/identity/address.js';
import { ApiError as ApiErrorSchema } from '../../shared/protocol/job-spec.js';
import {
  ApiKeyInput,
  ApiKeyView,
  CreatedApiKeyView,
  NonceView,
  SessionView,
  SignInInput,
  WhoAmI,
} from '../../shared/protocol/market-api.js';
import type { ChallengeMsg, HelloMsg } from '../../shared/protocol/messages.js';
import { type Accounts, AccountsError, isAdminKey, type Principal } from '../accounts/index.js';
import { ApiError } from './errors.js';

export const SIGN_IN_STATEMENT = 'Sign in to swarmgrad.';

/** The OpenAPI security requirement of routes that take `Authorization: Bearer <API key or session token>`. */
export const BEARER = [{ bearer: [] }];

const MISSING =
  'this route needs an API key: send Authorization: Bearer <API key or session token> ' +
  '(sign in at POST /api/v1/auth/signin, then create a key at POST /api/v1/keys)';

/**
 * Who a request comes from: `Authorization: Bearer <token>` with a session token (sgs_…), an API key (sgk_…) or an
 * admin key (ADMIN_KEYS). Resolved once per request.
 */
export class RequestAuth {
  private readonly cache = new WeakMap<FastifyRequest, Promise<Principal | null>>();

  constructor(
    readonly accounts: Accounts,
    private readonly adminKeys: readonly string[],
  ) {}

  private token(req: FastifyRequest): string | undefined {
    const h = req.headers.authorization;
    if (typeof h !== 'string') return undefined;
    const t = h.startsWith('Bearer ') ? h.slice(7).trim() : h.trim();
    return t.length > 0 ? t : undefined;
  }

  principal(req: FastifyRequest): Promise<Principal | null> {
    let p = this.cache.get(req);
    if (!p) {
      p = this.accounts.authenticateBearer(this.token(req));
      this.cache.set(req, p);
    }
    return p;
  }

  /** The caller's account, or 401 with what to send. */
  async require(req: FastifyRequest): Promise<Principal> {
    const p = await this.principal(req);
    if (p) return p;
    if (!this.token(req)) throw new ApiError(401, MISSING, '/headers/authorization');
    throw new ApiError(
      401,
      'the API key or session token is invalid, expired or revoked (sign in again or create a new key)',
      '/headers/authorization',
    );
  }

  /** A signed-in session (not an API key): managing keys needs the wallet's signature behind it. */
  async requireSession(req: FastifyRequest): Promise<Principal & { token: string }> {
    const p = await this.require(req);
    if (p.via !== 'session') {
      throw new ApiError(
        403,
        'managing API keys needs a signed-in session token, not an API key',
        '/headers/authorization',
      );
    }
    return { ...p, token: this.token(req)! };
  }

  isAdmin(req: FastifyRequest): boolean {
    return isAdminKey(this.token(req), this.adminKeys);
  }
}

function accountsError(err: unknown): never {
  if (err instanceof AccountsError)
    throw new ApiError(err.httpStatus, err.message, err.field ? `/${err.field}` : undefined);
  throw err;
}

/**
 * Sign-In with Ethereum (EIP-4361) and API keys:
 *   GET  /api/v1/auth/nonce    a single-use nonce and the domain / chain id the message must carry
 *   POST /api/v1/auth/signin   {message, signature} -> {token, address, expiresAt}
 *   POST /api/v1/auth/signout  ends the session of the bearer token
 *   GET  /api/v1/auth/me       who the bearer is
 *   POST/GET/DELETE /api/v1/keys   API keys of the signed-in account (session required)
 */
export async function authApi(app: FastifyInstance, opts: { auth: RequestAuth }): Promise<void> {
  const { auth } = opts;
  const accounts = auth.accounts;
  const errors = { 400: ApiErrorSchema, 401: ApiErrorSchema, 403: ApiErrorSchema };

  app.get(
    '/api/v1/auth/nonce',
    { schema: { tags: ['auth'], summary: 'A fresh sign-in nonce (single use)', response: { 200: NonceView } } },
    async (req) => {
      const { nonce, expiresAt } = await accounts.issueNonce();
      const { domain, chainId } = accounts.siweParams;
      return { nonce, expiresAt, domain, chainId, uri: `${req.protocol}://${domain}/`, statement: SIGN_IN_STATEMENT };
    },
  );

  app.post(
    '/api/v1/auth/signin',
    {
      schema: {
        tags: ['auth'],
        summary: 'Sign in with a signed EIP-4361 message; returns a session token',
        body: SignInInput,
        response: { 200: SessionView, ...errors },
      },
    },
    async (req) => {
      const r = await accounts.signIn(req.body as SignInInput);
      if (!r.ok) {
        const field = r.code === 'bad_signature' || r.code === 'wrong_address' ? '/signature' : '/message';
        throw new ApiError(r.httpStatus, `sign-in refused (${r.code}): ${r.reason}`, field);
      }
      return { token: r.token, address: r.address, expiresAt: r.expiresAt };
    },
  );

  app.post(
    '/api/v1/auth/signout',
    {
      schema: {
        tags: ['auth'],
        summary: 'End the session of the bearer token',
        security: BEARER,
        response: { 200: Type.Object({ ok: Type.Boolean() }), ...errors },
      },
    },
    async (req) => {
      const s = await auth.requireSession(req);
      return { ok: await accounts.signOut(s.token) };
    },
  );

  app.get(
    '/api/v1/auth/me',
    {
      schema: {
        tags: ['auth'],
        summary: 'The account behind the bearer token',
        security: BEARER,
        response: { 200: WhoAmI, ...errors },
      },
    },
    async (req) => {
      const p = await auth.require(req);
      return { address: p.address, via: p.via };
    },
  );

  app.post(
    '/api/v1/keys',
    {
      schema: {
        tags: ['auth'],
        summary: 'Create an API key (signed-in session required); the key is shown once',
        security: BEARER,
        body: ApiKeyInput,
        response: { 201: CreatedApiKeyView, ...errors, 409: ApiErrorSchema },
      },
    },
    async (req, reply) => {
      const s = await auth.requireSession(req);
      const { label } = req.body as { label: string };
      const key = await accounts.createApiKey(s.address, label).catch(accountsError);
      return reply.status(201).send(key);
    },
  );

  app.get(
    '/api/v1/keys',
    {
      schema: {
        tags: ['auth'],
        summary: 'API keys of the signed-in account (without the keys themselves)',
        security: BEARER,
        response: { 200: Type.Array(ApiKeyView), ...errors },
      },
    },
    async (req) => {
      const s = await auth.requireSession(req);
      return accounts.listApiKeys(s.address);
    },
  );

  app.delete(
    '/api/v1/keys/:id',
    {
      schema: {
        tags: ['auth'],
        summary: 'Revoke one of your API keys',
        security: BEARER,
        params: Type.Object({ id: Type.String({ maxLength: 64 }) }),
        response: { 200: Type.Object({ revoked: Type.Boolean() }), ...errors, 404: ApiErrorSchema },
      },
    },
    async (req) => {
      const s = await auth.requireSession(req);
      const { id } = req.params as { id: string };
      if (!(await accounts.revokeApiKey(s.address, id))) throw new ApiError(404, `you have no active key ${id}`, '/id');
      return { revoked: true };
    },
  );
}

/**
 * The worker gateway's side of accounts: every connection gets a single-use worker challenge (a SIWE nonce for this
 * domain and chain), and hello must answer it with a message signed by hello.account. A failed answer is refused
 * (the gateway closes with 4401) before the worker can lease anything. With requireWorkerAuth off (development), a
 * hello without auth is admitted under the account it names, remembered as unverified and never credited.
 * hello.payTo (verified hellos only) routes credit, nothing else.
 */
export function workerGatewayAuth(opts: {
  accounts: Accounts;
  requireWorkerAuth: boolean;
  markUnverified: (workerId: string, account: string) => Promise<void>;
  /** Remembers the credit payee a connection named (hello.payTo); nothing but its credit follows it. */
  markPayee: (workerId: string, payTo: string) => Promise<void>;
}): {
  issueChallenge: (host: string) => Promise<ChallengeMsg>;
  authenticate: (
    hello: HelloMsg,
    challenge: ChallengeMsg,
    remote: string,
    workerId: string,
  ) => Promise<{ account: string } | { error: string }>;
} {
  const { accounts } = opts;
  return {
    issueChallenge: async () => {
      const c = await accounts.issueWorkerChallenge();
      return {
        type: 'challenge',
        nonce: c.challenge,
        domain: c.domain,
        uri: `ws://${c.domain}/api/v1/worker`,
        chainId: c.chainId,
        issuedAt: new Date().toISOString(),
        expiresAt: new Date(c.expiresAt).toISOString(),
      };
    },
    authenticate: async (hello, challenge, _remote, workerId) => {
      if (!hello.auth) {
        if (opts.requireWorkerAuth) {
          return {
            error:
              'unauthorized: hello.auth must answer the challenge (an EIP-4361 message over its nonce, signed by ' +
              'hello.account with personal_sign)',
          };
        }
        await opts.markUnverified(workerId, hello.account);
        return { account: hello.account };
      }
      const r = await accounts.verifyWorkerChallenge({
        address: hello.account,
        message: hello.auth.message,
        signature: hello.auth.signature,
        challenge: challenge.nonce,
      });
      if (!r.ok) return { error: `unauthorized (${r.code}): ${r.reason}` };
      // The account is the key that signed: trust, reliability, forfeits, reveals and audits follow it. payTo only
      // routes this connection's credit (a widget's key pays the embedding site); it never lets a connection act as
      // the paid account.
      if (hello.payTo !== undefined) {
        if (!isAddress(hello.payTo)) return { error: 'unauthorized: hello.payTo must be a 0x address' };
        await opts.markPayee(workerId, normalizeAddress(hello.payTo));
      }
      return { account: r.address };
    },
  };
}
