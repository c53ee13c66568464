import { randomUUID } from 'node:crypto';
import type { RevealHeader, RevealRequestMsg, SettledMsg } from '../../shared/protocol/messages.js';
import type { WeightSet } from '../../shared/train/types.js';
import { decodeWeights } from '../../shared/train/weights-format.js';
import { malformedReveal } from '../../shared/verify/bisect.js';

/**
 * How verification reaches workers: ask for a committed checkpoint state, and tell a worker it may drop the states
 * of a settled unit. The worker gateway implements it with a RevealHub over its WebSocket connections.
 */
export interface RevealTransport {
  /**
   * Resolves with the state the worker of `account` kept as checkpoint `index` of the result it gave for `leaseId`.
   * Rejects when the worker refuses, or after `timeoutMs` (the engine applies its own, shorter deadline first).
   */
  reveal(account: string, leaseId: string, index: number, timeoutMs: number): Promise<WeightSet>;
  settled(account: string, leaseIds: string[]): void;
}

/** How often a pending request is announced to the other replicas again (see reveal()). */
export const REASK_EVERY_MS = 2_000;

/** One connected worker, as the hub sees it. */
export interface RevealPeer {
  account: string;
  send(msg: RevealRequestMsg | SettledMsg): void;
}

interface Pending {
  requestId: string;
  account: string;
  leaseId: string;
  index: number;
  /** Connections asked and not yet answered (another replica's as `replica/connection`). */
  asked: Set<string>;
  /** Other replicas' connections that refused: an 'asked' notice arriving after its refusal is ignored. */
  refused: Set<string>;
  errors: string[];
  resolve(state: WeightSet): void;
  reject(err: Error): void;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * A request of another replica, asked of this replica's connections on its behalf until its deadline (or until
 * its origin says it is done).
 */
interface Remote {
  origin: string;
  account: string;
  leaseId: string;
  index: number;
  /** Local connections asked and not yet answered. */
  asked: Set<string>;
  /** What was left of the origin's deadline when this replica heard of the request. */
  timeoutMs: number;
  timer: ReturnType<typeof setTimeout>;
}

/**
 * What replicas on one PostgreSQL tell each other about reveals (verify/reveal-relay.ts carries them over
 * LISTEN/NOTIFY; small JSON). `to` names the origin replica of the request; the others ignore the message.
 */
export type RelayMsg =
  | { kind: 'ask'; from: string; requestId: string; account: string; leaseId: string; index: number; timeoutMs: number }
  | { kind: 'asked'; from: string; to: string; requestId: string; connection: string }
  | { kind: 'gone'; from: string; to: string; requestId: string; connection: string }
  | { kind: 'refused'; from: string; to: string; requestId: string; connection: string; reason: string }
  /** The state is in the shared store under `requestId` (it is far over NOTIFY's 8000-byte limit). */
  | { kind: 'answer'; from: string; to: string; requestId: string; leaseId: string; index: number }
  | { kind: 'done'; from: string; requestId: string }
  | { kind: 'settled'; from: string; account: string; leaseIds: string[] };

/** How a hub reaches the other replicas: publish a message, and park or take the bytes of an answer. */
export interface RevealRelay {
  replicaId: string;
  publish(msg: RelayMsg): void;
  /** Stores the revealed bytes for the origin replica; resolves once they are readable there. */
  putAnswer(requestId: string, bytes: Uint8Array): Promise<void>;
  /** Takes (reads and removes) the bytes another replica stored; null when there are none. */
  takeAnswer(requestId: string): Promise<Uint8Array | null>;
  log(msg: string, extra?: object): void;
}

/** How long a refusal by every known connection waits for other replicas' 'asked' notices before it fails. */
const REFUSAL_GRACE_MS = 500;
/** Lease ids per relayed `settled` notice: about 100 x 41 bytes, well under NOTIFY's 8000-byte payload. */
const SETTLED_PER_NOTICE = 100;

