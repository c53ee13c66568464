import { type Static, Type } from '@sinclair/typebox';
import { InnerOptimizer, LossName } from './job-spec.js';

/**
 * The worker protocol over WebSocket (/api/v1/worker). Text frames carry JSON control messages; the single binary
 * frame type carries a result (see result-envelope.ts). docs/PROTOCOL.md describes the flow.
 */
export const PROTOCOL_VERSION = 1;

/** WebSocket close codes the coordinator uses. */
export const CloseCode = {
  /** A frame that does not parse, or a message that breaks the schema. */
  BadMessage: 4400,
  /** hello missing, wrong protocol version or failed challenge. */
  Unauthorized: 4401,
  /** Protocol version not supported. */
  BadVersion: 4426,
  /** Coordinator going away (restart). */
  GoingAway: 1001,
  /**
   * A frame over the connection's limit: 64 KiB before hello and for every text frame; a result or reveal frame
   * over the bound of the largest model this connection holds a lease of (refused from the frame's declared length).
   */
  TooLarge: 1009,
  /** More frames queued unhandled on the connection than it may have (sent faster than it is served). */
  Flooding: 4429,
} as const;

const Hex64 = Type.String({ pattern: '^[0-9a-f]{64}$' });

export const Capabilities = Type.Object(
  {
    backends: Type.Array(Type.String({ maxLength: 32 }), { maxItems: 8 }),
    adapter: Type.Optional(Type.String({ maxLength: 200 })),
    examplesPerSecond: Type.Optional(Type.Number({ minimum: 0 })),
    userAgent: Type.Optional(Type.String({ maxLength: 300 })),
  },
  { additionalProperties: true },
);
export type Capabilities = Static<typeof Capabilities>;

// ---- worker -> coordinator -------------------------------------------------------------------------------------

export const HelloMsg = Type.Object({
  type: Type.Literal('hello'),
  protocol: Type.Integer(),
  account: Type.String({ minLength: 1, maxLength: 100 }),
  backend: Type.String({ maxLength: 32 }),
  capabilities: Capabilities,
  /** Signed challenge answer (filled in by the accounts layer). */
  auth: Type.Optional(
    Type.Object({ message: Type.String(), signature: Type.String() }, { additionalProperties: true }),
  ),
  /**
   * Where credits go when not to the signer (a widget's iframe key signs, the embedding site's address is paid). Only
   * honoured with a verified auth; the signer proves liveness and consent, payTo receives the credit.
   */
  payTo: Type.Optional(Type.String({ maxLength: 64 })),
  /** Leases this worker still holds from an earlier connection, to keep them across a reconnect. */
  resume: Type.Optional(Type.Array(Type.Object({ leaseId: Type.String(), token: Type.String() }), { maxItems: 16 })),
});
export type HelloMsg = Static<typeof HelloMsg>;

export const RequestWorkMsg = Type.Object({ type: Type.Literal('request') });
export type RequestWorkMsg = Static<typeof RequestWorkMsg>;

export const ProgressMsg = Type.Object({
  type: Type.Literal('progress'),
  leaseId: Type.String(),
  step: Type.Integer({ minimum: 0 }),
  loss: Type.Optional(Type.Number()),
});
export type ProgressMsg = Static<typeof ProgressMsg>;

export const ReleaseMsg = Type.Object({
  type: Type.Literal('release'),
  leaseId: Type.String(),
  /**
   * Why training failed, when it did (absent for a plain Stop). When several accounts cannot train a unit, the
   * coordinator checks the job itself, and fails the job, not them, if it is the job's fault.
   */
  error: Type.Optional(Type.String({ maxLength: 2000 })),
});
export type ReleaseMsg = Static<typeof ReleaseMsg>;

/**
 * The worker cannot reveal the checkpoint state the coordinator asked for (it no longer holds the unit's states, or
 * the index is out of range). A revealed state travels as a binary envelope instead (RevealHeader below).
 */
export const RevealErrorMsg = Type.Object({
  type: Type.Literal('reveal-error'),
  requestId: Type.String({ maxLength: 100 }),
  reason: Type.String({ maxLength: 500 }),
});
export type RevealErrorMsg = Static<typeof RevealErrorMsg>;

export const ClientMessage = Type.Union([HelloMsg, RequestWorkMsg, ProgressMsg, ReleaseMsg, RevealErrorMsg]);
export type ClientMessage = Static<typeof ClientMessage>;

// ---- coordinator -> worker -------------------------------------------------------------------------------------

/**
 * The coordinator's first frame on every connection. A worker that proves its account signs a SIWE message whose
 * nonce is this one and returns it in hello.auth; the nonce is single use and bound to this connection.
 */
export const ChallengeMsg = Type.Object({
  type: Type.Literal('challenge'),
  nonce: Type.String(),
  domain: Type.String(),
  uri: Type.String(),
  chainId: Type.Integer(),
  issuedAt: Type.String(),
  expiresAt: Type.String(),
});
export type ChallengeMsg = Static<typeof ChallengeMsg>;

export const WelcomeMsg = Type.Object({
  type: Type.Literal('welcome'),
  protocol: Type.Integer(),
  workerId: Type.String(),
  account: Type.String(),
  /** Leases from `hello.resume` that are still valid and stay with this worker. */
  resumed: Type.Array(Type.String()),
});
export type WelcomeMsg = Static<typeof WelcomeMsg>;

