import { type Static, Type } from '@sinclair/typebox';

/**
 * The job spec: the one schema that feeds REST validation, the TypeScript types and the OpenAPI document.
 * Defaults are applied by `normalizeJobSpec` (shared/protocol/validate.ts) so that every stored job is explicit.
 */

export const InnerOptimizer = Type.Object(
  {
    type: Type.Union([Type.Literal('sgd'), Type.Literal('momentum'), Type.Literal('adam')], { default: 'sgd' }),
    learningRate: Type.Number({ exclusiveMinimum: 0, maximum: 10, default: 0.1 }),
    momentum: Type.Optional(Type.Number({ minimum: 0, maximum: 0.9999, default: 0.9 })),
  },
  { additionalProperties: false, default: {}, description: 'Optimizer each worker runs for its H local steps.' },
);
export type InnerOptimizer = Static<typeof InnerOptimizer>;

export const OuterOptimizer = Type.Object(
  {
    learningRate: Type.Number({ exclusiveMinimum: 0, maximum: 10, default: 0.7 }),
    momentum: Type.Number({ minimum: 0, maximum: 0.9999, default: 0.9 }),
    nesterov: Type.Boolean({ default: true }),
  },
  {
    additionalProperties: false,
    default: {},
    description: 'DiLoCo outer optimizer applied to the mean delta of a round.',
  },
);
export type OuterOptimizer = Static<typeof OuterOptimizer>;

export const Aggregation = Type.Object(
  {
    method: Type.Union([Type.Literal('mean'), Type.Literal('trimmed'), Type.Literal('median')], { default: 'mean' }),
    /** Fraction trimmed from each end per coordinate when method is 'trimmed'. */
    trimFraction: Type.Number({ minimum: 0, maximum: 0.45, default: 0.2 }),
    /** Each delta's L2 norm is clipped to clipFactor x the median norm of the round (0 disables). */
    clipFactor: Type.Number({ minimum: 0, maximum: 100, default: 3 }),
  },
  { additionalProperties: false, default: {} },
);
export type Aggregation = Static<typeof Aggregation>;

export const Verification = Type.Object(
  {
    /** Floor of the audit probability for trusted accounts; a requester may raise it. */
    minAuditProbability: Type.Number({ minimum: 0, maximum: 1, default: 0.1 }),
    /** Commit a checkpoint hash every k local steps. 0 means the default H/8. */
    checkpointEvery: Type.Integer({ minimum: 0, maximum: 100_000, default: 0 }),
    /** Relative-distance tolerance between honest results; 0 means calibrated default. */
    tolerance: Type.Number({ minimum: 0, maximum: 1, default: 0 }),
  },
  { additionalProperties: false, default: {} },
);
export type Verification = Static<typeof Verification>;

/** Requester filters on the workers a job's units may be leased to (the marketplace). */
export const MarketFilter = Type.Object(
  {
    maxPricePerTflop: Type.Optional(
      Type.Number({
        minimum: 0,
        maximum: 1_000_000,
        description:
          'Highest price, in credits per 10^12 FLOP, this job pays: units are never leased to a worker whose offer ' +
          'is above it (volunteers without an offer ask the network default price).',
      }),
    ),
    minReliability: Type.Optional(
      Type.Number({
        minimum: 0,
        maximum: 1,
        description:
          'Lowest reliability (fraction of finished leases completed) of the workers this job accepts; workers with ' +
          'too short a record count as 1.',
      }),
    ),
  },
  { additionalProperties: false, description: 'Marketplace filters: maximum price and minimum reliability.' },
);
export type MarketFilter = Static<typeof MarketFilter>;

export const LossName = Type.Union(
  [
    Type.Literal('categoricalCrossentropy'),
    Type.Literal('sparseCategoricalCrossentropy'),
    Type.Literal('meanSquaredError'),
  ],
  { default: 'categoricalCrossentropy' },
);
export type LossName = Static<typeof LossName>;

