import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RevealTransport } from '../coordinator/verify/reveal-hub.js';
import { encodeWeights } from '../shared/train/weights-format.js';
import {
  postJob,
  smallMnistJob,
  startTestCoordinator,
  type TestCoordinator,
  testStore,
  waitFor,
} from './helpers/cluster.js';
import { type TestIdentity, testIdentity, workerSigner } from './helpers/identities.js';
import { RawWorker } from './helpers/raw-worker.js';

/**
 * hello.payTo only routes credit. An attacker key that names a victim in payTo acts as itself: its cheating costs the
 * victim no credit and no trust, it never sees the victim's reveal requests, and a forfeit takes only the credit of
 * the disputed job.
 */

const SEEDED = 5_000; // micro-credits per seeded credit

async function payingWorker(url: string, signer: TestIdentity, payTo: string): Promise<RawWorker> {
  const w = new RawWorker(url, signer.address);
  await w.hello(undefined, workerSigner(signer.privateKey), { payTo });
  return w;
}

describe('hello.payTo routes credit and nothing else', () => {
  let c: TestCoordinator;
  let jobA: string;
  let jobB: string;
  const victim = testIdentity('payto-victim');
  const attacker = testIdentity('payto-attacker');
  const widgetKey = testIdentity('payto-widget-frame');
  const site = testIdentity('payto-site');

  const pendingOf = async (worker: string, jobId: string) => {
    const { rows } = await c.db.query<{ status: string; n: number }>(
      `SELECT status, count(*)::int AS n FROM ledger_credits WHERE worker = $1 AND job_id = $2 GROUP BY status`,
      [worker, jobId],
    );
    return Object.fromEntries(rows.map((r) => [r.status, Number(r.n)]));
  };
  const trustRow = async (account: string) =>
    (
      await c.db.query('SELECT consecutive_valid, total_valid, failures FROM account_trust WHERE account = $1', [
        account,
      ])
    ).rows[0];

  beforeAll(async () => {
    c = await startTestCoordinator(testStore('pglite'));
    // Nothing is audited: results are accepted at once, so credit flows without auditors.
    c.scheduler.verification.configure({ rng: () => 1, selfAuditAfterMs: null });
    const spec = { rounds: 1, unitsPerRound: 2, localSteps: 4, targetAccuracy: undefined, budget: 1 } as never;
    jobA = (await postJob(c.url, smallMnistJob({ ...(spec as object), name: 'job A' } as never))).id;
    jobB = (await postJob(c.url, smallMnistJob({ ...(spec as object), name: 'job B' } as never))).id;
    // The victim and the attacker already hold pending credit on both jobs; the victim is a trusted account.
    const vestAt = Date.now() + 3_600_000;
    const seeds = [victim, attacker].flatMap((w) =>
      [jobA, jobB].map((jobId) => ({
        jobId,
        resultId: `seed_${w.label}_${jobId}`,
        worker: w.address,
        price: SEEDED,
        vestAt,
      })),
    );
    const outcomes = await c.ledger.creditUnits(seeds);
    expect(outcomes.every((o) => o.status === 'credited')).toBe(true);
    await c.db.query(
      `INSERT INTO account_trust (account, consecutive_valid, total_valid, failures, updated_at)
       VALUES ($1, 12, 40, 0, $2)`,
      [victim.address, Date.now()],
    );
  }, 120_000);

  afterAll(async () => {
    await c?.destroy();
  });

  it('an attacker with payTo=victim that submits a malformed result costs the victim nothing; forfeits stay in the disputed job', async () => {
    const before = await c.ledger.balances(victim.address);
    const trustBefore = await trustRow(victim.address);
    const w = await payingWorker(c.url, attacker, victim.address);
    try {
      const lease = await w.lease();
      const { out } = await w.train(lease);
      // One loss short: an exact cheap check (bad_losses) refuses it and punishes the sender.
      const bad = { ...out, losses: out.losses.slice(1) };
      const payload = encodeWeights(out.delta);
      expect(await w.submit(RawWorker.header(lease, bad, payload), payload)).toMatchObject({
        type: 'reject',
        code: 'bad_losses',
      });
      // The forfeit lands on the signer, in the disputed job only.
      const forfeit = await waitFor(
        'the forfeit to reach the ledger',
        async () =>
          (
            await c.db.query<{ account: string; job_id: string }>(
              `SELECT account, job_id FROM verification_events WHERE kind = 'forfeit' AND delivered_at IS NOT NULL`,
            )
          ).rows[0],
        30_000,
      );
      expect(forfeit.account).toBe(attacker.address);
      const disputed = forfeit.job_id;
      const other = disputed === jobA ? jobB : jobA;
      expect(await pendingOf(attacker.address, disputed)).toEqual({ forfeited: 1 });
      // (c) the loser's credit from the other job is intact.
      expect(await pendingOf(attacker.address, other)).toEqual({ pending: 1 });
      // (a) the victim named in payTo: credit and trust untouched.
      expect(await c.ledger.balances(victim.address)).toEqual(before);
      expect(await pendingOf(victim.address, jobA)).toEqual({ pending: 1 });
      expect(await pendingOf(victim.address, jobB)).toEqual({ pending: 1 });
      expect(await trustRow(victim.address)).toEqual(trustBefore);
      // The attacker's own trust took the failure.
      expect(Number((await trustRow(attacker.address))?.failures)).toBeGreaterThanOrEqual(1);
      // The lease and the rejected result belong to the signer.
      const { rows } = await c.db.query<{ account: string }>('SELECT account FROM leases WHERE id = $1', [
        lease.leaseId,
      ]);
      expect(rows[0].account).toBe(attacker.address);
    } finally {
      w.close();
    }
  }, 120_000);

  it('an attacker with payTo=victim never receives or answers the victim’s reveal requests', async () => {
    const transport = (c.scheduler.verification as unknown as { transport: RevealTransport }).transport;
    const attackerWorker = await payingWorker(c.url, attacker, victim.address);
    attackerWorker.revealer = () => ({ error: 'junk from the attacker' });
    const victimWorker = new RawWorker(c.url, victim.address);
    await victimWorker.hello(undefined, workerSigner(victim.privateKey));
    victimWorker.revealer = () => ({ error: 'nothing kept for this lease' });
    try {
      await expect(transport.reveal(victim.address, 'lease_probe', 0, 10_000)).rejects.toThrow(
        /reveal refused: nothing kept/,
      );
      expect(victimWorker.revealRequests).toHaveLength(1);
      expect(attackerWorker.revealRequests).toHaveLength(0);
      // Asked of the attacker itself, its own connection answers.
      await expect(transport.reveal(attacker.address, 'lease_probe', 0, 10_000)).rejects.toThrow(
        /junk from the attacker/,
      );
      expect(attackerWorker.revealRequests).toHaveLength(1);
    } finally {
      attackerWorker.close();
      victimWorker.close();
    }
  }, 60_000);

  it('an honest widget-style connection (own key, payTo=site) is paid into the site account', async () => {
    const w = await payingWorker(c.url, widgetKey, site.address);
    try {
      const { lease, answer } = await w.trainAndSubmit();
      expect(answer).toMatchObject({ type: 'ack' });
      await c.credits.sweeper.creditOpen();
      const { rows } = await c.db.query<{ worker: string; payee: string; status: string }>(
        `SELECT lc.worker, lc.payee, lc.status FROM ledger_credits lc JOIN results r ON r.id = lc.result_id
         WHERE r.lease_id = $1`,
        [lease.leaseId],
      );
      expect(rows).toEqual([{ worker: widgetKey.address, payee: site.address, status: 'pending' }]);
      expect((await c.ledger.balances(site.address)).pending).toBeGreaterThan(0);
      expect((await c.ledger.balances(widgetKey.address)).pending).toBe(0);
      // The site's credit list shows it.
      const res = await fetch(`${c.url}/api/v1/accounts/${site.address}/credits`);
      const body = (await res.json()) as { items: { leaseId: string | null }[] };
      expect(body.items.map((i) => i.leaseId)).toContain(lease.leaseId);
    } finally {
      w.close();
    }
  }, 120_000);
});
