import type {
  Capabilities,
  ChallengeMsg,
  HelloMsg,
  LeaseMsg,
  ResultHeader,
  RevealRequestMsg,
  ServerMessage,
  UnitSpec,
} from '../protocol/messages.js';
import { PROTOCOL_VERSION } from '../protocol/messages.js';
import { encodeResultEnvelope } from '../protocol/result-envelope.js';
import { assignExamples } from '../train/assign.js';
import { decodeDataset } from '../train/dataset-format.js';
import { TrainAborted, trainUnit } from '../train/train-unit.js';
import type { Dataset, WeightSet } from '../train/types.js';
import { decodeWeights, encodeWeights } from '../train/weights-format.js';
import { type BlobAccess, type BlobSource, httpBlobSource } from './blob-source.js';

/**
 * The worker side of the protocol, shared by the browser Web Worker and the headless Node worker: connect, say
 * hello, ask for work, train the unit with trainUnit, upload the result, repeat. Reconnects with backoff and keeps
 * the unit in hand while its lease is still valid.
 */

export type WorkerState =
  | 'idle'
  | 'connecting'
  | 'downloading'
  | 'training'
  | 'uploading'
  | 'paused'
  | 'offline'
  | 'stopped';

export interface Receipt {
  leaseId: string;
  jobName: string;
  resultHash: string;
  status: 'pending' | 'accepted' | 'rejected';
  reason?: string;
  at: number;
  examples: number;
  backend: string;
}

export type WorkerEvent =
  | { type: 'state'; state: WorkerState }
  | { type: 'welcome'; workerId: string; account: string }
  | { type: 'lease'; leaseId: string; jobName: string; steps: number }
  | { type: 'step'; leaseId: string; step: number; steps: number; loss: number; examplesPerSecond: number }
  | { type: 'receipt'; receipt: Receipt }
  | { type: 'log'; level: 'info' | 'warn' | 'error'; message: string };

/** The subset of the WebSocket API both the browser and the `ws` package provide. */
export interface SocketLike {
  binaryType: string;
  readyState: number;
  send(data: string | Uint8Array | ArrayBuffer): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
}

export interface WorkerLoopOptions {
  coordinatorUrl: string;
  account: string;
  backend: string;
  adapter?: string;
  capabilities?: Record<string, unknown>;
  // biome-ignore lint/suspicious/noExplicitAny: browser WebSocket and ws.WebSocket differ in handler typings
  openSocket: (url: string) => any;
  blobs?: BlobSource;
  /** Awaited between training steps: duty-cycle throttling, pause on hidden tab or low battery. */
  gate?: () => Promise<void>;
  reconnect?: { minMs: number; maxMs: number };
  /** Signs the coordinator's challenge (a SIWE message over its nonce); returns the hello.auth field. */
  authenticate?: (challenge: ChallengeMsg) => Promise<HelloMsg['auth']>;
  /** Credits go to this address instead of the signer's (honoured only with a verified signature). */
  payTo?: string;
  /** Progress messages are sent at most this often (ms). */
  progressEveryMs?: number;
  /**
   * Units whose checkpoint states are kept for reveals until the coordinator says `settled` (oldest dropped first
   * beyond this). Default 8.
   */
  maxKeptUnits?: number;
}

interface HeldUnit {
  lease: LeaseMsg;
  /** The encoded result, kept until acked so it survives a reconnect. */
  envelope?: Uint8Array;
  header?: ResultHeader;
}

export class WorkerLoop {
  private listeners = new Set<(e: WorkerEvent) => void>();
  private socket: SocketLike | null = null;
  private current: HeldUnit | null = null;
  private stopping = false;
  private paused = false;
  private resumeWaiters: (() => void)[] = [];
  private backoffMs: number;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private idleTimer: ReturnType<typeof setTimeout> | null = null;
  private abortLease: string | null = null;
  private _state: WorkerState = 'idle';
  private readonly blobs: BlobSource;
  private readonly models = new Map<string, object>();
  private readonly datasets = new Map<string, Dataset>();
  private stopResolve: (() => void) | null = null;
  /**
   * Checkpoint states of submitted units by lease, oldest first: verification may ask for any of them (a spot check
   * or a dispute) until the coordinator says the unit is settled, also after this worker moved on and across
   * reconnects.
   */
  private readonly kept = new Map<string, WeightSet[]>();

