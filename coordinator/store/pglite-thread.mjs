// The embedded PGlite store in its own worker thread (coordinator/store/pglite-worker-db.ts is the other end).
// PGlite is PostgreSQL compiled to wasm and runs synchronously on whatever thread holds it; here that thread is not
// the coordinator's event loop, so sockets, health probes and timers stay served while SQL runs.
// Plain JavaScript: worker threads are started without the TypeScript loader in every runner (tsx, vitest, node).
//
// Messages in:  {id, op: 'query', sql, params, tx?} | {id, op: 'exec', sql} | {id, op: 'begin'}
//               | {id, op: 'commit' | 'rollback', tx} | {id, op: 'close'}
// Messages out: {id, ok: true, value} | {id, ok: false, error: {message, code, detail, constraint, ...}}
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';
import { PGlite } from '@electric-sql/pglite';

// initdb takes several seconds on small machines; a fresh cluster dumped once and loaded into every new database
// takes about one. The template sits in the OS temp folder, keyed by the PGlite version.
const entry = createRequire(import.meta.url).resolve('@electric-sql/pglite');
const version = JSON.parse(
  readFileSync(join(entry.slice(0, entry.lastIndexOf('/dist/')), 'package.json'), 'utf8'),
).version;
const TEMPLATE = join(tmpdir(), `swarmgrad-pglite-template-${version}.tar`);

async function open(dataDir) {
  let dir;
  if (dataDir !== 'memory://') {
    mkdirSync(dataDir, { recursive: true });
    dir = `${dataDir}/pglite`;
  }
  const fresh = dir === undefined || !existsSync(dir);
  if (fresh && existsSync(TEMPLATE)) {
    try {
      const pgl = new PGlite(dir, { loadDataDir: new Blob([readFileSync(TEMPLATE)]) });
      await pgl.waitReady;
      return pgl;
    } catch {
      // A damaged template: fall back to initdb below and write a new one.
      if (dir) rmSync(dir, { recursive: true, force: true });
    }
  }
  const pgl = new PGlite(dir);
  await pgl.waitReady;
  if (fresh) {
    const dump = await pgl.dumpDataDir('none');
    const tmp = `${TEMPLATE}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
    writeFileSync(tmp, new Uint8Array(await dump.arrayBuffer()));
    renameSync(tmp, TEMPLATE);
  }
  return pgl;
}

const ready = open(workerData.dataDir);
/** Open transactions: their query handle and how to end them. */
const txs = new Map();
let nextTx = 1;

const errorOf = (err) => {
  const e = err ?? {};
  const out = { message: String(e.message ?? e) };
  for (const k of ['code', 'detail', 'constraint', 'table', 'column', 'severity', 'hint', 'position']) {
    if (typeof e[k] === 'string') out[k] = e[k];
  }
  return out;
};

const result = (r) => ({ rows: r.rows, rowCount: r.affectedRows ?? r.rows.length });

async function handle(msg) {
  const pgl = await ready;
  switch (msg.op) {
    case 'query': {
      const q = msg.tx ? txs.get(msg.tx)?.t : pgl;
      if (!q) throw new Error(`transaction ${msg.tx} is not open`);
      return result(await q.query(msg.sql, msg.params));
    }
    case 'exec':
      await pgl.exec(msg.sql);
      return null;
    case 'begin': {
      const id = nextTx++;
      let opened;
      const isOpen = new Promise((resolve) => {
        opened = resolve;
      });
      const entry = {};
      // The callback holds PGlite's transaction open until the other end says commit (resolve) or rollback (throw).
      entry.done = pgl.transaction(
        (t) =>
          new Promise((resolve, reject) => {
            entry.t = t;
            entry.end = (commit) => (commit ? resolve() : reject(new Rollback()));
            opened();
          }),
      );
      entry.done.catch(() => {});
      txs.set(id, entry);
      await Promise.race([isOpen, entry.done]);
      if (!entry.t) await entry.done; // BEGIN itself failed: throws its error
      return id;
    }
    case 'commit':
    case 'rollback': {
      const entry = txs.get(msg.tx);
      if (!entry) throw new Error(`transaction ${msg.tx} is not open`);
      txs.delete(msg.tx);
      entry.end(msg.op === 'commit');
      try {
        await entry.done;
      } catch (err) {
        if (!(err instanceof Rollback)) throw err;
      }
      return null;
    }
    case 'close':
      await pgl.close();
      return null;
    default:
      throw new Error(`unknown op ${msg.op}`);
  }
}

class Rollback extends Error {}

parentPort.on('message', (msg) => {
  handle(msg).then(
    (value) => parentPort.postMessage({ id: msg.id, ok: true, value }),
    (err) => parentPort.postMessage({ id: msg.id, ok: false, error: errorOf(err) }),
  );
});
