import { parentPort, workerData } from 'node:worker_threads';
import { evaluateModel } from '../../shared/train/evaluate.js';
import type { WeightSet } from '../../shared/train/types.js';
import { registerWasmGradientKernels } from '../../shared/train/wasm-gradient-kernels.js';
import { cloneWeights } from '../../shared/train/weights-format.js';
import { cheapCheck } from '../../shared/verify/cheap-checks.js';
import { trialStep } from '../scheduler/preflight.js';
import { initTfBackend } from '../tf-backend.js';
import { stateLayoutOf } from './state-layout.js';
import { buildInitialWeights, encodeAndHash, runTrainUnit } from './tasks.js';
import { type TaskMessage, type ThreadData, transferablesOf } from './wire.js';

/**
 * One compute thread (started by compute-thread.mjs): initialises tfjs on the coordinator's backend, keeps the
 * datasets and weights the pool sent it (by reference id), and runs one task at a time.
 */

const data = workerData as ThreadData;
const port = parentPort;
if (!port) throw new Error('thread.ts runs only as a worker thread');
/** The id of the task to cancel, set by the pool (Atomics): trainUnit polls it between steps. */
const cancel = new Int32Array(data.cancel);

const ready = initTfBackend(data.backend).then((got) => {
  if (got !== data.backend) throw new Error(`compute thread: backend ${data.backend} unavailable (got ${got})`);
  registerWasmGradientKernels();
});

/** Objects the pool sent, by its reference id; the pool tells which to drop (it mirrors this set). */
const refs = new Map<number, unknown>();

function resolve<T>(v: unknown): T {
  if (v && typeof v === 'object' && '$ref' in v) {
    const hit = refs.get((v as { $ref: number }).$ref);
    if (hit === undefined) throw new Error(`compute thread: unknown reference ${(v as { $ref: number }).$ref}`);
    return hit as T;
  }
  return v as T;
}

/** Buffers of what the thread keeps: never moved away with a result. */
function heldBuffers(): Set<ArrayBufferLike> {
  return new Set(transferablesOf([...refs.values()]));
}

async function run(msg: TaskMessage): Promise<unknown> {
  await ready;
  const a = msg.args;
  switch (msg.op) {
    case 'buildInitialWeights':
      return buildInitialWeights(a.model as object);
    case 'trialStep':
      return trialStep(a.model as object, resolve(a.spec), resolve(a.dataset), resolve(a.startWeights));
    case 'cheapCheck':
      return cheapCheck(
        { ...(a.input as object), dataset: resolve(a.dataset), startWeights: resolve(a.startWeights) } as Parameters<
          typeof cheapCheck
        >[0],
        resolve(a.bounds),
      );
    case 'evaluate':
      return evaluateModel(a.model as object, resolve(a.weights), resolve(a.dataset), resolve(a.opts));
    case 'trainUnit':
      return runTrainUnit(
        {
          ...(a.req as object),
          dataset: resolve(a.dataset),
          startWeights: resolve(a.startWeights),
          shouldStop: () => Atomics.load(cancel, 0) === msg.id,
        } as Parameters<typeof runTrainUnit>[0],
        false,
      );
    case 'stateLayout':
      return stateLayoutOf(a.model as object, resolve(a.spec));
    case 'encodeWeights':
      return encodeAndHash(resolve(a.weights));
    case 'exit':
      // Test-only: a thread that dies in the middle of a task (the pool must replace it and reject the task).
      if (data.testHooks) process.exit(3);
      throw new Error('exit is a test-only task');
    default:
      throw new Error(`unknown compute task ${msg.op}`);
  }
}

port.on('message', (msg: TaskMessage) => {
  for (const id of msg.drop) refs.delete(id);
  for (const [id, v] of msg.put) refs.set(id, v);
  run(msg)
    .then((value) => {
      if (msg.keepResultAs !== undefined) refs.set(msg.keepResultAs, cloneWeights(value as WeightSet));
      return value;
    })
    .then(
      (value) => port.postMessage({ id: msg.id, ok: true, value }, transferablesOf(value, heldBuffers())),
      (err: unknown) => {
        const e = err as { name?: unknown; message?: unknown } | null;
        port.postMessage({
          id: msg.id,
          ok: false,
          error: { name: String(e?.name ?? 'Error'), message: String(e?.message ?? err) },
        });
      },
    );
});
