import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCoordinator } from '../coordinator/app.js';
import type { LeaseMsg } from '../shared/protocol/messages.js';
import { mnistMlpModel } from '../shared/train/templates.js';
import { encodeWeights } from '../shared/train/weights-format.js';
import { signedWorker, testIdentity } from '../test/helpers/identities.js';
import { RawWorker } from '../test/helpers/raw-worker.js';

export interface CoordinatorOverhead {
  store: string;
  units: number;
  /** request -> lease message, ms (mean). */
  leaseMs: number;
  /** result envelope sent -> ack, ms (mean): parse, hash, shape and finiteness checks, blob write, transaction. */
  uploadMs: number;
  /** last ack of a round -> next round's lease available, per unit, ms: aggregation, outer step, evaluation. */
  aggregationMsPerUnit: number;
  totalMsPerUnit: number;
}

/**
 * The coordinator's cost per unit over real sockets, with workers that answer instantly (a small valid delta), so
 * that only lease, upload and aggregation are timed. Model: the demo's 784-128-10 MLP.
 */
export async function measureCoordinatorOverhead(rounds = 8, unitsPerRound = 4): Promise<CoordinatorOverhead> {
  const dataDir = mkdtempSync(join(tmpdir(), 'swarmgrad-bench-'));
  const c = await startCoordinator({
    port: 0,
    host: '127.0.0.1',
    logLevel: process.env.LOG_LEVEL ?? 'warn',
    dataDir,
    databaseUrl: undefined,
  });
  const steps = 40;
  try {
    const requester = testIdentity('bench requester');
    const apiKey = (await c.accounts.createApiKey(requester.address, 'bench')).key;
    const res = await c.app.inject({
      method: 'POST',
      url: '/api/v1/jobs',
      headers: { authorization: `Bearer ${apiKey}` },
      payload: {
        name: 'overhead bench',
        model: mnistMlpModel(128),
        dataset: 'mnist',
        localSteps: steps,
        unitsPerRound,
        rounds,
        batchSize: 32,
      },
    });
    if (res.statusCode !== 201) throw new Error(res.body);
    const w = await signedWorker(c.url, 'bench worker');
    const lease: number[] = [];
    const upload: number[] = [];
    const aggregate: number[] = [];
    for (let r = 0; r < rounds; r++) {
      for (let u = 0; u < unitsPerRound; u++) {
        let t = performance.now();
        const l: LeaseMsg = await w.lease(60_000);
        const afterLease = performance.now();
        if (u === 0 && r > 0) aggregate.push(afterLease - (aggregate.pop() ?? afterLease));
        else lease.push(afterLease - t);
        // Real training (outside the timed intervals): results must pass the cheap checks and audits.
        const { out } = await w.train(l);
        const payload = encodeWeights(out.delta);
        const header = RawWorker.header(l, out, payload);
        t = performance.now();
        const answer = await w.submit(header, payload);
        if (answer.type !== 'ack') throw new Error(`bench result refused: ${JSON.stringify(answer)}`);
        upload.push(performance.now() - t);
        // Marks the end of the round's last unit; the next lease closes the aggregation interval.
        if (u === unitsPerRound - 1) aggregate.push(performance.now());
      }
    }
    aggregate.pop();
    w.close();
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
    const leaseMs = mean(lease);
    const uploadMs = mean(upload);
    const aggregationMsPerUnit = mean(aggregate) / unitsPerRound;
    return {
      store: c.db.kind,
      units: rounds * unitsPerRound,
      leaseMs,
      uploadMs,
      aggregationMsPerUnit,
      totalMsPerUnit: leaseMs + uploadMs + aggregationMsPerUnit,
    };
  } finally {
    await c.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const o = await measureCoordinatorOverhead();
  console.table([o]);
}
