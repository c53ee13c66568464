import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { reliabilityOf } from '../coordinator/market/reliability.js';
import { getTrust } from '../coordinator/verify/store.js';
import { mnistMlpModel } from '../shared/train/templates.js';
import { trainUnit } from '../shared/train/train-unit.js';
import { weightsFromModel } from '../shared/train/weights-format.js';
import {
  getJob,
  postJob,
  smallMnistJob,
  startTestCoordinator,
  type TestCoordinator,
  testStore,
  waitFor,
} from './helpers/cluster.js';
import { signedWorker } from './helpers/identities.js';
import { events } from './helpers/verify-fixtures.js';

/**
 * Finding #7 (issue 9): jobs that honest workers cannot complete. Preflight refuses them at submit with the field to
 * blame; one that runs anyway (stored before a rule existed) ends failed and refunded once the coordinator's own
 * trial step fails too, and the workers that hit it keep their reliability and trust.
 */

beforeAll(async () => {
  await tf.setBackend('wasm');
  await tf.ready();
});

afterAll(() => {
  tf.disposeVariables();
});

type Json = { config: { layers: { config: Record<string, unknown> }[] } };
const mlp = (): Json => JSON.parse(JSON.stringify(mnistMlpModel(8))) as Json;

/** A model whose output has 5 units while mnist has 10 classes. */
function fiveClassModel(): Json {
  const m = mlp();
  m.config.layers[1].config.units = 5;
  return m;
}

/** A penalty the allow-list accepts (camelCase key) but the JSON's snake_case regularizer scan does not see. */
function hiddenPenaltyModel(): Json {
  const m = mlp();
  m.config.layers[0].config.kernelRegularizer = { class_name: 'L1L2', config: { l1: 0.05, l2: 0.05 } };
  return m;
}

async function submit(
  c: TestCoordinator,
  spec: Record<string, unknown>,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${c.url}/api/v1/jobs`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${c.requester.apiKey}` },
    body: JSON.stringify(spec),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** Points a running job at another model and its initial weights, as a job stored before preflight would be. */
async function swapModel(c: TestCoordinator, jobId: string, model: object): Promise<void> {
  const built = await tf.models.modelFromJSON(JSON.parse(JSON.stringify(model)));
  const weights = weightsFromModel(built);
  built.dispose();
  const modelHash = await c.blobs.put(new TextEncoder().encode(JSON.stringify(model)));
  const weightsHash = await c.scheduler.weights.put(weights);
  await c.db.query('UPDATE jobs SET model_hash = $2, weights_hash = $3 WHERE id = $1', [jobId, modelHash, weightsHash]);
}

const tinyJob = (overrides: Record<string, unknown> = {}) =>
  smallMnistJob({
    model: mnistMlpModel(8),
    batchSize: 8,
    localSteps: 4,
    unitsPerRound: 1,
    rounds: 1,
    budget: 10,
    ...overrides,
  } as never);

describe('preflight at submit', () => {
  it('refuses each trap with 400 and the field, and escrows nothing', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    try {
      const balance = await c.ledger.balances(c.requester.address);
      const stringReg = mlp();
      stringReg.config.layers[0].config.kernel_regularizer = 'l1l2';
      const camelStringReg = mlp();
      camelStringReg.config.layers[0].config.kernelRegularizer = 'l1l2';
      const traps: [string, Record<string, unknown>, string, RegExp][] = [
        [
          'regularizer by name',
          tinyJob({ model: stringReg }),
          '/model/config/layers/0/config/kernel_regularizer',
          /L1L2/,
        ],
        [
          'camelCase regularizer by name',
          tinyJob({ model: camelStringReg }),
          '/model/config/layers/0/config/kernelRegularizer',
          /L1L2/,
        ],
        ['hidden training penalty', tinyJob({ model: hiddenPenaltyModel() }), '/model', /forward pass gives/],
        ['tolerance 1e-9', tinyJob({ verification: { tolerance: 1e-9 } }), '/verification/tolerance', /floor/],
        ['output / classes mismatch', tinyJob({ model: fiveClassModel() }), '/model', /10 classes/],
        [
          'steps x batch over the limit',
          tinyJob({ localSteps: 100_000, batchSize: 4096 }),
          '/localSteps',
          /exceeds the limit/,
        ],
      ];
      for (const [what, spec, field, message] of traps) {
        const { status, body } = await submit(c, spec);
        expect({ what, status, field: body.field }).toEqual({ what, status: 400, field });
        expect(body.message).toMatch(message);
      }
      // Nothing was created and the budget of every refused job is back (escrow then refund, or never escrowed).
      const list = await fetch(`${c.url}/api/v1/jobs`, { headers: { authorization: `Bearer ${c.requester.apiKey}` } });
      expect(await list.json()).toEqual([]);
      const after = await c.ledger.balances(c.requester.address);
      expect({ available: after.available, escrow: after.escrow }).toEqual({
        available: balance.available,
        escrow: balance.escrow,
      });
      // The honest default still passes, and so does a declared regularizer.
      const declared = mlp();
      declared.config.layers[0].config.kernel_regularizer = { class_name: 'L1L2', config: { l1: 0.01, l2: 0.01 } };
      expect((await submit(c, tinyJob())).status).toBe(201);
      expect((await submit(c, tinyJob({ model: declared }))).status).toBe(201);
    } finally {
      await c.destroy();
    }
  });
});

