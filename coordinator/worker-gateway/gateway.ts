import { randomInt, randomUUID } from 'node:crypto';
import websocket from '@fastify/websocket';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import type { FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import type { WebSocket } from 'ws';
import {
  type ChallengeMsg,
  ClientMessage,
  CloseCode,
  type HelloMsg,
  PROTOCOL_VERSION,
  ResultHeader,
  RevealHeader,
  type ServerMessage,
} from '../../shared/protocol/messages.js';
import { decodeResultEnvelope } from '../../shared/protocol/result-envelope.js';
import type { WeightSet } from '../../shared/train/types.js';
import type { WorkerIdentity } from '../scheduler/hooks.js';
import type { Scheduler } from '../scheduler/scheduler.js';
import type { Db } from '../store/db.js';
import { auditAddress } from '../verify/network-address.js';
import { RevealHub } from '../verify/reveal-hub.js';
import { linkRevealHub } from '../verify/reveal-relay.js';

/** Largest frame before hello, and largest text frame ever (hello, request, progress…), bytes. */
export const CONTROL_FRAME_BYTES = 64 * 1024;
/** Room for an envelope's JSON header (decodeResultEnvelope allows up to 1 MiB) and its 8-byte prefix. */
const ENVELOPE_SLACK = (1 << 20) + 8;
/** Frames a connection may have waiting to be handled; more closes it (4429). */
const MAX_QUEUED_FRAMES = 64;

/**
 * The per-connection frame limit. ws checks a frame's declared length against its receiver's limit as soon as the
 * frame header arrives, before buffering the payload, and closes with 1009; the server-wide `maxPayload` is only the
 * ceiling. Returns false when this ws version keeps its limit elsewhere (then only the ceiling and the checks on
 * arrival hold).
 */
function setFrameLimit(socket: WebSocket, bytes: number): boolean {
  const receiver = (socket as unknown as { _receiver?: { _maxPayload?: unknown } })._receiver;
  if (!receiver || typeof receiver._maxPayload !== 'number') return false;
  receiver._maxPayload = bytes;
  return true;
}

/** Bytes of a WeightSet in the weights format (SGW1): prefix, JSON header padded to 4, float32 data. */
function encodedWeightsBytes(w: WeightSet): number {
  const header = Buffer.byteLength(JSON.stringify({ names: w.names, shapes: w.shapes }));
  let values = 0;
  for (const d of w.data) values += d.length;
  return 8 + header + 3 + values * 4;
}

/** How far back an account's leases size a new connection's frame limit (a late result may still arrive). */
const RECENT_LEASES_MS = 24 * 3_600_000;

const checkClientMessage = TypeCompiler.Compile(ClientMessage);
const checkResultHeader = TypeCompiler.Compile(ResultHeader);
const checkRevealHeader = TypeCompiler.Compile(RevealHeader);

/**
 * Verifies a hello's proof of account ownership against the challenge this connection was sent; the accounts layer
 * plugs in here. Without one, the account a worker names is taken as given (development).
 */
export type HelloAuthenticator = (
  hello: HelloMsg,
  challenge: ChallengeMsg,
  remoteAddress: string,
  /** The id this connection gets once admitted (lets the accounts layer remember how it was admitted). */
  workerId: string,
) => Promise<{ account: string } | { error: string }>;

/** Issues the per-connection challenge; the accounts layer stores the nonce so it can be used once. */
export type ChallengeIssuer = (host: string) => Promise<ChallengeMsg>;

export interface GatewayOptions {
  scheduler: Scheduler;
  db: Db;
  replicaId: string;
  idleRetryMs: number;
  maxPayloadBytes: number;
  authenticate?: HelloAuthenticator;
  issueChallenge?: ChallengeIssuer;
  /** How long a socket may stay silent before hello, ms. */
  helloTimeoutMs?: number;
  /**
   * Orders workers waiting for work, best first; new work is offered to them one at a time in this order (the
   * marketplace ranks cheapest reliable first, coordinator/market/worker-rank.ts). Without it: connection order.
   */
  rankWorkers?: (workers: WorkerIdentity[]) => Promise<WorkerIdentity[]>;
}

interface Connection {
  socket: WebSocket;
  who: WorkerIdentity | null;
  remoteAddress: string;
  /** Waiting for work: gets a lease pushed as soon as one appears. */
  idle: boolean;
  leasing: boolean;
  /** Sent a request not yet answered (by a lease or idle). */
  asked: boolean;
  /** Current frame limit (bytes): CONTROL_FRAME_BYTES until it holds a lease, then its largest model's bound. */
  frameLimit: number;
}

/**
 * The worker gateway: one WebSocket per worker at /api/v1/worker. Text frames are JSON control messages, each
 * schema-checked; a frame that fails closes only that connection (4400). Results arrive as one binary envelope.
 */
async function gateway(app: FastifyInstance, opts: GatewayOptions): Promise<void> {
  const { scheduler, db } = opts;
  const connections = new Map<string, Connection>();

  await app.register(websocket, {
    // The ceiling; each connection gets its own, smaller limit (setFrameLimit).
    options: { maxPayload: opts.maxPayloadBytes },
    errorHandler: (err, socket, req) => {
      req.log.warn({ err: err.message }, 'worker socket error');
      // A frame over the limit: ws already sent 1009 and closes; anything else ends the connection now.
      if (socket.readyState === socket.CLOSING) setTimeout(() => socket.terminate(), 5_000).unref();
      else socket.terminate();
    },
  });
  let frameLimitWarned = false;

  /** What frames about one unit may weigh: its result (a delta) and a revealed state (weights and optimizer slots). */
  const weightBytes = new Map<string, number>();
  const boundsOf = async (weightsHash: string): Promise<{ result: number; reveal: number }> => {
    let w = weightBytes.get(weightsHash);
    if (w === undefined) {
      w = encodedWeightsBytes(await scheduler.weights.get(weightsHash));
      // Sizes only, so many models fit; the oldest goes first.
      if (weightBytes.size >= 4096) weightBytes.delete(weightBytes.keys().next().value as string);
      weightBytes.set(weightsHash, w);
    }
    // Adam keeps two slots per weight: a state is at most three times the weights.
    return { result: w + ENVELOPE_SLACK, reveal: 3 * w + ENVELOPE_SLACK };
  };
  const weightsOfLease = async (leaseId: string): Promise<string | null> => {
    const r = await db.query<{ weights_hash: string }>(
      'SELECT j.weights_hash FROM leases l JOIN jobs j ON j.id = l.job_id WHERE l.id = $1',
      [leaseId],
    );
    return r.rows[0]?.weights_hash ?? null;
  };
  /** Lets `c` send frames as large as a unit of this model needs (never above the ceiling). */
  const allowFramesFor = async (c: Connection, weightsHash: string | null): Promise<void> => {
    if (!weightsHash) return;
    const bound = Math.min((await boundsOf(weightsHash)).reveal, opts.maxPayloadBytes);
    if (bound <= c.frameLimit) return;
    c.frameLimit = bound;
    if (!setFrameLimit(c.socket, bound) && !frameLimitWarned) {
      frameLimitWarned = true;
      app.log.warn('ws keeps no per-connection frame limit here: only MAX_UPLOAD_BYTES bounds a worker frame');
    }
  };

  const send = (c: Connection, msg: ServerMessage) => {
    if (c.socket.readyState === c.socket.OPEN) c.socket.send(JSON.stringify(msg));
  };

  let shuttingDown = false;

  /** One lease attempt for `c`. A worker that asked is answered either way; one only pushed to hears nothing. */
  const offerWork = async (c: Connection, only: 'any' | 'audit' = 'any'): Promise<boolean> => {
    if (!c.who || c.leasing) return false;
    c.leasing = true;
    try {
      const lease = await scheduler.lease(c.who, only);
      // Offered only an audit copy and none fits: the worker still waits for the rest of the pass.
      if (!lease && only === 'audit') return false;
      c.idle = !lease;
      if (lease) {
        // Before the lease leaves: its result may be as large as its model, and no larger.
        await allowFramesFor(c, lease.unit.weightsHash).catch((err) =>
          app.log.error({ err }, 'frame limit for a lease failed'),
        );
        send(c, lease);
      } else if (c.asked) send(c, { type: 'idle', retryMs: opts.idleRetryMs });
      c.asked = false;
      return lease !== null;
    } finally {
      c.leasing = false;
    }
  };

  /**
   * Ranked passes: when work appears, the waiting workers (idle, or asked and unanswered) are offered it one at a time
   * in rankWorkers order, so the best-ranked eligible worker leases first; each worker's own lease filters still
   * apply, so a worker the job does not accept is passed over. One pass at a time per replica: work appearing, or a
   * request arriving, while a pass runs starts another once it ends, so every request is answered in rank order.
   * A pass stops early when no unit is left pending.
   */
  let passing: Promise<void> | null = null;
  let again = false;
  const rankedPass = async () => {
    const waiting = [...connections.values()].filter((c) => c.who && (c.idle || c.asked));
    if (waiting.length === 0) return;
    let pending = await scheduler.hasPendingUnits();
    let order = waiting.map((c) => c.who!);
    if (pending && opts.rankWorkers && order.length > 1) {
      order = await opts.rankWorkers(order).catch((err) => {
        app.log.error({ err }, 'ranking workers failed; connection order');
        return order;
      });
    }
    // Audit copies first, to the waiting workers in random order: the coordinator alone chooses the auditor, and no
    // worker (the cheapest, say) can make itself the usual auditor of a partner's units. Then the rest, in rank order.
    if (pending && order.length > 1 && (await scheduler.hasPendingUnits('audit'))) {
      for (const who of shuffled(order)) {
        const c = connections.get(who.workerId);
        if (!c || !(c.idle || c.asked) || shuttingDown) continue;
        try {
          if ((await offerWork(c, 'audit')) && !(await scheduler.hasPendingUnits('audit'))) break;
        } catch (err) {
          app.log.error({ err, workerId: who.workerId }, 'offer audit work failed');
        }
      }
      pending = await scheduler.hasPendingUnits();
    }
    for (const who of order) {
      const c = connections.get(who.workerId);
      if (!c || !(c.idle || c.asked) || shuttingDown) continue;
      if (!pending) {
        if (c.asked && !c.leasing) {
          c.asked = false;
          send(c, { type: 'idle', retryMs: opts.idleRetryMs });
        }
        continue;
      }
      try {
        if (await offerWork(c)) pending = await scheduler.hasPendingUnits();
      } catch (err) {
        app.log.error({ err, workerId: who.workerId }, 'offer work failed');
        // A worker that asked waits for an answer; idle makes it ask again later.
        if (c.asked) {
          c.asked = false;
          send(c, { type: 'idle', retryMs: opts.idleRetryMs });
        }
      }
    }
  };
  const runPasses = (): void => {
    if (passing) {
      again = true;
      return;
    }
    passing = (async () => {
      try {
        do {
          again = false;
          await rankedPass().catch((err) => app.log.error({ err }, 'ranked pass failed'));
        } while (again && !shuttingDown);
      } finally {
        // Cleared in the same step as the last check of `again`, so no request can slip in between and go unanswered.
        passing = null;
      }
    })();
  };

  const onWork = () => runPasses();
  const onRevoke = (e: { leaseId: string; workerId: string | null; reason: string }) => {
    const c = e.workerId ? connections.get(e.workerId) : undefined;
    if (c) send(c, { type: 'revoke', leaseId: e.leaseId, reason: e.reason });
  };
  scheduler.on('work', onWork);
  scheduler.on('revoke', onRevoke);
  // Verification reaches workers through this hub: reveal requests for disputes and spot checks, settled notices.
  const reveals = new RevealHub();
  scheduler.verification.attachTransport(reveals);
  // Replicas on one PostgreSQL: a party's worker may be connected to another replica (verify/reveal-relay.ts).
  const unlinkReveals =
    db.kind === 'postgres'
      ? linkRevealHub({
          hub: reveals,
          db,
          emitter: scheduler,
          replicaId: opts.replicaId,
          log: (msg, extra) => app.log.warn(extra ?? {}, msg),
        })
      : () => {};

  // Heartbeat: replicas detach leases of workers whose last_seen goes stale.
  const heartbeat = setInterval(() => {
    const ids = [...connections.values()].filter((c) => c.who).map((c) => c.who!.workerId);
    if (ids.length === 0) return;
    db.query('UPDATE workers SET last_seen = $1 WHERE id = ANY($2)', [Date.now(), ids]).catch(() => {});
  }, 10_000);
  heartbeat.unref();

  app.addHook('onClose', async () => {
    shuttingDown = true;
    clearInterval(heartbeat);
    scheduler.verification.stop();
    reveals.close();
    unlinkReveals();
    scheduler.off('work', onWork);
    scheduler.off('revoke', onRevoke);
    await passing;
    // Detach while the store is still open: the units go back on offer, the leases stay resumable.
    for (const c of connections.values()) {
      if (c.who) await scheduler.detachWorker(c.who.workerId).catch(() => {});
      c.socket.close(CloseCode.GoingAway, 'coordinator shutting down');
    }
  });

  app.get('/api/v1/worker', { websocket: true }, (socket, req) => {
    const workerId = `w_${randomUUID().replaceAll('-', '').slice(0, 16)}`;
    const c: Connection = {
      socket,
      who: null,
      remoteAddress: req.ip,
      idle: false,
      leasing: false,
      asked: false,
      frameLimit: CONTROL_FRAME_BYTES,
    };
    // Before hello a frame is at most a hello: a larger one is refused from its header, never buffered.
    setFrameLimit(socket, CONTROL_FRAME_BYTES);
    // Messages are handled strictly in order, so a result never overtakes the hello before it.
    let chain = Promise.resolve();
    // Frames received and not yet handled: bounded, so a fast sender cannot queue without end.
    let queued = 0;
    let queuedBytes = 0;
    let closing = false;
    const helloTimer = setTimeout(() => {
      if (!c.who) socket.close(CloseCode.Unauthorized, 'no hello');
    }, opts.helloTimeoutMs ?? 10_000);

    const fail = (code: number, errCode: string, message: string) => {
      closing = true;
      send(c, { type: 'error', code: errCode, message });
      socket.close(code, message.slice(0, 120));
    };

    const challenge: Promise<ChallengeMsg> = (opts.issueChallenge ?? defaultChallenge)(req.hostname);
    chain = chain.then(async () => send(c, await challenge));

    socket.on('message', (data: Buffer, isBinary: boolean) => {
      if (closing) return;
      if (!isBinary && data.length > CONTROL_FRAME_BYTES) {
        return fail(CloseCode.TooLarge, 'too_large', `text frames are at most ${CONTROL_FRAME_BYTES} bytes`);
      }
      if (queued >= MAX_QUEUED_FRAMES || queuedBytes + data.length > 2 * c.frameLimit + CONTROL_FRAME_BYTES) {
        return fail(
          CloseCode.Flooding,
          'flooding',
          `more than ${MAX_QUEUED_FRAMES} frames or ${2 * c.frameLimit + CONTROL_FRAME_BYTES} bytes waiting: wait for answers before sending more`,
        );
      }
      queued++;
      queuedBytes += data.length;
      chain = chain
        .then(() => (isBinary ? onBinary(new Uint8Array(data)) : onText(data.toString('utf8'))))
        .catch((err) => {
          app.log.error({ err, workerId }, 'worker message failed');
          fail(1011, 'internal', 'internal error');
        })
        .finally(() => {
          queued--;
          queuedBytes -= data.length;
        });
    });

    socket.on('close', () => {
      clearTimeout(helloTimer);
      connections.delete(workerId);
      reveals.removePeer(workerId);
      if (c.who && !shuttingDown) {
        chain = chain.then(() =>
          scheduler.detachWorker(workerId).catch((err) => app.log.error({ err }, 'detach failed')),
        );
      }
    });

    const onText = async (text: string) => {
      let raw: unknown;
      try {
        raw = JSON.parse(text);
      } catch {
        return fail(CloseCode.BadMessage, 'bad_message', 'frame is not JSON');
      }
      if (!checkClientMessage.Check(raw)) {
        const first = checkClientMessage.Errors(raw).First();
        return fail(
          CloseCode.BadMessage,
          'bad_message',
          `message breaks the schema at ${first?.path || '/'}: ${first?.message}`,
        );
      }
      const msg = raw as ClientMessage;
      if (msg.type === 'hello') return onHello(msg);
      if (!c.who) return fail(CloseCode.Unauthorized, 'no_hello', 'send hello first');
      switch (msg.type) {
        case 'request':
          c.asked = true;
          // While a ranked pass runs, the request joins the next one instead of racing better-ranked workers for the
          // new work. Otherwise every waiting worker has already been offered all work announced here, so this
          // worker overtakes nobody by leasing at once.
          if (passing) {
            again = true;
            return;
          }
          await offerWork(c);
          return;
        case 'progress':
          return scheduler.progress(c.who, msg.leaseId, msg.step);
        case 'release':
          await scheduler.release(c.who, msg.leaseId, msg.error);
          return;
        case 'reveal-error':
          reveals.onRevealError(workerId, msg.requestId, msg.reason);
          return;
      }
    };

    const onHello = async (hello: HelloMsg) => {
      if (c.who) return fail(CloseCode.BadMessage, 'bad_message', 'hello sent twice');
      if (hello.protocol !== PROTOCOL_VERSION) {
        return fail(
          CloseCode.BadVersion,
          'bad_version',
          `protocol ${hello.protocol} unsupported; use ${PROTOCOL_VERSION}`,
        );
      }
      let account = hello.account;
      if (opts.authenticate) {
        const r = await opts.authenticate(hello, await challenge, c.remoteAddress, workerId);
        if ('error' in r) return fail(CloseCode.Unauthorized, 'unauthorized', r.error);
        account = r.account;
      }
      clearTimeout(helloTimer);
      c.who = { workerId, account, address: auditAddress(c.remoteAddress) };
      connections.set(workerId, c);
      const now = Date.now();
      await db.query(
        `INSERT INTO workers (id, account, backend, adapter, replica, connected_at, last_seen)
         VALUES ($1, $2, $3, $4, $5, $6, $6)`,
        [workerId, account, hello.backend, hello.capabilities.adapter ?? null, opts.replicaId, now],
      );
      const resumed: string[] = [];
      for (const r of hello.resume ?? []) {
        if (await scheduler.resume(c.who, r.leaseId, r.token)) {
          resumed.push(r.leaseId);
          await allowFramesFor(c, await weightsOfLease(r.leaseId));
        }
      }
      // Results of this account's recent leases (a lease of a previous connection may still be delivered, even one
      // that expired, was revoked or whose job ended meanwhile): their frames must fit too, so that a late result is
      // refused with its reason (lease_expired, unit_already_completed, ...) instead of closing the socket as too big.
      const recent = await db.query<{ weights_hash: string }>(
        `SELECT DISTINCT j.weights_hash FROM leases l JOIN jobs j ON j.id = l.job_id
         WHERE l.account = $1 AND l.created_at > $2 LIMIT 64`,
        [account, now - RECENT_LEASES_MS],
      );
      for (const row of recent.rows) await allowFramesFor(c, row.weights_hash);
      send(c, { type: 'welcome', protocol: PROTOCOL_VERSION, workerId, account, resumed });
      // After welcome: reveal requests still waiting for this account (a reconnect) are asked again here. A reveal
      // request raises the frame limit to what the state of that lease weighs before it leaves.
      reveals.addPeer(workerId, {
        account,
        send: (m) => {
          if (m.type !== 'reveal') return send(c, m);
          weightsOfLease(m.leaseId)
            .then((hash) => allowFramesFor(c, hash))
            .catch((err) => app.log.error({ err }, 'frame limit for a reveal failed'))
            .finally(() => send(c, m));
        },
      });
    };

    const onBinary = async (bytes: Uint8Array) => {
      if (!c.who) return fail(CloseCode.Unauthorized, 'no_hello', 'send hello first');
      let env: ReturnType<typeof decodeResultEnvelope>;
      try {
        env = decodeResultEnvelope(bytes);
      } catch (err) {
        return fail(CloseCode.BadMessage, 'bad_message', `result envelope: ${(err as Error).message}`);
      }
      if ((env.header as { type?: unknown })?.type === 'reveal') {
        if (!checkRevealHeader.Check(env.header)) {
          const first = checkRevealHeader.Errors(env.header).First();
          return fail(CloseCode.BadMessage, 'bad_message', `reveal header breaks the schema at ${first?.path || '/'}`);
        }
        reveals.onReveal(workerId, env.header as RevealHeader, env.payload);
        return;
      }
      if (!checkResultHeader.Check(env.header)) {
        const first = checkResultHeader.Errors(env.header).First();
        const leaseId = (env.header as { leaseId?: unknown })?.leaseId;
        if (typeof leaseId === 'string') {
          // The frame parsed, so the connection stays; the result is refused with the reason.
          send(c, {
            type: 'reject',
            leaseId,
            code: 'bad_header',
            reason: `result header breaks the schema at ${first?.path || '/'}: ${first?.message}`,
          });
          return;
        }
        return fail(CloseCode.BadMessage, 'bad_message', 'result header has no leaseId');
      }
      const header = env.header as ResultHeader;
      const hash = await weightsOfLease(header.leaseId);
      const bound = hash ? (await boundsOf(hash)).result : null;
      if (bound !== null && bytes.length > bound) {
        send(c, {
          type: 'reject',
          leaseId: header.leaseId,
          code: 'too_large',
          reason: `the result frame has ${bytes.length} bytes; a result of this unit's model is at most ${bound}`,
        });
        return;
      }
      const out = await scheduler.submitResult(c.who, header, env.payload);
      if (out.ok) send(c, { type: 'ack', leaseId: header.leaseId, resultHash: header.deltaHash });
      else send(c, { type: 'reject', leaseId: header.leaseId, code: out.code, reason: out.reason });
    };
  });
}

/** A uniformly random permutation (Fisher-Yates). */
function shuffled<T>(xs: readonly T[]): T[] {
  const out = [...xs];
  for (let i = out.length - 1; i > 0; i--) {
    const j = randomInt(i + 1);
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

/** Without an accounts layer the challenge is informational: a fresh nonce, no signature required. */
async function defaultChallenge(host = 'localhost'): Promise<ChallengeMsg> {
  const now = new Date();
  return {
    type: 'challenge',
    nonce: randomUUID().replaceAll('-', ''),
    domain: host,
    uri: `http://${host}/api/v1/worker`,
    chainId: 1,
    issuedAt: now.toISOString(),
    expiresAt: new Date(now.getTime() + 5 * 60_000).toISOString(),
  };
}

export const workerGateway = fp(gateway, { name: 'worker-gateway' });
