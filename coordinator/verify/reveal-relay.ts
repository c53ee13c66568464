import { randomUUID } from 'node:crypto';
import type { EventEmitter } from 'node:events';
import type { Db } from '../store/db.js';
import type { RelayMsg, RevealHub, RevealRelay } from './reveal-hub.js';

/**
 * The scheduler event that carries reveal relay messages; coordinator/app.ts lists it among the events
 * store/replica-events.ts relays to the other replicas over LISTEN/NOTIFY.
 */
export const REVEAL_RELAY_EVENT = 'reveal-relay';

/** Answers nobody took (their origin replica stopped before reading them) are deleted after this long. */
const STALE_ANSWER_MS = 10 * 60_000;

/**
 * Links a RevealHub to the other replicas on the same PostgreSQL: its messages go out as `emitter` events (relayed
 * by store/replica-events.ts, which also emits the other replicas' messages here), and revealed states travel
 * through the reveal_answers table, since NOTIFY payloads stop at 8000 bytes. Returns the unlink function.
 */
export function linkRevealHub(opts: {
  hub: RevealHub;
  db: Db;
  emitter: EventEmitter;
  replicaId: string;
  log: (msg: string, extra?: object) => void;
}): () => void {
  const { hub, db, emitter } = opts;
  // Unique even when two replicas were started with the same REPLICA_ID.
  const replicaId = `${opts.replicaId}:${randomUUID().slice(0, 8)}`;
  const relay: RevealRelay = {
    replicaId,
    // Deferred: a message published while a relayed one is being emitted would be taken for an echo and dropped
    // by replica-events (it suppresses what is emitted during its own emit).
    publish: (msg) => queueMicrotask(() => emitter.emit(REVEAL_RELAY_EVENT, msg)),
    async putAnswer(requestId, bytes) {
      const now = Date.now();
      await db.query('DELETE FROM reveal_answers WHERE created_at < $1', [now - STALE_ANSWER_MS]);
      await db.query(
        `INSERT INTO reveal_answers (request_id, bytes, created_at) VALUES ($1, $2, $3)
         ON CONFLICT (request_id) DO NOTHING`,
        [requestId, bytes, now],
      );
    },
    async takeAnswer(requestId) {
      const r = await db.query<{ bytes: Uint8Array }>(
        'DELETE FROM reveal_answers WHERE request_id = $1 RETURNING bytes',
        [requestId],
      );
      const b = r.rows[0]?.bytes;
      return b ? new Uint8Array(b.buffer, b.byteOffset, b.byteLength) : null;
    },
    log: opts.log,
  };
  const onMessage = (msg: RelayMsg) => hub.onRelay(msg);
  emitter.on(REVEAL_RELAY_EVENT, onMessage);
  hub.attachRelay(relay);
  return () => {
    emitter.off(REVEAL_RELAY_EVENT, onMessage);
    hub.attachRelay(null);
  };
}