export class RevealShutdown extends Error {
  constructor() {
    super('coordinator shutting down');
  }
}

/**
 * Routes reveal requests to a worker's connections by account (a worker that reconnects gets a new connection id,
 * and its states live on), and their answers back to the waiting request. A request made while the account has no
 * connection waits for one until its deadline: a worker that comes back in time can still answer.
 */
export class RevealHub implements RevealTransport {
  private readonly peers = new Map<string, RevealPeer>();
  private readonly pending = new Map<string, Pending>();
  /** Requests of other replicas (by request id) this replica forwards to its connections. */
  private readonly remote = new Map<string, Remote>();
  /** Other replicas' requests this replica answered or let go, so a repeated 'ask' does not start them again. */
  private readonly finishedRemote = new Map<string, ReturnType<typeof setTimeout>>();
  private relay: RevealRelay | null = null;
  private closed = false;
  /** Answered reveals (states received), for tests and the cost report. */
  answered = 0;

  /**
   * Replicas on one PostgreSQL: every request is also published to the other replicas, which ask their own
   * connections of the account and send the answer back; requests of other replicas are served here.
   */
  attachRelay(relay: RevealRelay | null): void {
    this.relay = relay;
  }

  addPeer(connectionId: string, peer: RevealPeer): void {
    this.peers.set(connectionId, peer);
    for (const [requestId, p] of this.pending) {
      if (p.account === peer.account) this.ask(requestId, p, connectionId, peer);
    }
    for (const [requestId, r] of this.remote) {
      if (r.account === peer.account) this.askForRemote(requestId, r, connectionId, peer);
    }
  }

  removePeer(connectionId: string): void {
    this.peers.delete(connectionId);
    // A connection that went away without answering: keep waiting for the account to come back (or the deadline).
    for (const p of this.pending.values()) p.asked.delete(connectionId);
    for (const [requestId, r] of this.remote) {
      if (r.asked.delete(connectionId))
        this.publish({ kind: 'gone', to: r.origin, requestId, connection: connectionId });
    }
  }

  reveal(account: string, leaseId: string, index: number, timeoutMs: number): Promise<WeightSet> {
    if (this.closed) return Promise.reject(new RevealShutdown());
    const requestId = `rv_${randomUUID().replaceAll('-', '')}`;
    return new Promise<WeightSet>((resolve, reject) => {
      const deadline = Date.now() + timeoutMs;
      let reask: ReturnType<typeof setInterval> | undefined;
      const done = (fn: () => void) => {
        clearTimeout(p.timer);
        clearInterval(reask);
        if (!this.pending.delete(requestId)) return;
        // Other replicas stop asking for it (their own deadline would also end it).
        this.publish({ kind: 'done', requestId });
        fn();
      };
      const p: Pending = {
        requestId,
        account,
        leaseId,
        index,
        asked: new Set(),
        refused: new Set(),
        errors: [],
        resolve: (s) => done(() => resolve(s)),
        reject: (e) => done(() => reject(e)),
        timer: setTimeout(() => p.reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs),
      };
      this.pending.set(requestId, p);
      for (const [id, peer] of this.peers) if (peer.account === account) this.ask(requestId, p, id, peer);
      // Always, not only without a local connection: the account may have connections on several replicas, and
      // the one here may not be the one that kept the states.
      this.publish({ kind: 'ask', requestId, account, leaseId, index, timeoutMs });
      // NOTIFY is fire-and-forget: a replica whose listening connection was down when the ask went out never heard
      // it. Asking again until the request ends reaches it once it is back; replicas that know the request already
      // ignore the repeat.
      if (this.relay && this.pending.has(requestId)) {
        reask = setInterval(() => {
          const left = deadline - Date.now();
          if (left > 0) this.publish({ kind: 'ask', requestId, account, leaseId, index, timeoutMs: left });
        }, REASK_EVERY_MS);
        reask.unref?.();
      }
    });
  }

