import WebSocket from 'ws';
import { sha256Hex } from '../../shared/hash.js';
import type {
  ChallengeMsg,
  LeaseMsg,
  ResultHeader,
  RevealRequestMsg,
  ServerMessage,
} from '../../shared/protocol/messages.js';
import { PROTOCOL_VERSION } from '../../shared/protocol/messages.js';
import { encodeResultEnvelope } from '../../shared/protocol/result-envelope.js';
import { assignExamples } from '../../shared/train/assign.js';
import { decodeDataset } from '../../shared/train/dataset-format.js';
import { trainUnit } from '../../shared/train/train-unit.js';
import type { TrainUnitInput, TrainUnitOutput, WeightSet } from '../../shared/train/types.js';
import { decodeWeights, encodeWeights } from '../../shared/train/weights-format.js';

/**
 * What a RawWorker answers to a reveal request: a state (sent as a reveal envelope), a reason to refuse
 * (`reveal-error`), or 'silent' (no answer at all).
 */
export type RevealAnswer = WeightSet | { error: string } | 'silent';

/**
 * A protocol client driven step by step by a test: it can hold a lease, vanish, come back late, or send results that
 * an honest worker never would. Reveal requests and settled notices are handled on their own (they never reach
 * next()): by default it reveals the checkpoint states train() kept, like an honest worker; set `revealer` to lie or
 * stay silent.
 */
export class RawWorker {
  readonly ws: WebSocket;
  private inbox: ServerMessage[] = [];
  private waiters: ((m: ServerMessage) => void)[] = [];
  closed: Promise<{ code: number; reason: string }>;
  /** Checkpoint states of trained units, by lease id (what an honest worker keeps until settled). */
  readonly states = new Map<string, WeightSet[]>();
  /** Every reveal request received, in order, and every settled lease id. */
  readonly revealRequests: RevealRequestMsg[] = [];
  readonly settledLeases: string[] = [];
  revealer: (req: RevealRequestMsg) => RevealAnswer | Promise<RevealAnswer> = (req) =>
    this.states.get(req.leaseId)?.[req.index] ?? { error: 'states not kept' };

