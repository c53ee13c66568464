import { Worker } from 'node:worker_threads';
import type { Db, Queryable } from './queryable.js';

interface Reply {
  id: number;
  ok: boolean;
  value?: unknown;
  error?: { message: string; code?: string; [k: string]: unknown };
}

/** A store error as the caller expects it from pg or PGlite: a message, and the SQLSTATE `code` (23505, ...). */
export class StoreError extends Error {
  code?: string;
  constructor(e: NonNullable<Reply['error']>) {
    super(e.message);
    Object.assign(this, e);
  }
}

/**
 * The embedded PGlite store, run in a worker thread (pglite-thread.mjs) so that SQL never runs on the coordinator's
 * event loop: PGlite executes synchronously in wasm on the thread that holds it, and on the main thread a busy store
 * delayed every socket and the health probe (seconds at a thousand workers). Each call is one message; a transaction
 * is held open in the thread while its callback runs here, exactly as PGlite's own transaction() would hold it, so
 * the semantics (one transaction at a time, others wait) are PGlite's.
 */
export async function openPgliteThread(dataDir: string): Promise<Db> {
  const worker = new Worker(new URL('./pglite-thread.mjs', import.meta.url), { workerData: { dataDir } });
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  let nextId = 1;
  let dead: Error | null = null;
  // The thread keeps the process alive only while a call is outstanding (like a socket with a request in flight).
  worker.unref();
  const settleAll = (err: Error) => {
    dead = err;
    for (const p of pending.values()) p.reject(err);
    pending.clear();
  };
  worker.on('message', (r: Reply) => {
    const p = pending.get(r.id);
    if (!p) return;
    pending.delete(r.id);
    if (pending.size === 0) worker.unref();
    if (r.ok) p.resolve(r.value);
    else p.reject(new StoreError(r.error ?? { message: 'store error' }));
  });
  worker.on('error', (err) => settleAll(err));
  worker.on('exit', (code) => settleAll(new Error(`the PGlite thread exited (code ${code})`)));

  const call = <T>(msg: Record<string, unknown>): Promise<T> => {
    if (dead) return Promise.reject(dead);
    const id = nextId++;
    if (pending.size === 0) worker.ref();
    return new Promise<T>((resolve, reject) => {
      pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      worker.postMessage({ id, ...msg });
    });
  };
  const queryIn =
    (tx?: number): Queryable['query'] =>
    <T>(sql: string, params?: unknown[]) =>
      call<{ rows: T[]; rowCount: number }>({ op: 'query', sql, params, tx });

  // Opening (template load or initdb) happens in the thread; the first call waits for it and reports its failure.
  await call({ op: 'query', sql: 'SELECT 1' });
  return {
    kind: 'pglite',
    query: queryIn(),
    async tx(fn) {
      const tx = await call<number>({ op: 'begin' });
      let out: Awaited<ReturnType<typeof fn>>;
      try {
        out = await fn({ query: queryIn(tx) });
      } catch (err) {
        await call({ op: 'rollback', tx }).catch(() => {});
        throw err;
      }
      await call({ op: 'commit', tx });
      return out;
    },
    exec: async (sql) => {
      await call({ op: 'exec', sql });
    },
    close: async () => {
      if (dead) return;
      await call({ op: 'close' }).catch(() => {});
      await worker.terminate();
    },
  };
}
