import rateLimit from '@fastify/rate-limit';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import type { RequestAuth } from './auth.js';
import { ApiError } from './errors.js';

const MINUTE = 60_000;

/**
 * Request rate limits, checked in onRequest (before a body is read): per network address (every route, WebSocket
 * upgrades included) and per authenticated account (a bearer token's account, over all its addresses). 0 turns one
 * off. Over the limit: 429 with how long to wait. Addresses are only one of the two keys: an account that spreads over
 * many addresses is still counted once.
 */
async function limits(
  app: FastifyInstance,
  opts: { perAddress: number; perAccount: number; auth: RequestAuth },
): Promise<void> {
  const tooMany = (what: string) => (_req: FastifyRequest, ctx: { after: string; max: number }) =>
    new ApiError(429, `too many requests from this ${what} (limit ${ctx.max} a minute); retry in ${ctx.after}`);
  await app.register(rateLimit, {
    global: opts.perAddress > 0,
    hook: 'onRequest',
    max: opts.perAddress > 0 ? opts.perAddress : 1,
    timeWindow: MINUTE,
    errorResponseBuilder: tooMany('network address'),
  });
  if (opts.perAccount <= 0) return;
  const accountKey = async (req: FastifyRequest): Promise<string | undefined> => {
    const p = await opts.auth.principal(req).catch(() => null);
    return p ? `account:${p.address}` : undefined;
  };
  const check = app.createRateLimit({
    max: opts.perAccount,
    timeWindow: MINUTE,
    keyGenerator: async (req) => (await accountKey(req)) ?? 'anonymous',
    // Requests without a valid token are counted by address only.
    allowList: async (req) => (await accountKey(req)) === undefined,
  });
  app.addHook('onRequest', async (req, reply) => {
    const r = await check(req);
    if (r.isAllowed || !r.isExceeded) return;
    reply.header('retry-after', String(r.ttlInSeconds));
    throw new ApiError(
      429,
      `too many requests from this account (limit ${r.max} a minute); retry in ${r.ttlInSeconds} s`,
    );
  });
}

/** fastify-plugin: the limits apply to every route of the app, not only inside this plugin. */
export const rateLimits = fp(limits, { name: 'rate-limits' });
