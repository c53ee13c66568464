import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { ApiError as ApiErrorSchema, DatasetView } from '../../shared/protocol/job-spec.js';
import { type DatasetRepo, UploadQuotaExceeded } from '../store/datasets.js';
import { BEARER, type RequestAuth } from './auth.js';
import { ApiError } from './errors.js';

export interface DatasetsApiOptions {
  datasets: DatasetRepo;
  auth: RequestAuth;
  maxUploadBytes: number;
}

/**
 * Dataset upload (the binary format of docs/DATASET_FORMAT.md) and listing. A dataset is its uploader's: listing and
 * lookup show the built-in ones and the caller's own (another account's id is a 404, not a confirmation).
 */
export async function datasetsApi(app: FastifyInstance, opts: DatasetsApiOptions): Promise<void> {
  const { datasets, auth } = opts;
  /** The caller's address when it sent a valid key; anonymous callers see the built-ins only. */
  const caller = async (req: import('fastify').FastifyRequest): Promise<string | null> =>
    req.headers.authorization ? (await auth.require(req)).address : null;

  // Raw bytes in, no JSON parsing: the body limit turns oversize uploads into 413 before they reach memory twice.
  app.addContentTypeParser(
    ['application/octet-stream', 'application/x-swarmgrad-dataset'],
    { parseAs: 'buffer', bodyLimit: opts.maxUploadBytes },
    (_req, body, done) => done(null, body),
  );

  app.post(
    '/api/v1/datasets',
    {
      bodyLimit: opts.maxUploadBytes,
      // A declared size over what is left of the quota is refused before a byte of the body is read; the stored
      // size is checked again (and booked) once it is (DatasetRepo.add).
      onRequest: async (req, reply) => {
        const who = await auth.require(req);
        const declared = Number(req.headers['content-length'] ?? 0);
        const left = await datasets.quotaLeft(who.address);
        if (declared > left || left === 0) {
          reply.header('retry-after', '3600');
          throw new ApiError(
            429,
            `upload quota exceeded: ${left} dataset bytes left for this account in the last 24 hours ` +
              `(DATASET_UPLOAD_QUOTA_BYTES), this upload has ${declared}`,
            '/body',
          );
        }
      },
      schema: {
        tags: ['datasets'],
        summary: 'Upload a dataset file (application/octet-stream); it is visible to your account only',
        security: BEARER,
        response: {
          201: DatasetView,
          400: ApiErrorSchema,
          401: ApiErrorSchema,
          413: ApiErrorSchema,
          415: ApiErrorSchema,
          429: ApiErrorSchema,
        },
      },
    },
    async (req, reply) => {
      const who = await auth.require(req);
      if (!Buffer.isBuffer(req.body)) {
        throw new ApiError(415, 'send the dataset file as application/octet-stream', '/body');
      }
      const bytes = new Uint8Array(req.body.buffer, req.body.byteOffset, req.body.byteLength);
      try {
        return reply.status(201).send(await datasets.add(bytes, who.address));
      } catch (err) {
        if (err instanceof UploadQuotaExceeded) {
          reply.header('retry-after', String(err.retryAfterSeconds));
          throw new ApiError(429, err.message, '/body');
        }
        throw new ApiError(400, `not a valid dataset file: ${(err as Error).message}`, '/body');
      }
    },
  );

  app.get(
    '/api/v1/datasets',
    {
      schema: {
        tags: ['datasets'],
        summary: 'List the built-in datasets and, with a key, your own',
        response: { 200: Type.Array(DatasetView), 401: ApiErrorSchema },
      },
    },
    async (req) => datasets.list(await caller(req)),
  );

  app.get(
    '/api/v1/datasets/:id',
    {
      schema: {
        tags: ['datasets'],
        summary: 'A built-in dataset by name or id, or one of yours by id',
        params: Type.Object({ id: Type.String({ maxLength: 128 }) }),
        response: { 200: DatasetView, 401: ApiErrorSchema, 404: ApiErrorSchema },
      },
    },
    async (req) => {
      const ds = await datasets.find((req.params as { id: string }).id, await caller(req));
      if (!ds) throw new ApiError(404, 'no such dataset', '/id');
      return ds;
    },
  );
}
