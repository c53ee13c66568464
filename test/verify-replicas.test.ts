import { EventEmitter } from 'node:events';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Db, openDb } from '../coordinator/store/db.js';
import { relayReplicaEvents } from '../coordinator/store/replica-events.js';
import { verifyMigrations } from '../coordinator/verify/migrations.js';
import { REASK_EVERY_MS, RevealHub } from '../coordinator/verify/reveal-hub.js';
import { linkRevealHub, REVEAL_RELAY_EVENT } from '../coordinator/verify/reveal-relay.js';
import { getTrust } from '../coordinator/verify/store.js';
import type { RevealRequestMsg, SettledMsg } from '../shared/protocol/messages.js';
import type { WeightSet } from '../shared/train/types.js';
import { encodeWeights } from '../shared/train/weights-format.js';
import { postJob, startReplicaPair, waitFor } from './helpers/cluster.js';
import { signedWorker } from './helpers/identities.js';
import { RawWorker } from './helpers/raw-worker.js';
import { dropTestDb, openTestDb, TEST_DATABASE_URL } from './helpers/stores.js';
import { auditedJob, events, poisonedRun, resultsOf } from './helpers/verify-fixtures.js';

/**
 * Reveals across coordinator replicas on one PostgreSQL: the replica settling a dispute asks a party whose worker is
 * connected to another replica (verify/reveal-relay.ts). Without the relay the request never reached it and the
 * honest party lost by timeout.
 */

beforeAll(async () => {
  await tf.setBackend('wasm');
  await tf.ready();
});

function peer(account: string) {
  const sent: (RevealRequestMsg | SettledMsg)[] = [];
  return { account, sent, send: (m: RevealRequestMsg | SettledMsg) => sent.push(m) };
}

/** One replica's hub, linked over the real LISTEN/NOTIFY relay, with its own connection pool on the schema. */
async function replicaHub(schema: string, name: string) {
  const db = await openDb({ databaseUrl: TEST_DATABASE_URL, dataDir: 'unused', schema });
  const emitter = new EventEmitter();
  const log = () => {};
  const relay = await relayReplicaEvents({
    db,
    databaseUrl: TEST_DATABASE_URL,
    schema,
    emitter,
    events: [REVEAL_RELAY_EVENT],
    log,
  });
  const hub = new RevealHub();
  const unlink = linkRevealHub({ hub, db, emitter, replicaId: name, log });
  return {
    hub,
    db,
    async close() {
      hub.close();
      unlink();
      await relay.close();
      await db.close();
    },
  };
}

