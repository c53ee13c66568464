import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { ApiError as ApiErrorSchema, DatasetView } from '../../shared/protocol/job-spec.js';
import type { DatasetRepo } from '../store/datasets.js';
import { ApiError } from './errors.js';

export interface DatasetsApiOptions {
  datasets: DatasetRepo;
  maxUploadBytes: number;
}

/** Dataset upload (the binary format of docs/DATASET_FORMAT.md) and listing. */
export async function datasetsApi(app: FastifyInstance, opts: DatasetsApiOptions): Promise<void> {
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
      schema: {
        tags: ['datasets'],
        summary: 'Upload a dataset file (application/octet-stream)',
        response: { 201: DatasetView, 400: ApiErrorSchema, 413: ApiErrorSchema, 415: ApiErrorSchema },
      },
    },
    async (req, reply) => {
      if (!Buffer.isBuffer(req.body)) {
        throw new ApiError(415, 'send the dataset file as application/octet-stream', '/body');
      }
      const bytes = new Uint8Array(req.body.buffer, req.body.byteOffset, req.body.byteLength);
      try {
        return reply.status(201).send(await opts.datasets.add(bytes));
      } catch (err) {
        throw new ApiError(400, `not a valid dataset file: ${(err as Error).message}`, '/body');
      }
    },
  );

  app.get(
    '/api/v1/datasets',
    { schema: { tags: ['datasets'], summary: 'List datasets', response: { 200: Type.Array(DatasetView) } } },
    async () => opts.datasets.list(),
  );

  app.get(
    '/api/v1/datasets/:id',
    {
      schema: {
        tags: ['datasets'],
        summary: 'A dataset by id or built-in name',
        params: Type.Object({ id: Type.String({ maxLength: 128 }) }),
        response: { 200: DatasetView, 404: ApiErrorSchema },
      },
    },
    async (req) => {
      const ds = await opts.datasets.find((req.params as { id: string }).id);
      if (!ds) throw new ApiError(404, 'no such dataset', '/id');
      return ds;
    },
  );
}
