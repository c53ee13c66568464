/** Messages between the compute pool (pool.ts) and its threads (thread.ts). */

export type TaskOp =
  | 'buildInitialWeights'
  | 'trialStep'
  | 'cheapCheck'
  | 'evaluate'
  | 'trainUnit'
  | 'stateLayout'
  | 'encodeWeights'
  | 'exit';

/** An argument the thread already holds (sent once, kept by id): datasets and round weights are large. */
export interface Ref {
  $ref: number;
}

export interface TaskMessage {
  id: number;
  op: TaskOp;
  args: Record<string, unknown>;
  /** Objects to keep under these ids before running the task. */
  put: [number, unknown][];
  /** Ids the thread may forget. */
  drop: number[];
  /** Keep a copy of the result under this id (the caller will likely send it back: new weights to preflight). */
  keepResultAs?: number;
}

export type TaskReply =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; error: { name: string; message: string } };

export interface ThreadData {
  backend: string;
  /** SharedArrayBuffer of one Int32: the id of the task to cancel. */
  cancel: SharedArrayBuffer;
  testHooks: boolean;
}

/**
 * The ArrayBuffers of every typed array in a task's result (weights, deltas, checkpoint states): moved to the other
 * side instead of copied. `keep` are buffers that must stay (objects the thread holds by reference).
 */
export function transferablesOf(value: unknown, keep: ReadonlySet<ArrayBufferLike> = new Set()): ArrayBuffer[] {
  const out = new Set<ArrayBuffer>();
  const walk = (v: unknown, depth: number): void => {
    if (!v || typeof v !== 'object' || depth > 6) return;
    if (ArrayBuffer.isView(v)) {
      if (v.buffer instanceof ArrayBuffer && !keep.has(v.buffer)) out.add(v.buffer);
      return;
    }
    for (const x of Array.isArray(v) ? v : Object.values(v)) walk(x, depth + 1);
  };
  walk(value, 0);
  return [...out];
}

/** The thread running a task died (out of memory, killed): the coordinator's failure, not the task's input. */
export class ComputeThreadDied extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ComputeThreadDied';
  }
}
