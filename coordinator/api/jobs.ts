import { Type } from '@sinclair/typebox';
import type { FastifyInstance } from 'fastify';
import { ApiError as ApiErrorSchema, JobSpec, JobView } from '../../shared/protocol/job-spec.js';
import { checkModelJson } from '../../shared/train/model-allowlist.js';
import type { Principal } from '../accounts/index.js';
import { ComputeThreadDied } from '../compute/wire.js';
import { type Credits, toCredits, toMicro } from '../credits/index.js';
import { InsufficientFunds, type Ledger, LedgerError } from '../ledger/index.js';
import { getJobRow, type JobRow, jobView, newJobId } from '../scheduler/job-repo.js';
import { checkJobLimits } from '../scheduler/preflight.js';
import { type Scheduler, SchedulerError } from '../scheduler/scheduler.js';
import type { DatasetRepo } from '../store/datasets.js';
import type { Db } from '../store/db.js';
import { BEARER, type RequestAuth } from './auth.js';
import { ApiError } from './errors.js';

export interface JobsApiOptions {
  db: Db;
  scheduler: Scheduler;
  datasets: DatasetRepo;
  auth: RequestAuth;
  ledger: Ledger;
  credits: Credits;
  /** Development mode lets a job run without a budget (nobody is paid for it). */
  devMode: boolean;
}

const IdParams = Type.Object({ id: Type.String({ maxLength: 64 }) });
const errors = { 400: ApiErrorSchema, 401: ApiErrorSchema, 404: ApiErrorSchema };

/**
 * The requester REST API for jobs: submit (escrowing the budget), list, watch, cancel, and download the model in tfjs
 * format. Every route needs an API key or session; a job is visible to its owner only (anyone else gets 404, so ids
 * of other accounts' jobs are not even confirmed to exist).
 */
