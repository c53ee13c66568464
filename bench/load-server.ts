/**
 * One coordinator replica for bench:load, in its own process so that the load generator does not share its event
 * loop. Driven over stdin/stdout with one JSON object per line:
 *
 *   -> {"ready": true, "url": "...", "apiKey": "...", "pid": 123}         once listening (and, on the first replica,
 *                                                                         with a funded requester)
 *   <- {"cmd": "job", "spec": {...}}     -> {"jobId": "..."}
 *   <- {"cmd": "stats", "since": ms}     -> {"rss": bytes, "results": [{role, status, n}], "leases": n}
 *   <- {"cmd": "stop"}                   -> exits
 *
 * Env: LOAD_STORE (pglite | postgres), LOAD_SCHEMA (PostgreSQL schema; the second replica joins the first's),
 * LOAD_REPLICA (name).
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { postJob, startTestCoordinator, testStore } from '../test/helpers/cluster.js';
import { TEST_DATABASE_URL } from '../test/helpers/stores.js';

const kind = process.env.LOAD_STORE === 'postgres' ? 'postgres' : 'pglite';
const store =
  kind === 'postgres' && process.env.LOAD_SCHEMA
    ? {
        dataDir: mkdtempSync(join(tmpdir(), 'swarmgrad-load-')),
        databaseUrl: TEST_DATABASE_URL,
        databaseSchema: process.env.LOAD_SCHEMA,
      }
    : testStore(kind);

const c = await startTestCoordinator(store, {
  logLevel: process.env.LOAD_LOG ?? 'error', // LOAD_LOG=info shows every request (on stderr of the bench)
  replicaId: process.env.LOAD_REPLICA ?? 'load-a',
  sweepEveryMs: 1000,
  idleRetryMs: 1000,
  creditSweepEveryMs: 2000,
  // Every generated socket comes from 127.0.0.1: the per-address limit would refuse all but the first few thousand.
  rateLimitPerAddress: 0,
  rateLimitPerAccount: 0,
});
const out = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);
out({ ready: true, url: c.url, apiKey: c.requester.apiKey, pid: process.pid, schema: c.config.databaseSchema });

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  const msg = JSON.parse(line) as { cmd: string; spec?: Record<string, unknown>; since?: number };
  if (msg.cmd === 'job') {
    const job = await postJob(c.url, msg.spec ?? {}, c.requester.apiKey);
    out({ jobId: job.id });
  } else if (msg.cmd === 'stats') {
    const { rows } = await c.db.query<{ role: string; status: string; n: number }>(
      `SELECT role, status, count(*)::int AS n FROM results WHERE created_at >= $1 GROUP BY role, status`,
      [msg.since ?? 0],
    );
    const leases = await c.db.query<{ n: number }>('SELECT count(*)::int AS n FROM leases WHERE created_at >= $1', [
      msg.since ?? 0,
    ]);
    out({ rss: process.memoryUsage().rss, results: rows, leases: Number(leases.rows[0].n) });
  } else if (msg.cmd === 'stop') {
    // The first replica owns the schema; a joining replica only closes.
    if (process.env.LOAD_SCHEMA) await c.close();
    else await c.destroy();
    out({ stopped: true });
    process.exit(0);
  }
}
