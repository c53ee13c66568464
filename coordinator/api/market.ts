import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { ApiError as ApiErrorSchema } from '../../shared/protocol/job-spec.js';
import { MarketView, OfferInput, OfferView, StatsView } from '../../shared/protocol/market-api.js';
import { marketSummary, networkStats } from '../market/market-view.js';
import type { Offers } from '../market/offers.js';
import type { Db } from '../store/db.js';
import { BEARER, type RequestAuth } from './auth.js';
import { ApiError } from './errors.js';

export interface MarketApiOptions {
  db: Db;
  offers: Offers;
  auth: RequestAuth;
  /** Micro-credits per TFLOP for workers without an offer. */
  defaultPricePerTflop: number;
  reliabilityMinLeases: number;
}

/**
 * The marketplace: providers post offers (authenticated: the offer belongs to the key's or session's account); anyone
 * reads the market (offers with measured throughput and reliability, price distribution, capacity) and network stats.
 */
export async function marketApi(app: FastifyInstance, opts: MarketApiOptions): Promise<void> {
  const { db, offers, auth } = opts;
  const errors = { 400: ApiErrorSchema, 401: ApiErrorSchema, 404: ApiErrorSchema };
  const summary = () =>
    marketSummary(db, {
      defaultPricePerTflop: opts.defaultPricePerTflop,
      reliabilityMinLeases: opts.reliabilityMinLeases,
    });

  app.post(
    '/api/v1/offers',
    {
      schema: {
        tags: ['market'],
        summary: 'Post your offer (replaces your previous one): minimum price per TFLOP, device, benchmark, hours',
        security: BEARER,
        body: OfferInput,
        response: { 201: OfferView, ...errors },
      },
    },
    async (req, reply) => {
      const p = await auth.require(req);
      const offer = await offers.post(p.address, req.body as OfferInput);
      const view = (await summary()).offers.find((o) => o.id === offer.id);
      if (!view) throw new ApiError(409, 'the offer was replaced by a concurrent one');
      return reply.status(201).send(view);
    },
  );

  app.delete(
    '/api/v1/offers/:id',
    {
      schema: {
        tags: ['market'],
        summary: 'Withdraw your offer (your workers are then paid the default price)',
        security: BEARER,
        params: Type.Object({ id: Type.String({ maxLength: 64 }) }),
        response: { 200: Type.Object({ withdrawn: Type.Boolean() }), ...errors },
      },
    },
    async (req) => {
      const p = await auth.require(req);
      const { id } = req.params as { id: string };
      if (!(await offers.withdraw(p.address, id))) throw new ApiError(404, `you have no active offer ${id}`, '/id');
      return { withdrawn: true };
    },
  );

  app.get(
    '/api/v1/market',
    {
      schema: {
        tags: ['market'],
        summary: 'Offers with measured throughput, reliability and audit record; price distribution; capacity',
        response: { 200: MarketView },
      },
    },
    async () => summary(),
  );

  app.get(
    '/api/v1/stats',
    {
      schema: {
        tags: ['market'],
        summary: 'Public network statistics: jobs, workers online, units done, credits paid',
        response: { 200: StatsView },
      },
    },
    async () => networkStats(db),
  );
}