describe('RevealHub relay between replicas (real PostgreSQL LISTEN/NOTIFY)', () => {
  let main: Db & { schema?: string };
  let a: Awaited<ReturnType<typeof replicaHub>>;
  let b: Awaited<ReturnType<typeof replicaHub>>;
  beforeAll(async () => {
    main = await openTestDb('postgres');
    const m = verifyMigrations.find((x) => x.id === '0401_reveal_relay');
    await main.exec(m?.sql as string);
    a = await replicaHub(main.schema as string, 'replica-a');
    b = await replicaHub(main.schema as string, 'replica-b');
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await dropTestDb(main);
  });

  it('a request crosses to the replica holding the connection and the state comes back intact', async () => {
    // ~400 KB: far over NOTIFY's 8000-byte payload limit.
    const big: WeightSet = {
      names: ['dense/kernel', 'adam/m'],
      shapes: [[250, 200], [50_000]],
      data: [
        Float32Array.from({ length: 50_000 }, (_, i) => Math.sin(i)),
        Float32Array.from({ length: 50_000 }, (_, i) => i / 7),
      ],
    };
    const alice = peer('alice');
    const bob = peer('bob');
    b.hub.addPeer('conn-b1', alice);
    b.hub.addPeer('conn-b2', bob);
    const asked = a.hub.reveal('alice', 'lease_x', 4, 5_000);
    await waitFor('the request on B', async () => alice.sent.length === 1, 5_000);
    expect(bob.sent).toEqual([]);
    const req = alice.sent[0] as RevealRequestMsg;
    expect(req).toMatchObject({ type: 'reveal', leaseId: 'lease_x', index: 4 });
    b.hub.onReveal(
      'conn-b1',
      { type: 'reveal', requestId: req.requestId, leaseId: 'lease_x', index: 4 },
      encodeWeights(big),
    );
    const got = await asked;
    expect(got.names).toEqual(big.names);
    expect(got.shapes).toEqual(big.shapes);
    expect(Buffer.from(got.data[0].buffer).equals(Buffer.from(big.data[0].buffer))).toBe(true);
    expect(Buffer.from(got.data[1].buffer).equals(Buffer.from(big.data[1].buffer))).toBe(true);
    expect(a.hub.answered).toBe(1);
    // A took the parked bytes.
    expect((await main.query('SELECT 1 FROM reveal_answers')).rowCount).toBe(0);
    b.hub.removePeer('conn-b1');
    b.hub.removePeer('conn-b2');
  });

  it('a refusal on the other replica fails the request long before its deadline; a worker that connects there later is asked', async () => {
    const alice = peer('alice');
    b.hub.addPeer('conn-b3', alice);
    const t0 = Date.now();
    const refused = a.hub.reveal('alice', 'lease_y', 1, 10_000);
    await waitFor('the request on B', async () => alice.sent.length === 1, 5_000);
    b.hub.onRevealError('conn-b3', (alice.sent[0] as RevealRequestMsg).requestId, 'states not kept');
    await expect(refused).rejects.toThrow(/reveal refused: states not kept/);
    expect(Date.now() - t0).toBeLessThan(5_000);
    b.hub.removePeer('conn-b3');

    const late = a.hub.reveal('carol', 'lease_z', 2, 10_000);
    await new Promise((r) => setTimeout(r, 300));
    const carol = peer('carol');
    b.hub.addPeer('conn-b4', carol);
    expect(carol.sent).toHaveLength(1);
    const { requestId } = carol.sent[0] as RevealRequestMsg;
    b.hub.onReveal(
      'conn-b4',
      { type: 'reveal', requestId, leaseId: 'lease_z', index: 2 },
      encodeWeights({ names: ['w'], shapes: [[1]], data: [new Float32Array([7])] }),
    );
    await expect(late).resolves.toMatchObject({ names: ['w'] });
    // Two tabs of one account, one per replica: the one here has no states and refuses at once, the one on B
    // answers; the refusal does not decide for the account.
    const tabA = peer('dave');
    const tabB = peer('dave');
    a.hub.addPeer('conn-a1', tabA);
    b.hub.addPeer('conn-b7', tabB);
    const both = a.hub.reveal('dave', 'lease_d', 0, 10_000);
    a.hub.onRevealError('conn-a1', (tabA.sent[0] as RevealRequestMsg).requestId, 'states not kept');
    await waitFor('the request on B', async () => tabB.sent.length === 1, 5_000);
    const d = tabB.sent[0] as RevealRequestMsg;
    b.hub.onReveal(
      'conn-b7',
      { type: 'reveal', requestId: d.requestId, leaseId: 'lease_d', index: 0 },
      encodeWeights({ names: ['d'], shapes: [[1]], data: [new Float32Array([3])] }),
    );
    await expect(both).resolves.toMatchObject({ names: ['d'] });
    a.hub.removePeer('conn-a1');
    b.hub.removePeer('conn-b7');

    // Settled notices reach the account's connections on every replica, also a list far over NOTIFY's 8000 bytes.
    a.hub.settled('carol', ['lease_z']);
    await waitFor('settled on B', async () => carol.sent.some((m) => m.type === 'settled'), 5_000);
    const many = Array.from({ length: 500 }, (_, i) => `lease_${i.toString(16).padStart(32, '0')}`);
    a.hub.settled('carol', many);
    const settledOnB = () => carol.sent.flatMap((m) => (m.type === 'settled' ? [m.leaseId] : []));
    await waitFor('500 settled on B', async () => settledOnB().length === 501, 5_000);
    expect(new Set(settledOnB())).toEqual(new Set(['lease_z', ...many]));
    b.hub.removePeer('conn-b4');
  });

  it('fails closed: nobody anywhere answers, the request times out; a late answer is dropped and the other replica forgets it', async () => {
    const t0 = Date.now();
    await expect(a.hub.reveal('nobody', 'lease_n', 0, 400)).rejects.toThrow(/no answer within 400 ms/);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(390);

    // A worker on B that is asked but answers after the deadline: A still loses the request (fail closed), and
    // takes the parked bytes so that they do not linger.
    const slow = peer('slowpoke');
    b.hub.addPeer('conn-b5', slow);
    const answered = a.hub.answered;
    const t1 = Date.now();
    const timedOut = a.hub.reveal('slowpoke', 'lease_s', 0, 400);
    await waitFor('the request on B', async () => slow.sent.length === 1, 5_000);
    await expect(timedOut).rejects.toThrow(/no answer within 400 ms/);
    expect(Date.now() - t1).toBeGreaterThanOrEqual(390);
    const { requestId } = slow.sent[0] as RevealRequestMsg;
    b.hub.onReveal(
      'conn-b5',
      { type: 'reveal', requestId, leaseId: 'lease_s', index: 0 },
      encodeWeights({ names: ['w'], shapes: [[1]], data: [new Float32Array([1])] }),
    );
    await waitFor('B forgets the request', async () => b.hub.forwarding === 0, 5_000);
    await waitFor(
      'the late bytes taken',
      async () => (await main.query('SELECT 1 FROM reveal_answers')).rowCount === 0,
      5_000,
    );
    expect(a.hub.answered).toBe(answered);
    expect(a.hub.waiting).toBe(0);
    // Once B forgot it, a connection of the account that comes later is not asked.
    const again = peer('nobody');
    b.hub.addPeer('conn-b6', again);
    expect(again.sent).toEqual([]);
    b.hub.removePeer('conn-b5');
    b.hub.removePeer('conn-b6');
  });

  it('a replica that was not listening when a request went out hears it from the repeated ask, and answers once', async () => {
    // C starts listening only after A published the request: the first NOTIFY never reached it.
    const asked = a.hub.reveal('carol', 'lease_c', 2, 3 * REASK_EVERY_MS + 2_000);
    await new Promise((r) => setTimeout(r, 200));
    const c = await replicaHub(main.schema as string, 'replica-c');
    try {
      const carol = peer('carol');
      c.hub.addPeer('conn-c1', carol);
      await waitFor('the repeated ask on C', async () => carol.sent.length === 1, 2 * REASK_EVERY_MS + 1_000);
      const req = carol.sent[0] as RevealRequestMsg;
      expect(req).toMatchObject({ type: 'reveal', leaseId: 'lease_c', index: 2 });
      c.hub.onReveal(
        'conn-c1',
        { type: 'reveal', requestId: req.requestId, leaseId: 'lease_c', index: 2 },
        encodeWeights({ names: ['w'], shapes: [[2]], data: [new Float32Array([3, 4])] }),
      );
      expect(Array.from((await asked).data[0])).toEqual([3, 4]);
      // Repeats of the ask that were still on the way start nothing again: the worker was asked once.
      await new Promise((r) => setTimeout(r, REASK_EVERY_MS + 500));
      expect(carol.sent).toHaveLength(1);
      expect(c.hub.forwarding).toBe(0);
      c.hub.removePeer('conn-c1');
    } finally {
      await c.close();
    }
  }, 30_000);
});

