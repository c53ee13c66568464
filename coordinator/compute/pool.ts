import { Worker } from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs';
import type { JobSpec } from '../../shared/protocol/job-spec.js';
import type { EvaluateOptions, EvaluateResult } from '../../shared/train/evaluate.js';
import { TrainAborted } from '../../shared/train/train-unit.js';
import type { Dataset, TrainUnitSpec, WeightSet } from '../../shared/train/types.js';
import type { StateLayout } from '../../shared/verify/bisect.js';
import type { CheapCheckBounds, CheapCheckInput, CheapCheckResult } from '../../shared/verify/cheap-checks.js';
import type { PreflightProblem } from '../scheduler/preflight.js';
import type { Compute, EncodedWeights, TrainRequest, TrainResult } from './tasks.js';
import { ComputeThreadDied, type TaskMessage, type TaskOp, type TaskReply, type ThreadData } from './wire.js';

/**
 * The coordinator's tensor work (initial weights and the preflight trial of a new job, cheap checks, round
 * evaluation, self-audits, divergence checks, the referee) runs in this pool of worker threads, never on the event
 * loop: a 45M-parameter job took 7-10 s of tfjs on the main thread, during which no socket, lease or health probe was
 * served. Each thread initialises the coordinator's own backend (wasm by default, with the same bridged gradient
 * kernels), so results are bit for bit those the main thread computed.
 *
 * Tasks queue FIFO and go to the first idle thread. Datasets and round weights are sent to a thread once and kept
 * there by object identity (a few per thread, least recently used dropped); results move back as transferred buffers.
 * (Datasets and weight sets are never changed in place once made, which is what makes identity a safe key.)
 * A task that throws in a thread rejects with the same message (TrainAborted stays TrainAborted); a thread that dies
 * is replaced and its task rejected. A long run is cancelled between steps through a shared flag.
 */

export interface ComputePoolOptions {
  threads: number;
  /** tfjs backend of the threads; default the main thread's current one. */
  backend?: string;
  /** Large objects (datasets, weights) a thread keeps. */
  keepPerThread?: number;
  /** Allows the test-only 'exit' task. */
  testHooks?: boolean;
}

interface Task {
  id: number;
  op: TaskOp;
  args: Record<string, unknown>;
  /** Large arguments sent by reference: name -> object. */
  big: Record<string, object>;
  shouldStop?: () => boolean;
  keepResult: boolean;
  /** The id the thread keeps the result under (when keepResult). */
  resultRef?: number;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  cancel: Int32Array;
  task: Task | null;
  /** Reference ids this thread holds, least recently used first. */
  held: Set<number>;
}

const threadUrl = new URL('./compute-thread.mjs', import.meta.url);

function errorFrom(e: { name: string; message: string }): Error {
  if (e.name === 'TrainAborted') return new TrainAborted(e.message);
  const err = new Error(e.message);
  if (e.name !== 'Error') err.name = e.name;
  return err;
}

export class ComputePool implements Compute {
  private readonly slots: Slot[] = [];
  private readonly queue: Task[] = [];
  private readonly refIds = new WeakMap<object, number>();
  private nextRef = 1;
  private nextTask = 1;
  private closed = false;
  private readonly backend: string;
  private readonly keep: number;
  private stopPoll: NodeJS.Timeout | null = null;

  constructor(private readonly opts: ComputePoolOptions) {
    if (!(opts.threads >= 1)) throw new Error('a compute pool needs at least one thread');
    this.backend = opts.backend ?? tf.getBackend();
    this.keep = opts.keepPerThread ?? 6;
  }

  /** Threads started so far (they start on demand, up to `threads`). */
  get size(): number {
    return this.slots.length;
  }

  buildInitialWeights(model: object): Promise<WeightSet> {
    // The thread keeps a copy: the job's preflight (trialStep) sends these weights right back.
    return this.submit('buildInitialWeights', { model }, {}, undefined, true);
  }

  trialStep(model: object, spec: JobSpec, dataset: Dataset, startWeights: WeightSet): Promise<PreflightProblem | null> {
    return this.submit('trialStep', { model, spec }, { dataset, startWeights });
  }

  cheapCheck(input: CheapCheckInput, bounds: CheapCheckBounds): Promise<CheapCheckResult> {
    const { dataset, startWeights, ...rest } = input;
    return this.submit('cheapCheck', { input: rest, bounds }, { dataset, startWeights });
  }

  evaluate(model: object, weights: WeightSet, dataset: Dataset, opts: EvaluateOptions): Promise<EvaluateResult> {
    return this.submit('evaluate', { model, opts }, { weights, dataset });
  }

  trainUnit(req: TrainRequest): Promise<TrainResult> {
    // Only the fields a run needs cross (callers pass their unit inputs with callbacks and extras).
    const { dataset, startWeights, shouldStop, model, spec, indices, fromStep, fromState, toStep } = req;
    const rest = { model, spec, indices, fromStep, fromState, toStep, keepCheckpointStates: req.keepCheckpointStates };
    return this.submit('trainUnit', { req: rest }, { dataset, startWeights }, shouldStop);
  }

  stateLayout(model: object, spec: TrainUnitSpec): Promise<StateLayout> {
    return this.submit('stateLayout', { model, spec }, {});
  }

  encodeWeights(weights: WeightSet): Promise<EncodedWeights> {
    return this.submit('encodeWeights', {}, { weights });
  }

  /** Test-only: a task whose thread exits while running it. */
  crashThreadForTest(): Promise<never> {
    return this.submit('exit', {}, {});
  }

