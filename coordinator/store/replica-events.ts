import { randomUUID } from 'node:crypto';
import type { EventEmitter } from 'node:events';
import pg from 'pg';
import type { Db } from './db.js';

/**
 * Relays chosen events of a local emitter (the scheduler's 'work' and 'revoke') to every other replica on the same
 * PostgreSQL database and schema, over LISTEN/NOTIFY. Without it a lease revoked on replica A (job cancelled there,
 * deadline swept there, unit finished by A's worker) never reaches the worker holding it on replica B, which trains
 * on and is refused at submit; and work made on A waits for B's idle workers to poll again (IDLE_RETRY_MS).
 *
 * For 'work' and 'revoke' only a speed-up: correctness never depends on them (the database decides every lease and
 * result), so notifications lost while the listening connection is down are simply missed, and it reconnects.
 * Verification's 'reveal-relay' messages (verify/reveal-relay.ts) also travel here; a lost one can leave a party
 * unasked until its reveal deadline (docs/VERIFICATION.md, "Open").
 */
export interface ReplicaEvents {
  close(): Promise<void>;
}

/** NOTIFY payloads must stay under 8000 bytes; these events carry a few ids. */
const MAX_PAYLOAD = 7900;
const RECONNECT_MS = 1000;

interface Envelope {
  from: string;
  event: string;
  payload?: unknown;
}

export async function relayReplicaEvents(opts: {
  db: Db;
  databaseUrl: string;
  /** The schema the replicas share (tests run many schemas on one database), or undefined for the default. */
  schema?: string;
  emitter: EventEmitter;
  events: string[];
  log: (msg: string, extra?: object) => void;
}): Promise<ReplicaEvents> {
  // NOTIFY channels are per database, not per schema: the schema is part of the channel name.
  const channel = `swarmgrad_events_${opts.schema ?? 'public'}`;
  const self = randomUUID();
  let closed = false;
  // Set while a relayed event is emitted, so that it is not published back (emit runs listeners synchronously).
  let relaying = false;

  const receive = (msg: pg.Notification) => {
    if (msg.channel !== channel || !msg.payload || closed) return;
    let env: Envelope;
    try {
      env = JSON.parse(msg.payload) as Envelope;
    } catch {
      return;
    }
    if (env.from === self || !opts.events.includes(env.event)) return;
    relaying = true;
    try {
      opts.emitter.emit(env.event, env.payload);
    } finally {
      relaying = false;
    }
  };

  let client: pg.Client | null = null;
  let retry: NodeJS.Timeout | null = null;
  const retryLater = () => {
    if (closed || retry) return;
    retry = setTimeout(() => {
      retry = null;
      if (closed) return;
      listen().catch((err) => {
        opts.log('replica event listener could not reconnect; retrying', { err: String(err) });
        retryLater();
      });
    }, RECONNECT_MS);
    retry.unref();
  };
  const lost = (c: pg.Client, err?: unknown) => {
    if (closed || client !== c) return;
    client = null;
    opts.log('replica event listener lost its connection; reconnecting', { err: String(err) });
    c.end().catch(() => {});
    retryLater();
  };
  const listen = async (): Promise<void> => {
    const c = new pg.Client({ connectionString: opts.databaseUrl });
    c.on('notification', receive);
    c.on('error', (err) => lost(c, err));
    c.on('end', () => lost(c));
    try {
      await c.connect();
      await c.query(`LISTEN ${c.escapeIdentifier(channel)}`);
    } catch (err) {
      c.end().catch(() => {});
      throw err;
    }
    if (closed) {
      await c.end().catch(() => {});
      return;
    }
    client = c;
  };
  // At startup a failure is the caller's (the database is unreachable); later ones retry.
  await listen();
  const publishers = opts.events.map((event) => {
    const publish = (payload?: unknown) => {
      if (relaying || closed) return;
      const text = JSON.stringify({ from: self, event, payload } satisfies Envelope);
      if (text.length > MAX_PAYLOAD) return opts.log('replica event too large to relay', { event });
      opts.db.query('SELECT pg_notify($1, $2)', [channel, text]).catch((err) => {
        if (!closed) opts.log('relaying a replica event failed', { event, err: String(err) });
      });
    };
    opts.emitter.on(event, publish);
    return { event, publish };
  });

  return {
    async close() {
      closed = true;
      if (retry) clearTimeout(retry);
      for (const p of publishers) opts.emitter.off(p.event, p.publish);
      const c = client;
      client = null;
      await c?.end().catch(() => {});
    },
  };
}
