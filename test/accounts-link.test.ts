import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  issuePayoutStatement,
  Ledger,
  LinkConflict,
  ledgerMigrations,
  listPayoutStatements,
} from '../coordinator/ledger/index.js';
import type { Db } from '../coordinator/store/db.js';
import { runMigrations } from '../coordinator/store/migrate.js';
import {
  buildAccountLinkMessage,
  generatePrivateKey,
  type Hex,
  parseAccountLinkMessage,
  personalSign,
} from '../shared/identity/index.js';
import {
  postJob,
  smallMnistJob,
  spawnWorker,
  startTestCoordinator,
  stopWorkers,
  type TestCoordinator,
  testStore,
  waitFor,
  waitForJob,
} from './helpers/cluster.js';
import { getNonce, postSignIn, siweMessage, type TestIdentity, testIdentity } from './helpers/identities.js';
import { dropTestDb, openPooledTestDb, STORE_KINDS } from './helpers/stores.js';

/**
 * Account links: a local key's account hands its credit to a wallet (both sign one message). The ledger part runs
 * on PGlite and PostgreSQL; the HTTP part on a real coordinator; one end-to-end run has a real worker, signed in as
 * the local key, earn credit that lands in the wallet.
 */

/** Rounds of the link race; each is a few dozen ms. */
const ROUNDS = Number(process.env.LINK_RACE_ROUNDS ?? 8);

const fresh = (label: string): TestIdentity => testIdentity(`${label}-${Math.random().toString(36).slice(2)}`);