  private publish(msg: DistributiveOmit<RelayMsg, 'from'>): void {
    if (this.relay) this.relay.publish({ ...msg, from: this.relay.replicaId } as RelayMsg);
  }

  private askForRemote(requestId: string, r: Remote, connectionId: string, peer: RevealPeer): void {
    r.asked.add(connectionId);
    peer.send({ type: 'reveal', requestId, leaseId: r.leaseId, index: r.index });
    this.publish({ kind: 'asked', to: r.origin, requestId, connection: connectionId });
  }

  private dropRemote(requestId: string): void {
    const r = this.remote.get(requestId);
    if (!r) return;
    clearTimeout(r.timer);
    this.remote.delete(requestId);
    // Remembered past the origin's own deadline plus a repeat interval: later repeats of the ask are stale.
    const forget = setTimeout(() => this.finishedRemote.delete(requestId), r.timeoutMs + 2 * REASK_EVERY_MS);
    forget.unref?.();
    this.finishedRemote.set(requestId, forget);
  }

  /** A message from another replica (its own come back too, and are ignored). */
  onRelay(msg: RelayMsg): void {
    const relay = this.relay;
    if (!relay || this.closed || msg.from === relay.replicaId) return;
    if (msg.kind === 'ask') {
      if (this.remote.has(msg.requestId) || this.finishedRemote.has(msg.requestId)) return;
      const r: Remote = {
        origin: msg.from,
        account: msg.account,
        leaseId: msg.leaseId,
        index: msg.index,
        asked: new Set(),
        timeoutMs: msg.timeoutMs,
        timer: setTimeout(() => this.dropRemote(msg.requestId), msg.timeoutMs),
      };
      r.timer.unref?.();
      this.remote.set(msg.requestId, r);
      for (const [id, peer] of this.peers)
        if (peer.account === r.account) this.askForRemote(msg.requestId, r, id, peer);
      return;
    }
    if (msg.kind === 'done') {
      this.dropRemote(msg.requestId);
      return;
    }
    if (msg.kind === 'settled') {
      this.settleLocal(msg.account, msg.leaseIds);
      return;
    }
    if (msg.to !== relay.replicaId) return;
    const p = this.pending.get(msg.requestId);
    if (msg.kind === 'answer') {
      // Taken even when the request is over (timed out), so that the stored bytes do not linger.
      relay
        .takeAnswer(msg.requestId)
        .then((bytes) => {
          if (bytes === null) throw new Error('no stored bytes');
          if (p && this.pending.get(msg.requestId) === p) this.accept(p, msg, bytes);
        })
        .catch((err) => relay.log('relayed reveal answer unreadable', { requestId: msg.requestId, err: String(err) }));
      return;
    }
    if (!p) return;
    // Another replica's connection, as this hub keys it in `asked`.
    const connection = 'connection' in msg ? `${msg.from}/${msg.connection}` : '';
    switch (msg.kind) {
      case 'asked':
        if (!p.refused.has(connection)) p.asked.add(connection);
        return;
      case 'gone':
        p.asked.delete(connection);
        return;
      case 'refused':
        p.refused.add(connection);
        this.refuse(p, connection, msg.reason);
        return;
    }
  }

  private ask(requestId: string, p: Pending, connectionId: string, peer: RevealPeer): void {
    p.asked.add(connectionId);
    peer.send({ type: 'reveal', requestId, leaseId: p.leaseId, index: p.index });
  }

  /** A binary reveal envelope from a connection. Answers from another account than the one asked are ignored. */
  onReveal(connectionId: string, header: RevealHeader, payload: Uint8Array): void {
    const p = this.pending.get(header.requestId);
    const peer = this.peers.get(connectionId);
    if (!peer) return;
    if (!p) {
      this.answerRemote(connectionId, peer, header, payload);
      return;
    }
    if (peer.account !== p.account) return;
    this.accept(p, header, payload);
  }