describe('a dispute whose honest party is connected to another replica', () => {
  it('the honest worker on B answers the reveals of the dispute settled on A and wins; the cheater on A loses', async () => {
    const { a, b, stop } = await startReplicaPair();
    for (const c of [a, b]) c.scheduler.verification.configure({ revealTimeoutMs: 10_000, selfAuditAfterMs: null });
    const workers: RawWorker[] = [];
    try {
      const job = await postJob(a.url, auditedJob());
      const bob = await signedWorker(b.url, 'xr-bob');
      const mallory = await signedWorker(a.url, 'xr-mallory');
      workers.push(bob, mallory);

      // Bob (on B) trains the unit honestly and keeps his states; his result waits for its audit copy.
      const leaseB = await bob.lease();
      const { out } = await bob.train(leaseB);
      const payloadB = encodeWeights(out.delta);
      expect(await bob.submit(RawWorker.header(leaseB, out, payloadB), payloadB)).toMatchObject({ type: 'ack' });

      // Mallory (on A) gets the audit copy and cheats; her submission makes A settle the unit.
      const leaseM = await mallory.lease();
      const cheat = await poisonedRun(await mallory.unitInputs(leaseM), 6, 1e-2);
      mallory.states.set(leaseM.leaseId, cheat.checkpointStates);
      const payloadM = encodeWeights(cheat.delta);
      expect(await mallory.submit(RawWorker.header(leaseM, cheat, payloadM), payloadM)).toMatchObject({
        type: 'ack',
      });

      const audit = await waitFor('the dispute', async () => (await events(a, job.id, 'audit'))[0], 40_000);
      expect(audit.detail.compare.verdict).toBe('mismatch');
      // Settled by the referee on the bisected segment: both parties revealed, Bob across replicas.
      expect(audit.detail.dispute).toMatchObject({ by: 'referee', segment: [4, 6], losers: [mallory.account] });
      expect(audit.detail.parties.a).toMatchObject({ account: bob.account, verdict: 'reaudit' });
      expect(audit.detail.parties.b).toMatchObject({ account: mallory.account, verdict: 'invalid' });
      expect(bob.revealRequests.length).toBeGreaterThanOrEqual(3);
      expect(mallory.revealRequests.length).toBeGreaterThanOrEqual(3);

      const rs = await resultsOf(a, job.id);
      expect(rs.find((r) => r.account === mallory.account)).toMatchObject({ status: 'rejected', role: 'audit' });
      expect(rs.find((r) => r.account === bob.account)).toMatchObject({ status: 'pending', role: 'primary' });
      expect(await getTrust(a.db, mallory.account)).toMatchObject({ failures: 1 });
      expect(await getTrust(a.db, bob.account)).toMatchObject({ failures: 0 });
      // Every parked answer was taken.
      expect((await a.db.query('SELECT 1 FROM reveal_answers')).rowCount).toBe(0);
    } finally {
      for (const w of workers) w.close();
      await stop();
    }
  }, 120_000);
});