describe.each(STORE_KINDS)('account links in the ledger on %s', (kind) => {
  let db: Db & { schema?: string };
  let ledger: Ledger;
  let clock = 1_000_000;
  let jobs = 0;

  beforeAll(async () => {
    db = await openPooledTestDb(kind);
    await runMigrations(db, ledgerMigrations);
    ledger = new Ledger(db, { now: () => clock });
  });
  afterAll(async () => {
    await dropTestDb(db);
  });
  beforeEach(async () => {
    expect(await ledger.totalSum()).toBe(0);
  });

  /** A funded job to credit units from. */
  async function job(budget = 100_000): Promise<string> {
    const requester = fresh('requester').address;
    const id = `job-${kind}-${++jobs}`;
    await ledger.deposit(requester, budget, `dep:${id}`);
    await ledger.escrowJob(id, requester, budget);
    return id;
  }
  const unit = (jobId: string, n: string, worker: string, price: number, vestAt = clock + 1_000) => ({
    jobId,
    resultId: `${jobId}-${n}`,
    worker,
    price,
    vestAt,
  });

  it('moves pending and vested credit, pays later units to the wallet, and still forfeits the worker', async () => {
    const local = fresh('local').address;
    const wallet = fresh('wallet').address;
    const j = await job();
    await ledger.creditUnit(unit(j, 'v', local, 300, clock));
    await ledger.vestDue(clock);
    await ledger.creditUnit(unit(j, 'p', local, 200));
    expect(await ledger.balances(local)).toMatchObject({ pending: 200, vested: 300 });

    const link = await ledger.linkAccounts({ from: local, to: wallet });
    expect(link).toMatchObject({ created: true, from: local, to: wallet, pendingMoved: 200, vestedMoved: 300 });
    expect(link.eventKey).toBe(`link:${local}`);
    expect(link.postings.reduce((s, p) => s + p.amount, 0)).toBe(0);
    expect(await ledger.balances(local)).toMatchObject({ pending: 0, vested: 0 });
    expect(await ledger.balances(wallet)).toMatchObject({ pending: 200, vested: 300 });
    // The moved credit keeps its worker (who did the work) and gets the wallet as payee.
    expect(await ledger.credit(`${j}-p`)).toMatchObject({ worker: local, payee: wallet, status: 'pending' });

    // Later work of the local key is paid to the wallet, and vests there.
    const later = await ledger.creditUnit(unit(j, 'later', local, 50));
    expect(later.credit).toMatchObject({ worker: local, payee: wallet });
    expect(await ledger.balances(wallet)).toMatchObject({ pending: 250, vested: 300 });
    clock += 1_000;
    await ledger.vestDue(clock);
    expect(await ledger.balances(wallet)).toMatchObject({ pending: 0, vested: 550 });
    expect(await ledger.balances(local)).toMatchObject({ pending: 0, vested: 0 });
    expect(await ledger.cumulativeVested(wallet)).toBe(550);
    expect(await ledger.cumulativeVested(local)).toBe(0);

    // A dispute lost by the local key (the worker) forfeits its unvested credit, wherever it is held.
    await ledger.creditUnit(unit(j, 'cheat', local, 70));
    const forfeit = await ledger.forfeitUnvested({
      worker: local,
      reason: 'lost',
      eventKey: `forfeit:${j}`,
      feeRate: 0,
    });
    expect(forfeit).toMatchObject({ forfeited: 1, amount: 70 });
    const replay = await ledger.forfeitUnvested({
      worker: local,
      reason: 'lost',
      eventKey: `forfeit:${j}`,
      feeRate: 0,
    });
    expect(replay).toMatchObject({ created: false, forfeited: 1, amount: 70 });
    expect(await ledger.balances(wallet)).toMatchObject({ pending: 0, vested: 550 });

    // The same link again moves nothing; GET-side views show it from both ends.
    const again = await ledger.linkAccounts({ from: local, to: wallet });
    expect(again).toMatchObject({ created: false, pendingMoved: 200, vestedMoved: 300 });
    expect((await ledger.links(local)).linkedTo?.address).toBe(wallet);
    expect((await ledger.links(wallet)).linkedFrom.map((l) => l.address)).toEqual([local]);
    expect(await ledger.checkIntegrity()).toMatchObject({ ok: true, creditDrift: [] });
  });

  it('refuses a second wallet and chains, and rolls back without a trace', async () => {
    const [a, b, c, d] = ['a', 'b', 'c', 'd'].map((l) => fresh(l).address);
    await ledger.linkAccounts({ from: a, to: b });
    const other = await ledger.linkAccounts({ from: a, to: c }).catch((e) => e);
    expect(other).toBeInstanceOf(LinkConflict);
    expect(other).toMatchObject({ code: 'already_linked', httpStatus: 409 });
    // b receives a's credit: b may not pass it on (a chain a -> b -> c).
    expect(await ledger.linkAccounts({ from: b, to: c }).catch((e) => e)).toMatchObject({ code: 'link_chain' });
    // d may not link to a, which is itself linked on.
    expect(await ledger.linkAccounts({ from: d, to: a }).catch((e) => e)).toMatchObject({ code: 'link_chain' });
    expect(await ledger.link(b)).toBeNull();
    expect(await ledger.link(d)).toBeNull();
    expect(await ledger.postingsForEvent(`link:${d}`)).toBeNull();
    await expect(ledger.linkAccounts({ from: a, to: a })).rejects.toMatchObject({ code: 'invalid_argument' });
    // Two accounts may both send their credit to one wallet.
    expect((await ledger.linkAccounts({ from: d, to: b })).created).toBe(true);
    expect((await ledger.links(b)).linkedFrom.map((l) => l.address).sort()).toEqual([a, d].sort());
  });

  it('leaves with the local key the vested credit a payout statement already promised to it', async () => {
    const local = fresh('local').address;
    const wallet = fresh('wallet').address;
    const j = await job();
    await ledger.creditUnit(unit(j, '1', local, 400, clock));
    await ledger.vestDue(clock);
    const signer = { privateKey: generatePrivateKey() as Hex, chainId: 1 };
    await issuePayoutStatement(db, ledger, local, signer, clock);
    await ledger.creditUnit(unit(j, '2', local, 100, clock));
    await ledger.vestDue(clock);
    const link = await ledger.linkAccounts({ from: local, to: wallet });
    expect(link).toMatchObject({ vestedMoved: 100, vestedKept: 400, pendingMoved: 0 });
    // Statements stay monotonic and nothing is promised twice: 400 to the local key, 100 to the wallet.
    expect(await ledger.cumulativeVested(local)).toBe(400);
    expect(await ledger.cumulativeVested(wallet)).toBe(100);
    const next = await issuePayoutStatement(db, ledger, local, signer, clock);
    expect(next.statement.vested).toBe(400n);
    expect((await listPayoutStatements(db, local)).map((s) => s.vested)).toEqual(['400', '400']);
    expect(await ledger.checkIntegrity()).toMatchObject({ ok: true });
  });

  it('never strands credit when credits, vesting and the link run at the same time', async () => {
    // Several rounds: each interleaving is a matter of timing, and a stranded credit shows in few of them.
    for (let round = 0; round < ROUNDS; round++) {
      const local = fresh('local').address;
      const wallet = fresh('wallet').address;
      const j = await job();
      for (let i = 0; i < 10; i++) await ledger.creditUnit(unit(j, `pre${i}`, local, 10 + i, clock));
      await Promise.all([
        ...Array.from({ length: 20 }, (_, i) => ledger.creditUnit(unit(j, `race${i}`, local, 100 + i, clock))),
        ledger.vestDue(clock),
        ledger.linkAccounts({ from: local, to: wallet }),
        ledger.vestDue(clock),
      ]);
      await ledger.vestDue(clock);
      const total =
        Array.from({ length: 10 }, (_, i) => 10 + i).reduce((s, v) => s + v, 0) +
        Array.from({ length: 20 }, (_, i) => 100 + i).reduce((s, v) => s + v, 0);
      // Whatever the interleaving, every unit vested into the wallet and nothing stayed with the local key.
      expect(await ledger.balances(local)).toMatchObject({ pending: 0, vested: 0 });
      expect(await ledger.balances(wallet)).toMatchObject({ pending: 0, vested: total });
      expect(await ledger.cumulativeVested(wallet)).toBe(total);
    }
    expect(await ledger.checkIntegrity()).toMatchObject({ ok: true });
  });

  it('lets exactly one of two links that would chain through each other win', async () => {
    const [a, b, c] = ['a', 'b', 'c'].map((l) => fresh(l).address);
    const out = await Promise.allSettled([
      ledger.linkAccounts({ from: a, to: b }),
      ledger.linkAccounts({ from: b, to: c }),
    ]);
    expect(out.filter((o) => o.status === 'fulfilled')).toHaveLength(1);
    const lost = out.find((o) => o.status === 'rejected') as PromiseRejectedResult;
    expect(lost.reason).toMatchObject({ code: 'link_chain' });
  });
});

