import { describe, expect, it } from 'vitest';
import { unitPrice } from '../coordinator/ledger/price.js';
import { verifyPayoutStatement } from '../shared/identity/index.js';
import {
  getJob,
  postJob,
  smallMnistJob,
  spawnWorker,
  startTestCoordinator,
  stopWorkers,
  TEST_REQUESTER_CREDITS,
  testStore,
  waitFor,
  waitForJob,
} from './helpers/cluster.js';
import { apiKeyFor, bearer, testIdentity } from './helpers/identities.js';

/**
 * The money path end to end on a real coordinator with real headless workers: a job escrows its budget, accepted
 * units pay their workers (pending), a dispute loser forfeits its unvested credit, the rest vests after the
 * challenge window, and the requester gets the unspent escrow back.
 */

// smallMnistJob: a 784-32-10 MLP, 24 local steps of 32 examples. Counted by hand, independent of the code under test.
const PARAMS = 784 * 32 + 32 + 32 * 10 + 10;
const UNIT_FLOPS = 6 * PARAMS * 24 * 32;
const MICRO = 1_000_000;

describe('credits end to end (PGlite)', () => {
  it('vested credit = sum of accepted units at each worker’s price; loser forfeits; requester refunded', async () => {
    const c = await startTestCoordinator(testStore('pglite'), { challengeWindowMs: 1500, forfeitFeeRate: 0.1 });
    const provider = testIdentity('e2e-provider');
    const volunteer = testIdentity('e2e-volunteer');
    const loser = testIdentity('e2e-loser');
    const workers: ReturnType<typeof spawnWorker>[] = [];
    try {
      // The provider asks 2 credits per TFLOP; the others are volunteers at the default price (1).
      const res = await fetch(`${c.url}/api/v1/offers`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...bearer(await apiKeyFor(c.url, provider)) },
        body: JSON.stringify({
          minPricePerTflop: 2,
          deviceClass: 'wasm-cpu',
          benchmark: { examplesPerSecond: 3000, backend: 'wasm' },
          hoursAvailable: 10,
        }),
      });
      expect(res.status).toBe(201);

      // The test drives the credit sweeper by hand, so that the forfeit below lands inside the challenge window
      // whatever the machine's speed: credits are posted, forfeited and vested exactly when the test says.
      await c.credits.sweeper.stop();

      const budget = 1; // credits: far more than the job spends
      const job = await postJob(
        c.url,
        smallMnistJob({ rounds: 2, unitsPerRound: 3, targetAccuracy: undefined, budget } as never),
      );
      expect(job.billing).toMatchObject({ budget: budget * MICRO, escrow: budget * MICRO, spent: 0 });
      expect(job.billing?.unitFlops).toBe(UNIT_FLOPS);
      expect(await c.ledger.balances(c.requester.address)).toMatchObject({
        available: TEST_REQUESTER_CREDITS * MICRO - budget * MICRO,
        escrow: budget * MICRO,
      });

      // The loser starts first so it surely does some units; then the two honest workers join.
      workers.push(spawnWorker(c.url, loser));
      await waitFor('a unit from the loser', async () => {
        const r = await c.db.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM results WHERE account = $1 AND status <> 'rejected'`,
          [loser.address],
        );
        return r.rows[0].n > 0;
      });
      workers.push(spawnWorker(c.url, provider), spawnWorker(c.url, volunteer));
      await waitForJob(c.url, job.id, 120_000);
      await stopWorkers(workers);

      // Every creditable result (the unit's accepted result, or an audit copy that confirmed it) earns credit.
      const counts = new Map<string, number>();
      const rows = await c.db.query<{ account: string; n: number }>(
        `SELECT account, count(*)::int AS n FROM results WHERE job_id = $1 AND status IN ('accepted', 'confirmed')
         GROUP BY account`,
        [job.id],
      );
      for (const r of rows.rows) counts.set(r.account, r.n);
      const priceOf = (who: string) => unitPrice(UNIT_FLOPS, who === provider.address ? 2 * MICRO : MICRO);
      expect(priceOf(provider.address)).toBe(235); // 117,273,600 FLOP x 2 credits/TFLOP, rounded half up
      expect(priceOf(volunteer.address)).toBe(117);
      const owed = (who: string) => (counts.get(who) ?? 0) * priceOf(who);
      expect(counts.get(loser.address) ?? 0).toBeGreaterThan(0);
      expect((counts.get(provider.address) ?? 0) + (counts.get(volunteer.address) ?? 0)).toBeGreaterThan(0);

      // Post the credits: all pending, none vested yet.
      await c.credits.sweeper.creditOpen();
      for (const w of [provider, volunteer, loser]) {
        expect(await c.ledger.balances(w.address)).toMatchObject({ pending: owed(w.address), vested: 0 });
      }

      // The loser loses a dispute: the verification layer's 'forfeit' event reaches the ledger through the wiring.
      const lost = owed(loser.address);
      c.scheduler.emit('forfeit', {
        eventKey: 'forfeit:e2e-test',
        worker: loser.address,
        jobId: job.id,
        reason: 'lost a dispute',
      });
      await waitFor('the forfeit', async () => (await c.ledger.balances(loser.address)).pending === 0, 10_000);
      // Same event again, directly: nothing more moves.
      const again = await c.credits.forfeit({
        worker: loser.address,
        jobId: job.id,
        reason: 'again',
        eventKey: 'forfeit:e2e-test',
      });
      expect(again?.created).toBe(false);
      const fee = Math.floor(lost * 0.1);
      expect((await c.ledger.systemBalances()).treasury).toBe(fee);

      // The challenge window (1.5 s) passes; the sweeper vests and refunds.
      await new Promise((r) => setTimeout(r, 1600));
      c.credits.sweeper.start();
      await waitFor(
        'vesting and refund',
        async () => {
          const j = await getJob(c.url, job.id);
          const p = await c.ledger.balances(provider.address);
          const v = await c.ledger.balances(volunteer.address);
          return j.billing?.closed && p.pending === 0 && v.pending === 0 ? j : null;
        },
        15_000,
      );

      expect(await c.ledger.balances(provider.address)).toMatchObject({ pending: 0, vested: owed(provider.address) });
      expect(await c.ledger.balances(volunteer.address)).toMatchObject({
        pending: 0,
        vested: owed(volunteer.address),
      });
      expect(await c.ledger.balances(loser.address)).toMatchObject({ pending: 0, vested: 0 });
      const paid = owed(provider.address) + owed(volunteer.address);
      const done = await getJob(c.url, job.id);
      expect(done.billing).toMatchObject({
        budget: budget * MICRO,
        escrow: 0,
        spent: paid,
        refunded: budget * MICRO - paid - fee,
        closed: true,
      });
      expect(await c.ledger.balances(c.requester.address)).toMatchObject({
        available: TEST_REQUESTER_CREDITS * MICRO - paid - fee,
        escrow: 0,
      });
      expect((await c.ledger.checkIntegrity()).ok).toBe(true);

      // Exactly once, whatever crashes: a credit whose intent was not marked done (a crash right after the ledger
      // posted it) and a result whose intent was lost are both reconciled without paying twice.
      const entries = async () =>
        Number((await c.db.query<{ n: number }>('SELECT count(*)::int AS n FROM ledger_entries')).rows[0].n);
      const before = await entries();
      const some = await c.db.query<{ result_id: string }>(
        `SELECT result_id FROM credit_intents WHERE worker = $1 AND state = 'credited' LIMIT 2`,
        [provider.address],
      );
      await c.db.query(`UPDATE credit_intents SET state = 'open' WHERE result_id = $1`, [some.rows[0].result_id]);
      if (some.rows[1]) await c.db.query('DELETE FROM credit_intents WHERE result_id = $1', [some.rows[1].result_id]);
      await c.credits.sweeper.backfill();
      await c.credits.sweeper.sweep();
      expect(await entries()).toBe(before);
      const states = await c.db.query<{ state: string }>(
        'SELECT state FROM credit_intents WHERE result_id = ANY($1::text[])',
        [some.rows.map((r) => r.result_id)],
      );
      expect(states.rows.map((r) => r.state)).toEqual(some.rows.map(() => 'credited'));
      expect((await c.ledger.balances(provider.address)).vested).toBe(owed(provider.address));

      // Receipts: each credit links to its postings (escrow -> worker pending, summing to zero).
      const credits = (await (await fetch(`${c.url}/api/v1/accounts/${provider.address}/credits`)).json()) as {
        items: { state: string; amount: number; receipt: string; eventKey: string; resultId: string }[];
      };
      expect(credits.items).toHaveLength(counts.get(provider.address) ?? 0);
      expect(credits.items.every((i) => i.state === 'vested' && i.amount === 235)).toBe(true);
      const receipt = (await (await fetch(`${c.url}${credits.items[0].receipt}`)).json()) as {
        kind: string;
        resultId: string;
        postings: { kind: string; amount: number }[];
      };
      expect(receipt.kind).toBe('credit');
      expect(receipt.resultId).toBe(credits.items[0].resultId);
      expect(receipt.postings.map((p) => [p.kind, p.amount]).sort()).toEqual([
        ['escrow', -235],
        ['pending', 235],
      ]);
      const account = (await (await fetch(`${c.url}/api/v1/accounts/${loser.address}?limit=500`)).json()) as {
        balances: { pending: number; vested: number };
        history: { items: { eventKind: string; receipt: string }[] };
      };
      expect(account.history.items.some((h) => h.eventKind === 'forfeit')).toBe(true);

      // The payout statement: cumulative vested credit, signed by the coordinator (EIP-712).
      const st = (await (await fetch(`${c.url}/api/v1/accounts/${provider.address}/statement`)).json()) as {
        statement: { account: string; vested: string; statementId: string; issuedAt: string };
        signature: string;
        signer: string;
        typedData: { primaryType: string };
      };
      expect(st.signer).toBe(c.signerAddress);
      expect(st.statement.vested).toBe(String(owed(provider.address)));
      expect(st.typedData.primaryType).toBe('PayoutStatement');
      const statement = {
        account: st.statement.account as `0x${string}`,
        vested: BigInt(st.statement.vested),
        statementId: BigInt(st.statement.statementId),
        issuedAt: BigInt(st.statement.issuedAt),
      };
      expect(verifyPayoutStatement(statement, { chainId: 1 }, st.signature, c.signerAddress)).toBe(true);
      expect(
        verifyPayoutStatement(
          { ...statement, vested: statement.vested + 1n },
          { chainId: 1 },
          st.signature,
          c.signerAddress,
        ),
      ).toBe(false);
      // Unchanged vested total: the same statement again, not a new id.
      const st2 = (await (await fetch(`${c.url}/api/v1/accounts/${provider.address}/statement`)).json()) as typeof st;
      expect(st2.statement.statementId).toBe(st.statement.statementId);

      // The market shows the provider's offer with throughput measured from its real units.
      const market = (await (await fetch(`${c.url}/api/v1/market`)).json()) as {
        offers: { provider: string; measured: { units: number; examplesPerSecond: number | null } }[];
      };
      const offer = market.offers.find((o) => o.provider === provider.address);
      expect(offer?.measured.units).toBe(counts.get(provider.address) ?? 0);
      if ((counts.get(provider.address) ?? 0) > 0) expect(offer?.measured.examplesPerSecond).toBeGreaterThan(0);
    } finally {
      await stopWorkers(workers);
      await c.destroy();
    }
    // Alone it takes ~45 s; three worker processes on two cores beside other test files can take much longer.
  }, 180_000);
});