describe('a job that fails on every worker anyway', () => {
  it('ends failed and refunded after three accounts cannot train a unit; their reliability and trust do not move', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    const workers = await Promise.all(['fault-a', 'fault-b', 'fault-c'].map((n) => signedWorker(c.url, n)));
    try {
      const job = await postJob(c.url, tinyJob());
      await swapModel(c, job.id, fiveClassModel());
      for (const w of workers) {
        const lease = await w.lease();
        // What an honest worker meets: training throws, and it gives the unit back with the reason.
        const err = await w
          .unitInputs(lease)
          .then((inputs) => trainUnit(inputs))
          .catch((e: Error) => e);
        expect(String(err)).toMatch(/does not match \[batch, 10 classes\]/);
        w.send({ type: 'release', leaseId: lease.leaseId, error: String(err) });
        if (w !== workers[2]) {
          await waitFor('release recorded', async () => {
            const { rows } = await c.db.query<{ status: string }>('SELECT status FROM leases WHERE id = $1', [
              lease.leaseId,
            ]);
            return rows[0]?.status === 'released';
          });
        }
      }
      const failed = await waitFor('job failed', async () => {
        const j = await getJob(c.url, job.id);
        return j.status === 'failed' && j.billing?.closed ? j : null;
      });
      expect(failed.error).toMatch(/cannot be trained as specified.*10 classes/);
      expect(failed.billing).toMatchObject({ budget: 10_000_000, spent: 0, refunded: 10_000_000, escrow: 0 });
      for (const w of workers) {
        expect(await reliabilityOf(c.db, w.account, 1)).toMatchObject({ finished: 0, known: false, value: 1 });
        expect(await getTrust(c.db, w.account)).toMatchObject({ failures: 0 });
      }
      expect(await events(c, job.id, 'forfeit')).toHaveLength(0);
    } finally {
      for (const w of workers) w.close();
      await c.destroy();
    }
  });

  it('three accounts claiming they cannot train a unit the coordinator can train: the job runs on, their releases count', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    const workers = await Promise.all(['lie-a', 'lie-b', 'lie-c'].map((n) => signedWorker(c.url, n)));
    try {
      const job = await postJob(c.url, tinyJob());
      for (const w of workers) {
        const lease = await w.lease();
        w.send({ type: 'release', leaseId: lease.leaseId, error: 'claims it cannot train' });
        await waitFor('release recorded', async () => {
          const { rows } = await c.db.query<{ status: string }>('SELECT status FROM leases WHERE id = $1', [
            lease.leaseId,
          ]);
          return rows[0]?.status === 'released';
        });
      }
      // Three false claims: the coordinator's own trial passes, so the job runs on and the releases count as usual.
      await new Promise((r) => setTimeout(r, 500));
      expect((await getJob(c.url, job.id)).status).toBe('running');
      expect(await reliabilityOf(c.db, workers[0].account, 1)).toMatchObject({ finished: 1, completed: 0 });
    } finally {
      for (const w of workers) w.close();
      await c.destroy();
    }
  });

  it('an honest result the job makes fail the first-loss check fails the job, not the worker', async () => {
    const c = await startTestCoordinator(testStore('pglite'));
    c.scheduler.verification.configure({ selfAuditAfterMs: null });
    const w = await signedWorker(c.url, 'honest-penalised');
    try {
      const job = await postJob(c.url, tinyJob());
      await swapModel(c, job.id, hiddenPenaltyModel());
      const { answer } = await w.trainAndSubmit();
      expect(answer).toMatchObject({ type: 'reject', code: 'job_fault' });
      const failed = await waitFor('job failed', async () => {
        const j = await getJob(c.url, job.id);
        return j.status === 'failed' && j.billing?.closed ? j : null;
      });
      expect(failed.error).toMatch(/forward pass gives/);
      expect(failed.billing).toMatchObject({ spent: 0, refunded: 10_000_000 });
      expect(await getTrust(c.db, w.account)).toMatchObject({ failures: 0 });
      expect(await events(c, job.id, 'forfeit')).toHaveLength(0);
      expect(await reliabilityOf(c.db, w.account, 1)).toMatchObject({ finished: 0 });
    } finally {
      w.close();
      await c.destroy();
    }
  });
});