export async function jobsApi(app: FastifyInstance, opts: JobsApiOptions): Promise<void> {
  const { db, scheduler, datasets, auth, ledger, credits } = opts;
  const served = new RecentWeights();

  const loadJob = async (id: string, who: Principal): Promise<JobRow> => {
    const job = await getJobRow(db, id);
    if (!job || job.owner !== who.address) throw new ApiError(404, `you have no job ${id}`, '/id');
    return job;
  };
  const view = async (job: JobRow, includeSpec = false): Promise<JobView> => {
    const [v, billing] = await Promise.all([jobView(db, job, includeSpec), credits.billing(job.id)]);
    if (billing) v.billing = billing;
    return v;
  };

  app.post(
    '/api/v1/jobs',
    {
      schema: {
        tags: ['jobs'],
        summary: 'Submit a training job; its budget is escrowed from your available balance',
        security: BEARER,
        body: JobSpec,
        response: { 201: JobView, ...errors, 402: ApiErrorSchema },
      },
    },
    async (req, reply) => {
      const who = await auth.require(req);
      const spec = req.body as JobSpec;
      const checked = checkModelJson(spec.model);
      if (!checked.ok) {
        const e = checked.errors[0];
        const field = e.path.startsWith('/model') ? e.path : `/model${e.path}`;
        throw new ApiError(400, `${field} ${e.message}`, field);
      }
      // Limits first (no tfjs, no escrow); the trial step runs in createJob (scheduler/preflight.ts).
      const limits = checkJobLimits(spec);
      if (limits) throw new ApiError(400, limits.message, limits.field);
      const dataset = await datasets.find(spec.dataset, who.address);
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
      // Initial weights by hash: only the weights of one of your own jobs (another account's are not yours to reuse).
      if (spec.initialWeights) {
        const own = await db.query('SELECT 1 FROM jobs WHERE owner = $1 AND weights_hash = $2 LIMIT 1', [
          who.address,
          spec.initialWeights,
        ]);
        if (own.rows.length === 0) {
          throw new ApiError(404, 'no weights with that id among your jobs', '/initialWeights');
        }
      }
      const budget = spec.budget === undefined ? 0 : toMicro(spec.budget);
      if (spec.budget === undefined && !opts.devMode) {
        throw new ApiError(400, '/budget is required: the credits to escrow for this job from your balance', '/budget');
      }
      if (spec.budget !== undefined && budget === 0) {
        throw new ApiError(400, '/budget must be at least 0.000001 credits (one micro-credit)', '/budget');
      }
      // Escrow first, under the id the job will get: the money is held before any worker can lease a unit. If the
      // job cannot be created after all, the escrow goes straight back (and the credit sweeper refunds an escrow
      // whose job never appeared, should this process die in between).
      const jobId = newJobId();
      if (budget > 0) {
        try {
          await ledger.escrowJob(jobId, who.address, budget);
        } catch (err) {
          if (err instanceof InsufficientFunds) {
            throw new ApiError(
              402,
              `/budget of ${toCredits(budget)} credits exceeds your available balance of ${toCredits(err.available)} ` +
                'credits (add credits, or lower the budget)',
              '/budget',
            );
          }
          if (err instanceof LedgerError) throw new ApiError(err.httpStatus, err.message, '/budget');
          throw err;
        }
      }
      try {
        const job = await scheduler.createJob(spec, checked.model, dataset.id, who.address, jobId);
        return reply.status(201).send(await view(job, true));
      } catch (err) {
        if (budget > 0) {
          await ledger.refundJob(jobId).catch((e) => req.log.error({ err: e, jobId }, 'escrow refund failed'));
        }
        if (err instanceof SchedulerError) throw new ApiError(err.statusCode, err.message, err.field);
        if (err instanceof ComputeThreadDied) throw new ApiError(503, 'the coordinator failed to build the job; retry');
        throw new ApiError(400, `/model could not be built by tfjs: ${(err as Error).message}`, '/model');
      }
    },
  );

  app.get(
    '/api/v1/jobs',
    {
      schema: {
        tags: ['jobs'],
        summary: 'List your jobs (newest first)',
        security: BEARER,
        response: { 200: Type.Array(JobView), 401: ApiErrorSchema },
      },
    },
    async (req) => {
      const who = await auth.require(req);
      const { rows } = await db.query<JobRow>(
        'SELECT * FROM jobs WHERE owner = $1 ORDER BY created_at DESC LIMIT 200',
        [who.address],
      );
      return Promise.all(rows.map((j) => view(j)));
    },
  );

  app.get(
    '/api/v1/jobs/:id',
    {
      schema: {
        tags: ['jobs'],
        summary: 'A job with its metrics and billing',
        security: BEARER,
        params: IdParams,
        response: { 200: JobView, ...errors },
      },
    },
    async (req) => view(await loadJob((req.params as { id: string }).id, await auth.require(req)), true),
  );

  app.post(
    '/api/v1/jobs/:id/cancel',
    {
      schema: {
        tags: ['jobs'],
        summary: 'Cancel a job; its unspent escrow is refunded shortly after',
        security: BEARER,
        params: IdParams,
        response: { 200: JobView, ...errors, 409: ApiErrorSchema },
      },
    },
    async (req) => {
      const job = await loadJob((req.params as { id: string }).id, await auth.require(req));
      if (job.status !== 'queued' && job.status !== 'running') {
        throw new ApiError(409, `job is already ${job.status}`, '/id');
      }
      const after = await scheduler.cancelJob(job.id);
      credits.sweeper.poke();
      return view(after ?? job, true);
    },
  );

  // tf.loadLayersModel(url) reads model.json, then fetches each path in weightsManifest relative to it. The path
  // names the weights by hash so a download that straddles a round boundary can never mix two rounds.
  app.get(
    '/api/v1/jobs/:id/model/model.json',
    {
      schema: {
        tags: ['jobs'],
        summary: 'Latest model in tfjs layers format (send the key: tf.io.http(url, {requestInit: {headers}}))',
        security: BEARER,
        params: IdParams,
      },
    },
    async (req, reply) => {
      const job = await loadJob((req.params as { id: string }).id, await auth.require(req));
      const topology = await scheduler.loadModelJson(job.model_hash);
      const weights = await scheduler.weights.get(job.weights_hash);
      served.add(job.id, job.weights_hash);
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
      // Only this job's weights: its current ones, or those its model.json named in the last minutes (a download
      // that straddles a round completes). Never any other blob by hash: that would bypass api/blobs.ts.
      const job = await loadJob(id, await auth.require(req));
      if (m[1] !== job.weights_hash && !served.has(job.id, m[1])) throw new ApiError(404, 'no such weights', '/file');
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
      reply.header('cache-control', 'private, max-age=31536000, immutable');
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

/** Weights hashes a job's model.json named recently (this replica), so their download is still served. */
class RecentWeights {
  private seen = new Map<string, number>();
  private static readonly TTL_MS = 10 * 60_000;
  private static readonly MAX = 10_000;

  add(jobId: string, hash: string): void {
    const key = `${jobId}:${hash}`;
    this.seen.delete(key);
    this.seen.set(key, Date.now());
    if (this.seen.size > RecentWeights.MAX) this.seen.delete(this.seen.keys().next().value as string);
  }

  has(jobId: string, hash: string): boolean {
    const at = this.seen.get(`${jobId}:${hash}`);
    return at !== undefined && Date.now() - at < RecentWeights.TTL_MS;
  }
}