  constructor(private readonly opts: WorkerLoopOptions) {
    this.blobs = opts.blobs ?? httpBlobSource(opts.coordinatorUrl);
    this.backoffMs = opts.reconnect?.minMs ?? 500;
  }

  get state(): WorkerState {
    return this._state;
  }

  /** Leases whose checkpoint states this worker still keeps for reveals. */
  get keptLeases(): string[] {
    return [...this.kept.keys()];
  }

  on(listener: (e: WorkerEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  start(): void {
    this.stopping = false;
    this.connect();
  }

  pause(): void {
    this.paused = true;
    this.setState('paused');
  }

  resume(): void {
    const wasPaused = this.paused;
    this.paused = false;
    const w = this.resumeWaiters;
    this.resumeWaiters = [];
    for (const r of w) r();
    this.setState(this.current ? 'training' : 'idle');
    if (wasPaused && !this.current && this.socket?.readyState === 1) this.requestWork();
  }

  /** Finishes cleanly: the unit in hand is released so the coordinator reissues it at once. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.kept.clear();
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.resume();
    if (this.current) {
      this.abortLease = this.current.lease.leaseId;
      this.sendJson({ type: 'release', leaseId: this.current.lease.leaseId });
      this.current = null;
    }
    const sock = this.socket;
    if (sock && sock.readyState === 1) {
      // Give the release frame a moment to flush before closing.
      await new Promise<void>((resolve) => {
        this.stopResolve = resolve;
        setTimeout(resolve, 300);
        sock.close(1000, 'worker stopping');
      });
    }
    this.socket = null;
    this.setState('stopped');
  }

  // ---- connection -------------------------------------------------------------------------------------------

  private wsUrl(): string {
    const u = new URL('/api/v1/worker', this.opts.coordinatorUrl);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    return u.toString();
  }

  private connect(): void {
    if (this.stopping) return;
    this.setState(this.current ? this._state : 'connecting');
    let sock: SocketLike;
    try {
      sock = this.opts.openSocket(this.wsUrl()) as SocketLike;
    } catch (err) {
      this.emit({ type: 'log', level: 'warn', message: `connect failed: ${String(err)}` });
      this.scheduleReconnect();
      return;
    }
    sock.binaryType = 'arraybuffer';
    this.socket = sock;
    // The coordinator speaks first (a challenge); hello answers it.
    sock.onopen = () => {};
    sock.onmessage = (ev) => this.onMessage(ev.data);
    sock.onerror = () => {};
    sock.onclose = (ev) => {
      if (this.socket === sock) this.socket = null;
      this.stopResolve?.();
      if (this.stopping) return;
      this.emit({ type: 'log', level: 'warn', message: `connection closed (${ev.code} ${ev.reason ?? ''})` });
      if (ev.code >= 4400 && ev.code < 4500 && ev.code !== 4408) {
        // The coordinator refused us for a reason retrying will not fix.
        this.emit({ type: 'log', level: 'error', message: `refused by coordinator: ${ev.reason}` });
        this.setState('stopped');
        this.stopping = true;
        return;
      }
      this.setState('offline');
      this.scheduleReconnect();
    };
  }

  private scheduleReconnect(): void {
    if (this.stopping || this.reconnectTimer) return;
    const max = this.opts.reconnect?.maxMs ?? 15_000;
    const wait = Math.min(this.backoffMs, max);
    this.backoffMs = Math.min(this.backoffMs * 2, max);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.connect();
    }, wait);
  }

  private async sendHello(challenge: ChallengeMsg): Promise<void> {
    const caps: Capabilities = {
      backends: [this.opts.backend],
      adapter: this.opts.adapter,
      ...(this.opts.capabilities ?? {}),
    } as Capabilities;
    const hello: HelloMsg = {
      type: 'hello',
      protocol: PROTOCOL_VERSION,
      account: this.opts.account,
      backend: this.opts.backend,
      capabilities: caps,
    };
    if (this.opts.payTo) hello.payTo = this.opts.payTo;
    if (this.current) hello.resume = [{ leaseId: this.current.lease.leaseId, token: this.current.lease.token }];
    if (this.opts.authenticate) {
      try {
        hello.auth = await this.opts.authenticate(challenge);
      } catch (err) {
        this.emit({ type: 'log', level: 'error', message: `could not sign the challenge: ${String(err)}` });
      }
    }
    this.sendJson(hello);
  }

  private sendJson(msg: object): void {
    const s = this.socket;
    if (s && s.readyState === 1) s.send(JSON.stringify(msg));
  }

  private requestWork(): void {
    if (this.stopping || this.current) return;
    if (this.paused) {
      // Paused while idle: ask for nothing until resume, so no lease sits unworked.
      this.setState('paused');
      return;
    }
    this.setState(this.paused ? 'paused' : 'idle');
    this.sendJson({ type: 'request' });
  }

  // ---- messages ---------------------------------------------------------------------------------------------

  private onMessage(data: unknown): void {
    if (typeof data !== 'string') return;
    let msg: ServerMessage;
    try {
      msg = JSON.parse(data) as ServerMessage;
    } catch {
      return;
    }
    switch (msg.type) {
      case 'challenge':
        void this.sendHello(msg);
        break;
      case 'welcome': {
        this.backoffMs = this.opts.reconnect?.minMs ?? 500;
        this.emit({ type: 'welcome', workerId: msg.workerId, account: msg.account });
        const held = this.current;
        if (held && !msg.resumed.includes(held.lease.leaseId)) {
          // The coordinator gave the unit to someone else while we were away: drop it.
          this.emit({
            type: 'log',
            level: 'warn',
            message: `lease ${held.lease.leaseId} was not kept across reconnect`,
          });
          this.abortLease = held.lease.leaseId;
          this.current = null;
        }
        if (this.current?.envelope) this.socket?.send(this.current.envelope);
        else if (!this.current) this.requestWork();
        else this.setState('training');
        break;
      }
      case 'lease':
        if (this.current || this.stopping) {
          // One unit at a time; give back anything extra.
          this.sendJson({ type: 'release', leaseId: msg.leaseId });
          return;
        }
        this.current = { lease: msg };
        this.emit({ type: 'lease', leaseId: msg.leaseId, jobName: msg.unit.jobName, steps: msg.unit.steps });
        void this.work(this.current);
        break;
      case 'idle':
        this.setState(this.paused ? 'paused' : 'idle');
        if (this.idleTimer) clearTimeout(this.idleTimer);
        this.idleTimer = setTimeout(() => this.requestWork(), msg.retryMs);
        break;
      case 'ack':
      case 'reject': {
        // A rejected result will never be asked about.
        if (msg.type === 'reject') this.kept.delete(msg.leaseId);
        const held = this.current;
        if (!held || held.lease.leaseId !== msg.leaseId) return;
        this.current = null;
        const header = held.header;
        this.emit({
          type: 'receipt',
          receipt: {
            leaseId: msg.leaseId,
            jobName: held.lease.unit.jobName,
            resultHash: header?.deltaHash ?? '',
            status: msg.type === 'ack' ? 'accepted' : 'rejected',
            reason: msg.type === 'reject' ? `${msg.code}: ${msg.reason}` : undefined,
            at: Date.now(),
            examples: header?.examples ?? 0,
            backend: header?.backend ?? this.opts.backend,
          },
        });
        this.requestWork();
        break;
      }
      case 'revoke':
        if (this.current?.lease.leaseId === msg.leaseId) {
          this.abortLease = msg.leaseId;
          this.current = null;
          this.requestWork();
        }
        break;
      case 'reveal':
        this.answerReveal(msg);
        break;
      case 'settled':
        this.kept.delete(msg.leaseId);
        break;
      case 'error':
        this.emit({ type: 'log', level: 'error', message: `${msg.code}: ${msg.message}` });
        break;
    }
  }

  /** Sends a kept checkpoint state (binary envelope), or says why it cannot. */
  private answerReveal(msg: RevealRequestMsg): void {
    const states = this.kept.get(msg.leaseId);
    const s = this.socket;
    if (s?.readyState !== 1) return;
    if (!states || !(msg.index >= 0 && msg.index < states.length)) {
      const reason = states ? `index ${msg.index} out of range (${states.length} checkpoints)` : 'states not kept';
      this.sendJson({ type: 'reveal-error', requestId: msg.requestId, reason });
      return;
    }
    s.send(
      encodeResultEnvelope(
        { type: 'reveal', requestId: msg.requestId, leaseId: msg.leaseId, index: msg.index },
        encodeWeights(states[msg.index]),
      ),
    );
    this.emit({ type: 'log', level: 'info', message: `revealed checkpoint ${msg.index} of ${msg.leaseId}` });
  }

  private keepStates(leaseId: string, states: WeightSet[] | undefined): void {
    if (!states) return;
    this.kept.delete(leaseId);
    this.kept.set(leaseId, states);
    const max = this.opts.maxKeptUnits ?? 8;
    while (this.kept.size > max) this.kept.delete(this.kept.keys().next().value as string);
  }

  // ---- training ---------------------------------------------------------------------------------------------

  private async work(held: HeldUnit): Promise<void> {
    const { lease } = held;
    const t0 = now();
    try {
      this.setState('downloading');
      // Blobs are served to the holder of a lease on their unit only: the lease is the credential.
      const access = { leaseId: lease.leaseId, token: lease.token };
      const [model, weights, dataset] = await Promise.all([
        this.loadModel(lease.unit.modelHash, access),
        this.blobs.get(lease.unit.weightsHash, access).then(decodeWeights),
        this.loadDataset(lease.unit.datasetHash, access),
      ]);
      if (this.current !== held) return;
      this.setState(this.paused ? 'paused' : 'training');
      const out = await this.train(held, lease.unit, model, weights, dataset);
      if (this.current !== held) return;
      this.setState('uploading');
      const header: ResultHeader = {
        type: 'result',
        leaseId: lease.leaseId,
        token: lease.token,
        deltaHash: out.deltaHash,
        finalHash: out.finalHash,
        checkpoints: out.checkpoints,
        losses: out.losses,
        examples: out.examples,
        flops: out.flops,
        backend: out.backend,
        adapter: this.opts.adapter,
        timings: { totalMs: now() - t0, trainMs: out.timings.trainMs },
      };
      held.header = header;
      held.envelope = encodeResultEnvelope(header, encodeWeights(out.delta));
      // Kept before the upload: a reveal may follow the ack at once.
      this.keepStates(lease.leaseId, out.checkpointStates);
      this.emit({
        type: 'receipt',
        receipt: {
          leaseId: lease.leaseId,
          jobName: lease.unit.jobName,
          resultHash: out.deltaHash,
          status: 'pending',
          at: Date.now(),
          examples: out.examples,
          backend: out.backend,
        },
      });
      // If the socket is down, the envelope goes out after the next welcome.
      if (this.socket && this.socket.readyState === 1) this.socket.send(held.envelope);
    } catch (err) {
      // Aborts (stop, revoke, lost lease) surface as exceptions from inside trainUnit; they are not failures.
      if (err instanceof TrainAborted || this.current !== held) return;
      this.emit({ type: 'log', level: 'error', message: `unit ${lease.leaseId} failed: ${String(err)}` });
      if (this.current === held) {
        this.current = null;
        // The reason lets the coordinator tell a job nobody can train from a worker that failed (job-fault.ts).
        this.sendJson({ type: 'release', leaseId: lease.leaseId, error: String(err).slice(0, 500) });
        this.requestWork();
      }
    }
  }

  private async train(held: HeldUnit, unit: UnitSpec, model: object, weights: WeightSet, dataset: Dataset) {
    const leaseId = held.lease.leaseId;
    const indices = assignExamples(unit.dataSeed, unit.steps, unit.batchSize, dataset.trainExamples);
    let lastProgress = 0;
    let lastYield = now();
    let stepStart = now();
    return trainUnit({
      model,
      spec: {
        steps: unit.steps,
        batchSize: unit.batchSize,
        checkpointEvery: unit.checkpointEvery,
        optimizer: unit.optimizer,
        loss: unit.loss,
      },
      startWeights: weights,
      dataset,
      indices,
      // Verification may ask for any of them until the unit is settled.
      keepCheckpointStates: true,
      shouldStop: () => this.abortLease === leaseId || this.current !== held,
      onStep: async (step, loss) => {
        const t = now();
        const eps = (unit.batchSize * 1000) / Math.max(1e-3, t - stepStart);
        this.emit({ type: 'step', leaseId, step: step + 1, steps: unit.steps, loss, examplesPerSecond: eps });
        if (t - lastProgress > (this.opts.progressEveryMs ?? 1000)) {
          lastProgress = t;
          this.sendJson({ type: 'progress', leaseId, step: step + 1, loss: Number.isFinite(loss) ? loss : undefined });
        }
        if (this.paused) {
          this.setState('paused');
          await new Promise<void>((r) => this.resumeWaiters.push(r));
          if (this.current === held) this.setState('training');
        }
        if (this.opts.gate) await this.opts.gate();
        // Losses are read without a macrotask on host-memory backends: give socket messages (reveal requests of an
        // earlier unit, revokes) a turn now and then, or they would wait for the whole unit.
        if (now() - lastYield > 20) {
          await macrotask();
          lastYield = now();
        }
        if (this.abortLease === leaseId || this.current !== held) throw new TrainAborted();
        stepStart = now();
      },
    });
  }

  private async loadModel(hash: string, access: BlobAccess): Promise<object> {
    const hit = this.models.get(hash);
    if (hit) return hit;
    const bytes = await this.blobs.get(hash, access);
    const model = JSON.parse(new TextDecoder().decode(bytes)) as object;
    this.models.set(hash, model);
    return model;
  }

  private async loadDataset(hash: string, access: BlobAccess): Promise<Dataset> {
    const hit = this.datasets.get(hash);
    if (hit) return hit;
    const ds = decodeDataset(await this.blobs.get(hash, access));
    // One dataset decoded at a time is plenty for a volunteer device.
    this.datasets.clear();
    this.datasets.set(hash, ds);
    return ds;
  }

  private setState(s: WorkerState): void {
    if (this._state === s) return;
    this._state = s;
    this.emit({ type: 'state', state: s });
  }

  private emit(e: WorkerEvent): void {
    for (const l of this.listeners) l(e);
  }
}

function now(): number {
  return typeof performance !== 'undefined' ? performance.now() : Date.now();
}

/** One macrotask turn: setImmediate in Node, a MessageChannel message in browsers (no 4 ms timer clamping). */
function macrotask(): Promise<void> {
  const g = globalThis as { setImmediate?: (fn: () => void) => unknown };
  if (typeof g.setImmediate === 'function') {
    const setImmediate = g.setImmediate;
    return new Promise((resolve) => setImmediate(resolve));
  }
  if (typeof MessageChannel !== 'undefined') {
    return new Promise((resolve) => {
      const ch = new MessageChannel();
      ch.port1.onmessage = () => {
        ch.port1.close();
        resolve();
      };
      ch.port2.postMessage(0);
    });
  }
  return new Promise((resolve) => setTimeout(resolve, 0));
}
