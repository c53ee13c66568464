import { Type } from '@sinclair/typebox';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { BlobStore } from '../store/blobs.js';
import type { Db } from '../store/db.js';
import type { RequestAuth } from './auth.js';
import { ApiError } from './errors.js';

export interface BlobsApiOptions {
  blobs: BlobStore;
  db: Db;
  auth: RequestAuth;
}

/** `Authorization: Lease <leaseId>:<token>`: the worker's credential for the blobs of the unit it holds. */
export const LEASE_AUTH = /^Lease ([A-Za-z0-9_-]{1,100}):([0-9a-f]{1,200})$/;

/**
 * Content-addressed downloads: model JSON, round weights, datasets. They are not public: a blob is served to
 *  - a worker holding an active lease (`Authorization: Lease <leaseId>:<token>`), for exactly the model, the round
 *    weights and the dataset of that lease's job;
 *  - an account (`Authorization: Bearer <key>`) for its own datasets and the model, weights and dataset of its jobs;
 *  - anyone, for the built-in datasets.
 * Anything else is a 404 (the same answer as a missing blob, so ids are not confirmed to exist).
 */
export async function blobsApi(app: FastifyInstance, opts: BlobsApiOptions): Promise<void> {
  const { blobs, db, auth } = opts;

  const allowed = async (req: FastifyRequest, hash: string): Promise<boolean> => {
    const header = req.headers.authorization ?? '';
    const lease = LEASE_AUTH.exec(header);
    if (lease) {
      const { rows } = await db.query(
        `SELECT 1 FROM leases l JOIN jobs j ON j.id = l.job_id
         WHERE l.id = $1 AND l.token = $2 AND l.status = 'active' AND l.deadline >= $4
           AND $3 IN (j.model_hash, j.weights_hash, j.dataset_id)`,
        [lease[1], lease[2], hash, Date.now()],
      );
      return rows.length > 0;
    }
    if (header) {
      const who = await auth.require(req);
      const { rows } = await db.query(
        `SELECT 1 FROM dataset_uploads WHERE owner = $1 AND dataset_id = $2
         UNION ALL SELECT 1 FROM jobs WHERE owner = $1 AND $2 IN (model_hash, weights_hash, dataset_id)
         LIMIT 1`,
        [who.address, hash],
      );
      if (rows.length > 0) return true;
    }
    const { rows } = await db.query('SELECT 1 FROM datasets WHERE id = $1 AND builtin', [hash]);
    return rows.length > 0;
  };

  app.get(
    '/api/v1/blobs/:hash',
    {
      schema: {
        tags: ['workers'],
        summary: 'A content-addressed blob by sha256: with your lease (workers) or key (its owner)',
        params: Type.Object({ hash: Type.String({ pattern: '^[0-9a-f]{64}$' }) }),
      },
    },
    async (req, reply) => {
      const { hash } = req.params as { hash: string };
      if (!(await allowed(req, hash))) throw new ApiError(404, 'no such blob (or not yours to read)', '/hash');
      const bytes = await blobs.get(hash);
      if (!bytes) throw new ApiError(404, 'no such blob (or not yours to read)', '/hash');
      reply.header('content-type', 'application/octet-stream');
      // Private: a shared cache must not hand one worker's blob to another; the browser may keep its own copy.
      reply.header('cache-control', 'private, max-age=31536000, immutable');
      reply.header('vary', 'authorization');
      reply.header('access-control-allow-origin', '*');
      return reply.send(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
    },
  );
}