  /** An answer to another replica's request: park the bytes in the shared store and tell the origin. */
  private answerRemote(connectionId: string, peer: RevealPeer, header: RevealHeader, payload: Uint8Array): void {
    const r = this.remote.get(header.requestId);
    const relay = this.relay;
    if (!r || !relay || peer.account !== r.account || !r.asked.has(connectionId)) return;
    this.dropRemote(header.requestId);
    const { requestId, leaseId, index } = header;
    relay
      .putAnswer(requestId, payload)
      .then(() => this.publish({ kind: 'answer', to: r.origin, requestId, leaseId, index }))
      .catch((err) => relay.log('relaying a reveal answer failed', { requestId, err: String(err) }));
  }

  private accept(p: Pending, header: { leaseId: string; index: number }, payload: Uint8Array): void {
    if (header.leaseId !== p.leaseId || header.index !== p.index) {
      p.reject(malformedReveal(`answered for lease ${header.leaseId} index ${header.index}, not the one asked`));
      return;
    }
    let state: WeightSet;
    try {
      state = decodeWeights(payload);
    } catch (err) {
      p.reject(malformedReveal(`revealed state does not parse: ${(err as Error).message}`));
      return;
    }
    this.answered++;
    p.resolve(state);
  }

  /** The connection cannot reveal; when every connection asked has refused, the request fails at once. */
  onRevealError(connectionId: string, requestId: string, reason: string): void {
    const p = this.pending.get(requestId);
    const peer = this.peers.get(connectionId);
    if (!peer) return;
    if (!p) {
      const r = this.remote.get(requestId);
      if (!r || peer.account !== r.account || !r.asked.delete(connectionId)) return;
      this.publish({ kind: 'refused', to: r.origin, requestId, connection: connectionId, reason });
      return;
    }
    if (peer.account !== p.account) return;
    this.refuse(p, connectionId, reason);
  }

  private refuse(p: Pending, connection: string, reason: string): void {
    p.asked.delete(connection);
    p.errors.push(reason);
    if (p.asked.size > 0) return;
    const fail = () => p.reject(new Error(`reveal refused: ${p.errors.join('; ')}`));
    if (!this.relay) {
      fail();
      return;
    }
    // With other replicas, their 'asked' notices may still be on the way (NOTIFYs from different connections are
    // not ordered): fail only if none came in a short grace.
    setTimeout(() => {
      if (this.pending.get(p.requestId) === p && p.asked.size === 0) fail();
    }, REFUSAL_GRACE_MS).unref?.();
  }

  settled(account: string, leaseIds: string[]): void {
    this.settleLocal(account, leaseIds);
    // A round can settle hundreds of one account's leases; NOTIFY payloads stop at 8000 bytes, so send them in parts.
    for (let i = 0; i < leaseIds.length; i += SETTLED_PER_NOTICE) {
      this.publish({ kind: 'settled', account, leaseIds: leaseIds.slice(i, i + SETTLED_PER_NOTICE) });
    }
  }

  private settleLocal(account: string, leaseIds: string[]): void {
    for (const peer of this.peers.values()) {
      if (peer.account !== account) continue;
      for (const leaseId of leaseIds) peer.send({ type: 'settled', leaseId });
    }
  }

  /** Shutdown: every waiting request fails with RevealShutdown (the caller must not rule on it). */
  close(): void {
    this.closed = true;
    for (const p of [...this.pending.values()]) p.reject(new RevealShutdown());
    for (const id of [...this.remote.keys()]) this.dropRemote(id);
    for (const t of this.finishedRemote.values()) clearTimeout(t);
    this.finishedRemote.clear();
  }

  get waiting(): number {
    return this.pending.size;
  }

  /** Requests of other replicas this hub still asks its connections for. */
  get forwarding(): number {
    return this.remote.size;
  }
}

/** Omit over each member of a union (Omit on the union itself keeps only the common keys). */
type DistributiveOmit<T, K extends keyof T> = T extends unknown ? Omit<T, K> : never;
