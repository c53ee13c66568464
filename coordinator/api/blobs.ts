import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import type { BlobStore } from '../store/blobs.js';
import { ApiError } from './errors.js';

/** Content-addressed downloads for workers: model JSON, round weights, datasets. Immutable, so cached forever. */
export async function blobsApi(app: FastifyInstance, opts: { blobs: BlobStore }): Promise<void> {
  app.get(
    '/api/v1/blobs/:hash',
    {
      schema: {
        tags: ['workers'],
        summary: 'A content-addressed blob by sha256',
        params: Type.Object({ hash: Type.String({ pattern: '^[0-9a-f]{64}$' }) }),
      },
    },
    async (req, reply) => {
      const { hash } = req.params as { hash: string };
      const bytes = await opts.blobs.get(hash);
      if (!bytes) throw new ApiError(404, 'no such blob', '/hash');
      reply.header('content-type', 'application/octet-stream');
      reply.header('cache-control', 'public, max-age=31536000, immutable');
      reply.header('access-control-allow-origin', '*');
      return reply.send(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    },
  );
}
