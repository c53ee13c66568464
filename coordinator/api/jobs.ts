import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { ApiError as ApiErrorSchema, JobSpec, JobView } from '../../shared/protocol/job-spec.js';
import { checkModelJson } from '../../shared/train/model-allowlist.js';
import { getJobRow, type JobRow, jobView } from '../scheduler/job-repo.js';
import { type Scheduler, SchedulerError } from '../scheduler/scheduler.js';
import type { DatasetRepo } from '../store/datasets.js';
import type { Db } from '../store/db.js';
import { ApiError } from './errors.js';

export interface JobsApiOptions {
  db: Db;
  scheduler: Scheduler;
  datasets: DatasetRepo;
  /** Resolves the account that owns requests (API keys, later); null means open access. */
  ownerOf?: (req: import('fastify').FastifyRequest) => Promise<string | null>;
}

const IdParams = Type.Object({ id: Type.String({ maxLength: 64 }) });
const errors = { 400: ApiErrorSchema, 404: ApiErrorSchema };

/** The requester REST API for jobs: submit, list, watch, cancel, and download the model in tfjs format. */
export async function jobsApi(app: FastifyInstance, opts: JobsApiOptions): Promise<void> {
  const { db, scheduler, datasets } = opts;

  const loadJob = async (id: string): Promise<JobRow> => {
    const job = await getJobRow(db, id);
    if (!job) throw new ApiError(404, `no job ${id}`, '/id');
    return job;
  };

  app.post(
    '/api/v1/jobs',
    {
      schema: {
        tags: ['jobs'],
        summary: 'Submit a training job',
        body: JobSpec,
        response: { 201: JobView, ...errors },
      },
    },
    async (req, reply) => {
      const spec = req.body as JobSpec;
      const checked = checkModelJson(spec.model);
      if (!checked.ok) {
        const e = checked.errors[0];
        const field = e.path.startsWith('/model') ? e.path : `/model${e.path}`;
        throw new ApiError(400, `${field} ${e.message}`, field);
      }
      const dataset = await datasets.find(spec.dataset);
      if (!dataset) throw new ApiError(404, `no dataset "${spec.dataset}"`, '/dataset');
      const inputSize = checked.model ? modelInputSize(checked.model) : null;
      const featureSize = dataset.featureShape.reduce((a, b) => a * b, 1);
      if (inputSize !== null && inputSize !== featureSize) {
        throw new ApiError(
          400,
          `/model input size ${inputSize} does not match dataset features ${dataset.featureShape.join('x')}`,
          '/model',
        );
      }
      const owner = opts.ownerOf ? await opts.ownerOf(req) : null;
      try {
        const job = await scheduler.createJob(spec, checked.model, dataset.id, owner);
        return reply.status(201).send(await jobView(db, job, true));
      } catch (err) {
        if (err instanceof SchedulerError) throw new ApiError(err.statusCode, err.message, err.field);
        throw new ApiError(400, `/model could not be built by tfjs: ${(err as Error).message}`, '/model');
      }
    },
  );

  app.get(
    '/api/v1/jobs',
    { schema: { tags: ['jobs'], summary: 'List jobs', response: { 200: Type.Array(JobView) } } },
    async () => {
      const { rows } = await db.query<JobRow>('SELECT * FROM jobs ORDER BY created_at DESC LIMIT 200');
      return Promise.all(rows.map((j) => jobView(db, j)));
    },
  );

  app.get(
    '/api/v1/jobs/:id',
    {
      schema: {
        tags: ['jobs'],
        summary: 'A job with its metrics',
        params: IdParams,
        response: { 200: JobView, ...errors },
      },
    },
    async (req) => jobView(db, await loadJob((req.params as { id: string }).id), true),
  );

  app.post(
    '/api/v1/jobs/:id/cancel',
    {
      schema: {
        tags: ['jobs'],
        summary: 'Cancel a job',
        params: IdParams,
        response: { 200: JobView, ...errors, 409: ApiErrorSchema },
      },
    },
    async (req) => {
      const job = await loadJob((req.params as { id: string }).id);
      if (job.status !== 'queued' && job.status !== 'running') {
        throw new ApiError(409, `job is already ${job.status}`, '/id');
      }
      const after = await scheduler.cancelJob(job.id);
      return jobView(db, after ?? job, true);
    },
  );

  // tf.loadLayersModel(url) reads model.json, then fetches each path in weightsManifest relative to it. The path
  // names the weights by hash so a download that straddles a round boundary can never mix two rounds.
  app.get(
    '/api/v1/jobs/:id/model/model.json',
    { schema: { tags: ['jobs'], summary: 'Latest model in tfjs layers format', params: IdParams } },
    async (req, reply) => {
      const job = await loadJob((req.params as { id: string }).id);
      const topology = await scheduler.loadModelJson(job.model_hash);
      const weights = await scheduler.weights.get(job.weights_hash);
      reply.header('cache-control', 'no-store');
      return {
        format: 'layers-model',
        generatedBy: 'swarmgrad',
        convertedBy: null,
        modelTopology: topology,
        weightsManifest: [
          {
            paths: [`weights-${job.weights_hash}.bin`],
            weights: weights.names.map((name, i) => ({ name, shape: weights.shapes[i], dtype: 'float32' })),
          },
        ],
        userDefinedMetadata: { jobId: job.id, round: job.round, status: job.status },
      };
    },
  );

  app.get(
    '/api/v1/jobs/:id/model/:file',
    { schema: { hide: true, params: Type.Object({ id: Type.String(), file: Type.String() }) } },
    async (req, reply) => {
      const { id, file } = req.params as { id: string; file: string };
      const m = /^weights-([0-9a-f]{64})\.bin$/.exec(file);
      if (!m) throw new ApiError(404, `no file ${file}`, '/file');
      await loadJob(id);
      const weights = await scheduler.weights.get(m[1]).catch(() => null);
      if (!weights) throw new ApiError(404, 'no such weights', '/file');
      const total = weights.data.reduce((s, d) => s + d.length, 0);
      const out = new Float32Array(total);
      let off = 0;
      for (const d of weights.data) {
        out.set(d, off);
        off += d.length;
      }
      reply.header('content-type', 'application/octet-stream');
      reply.header('cache-control', 'public, max-age=31536000, immutable');
      return reply.send(Buffer.from(out.buffer, out.byteOffset, out.byteLength));
    },
  );
}

/** The flattened input size a Sequential model declares, when it declares one. */
function modelInputSize(model: object): number | null {
  const topology = (model as { modelTopology?: object }).modelTopology ?? model;
  const layers = (topology as { config?: { layers?: { config?: Record<string, unknown> }[] } }).config?.layers;
  const first = layers?.[0]?.config;
  const shape = (first?.batch_input_shape ?? first?.batchInputShape) as (number | null)[] | undefined;
  if (!Array.isArray(shape)) return null;
  const dims = shape.slice(1);
  if (dims.some((d) => typeof d !== 'number')) return null;
  return (dims as number[]).reduce((a, b) => a * b, 1);
}
