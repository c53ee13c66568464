import { describe, expect, it } from 'vitest';
import { auditAddress } from '../coordinator/verify/network-address.js';
import { RevealHub, RevealShutdown } from '../coordinator/verify/reveal-hub.js';
import type { RevealRequestMsg, SettledMsg } from '../shared/protocol/messages.js';
import type { WeightSet } from '../shared/train/types.js';
import { encodeWeights } from '../shared/train/weights-format.js';

/** The pieces between the verification engine and the worker sockets, without sockets. */

const state: WeightSet = { names: ['w'], shapes: [[2]], data: [new Float32Array([1, 2])] };

function peer(account: string) {
  const sent: (RevealRequestMsg | SettledMsg)[] = [];
  return { account, sent, send: (m: RevealRequestMsg | SettledMsg) => sent.push(m) };
}

describe('RevealHub', () => {
  it('asks every connection of the account and resolves with the first state that comes back', async () => {
    const hub = new RevealHub();
    const a1 = peer('alice');
    const a2 = peer('alice');
    const b = peer('bob');
    hub.addPeer('c1', a1);
    hub.addPeer('c2', a2);
    hub.addPeer('c3', b);
    const p = hub.reveal('alice', 'lease_1', 3, 5_000);
    expect(a1.sent).toEqual([{ type: 'reveal', requestId: expect.any(String), leaseId: 'lease_1', index: 3 }]);
    expect(a2.sent).toHaveLength(1);
    expect(b.sent).toHaveLength(0);
    const { requestId } = a1.sent[0] as RevealRequestMsg;
    // Bob cannot answer for Alice: ignored. One of Alice's connections refuses, the other answers.
    hub.onReveal('c3', { type: 'reveal', requestId, leaseId: 'lease_1', index: 3 }, encodeWeights(state));
    expect(hub.waiting).toBe(1);
    hub.onRevealError('c2', requestId, 'states not kept');
    hub.onReveal('c1', { type: 'reveal', requestId, leaseId: 'lease_1', index: 3 }, encodeWeights(state));
    const got = await p;
    expect(Array.from(got.data[0])).toEqual([1, 2]);
    expect(hub.waiting).toBe(0);
    expect(hub.answered).toBe(1);
  });

  it('fails at once when every connection asked refuses, and after the timeout when nobody answers', async () => {
    const hub = new RevealHub();
    const a = peer('alice');
    hub.addPeer('c1', a);
    const refused = hub.reveal('alice', 'lease_1', 0, 5_000);
    hub.onRevealError('c1', (a.sent[0] as RevealRequestMsg).requestId, 'states not kept');
    await expect(refused).rejects.toThrow(/reveal refused: states not kept/);
    const t0 = Date.now();
    await expect(hub.reveal('alice', 'lease_1', 1, 200)).rejects.toThrow(/no answer within 200 ms/);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(190);
  });

  it('waits for an account that is offline and asks it again when it reconnects', async () => {
    const hub = new RevealHub();
    const old = peer('alice');
    hub.addPeer('c1', old);
    const p = hub.reveal('alice', 'lease_1', 2, 5_000);
    hub.removePeer('c1');
    const back = peer('alice');
    hub.addPeer('c9', back);
    const { requestId } = back.sent[0] as RevealRequestMsg;
    expect(requestId).toBe((old.sent[0] as RevealRequestMsg).requestId);
    hub.onReveal('c9', { type: 'reveal', requestId, leaseId: 'lease_1', index: 2 }, encodeWeights(state));
    await expect(p).resolves.toMatchObject({ names: ['w'] });
  });

  it('rejects waiting and new requests with RevealShutdown once closed; settled goes to the account only', async () => {
    const hub = new RevealHub();
    const a = peer('alice');
    const b = peer('bob');
    hub.addPeer('c1', a);
    hub.addPeer('c2', b);
    hub.settled('alice', ['lease_1', 'lease_2']);
    expect(a.sent).toEqual([
      { type: 'settled', leaseId: 'lease_1' },
      { type: 'settled', leaseId: 'lease_2' },
    ]);
    expect(b.sent).toEqual([]);
    const p = hub.reveal('bob', 'lease_3', 0, 5_000);
    hub.close();
    await expect(p).rejects.toBeInstanceOf(RevealShutdown);
    await expect(hub.reveal('bob', 'lease_3', 0, 5_000)).rejects.toBeInstanceOf(RevealShutdown);
  });
});

describe('auditAddress', () => {
  it('groups addresses by /24 and /64 and treats loopback as unknown', () => {
    expect(auditAddress('203.0.113.7')).toBe('203.0.113.0/24');
    expect(auditAddress('::ffff:203.0.113.200')).toBe('203.0.113.0/24');
    expect(auditAddress('2001:db8:1:2:3:4:5:6')).toBe('2001:db8:1:2::/64');
    expect(auditAddress('2001:db8::1')).toBe('2001:db8:0:0::/64');
    expect(auditAddress('2001:db8::1')).toBe(auditAddress('2001:db8:0:0:ffff::2'));
    for (const local of ['127.0.0.1', '::1', '::ffff:127.0.0.1', '::', '', undefined, 'not-an-ip']) {
      expect(auditAddress(local)).toBeUndefined();
    }
  });
});
