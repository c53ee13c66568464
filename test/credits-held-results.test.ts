import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { getTrust } from '../coordinator/verify/store.js';
import {
  getJob,
  postJob,
  requesterKey,
  startTestCoordinator,
  TEST_REQUESTER_CREDITS,
  testStore,
  waitFor,
} from './helpers/cluster.js';
import { signedWorker } from './helpers/identities.js';
import type { RawWorker } from './helpers/raw-worker.js';
import { auditedJob, events, poisonedRun, resultsOf } from './helpers/verify-fixtures.js';

/**
 * A job that ends (cancelled) while a result is held for its audit: the held result is settled all the same (the
 * coordinator self-audits it: no audit copy can come any more), the honest volunteer is paid, and the requester gets
 * the rest of the escrow back (issue 9 #5).
 */

const MICRO = 1_000_000;

beforeAll(async () => {
  await tf.setBackend('wasm');
  await tf.ready();
});

async function cancel(url: string, jobId: string): Promise<void> {
  const res = await fetch(`${url}/api/v1/jobs/${jobId}/cancel`, {
    method: 'POST',
    headers: { authorization: `Bearer ${requesterKey(url)}` },
  });
  expect(res.status).toBe(200);
  expect(((await res.json()) as { status: string }).status).toBe('cancelled');
}

describe('a job that ends with a result held for audit', () => {
  it('settles the held result: the honest volunteer is paid, the escrow less what is owed is refunded', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    // Self-audits off: only the end of the job may settle the held result.
    c.scheduler.verification.configure({ revealTimeoutMs: 10_000, selfAuditAfterMs: null });
    const workers: RawWorker[] = [];
    try {
      const job = await postJob(c.url, auditedJob({ budget: 1 }));
      const bob = await signedWorker(c.url, 'held-bob');
      workers.push(bob);
      // A new account: its result is held for an audit copy nobody takes.
      expect((await bob.trainAndSubmit()).answer).toMatchObject({ type: 'ack' });
      expect((await resultsOf(c, job.id))[0]).toMatchObject({ account: bob.account, status: 'pending' });

      await cancel(c.url, job.id);
      const done = await waitFor(
        'the settlement and the refund',
        async () => {
          const j = await getJob(c.url, job.id);
          return j.billing?.closed ? j : null;
        },
        60_000,
      );
      expect((await resultsOf(c, job.id))[0]).toMatchObject({ account: bob.account, status: 'accepted' });
      expect((await events(c, job.id, 'self-audit'))[0]).toMatchObject({ account: bob.account, outcome: 'valid' });
      const paid = (await c.ledger.balances(bob.account)).pending;
      expect(paid).toBeGreaterThan(0);
      expect(done.billing).toMatchObject({ escrow: 0, spent: paid, refunded: MICRO - paid, closed: true });
      expect(await c.ledger.balances(c.requester.address)).toMatchObject({
        available: TEST_REQUESTER_CREDITS * MICRO - paid,
        escrow: 0,
      });
      expect(await getTrust(c.db, bob.account)).toMatchObject({ failures: 0, totalValid: 1 });
    } finally {
      for (const w of workers) w.close();
      await c.destroy();
    }
  });

  it('a held cheat is rejected and nothing is paid for it: the whole escrow is refunded', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    c.scheduler.verification.configure({ revealTimeoutMs: 10_000, selfAuditAfterMs: null });
    const workers: RawWorker[] = [];
    try {
      const job = await postJob(c.url, auditedJob({ budget: 1 }));
      const mallory = await signedWorker(c.url, 'held-mallory');
      workers.push(mallory);
      const lease = await mallory.lease();
      const cheat = await poisonedRun(await mallory.unitInputs(lease), 8, 1e-2);
      expect(await mallory.submitRun(lease, cheat)).toMatchObject({ type: 'ack' });

      await cancel(c.url, job.id);
      const done = await waitFor(
        'the settlement and the refund',
        async () => {
          const j = await getJob(c.url, job.id);
          return j.billing?.closed ? j : null;
        },
        60_000,
      );
      expect((await resultsOf(c, job.id))[0]).toMatchObject({ account: mallory.account, status: 'rejected' });
      expect(await c.ledger.balances(mallory.account)).toMatchObject({ pending: 0, vested: 0 });
      expect(done.billing).toMatchObject({ escrow: 0, spent: 0, refunded: MICRO, closed: true });
    } finally {
      for (const w of workers) w.close();
      await c.destroy();
    }
  });
});