/**
 * A unit of work. Everything a worker needs is content-addressed: it fetches /api/v1/blobs/:hash and checks the hash.
 * An audit lease is byte-for-byte the same shape as any other: nothing here says who else holds the unit.
 */
export const UnitSpec = Type.Object({
  jobName: Type.String(),
  modelHash: Hex64,
  weightsHash: Hex64,
  datasetHash: Hex64,
  /** Seed from which `assignExamples` derives the unit's example indices; chosen by the coordinator. */
  dataSeed: Type.Integer(),
  steps: Type.Integer({ minimum: 1 }),
  batchSize: Type.Integer({ minimum: 1 }),
  checkpointEvery: Type.Integer({ minimum: 1 }),
  optimizer: InnerOptimizer,
  loss: LossName,
});
export type UnitSpec = Static<typeof UnitSpec>;

export const LeaseMsg = Type.Object({
  type: Type.Literal('lease'),
  leaseId: Type.String(),
  /** Secret that must come back with the result: nobody else can submit for this lease. */
  token: Type.String(),
  deadline: Type.Integer({ description: 'Unix ms after which the unit may be reissued.' }),
  unit: UnitSpec,
});
export type LeaseMsg = Static<typeof LeaseMsg>;

export const IdleMsg = Type.Object({ type: Type.Literal('idle'), retryMs: Type.Integer() });
export type IdleMsg = Static<typeof IdleMsg>;

export const AckMsg = Type.Object({ type: Type.Literal('ack'), leaseId: Type.String(), resultHash: Type.String() });
export type AckMsg = Static<typeof AckMsg>;

export const RejectMsg = Type.Object({
  type: Type.Literal('reject'),
  leaseId: Type.String(),
  code: Type.String(),
  reason: Type.String(),
});
export type RejectMsg = Static<typeof RejectMsg>;

/** A lease the coordinator withdrew (job cancelled or unit already settled); stop working on it. */
export const RevokeMsg = Type.Object({ type: Type.Literal('revoke'), leaseId: Type.String(), reason: Type.String() });
export type RevokeMsg = Static<typeof RevokeMsg>;

export const ErrorMsg = Type.Object({ type: Type.Literal('error'), code: Type.String(), message: Type.String() });
export type ErrorMsg = Static<typeof ErrorMsg>;

/**
 * Verification asks for the full training state (weights + optimizer slots) a worker committed as
 * `checkpoints[index]` of the result it submitted for `leaseId`. The worker answers with a binary envelope whose
 * header is a RevealHeader, or with `reveal-error`. A worker keeps its states until `settled`, also while it trains
 * the next unit and across reconnects; the coordinator's deadline decides how long it may take.
 */
export const RevealRequestMsg = Type.Object({
  type: Type.Literal('reveal'),
  requestId: Type.String(),
  leaseId: Type.String(),
  index: Type.Integer({ minimum: 0 }),
});
export type RevealRequestMsg = Static<typeof RevealRequestMsg>;

/** The result of this lease is final (aggregated or rejected): its checkpoint states may be dropped. */
export const SettledMsg = Type.Object({ type: Type.Literal('settled'), leaseId: Type.String() });
export type SettledMsg = Static<typeof SettledMsg>;

export type ServerMessage =
  | ChallengeMsg
  | WelcomeMsg
  | LeaseMsg
  | IdleMsg
  | AckMsg
  | RejectMsg
  | RevokeMsg
  | ErrorMsg
  | RevealRequestMsg
  | SettledMsg;

// ---- result envelope header (binary frame) ---------------------------------------------------------------------

export const ResultHeader = Type.Object({
  type: Type.Literal('result'),
  leaseId: Type.String(),
  token: Type.String(),
  /** sha256 of the delta payload bytes that follow the header. */
  deltaHash: Hex64,
  /** sha256 of the final weights (start + delta, as the worker computed them). */
  finalHash: Hex64,
  /** sha256 of the training state every `checkpointEvery` steps, in order; the last one is the final state. */
  checkpoints: Type.Array(Hex64),
  /**
   * The loss before each step. null stands for a non-finite loss (JSON has no NaN): training that diverged is
   * reported as it is, and the coordinator refuses the result without holding it against the worker.
   */
  losses: Type.Array(Type.Union([Type.Number(), Type.Null()])),
  examples: Type.Integer({ minimum: 0 }),
  flops: Type.Number({ minimum: 0 }),
  backend: Type.String({ maxLength: 32 }),
  adapter: Type.Optional(Type.String({ maxLength: 200 })),
  timings: Type.Object({ totalMs: Type.Number(), trainMs: Type.Number() }, { additionalProperties: true }),
});
export type ResultHeader = Static<typeof ResultHeader>;

/** Header of the binary envelope that answers a RevealRequestMsg; the payload is the state in the weights format. */
export const RevealHeader = Type.Object({
  type: Type.Literal('reveal'),
  requestId: Type.String({ maxLength: 100 }),
  leaseId: Type.String({ maxLength: 100 }),
  index: Type.Integer({ minimum: 0 }),
});
export type RevealHeader = Static<typeof RevealHeader>;
