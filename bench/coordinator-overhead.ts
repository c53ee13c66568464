import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCoordinator } from '../coordinator/app.js';
import { sha256Hex } from '../shared/hash.js';
import type { LeaseMsg } from '../shared/protocol/messages.js';
import { mnistMlpModel } from '../shared/train/templates.js';
import type { WeightSet } from '../shared/train/types.js';
import { decodeWeights, encodeWeights } from '../shared/train/weights-format.js';
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
    const res = await c.app.inject({
      method: 'POST',
      url: '/api/v1/jobs',
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
    const w = new RawWorker(c.url, '0xbench');
    await w.hello();
    const lease: number[] = [];
    const upload: number[] = [];
    const aggregate: number[] = [];
    let start: WeightSet | null = null;
    for (let r = 0; r < rounds; r++) {
      for (let u = 0; u < unitsPerRound; u++) {
        let t = performance.now();
        const l: LeaseMsg = await w.lease(60_000);
        const afterLease = performance.now();
        if (u === 0 && r > 0) aggregate.push(afterLease - (aggregate.pop() ?? afterLease));
        else lease.push(afterLease - t);
        if (!start || u === 0) {
          const bytes = new Uint8Array(
            await (await fetch(`${c.url}/api/v1/blobs/${l.unit.weightsHash}`)).arrayBuffer(),
          );
          start = decodeWeights(bytes);
        }
        const delta: WeightSet = { ...start, data: start.data.map((d) => d.map(() => (Math.random() - 0.5) * 1e-3)) };
        const payload = encodeWeights(delta);
        const k = l.unit.checkpointEvery;
        const header = {
          type: 'result' as const,
          leaseId: l.leaseId,
          token: l.token,
          deltaHash: sha256Hex(payload),
          finalHash: '0'.repeat(64),
          checkpoints: Array.from({ length: Math.ceil(steps / k) }, () => '0'.repeat(64)),
          losses: Array.from({ length: steps }, () => 1),
          examples: steps * 32,
          flops: 1,
          backend: 'bench',
          timings: { totalMs: 0, trainMs: 0 },
        };
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
