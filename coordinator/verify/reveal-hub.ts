import { randomUUID } from 'node:crypto';
import type { RevealHeader, RevealRequestMsg, SettledMsg } from '../../shared/protocol/messages.js';
import type { WeightSet } from '../../shared/train/types.js';
import { decodeWeights } from '../../shared/train/weights-format.js';

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

/** One connected worker, as the hub sees it. */
export interface RevealPeer {
  account: string;
  send(msg: RevealRequestMsg | SettledMsg): void;
}

interface Pending {
  account: string;
  leaseId: string;
  index: number;
  /** Connections asked and not yet answered. */
  asked: Set<string>;
  errors: string[];
  resolve(state: WeightSet): void;
  reject(err: Error): void;
  timer: ReturnType<typeof setTimeout>;
}

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
  private closed = false;
  /** Answered reveals (states received), for tests and the cost report. */
  answered = 0;

  addPeer(connectionId: string, peer: RevealPeer): void {
    this.peers.set(connectionId, peer);
    for (const [requestId, p] of this.pending) {
      if (p.account === peer.account) this.ask(requestId, p, connectionId, peer);
    }
  }

  removePeer(connectionId: string): void {
    this.peers.delete(connectionId);
    // A connection that went away without answering: keep waiting for the account to come back (or the deadline).
    for (const p of this.pending.values()) p.asked.delete(connectionId);
  }

  reveal(account: string, leaseId: string, index: number, timeoutMs: number): Promise<WeightSet> {
    if (this.closed) return Promise.reject(new RevealShutdown());
    const requestId = `rv_${randomUUID().replaceAll('-', '')}`;
    return new Promise<WeightSet>((resolve, reject) => {
      const done = (fn: () => void) => {
        clearTimeout(p.timer);
        this.pending.delete(requestId);
        fn();
      };
      const p: Pending = {
        account,
        leaseId,
        index,
        asked: new Set(),
        errors: [],
        resolve: (s) => done(() => resolve(s)),
        reject: (e) => done(() => reject(e)),
        timer: setTimeout(() => p.reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs),
      };
      this.pending.set(requestId, p);
      for (const [id, peer] of this.peers) if (peer.account === account) this.ask(requestId, p, id, peer);
    });
  }

  private ask(requestId: string, p: Pending, connectionId: string, peer: RevealPeer): void {
    p.asked.add(connectionId);
    peer.send({ type: 'reveal', requestId, leaseId: p.leaseId, index: p.index });
  }

  /** A binary reveal envelope from a connection. Answers from another account than the one asked are ignored. */
  onReveal(connectionId: string, header: RevealHeader, payload: Uint8Array): void {
    const p = this.pending.get(header.requestId);
    const peer = this.peers.get(connectionId);
    if (!p || !peer || peer.account !== p.account) return;
    if (header.leaseId !== p.leaseId || header.index !== p.index) {
      p.reject(new Error(`answered for lease ${header.leaseId} index ${header.index}, not the one asked`));
      return;
    }
    let state: WeightSet;
    try {
      state = decodeWeights(payload);
    } catch (err) {
      p.reject(new Error(`revealed state does not parse: ${(err as Error).message}`));
      return;
    }
    this.answered++;
    p.resolve(state);
  }

  /** The connection cannot reveal; when every connection asked has refused, the request fails at once. */
  onRevealError(connectionId: string, requestId: string, reason: string): void {
    const p = this.pending.get(requestId);
    const peer = this.peers.get(connectionId);
    if (!p || !peer || peer.account !== p.account) return;
    p.asked.delete(connectionId);
    p.errors.push(reason);
    if (p.asked.size === 0) p.reject(new Error(`reveal refused: ${p.errors.join('; ')}`));
  }

  settled(account: string, leaseIds: string[]): void {
    for (const peer of this.peers.values()) {
      if (peer.account !== account) continue;
      for (const leaseId of leaseIds) peer.send({ type: 'settled', leaseId });
    }
  }

  /** Shutdown: every waiting request fails with RevealShutdown (the caller must not rule on it). */
  close(): void {
    this.closed = true;
    for (const p of [...this.pending.values()]) p.reject(new RevealShutdown());
  }

  get waiting(): number {
    return this.pending.size;
  }
}