  constructor(
    readonly url: string,
    readonly account: string,
    /** Extra upgrade request headers (e.g. X-Forwarded-For, as a reverse proxy adds). */
    headers?: Record<string, string>,
  ) {
    this.ws = new WebSocket(`${url.replace(/^http/, 'ws')}/api/v1/worker`, headers ? { headers } : undefined);
    this.ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      const msg = JSON.parse(String(data)) as ServerMessage;
      if (msg.type === 'reveal') {
        this.revealRequests.push(msg);
        void this.answerReveal(msg);
        return;
      }
      if (msg.type === 'settled') {
        this.settledLeases.push(msg.leaseId);
        return;
      }
      const w = this.waiters.shift();
      if (w) w(msg);
      else this.inbox.push(msg);
    });
    this.closed = new Promise((resolve) =>
      this.ws.on('close', (code, reason) => resolve({ code, reason: String(reason) })),
    );
  }

  private async answerReveal(req: RevealRequestMsg): Promise<void> {
    const answer = await this.revealer(req);
    if (answer === 'silent' || this.ws.readyState !== WebSocket.OPEN) return;
    if ('error' in answer) {
      this.send({ type: 'reveal-error', requestId: req.requestId, reason: answer.error });
      return;
    }
    this.ws.send(
      encodeResultEnvelope(
        { type: 'reveal', requestId: req.requestId, leaseId: req.leaseId, index: req.index },
        encodeWeights(answer),
      ),
    );
  }

  async open(): Promise<void> {
    if (this.ws.readyState === WebSocket.OPEN) return;
    await new Promise<void>((resolve, reject) => {
      this.ws.once('open', () => resolve());
      this.ws.once('error', reject);
    });
  }

  send(msg: object | string): void {
    this.ws.send(typeof msg === 'string' ? msg : JSON.stringify(msg));
  }

  next(timeoutMs = 30_000): Promise<ServerMessage> {
    const m = this.inbox.shift();
    if (m) return Promise.resolve(m);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('no message from coordinator')), timeoutMs);
      this.waiters.push((msg) => {
        clearTimeout(t);
        resolve(msg);
      });
    });
  }

  /** Next message of a type, skipping others (idle, revoke…). */
  async nextOf<T extends ServerMessage['type']>(
    type: T,
    timeoutMs = 30_000,
  ): Promise<Extract<ServerMessage, { type: T }>> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const m = await this.next(Math.max(1, end - Date.now()));
      if (m.type === type) return m as Extract<ServerMessage, { type: T }>;
    }
  }

  /** The challenge the coordinator sent on connect, once hello() has run. */
  challenge?: ChallengeMsg;

  async hello(
    resume?: { leaseId: string; token: string }[],
    sign?: (c: ChallengeMsg) => Promise<{ message: string; signature: string }>,
    /** Extra hello fields (e.g. payTo). */
    extra: { payTo?: string } = {},
  ): Promise<void> {
    await this.open();
    this.challenge = await this.nextOf('challenge');
    const auth = sign ? await sign(this.challenge) : undefined;
    this.send({
      type: 'hello',
      protocol: PROTOCOL_VERSION,
      account: this.account,
      backend: 'wasm',
      capabilities: { backends: ['wasm'] },
      ...(resume ? { resume } : {}),
      ...(auth ? { auth } : {}),
      ...extra,
    });
    await this.nextOf('welcome');
  }

  /** One request: the lease it brings, or null when the coordinator answers idle. */
  async tryLease(timeoutMs = 10_000): Promise<LeaseMsg | null> {
    this.send({ type: 'request' });
    for (;;) {
      const m = await this.next(timeoutMs);
      if (m.type === 'lease') return m;
      if (m.type === 'idle') return null;
    }
  }

  /** Asks for work until a lease arrives. */
  async lease(timeoutMs = 30_000): Promise<LeaseMsg> {
    const end = Date.now() + timeoutMs;
    while (Date.now() < end) {
      this.send({ type: 'request' });
      const m = await this.next(Math.max(1, end - Date.now()));
      if (m.type === 'lease') return m;
      if (m.type === 'idle') await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error('no lease');
  }

  /** Trains the unit honestly with the shared core, exactly as a real worker would, and keeps its states. */
  async train(lease: LeaseMsg): Promise<{ out: TrainUnitOutput; start: WeightSet }> {
    const inputs = await this.unitInputs(lease);
    const start = inputs.startWeights;
    const out = await trainUnit({ ...inputs, keepCheckpointStates: true });
    if (out.checkpointStates) this.states.set(lease.leaseId, out.checkpointStates);
    return { out, start };
  }

  /** Everything trainUnit needs for a lease, downloaded like a worker does (for tests that train their own way). */
  async unitInputs(lease: LeaseMsg): Promise<Omit<TrainUnitInput, 'onStep' | 'shouldStop'>> {
    const headers = { authorization: `Lease ${lease.leaseId}:${lease.token}` };
    const get = async (h: string) => {
      const res = await fetch(`${this.url}/api/v1/blobs/${h}`, { headers });
      if (!res.ok) throw new Error(`blob ${h}: HTTP ${res.status}`);
      return new Uint8Array(await res.arrayBuffer());
    };
    const model = JSON.parse(new TextDecoder().decode(await get(lease.unit.modelHash))) as object;
    const startWeights = decodeWeights(await get(lease.unit.weightsHash));
    const dataset = decodeDataset(await get(lease.unit.datasetHash));
    const u = lease.unit;
    return {
      model,
      spec: {
        steps: u.steps,
        batchSize: u.batchSize,
        checkpointEvery: u.checkpointEvery,
        optimizer: u.optimizer,
        loss: u.loss,
      },
      startWeights,
      dataset,
      indices: assignExamples(u.dataSeed, u.steps, u.batchSize, dataset.trainExamples),
    };
  }

  static header(lease: LeaseMsg, out: TrainUnitOutput, payload: Uint8Array): ResultHeader {
    return {
      type: 'result',
      leaseId: lease.leaseId,
      token: lease.token,
      deltaHash: sha256Hex(payload),
      finalHash: out.finalHash,
      checkpoints: out.checkpoints,
      losses: out.losses,
      examples: out.examples,
      flops: out.flops,
      backend: out.backend,
      timings: { totalMs: out.timings.totalMs, trainMs: out.timings.trainMs },
    };
  }

  /** Submits a run for a lease, honest or forged: its delta as the payload, its commitments and losses as the header. */
  async submitRun(lease: LeaseMsg, out: TrainUnitOutput): Promise<ServerMessage> {
    const payload = encodeWeights(out.delta);
    return this.submit(RawWorker.header(lease, out, payload), payload);
  }

  /** Leases a unit, trains it honestly (keeping its states for reveals) and submits the result. */
  async trainAndSubmit(): Promise<{ lease: LeaseMsg; out: TrainUnitOutput; answer: ServerMessage }> {
    const lease = await this.lease();
    const { out } = await this.train(lease);
    return { lease, out, answer: await this.submitRun(lease, out) };
  }

  sendResult(header: ResultHeader, delta: WeightSet | Uint8Array): void {
    const payload = delta instanceof Uint8Array ? delta : encodeWeights(delta);
    this.ws.send(encodeResultEnvelope(header, payload));
  }

  /** Sends a result and waits for the ack or reject for that lease. */
  async submit(header: ResultHeader, delta: WeightSet | Uint8Array): Promise<ServerMessage> {
    this.sendResult(header, delta);
    const skipped: ServerMessage[] = [];
    try {
      for (;;) {
        const m = await this.next();
        if ((m.type === 'ack' || m.type === 'reject') && m.leaseId === header.leaseId) return m;
        skipped.push(m);
      }
    } finally {
      // Leases pushed meanwhile stay for the next lease() call instead of being lost.
      this.inbox.unshift(...skipped);
    }
  }

  close(): void {
    this.ws.close();
  }

  /** Drops the TCP connection without a close frame, like a crashed tab or a killed process. */
  vanish(): void {
    this.ws.terminate();
  }
}