// ---- over HTTP ------------------------------------------------------------------------------------------------

interface LinkBody {
  message: string;
  localSignature: string;
  walletSignature: string;
}

async function linkNonce(url: string) {
  const res = await fetch(`${url}/api/v1/accounts/link-nonce`);
  expect(res.status).toBe(200);
  return (await res.json()) as { nonce: string; domain: string; chainId: number; uri: string; expiresAt: number };
}

function linkMessage(
  n: Awaited<ReturnType<typeof linkNonce>>,
  from: string,
  to: string,
  over: Partial<Parameters<typeof buildAccountLinkMessage>[0]> = {},
): string {
  const now = Date.now();
  return buildAccountLinkMessage({
    domain: n.domain,
    from,
    to,
    uri: n.uri,
    chainId: n.chainId,
    nonce: n.nonce,
    issuedAt: new Date(now),
    expirationTime: new Date(now + 600_000),
    ...over,
  });
}

function signed(message: string, local: TestIdentity, wallet: TestIdentity): LinkBody {
  return {
    message,
    localSignature: personalSign(message, local.privateKey),
    walletSignature: personalSign(message, wallet.privateKey),
  };
}

async function postLink(url: string, body: LinkBody) {
  const res = await fetch(`${url}/api/v1/accounts/link`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe.each(STORE_KINDS)('POST /api/v1/accounts/link on %s', (kind) => {
  let c: TestCoordinator;
  beforeAll(async () => {
    c = await startTestCoordinator(testStore(kind));
    await c.credits.sweeper.stop();
  });
  afterAll(async () => {
    await c?.destroy();
  });

  it('links with both signatures: credit moves, later credit follows, the account view shows the link', async () => {
    const local = fresh('local');
    const wallet = fresh('wallet');
    const jobId = `http-link-${kind}`;
    await c.ledger.escrowJob(jobId, c.requester.address, 10_000);
    await c.ledger.creditUnit({ jobId, resultId: `${jobId}-1`, worker: local.address, price: 700, vestAt: 0 });
    await c.ledger.vestDue(Date.now());
    await c.ledger.creditUnit({
      jobId,
      resultId: `${jobId}-2`,
      worker: local.address,
      price: 300,
      vestAt: Date.now() + 60_000,
    });

    const message = linkMessage(await linkNonce(c.url), local.address, wallet.address);
    expect(parseAccountLinkMessage(message)).toMatchObject({ from: local.address, to: wallet.address });
    const res = await postLink(c.url, signed(message, local, wallet));
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({
      from: local.address,
      to: wallet.address,
      created: true,
      pendingMoved: 300,
      vestedMoved: 700,
      vestedKept: 0,
      eventKey: `link:${local.address}`,
    });
    const receipt = (await (await fetch(`${c.url}${res.body.receipt}`)).json()) as {
      kind: string;
      postings: { accountId: string; amount: number }[];
    };
    expect(receipt.kind).toBe('link');
    expect(receipt.postings.map((p) => [p.accountId, p.amount]).sort()).toEqual(
      [
        [`worker:${local.address}:pending`, -300],
        [`worker:${local.address}:vested`, -700],
        [`worker:${wallet.address}:pending`, 300],
        [`worker:${wallet.address}:vested`, 700],
      ].sort(),
    );

    const view = async (who: string) =>
      (await (await fetch(`${c.url}/api/v1/accounts/${who}`)).json()) as {
        balances: { pending: number; vested: number };
        linkedTo: { address: string; eventKey: string } | null;
        linkedFrom: { address: string }[];
      };
    const lv = await view(local.address);
    expect(lv.balances).toMatchObject({ pending: 0, vested: 0 });
    expect(lv.linkedTo).toMatchObject({ address: wallet.address, eventKey: `link:${local.address}` });
    const wv = await view(wallet.address);
    expect(wv.balances).toMatchObject({ pending: 300, vested: 700 });
    expect(wv.linkedTo).toBeNull();
    expect(wv.linkedFrom.map((l) => l.address)).toEqual([local.address]);

    // The local key's next unit is paid to the wallet.
    await c.ledger.creditUnit({ jobId, resultId: `${jobId}-3`, worker: local.address, price: 11, vestAt: 0 });
    expect((await view(wallet.address)).balances.pending).toBe(311);
    await c.ledger.vestDue(Date.now());
    expect((await view(wallet.address)).balances).toMatchObject({ pending: 300, vested: 711 });

    // Linking the same pair again with a fresh nonce is a no-op; another wallet is a 409.
    const same = await postLink(
      c.url,
      signed(linkMessage(await linkNonce(c.url), local.address, wallet.address), local, wallet),
    );
    expect(same.status).toBe(200);
    expect(same.body).toMatchObject({ created: false, vestedMoved: 700 });
    const other = fresh('other-wallet');
    const conflict = await postLink(
      c.url,
      signed(linkMessage(await linkNonce(c.url), local.address, other.address), local, other),
    );
    expect(conflict.status).toBe(409);
    expect(conflict.body.message).toMatch(/already_linked/);
    expect(conflict.body.message).toContain(wallet.address);
    // The wallet cannot pass the credit on (no chains).
    const chain = await postLink(
      c.url,
      signed(linkMessage(await linkNonce(c.url), wallet.address, other.address), wallet, other),
    );
    expect(chain.status).toBe(409);
    expect(chain.body.message).toMatch(/link_chain/);

    expect(await c.ledger.totalSum()).toBe(0);
    expect((await c.ledger.checkIntegrity()).ok).toBe(true);
  });

  it('refuses forged signatures, replayed and foreign nonces, expired and misaddressed messages with 400', async () => {
    const local = fresh('local');
    const wallet = fresh('wallet');
    const mallory = testIdentity('mallory');
    const expect400 = async (body: LinkBody, code: string, field: string) => {
      const res = await postLink(c.url, body);
      expect(res.status).toBe(400);
      expect(res.body.message).toContain(`(${code})`);
      expect(res.body.field).toBe(field);
    };

    // A forgery from either side, then the same nonce honestly: the forgery did not burn it.
    const n = await linkNonce(c.url);
    const message = linkMessage(n, local.address, wallet.address);
    const honest = signed(message, local, wallet);
    await expect400(
      { ...honest, localSignature: personalSign(message, mallory.privateKey) },
      'wrong_signer',
      '/localSignature',
    );
    await expect400(
      { ...honest, walletSignature: personalSign(message, mallory.privateKey) },
      'wrong_signer',
      '/walletSignature',
    );
    // The wallet's signature where the local key's belongs: each side must sign for itself.
    await expect400({ ...honest, localSignature: honest.walletSignature }, 'wrong_signer', '/localSignature');
    await expect400({ ...honest, walletSignature: '0x1234' }, 'bad_signature', '/walletSignature');
    // A signature over other text (the wallet signed a link to mallory).
    const swapped = linkMessage(n, local.address, mallory.address);
    await expect400(
      { ...honest, walletSignature: personalSign(swapped, wallet.privateKey) },
      'wrong_signer',
      '/walletSignature',
    );
    expect((await postLink(c.url, honest)).status).toBe(200);
    // Replay of the very same request: the nonce is spent.
    await expect400(honest, 'nonce_reused', '/message');

    const a = fresh('a');
    const b = fresh('b');
    const now = Date.now();
    await expect400(
      signed(linkMessage(await linkNonce(c.url), a.address, b.address, { domain: 'evil.example' }), a, b),
      'wrong_domain',
      '/message',
    );
    await expect400(
      signed(linkMessage(await linkNonce(c.url), a.address, b.address, { chainId: 5 }), a, b),
      'wrong_chain',
      '/message',
    );
    await expect400(
      signed(
        linkMessage(await linkNonce(c.url), a.address, b.address, {
          issuedAt: new Date(now - 120_000),
          expirationTime: new Date(now - 60_000),
        }),
        a,
        b,
      ),
      'expired',
      '/message',
    );
    // A sign-in nonce cannot carry a link, and an unknown one neither.
    await expect400(
      signed(linkMessage(await getNonce(c.url), a.address, b.address), a, b),
      'nonce_unknown',
      '/message',
    );
    await expect400(
      signed(linkMessage(await linkNonce(c.url), a.address, b.address, { nonce: 'abcdefgh12345678' }), a, b),
      'nonce_unknown',
      '/message',
    );
    await expect400(
      signed(linkMessage(await linkNonce(c.url), a.address, a.address), a, a),
      'same_address',
      '/message',
    );
    // A sign-in message is not a link message.
    const siwe = siweMessage(await getNonce(c.url), a.address);
    await expect400(signed(siwe, a, b), 'malformed', '/message');
    // And a link nonce does not sign anyone in.
    const signIn = siweMessage({ ...(await linkNonce(c.url)), statement: 'Sign in to swarmgrad.' }, a.address);
    expect((await postSignIn(c.url, signIn, personalSign(signIn, a.privateKey))).status).toBe(401);
    // Schema: a missing signature is named.
    const missing = await postLink(c.url, { message: siwe, localSignature: '0x00' } as LinkBody);
    expect(missing).toMatchObject({ status: 400, body: { field: '/walletSignature' } });

    expect(await c.ledger.link(a.address)).toBeNull();
    expect(await c.ledger.totalSum()).toBe(0);
    expect((await c.ledger.checkIntegrity()).ok).toBe(true);
  });

  it('documents both routes in the OpenAPI description', async () => {
    const spec = (await (await fetch(`${c.url}/api/v1/openapi.json`)).json()) as {
      paths: Record<string, Record<string, { requestBody?: unknown; responses: Record<string, unknown> }>>;
    };
    expect(spec.paths['/api/v1/accounts/link'].post.requestBody).toBeTruthy();
    expect(Object.keys(spec.paths['/api/v1/accounts/link'].post.responses).sort()).toEqual(['200', '400', '409']);
    expect(spec.paths['/api/v1/accounts/link-nonce'].get).toBeTruthy();
  });
});

describe('a linked local key earns credit for the wallet (real worker, PGlite)', () => {
  it('units done by a worker signed in as the local key vest into the wallet', async () => {
    const c = await startTestCoordinator(testStore('pglite'), { challengeWindowMs: 500 });
    const local = fresh('e2e-local');
    const wallet = fresh('e2e-wallet');
    const workers: ReturnType<typeof spawnWorker>[] = [];
    try {
      const res = await postLink(
        c.url,
        signed(linkMessage(await linkNonce(c.url), local.address, wallet.address), local, wallet),
      );
      expect(res.status).toBe(200);
      const job = await postJob(
        c.url,
        smallMnistJob({ rounds: 1, unitsPerRound: 2, targetAccuracy: undefined, budget: 1 } as never),
      );
      workers.push(spawnWorker(c.url, local));
      await waitForJob(c.url, job.id, 120_000);
      await stopWorkers(workers);
      // The results name the local key (the hello's proven account)...
      const units = await c.db.query<{ n: number }>(
        `SELECT count(*)::int AS n FROM results WHERE account = $1 AND status IN ('accepted', 'confirmed')`,
        [local.address],
      );
      expect(units.rows[0].n).toBeGreaterThan(0);
      // ...and their credit vests into the wallet.
      const paid = await waitFor(
        'vesting into the wallet',
        async () => {
          const w = await c.ledger.balances(wallet.address);
          const credited = await c.ledger.credits({ worker: local.address });
          return credited.length === units.rows[0].n && credited.every((x) => x.status === 'vested') && w.pending === 0
            ? w
            : null;
        },
        20_000,
      );
      const credited = await c.ledger.credits({ worker: local.address });
      expect(credited.every((x) => x.payee === wallet.address)).toBe(true);
      expect(paid.vested).toBe(credited.reduce((s, x) => s + x.amount, 0));
      expect(paid.vested).toBeGreaterThan(0);
      expect(await c.ledger.balances(local.address)).toMatchObject({ pending: 0, vested: 0 });
      expect((await c.ledger.checkIntegrity()).ok).toBe(true);
    } finally {
      await stopWorkers(workers);
      await c.destroy();
    }
  }, 180_000);
});