  /** Test-only: kills every thread at once, as the OS would (the pool replaces them for the next tasks). */
  async killThreadsForTest(): Promise<void> {
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }

  /** Queued tasks reject, running ones are cancelled (between steps) and awaited, then the threads end. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.queue.splice(0)) t.reject(new TrainAborted('the compute pool closed'));
    const running = this.slots.filter((s) => s.task);
    for (const s of running) if (s.task) Atomics.store(s.cancel, 0, s.task.id);
    const deadline = Date.now() + 30_000;
    while (this.slots.some((s) => s.task) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    if (this.stopPoll) clearInterval(this.stopPoll);
    await Promise.all(this.slots.splice(0).map((s) => s.worker.terminate()));
  }

  private submit<T>(
    op: TaskOp,
    args: Record<string, unknown>,
    big: Record<string, object>,
    shouldStop?: () => boolean,
    keepResult = false,
  ): Promise<T> {
    if (this.closed) return Promise.reject(new TrainAborted('the compute pool is closed'));
    return new Promise<T>((resolve, reject) => {
      this.queue.push({
        id: this.nextTask++,
        op,
        args,
        big,
        ...(shouldStop ? { shouldStop } : {}),
        keepResult,
        resolve: resolve as (v: unknown) => void,
        reject,
      });
      this.pump();
    });
  }

  private pump(): void {
    while (this.queue.length > 0) {
      let slot = this.slots.find((s) => !s.task);
      if (!slot && this.slots.length < this.opts.threads) slot = this.spawn();
      if (!slot) break;
      const task = this.queue.shift() as Task;
      if (task.shouldStop?.()) {
        task.reject(new TrainAborted());
        continue;
      }
      this.start(slot, task);
    }
    this.pollStops();
  }

  private spawn(): Slot {
    const cancel = new Int32Array(new SharedArrayBuffer(4));
    const data: ThreadData = {
      backend: this.backend,
      cancel: cancel.buffer as SharedArrayBuffer,
      testHooks: !!this.opts.testHooks,
    };
    const worker = new Worker(threadUrl, { workerData: data });
    // Idle threads do not keep the process alive; a thread with a task does (start()).
    worker.unref();
    const slot: Slot = { worker, cancel, task: null, held: new Set() };
    worker.on('message', (r: TaskReply) => {
      const task = slot.task;
      if (!task || task.id !== r.id) return;
      this.finish(slot);
      if (r.ok && task.keepResult && r.value && typeof r.value === 'object') {
        // The thread kept a copy under the id the task reserved: known there from now on.
        this.refIds.set(r.value, task.resultRef as number);
        slot.held.add(task.resultRef as number);
      }
      if (r.ok) task.resolve(r.value);
      else task.reject(errorFrom(r.error));
    });
    const died = (why: string) => {
      const i = this.slots.indexOf(slot);
      if (i < 0) return;
      this.slots.splice(i, 1);
      const task = slot.task;
      slot.task = null;
      task?.reject(new ComputeThreadDied(`compute thread died running ${task.op}: ${why}`));
      void worker.terminate();
      // Its replacement starts on demand, for the next task in the queue.
      if (!this.closed) this.pump();
    };
    worker.on('error', (err) => died(err.message));
    worker.on('exit', (code) => died(`exit code ${code}`));
    this.slots.push(slot);
    return slot;
  }

  private start(slot: Slot, task: Task): void {
    const put: [number, unknown][] = [];
    const drop: number[] = [];
    const args = { ...task.args };
    for (const [name, obj] of Object.entries(task.big)) {
      let id = this.refIds.get(obj);
      if (id === undefined) {
        id = this.nextRef++;
        this.refIds.set(obj, id);
      }
      if (slot.held.has(id)) slot.held.delete(id);
      else put.push([id, obj]);
      slot.held.add(id);
      args[name] = { $ref: id };
    }
    while (slot.held.size > this.keep) {
      const oldest = slot.held.values().next().value as number;
      // Never drop what this task uses (it was just added, so it is the newest; `keep` >= the few per task).
      slot.held.delete(oldest);
      drop.push(oldest);
    }
    slot.task = task;
    Atomics.store(slot.cancel, 0, 0);
    slot.worker.ref();
    const msg: TaskMessage = { id: task.id, op: task.op, args, put, drop };
    if (task.keepResult) {
      task.resultRef = this.nextRef++;
      msg.keepResultAs = task.resultRef;
    }
    try {
      slot.worker.postMessage(msg);
    } catch (err) {
      // Not cloneable (a bug in the caller): the task fails, the thread stays.
      this.finish(slot);
      for (const [id] of put) slot.held.delete(id);
      task.reject(err as Error);
    }
  }

  private finish(slot: Slot): void {
    slot.task = null;
    slot.worker.unref();
    queueMicrotask(() => this.pump());
  }

  /** While a run that can be cancelled is in flight, its shouldStop is polled here and passed on to its thread. */
  private pollStops(): void {
    const watched = () => this.slots.some((s) => s.task?.shouldStop);
    if (watched() && !this.stopPoll) {
      this.stopPoll = setInterval(() => {
        for (const s of this.slots) {
          if (s.task?.shouldStop?.()) Atomics.store(s.cancel, 0, s.task.id);
        }
        if (!watched() && this.stopPoll) {
          clearInterval(this.stopPoll);
          this.stopPoll = null;
        }
      }, 25);
      this.stopPoll.unref();
    }
  }
}