export const JobSpec = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 120, default: 'untitled job' }),
    /** tfjs `model.toJSON()`: an object, or the string JSON.stringify gives. Checked against the layer allow-list. */
    model: Type.Union([Type.Object({}, { additionalProperties: true }), Type.String({ minLength: 2 })]),
    /** Optional initial weights: the sha256 id of a weights blob uploaded before. */
    initialWeights: Type.Optional(Type.String({ pattern: '^[0-9a-f]{64}$' })),
    /** A dataset id (sha256) from POST /api/v1/datasets, or a built-in name such as `mnist`. */
    dataset: Type.String({ minLength: 1, maxLength: 128 }),
    loss: LossName,
    optimizer: InnerOptimizer,
    batchSize: Type.Integer({ minimum: 1, maximum: 4096, default: 32 }),
    /** H: local steps per work unit. */
    localSteps: Type.Integer({ minimum: 1, maximum: 100_000, default: 50 }),
    unitsPerRound: Type.Integer({ minimum: 1, maximum: 10_000, default: 4 }),
    rounds: Type.Integer({ minimum: 1, maximum: 100_000, default: 10 }),
    targetAccuracy: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 1 })),
    outer: OuterOptimizer,
    aggregation: Aggregation,
    verification: Verification,
    seed: Type.Integer({ minimum: 0, maximum: 2 ** 31 - 1, default: 1 }),
    /** How long a worker may hold a unit before it is reissued. */
    unitDeadlineMs: Type.Integer({ minimum: 1_000, maximum: 86_400_000, default: 300_000 }),
    budget: Type.Optional(
      Type.Number({
        exclusiveMinimum: 0,
        maximum: 1_000_000_000,
        description:
          'Credits escrowed from your available balance when the job is submitted (402 when too low). Each accepted ' +
          'unit pays its price out of it; the unspent rest comes back when the job ends. Required outside ' +
          'development mode.',
      }),
    ),
    market: Type.Optional(MarketFilter),
  },
  { additionalProperties: false },
);
/** A job spec after defaults: every field present. */
export type JobSpec = Static<typeof JobSpec>;

export const JobStatus = Type.Union([
  Type.Literal('queued'),
  Type.Literal('running'),
  Type.Literal('completed'),
  Type.Literal('failed'),
  Type.Literal('cancelled'),
]);
export type JobStatus = Static<typeof JobStatus>;

export const RoundMetric = Type.Object({
  round: Type.Integer(),
  loss: Type.Number(),
  accuracy: Type.Number(),
  examples: Type.Integer(),
  units: Type.Integer(),
  at: Type.String(),
});
export type RoundMetric = Static<typeof RoundMetric>;

export const JobView = Type.Object({
  id: Type.String(),
  name: Type.String(),
  status: JobStatus,
  round: Type.Integer({ description: 'Rounds completed so far.' }),
  rounds: Type.Integer(),
  progress: Type.Number({ description: 'Fraction of the job done, 0..1.' }),
  unitsDone: Type.Integer(),
  activeWorkers: Type.Integer(),
  metrics: Type.Array(RoundMetric),
  dataset: Type.String(),
  error: Type.Optional(Type.String()),
  createdAt: Type.String(),
  updatedAt: Type.String(),
  spec: Type.Optional(Type.Unknown()),
  billing: Type.Optional(
    Type.Object(
      {
        budget: Type.Integer({ description: 'Micro-credits escrowed at submission (1 credit = 1,000,000).' }),
        escrow: Type.Integer({ description: 'Micro-credits still in escrow.' }),
        spent: Type.Integer({ description: 'Micro-credits paid out to workers for accepted units.' }),
        refunded: Type.Integer({ description: 'Micro-credits returned to the requester.' }),
        unitFlops: Type.Integer({ description: 'FLOP estimate of one unit (6 x parameters x examples).' }),
        closed: Type.Boolean({ description: 'The escrow was refunded: the job pays nothing more.' }),
      },
      { description: 'The job budget in the ledger; absent for a job submitted without one (development).' },
    ),
  ),
});
export type JobView = Static<typeof JobView>;

export const DatasetView = Type.Object({
  id: Type.String(),
  name: Type.String(),
  examples: Type.Integer(),
  trainExamples: Type.Integer(),
  evalExamples: Type.Integer(),
  featureShape: Type.Array(Type.Integer()),
  numClasses: Type.Integer(),
  bytes: Type.Integer(),
});
export type DatasetView = Static<typeof DatasetView>;

export const ApiError = Type.Object({
  statusCode: Type.Integer(),
  error: Type.String(),
  message: Type.String(),
  /** JSON pointer of the offending field, when one is to blame. */
  field: Type.Optional(Type.String()),
});
export type ApiError = Static<typeof ApiError>;
