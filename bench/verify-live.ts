import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { type CostSummary, verificationCost } from '../coordinator/verify/store.js';
import {
  getJob,
  postJob,
  smallMnistJob,
  spawnWorker,
  startTestCoordinator,
  stopWorkers,
  testStore,
  waitFor,
} from '../test/helpers/cluster.js';

/**
 * Verification overhead in a live coordinator: the same MNIST job run by the same number of headless wasm worker
 * processes, three times:
 *   reference   trusted accounts and no audit floor (p ~ 0): cheap checks only;
 *   trusted     trusted accounts at the policy floor (p = 0.1), as in steady state;
 *   new         fresh accounts: every unit audited until each account has 10 valid results in a row.
 * Reports steps (from verification_costs) and wall time (noisy on a shared machine: compare steps first).
 * `npx tsx bench/verify-live.ts [--rounds 20] [--workers 3] [--units 6]`
 */

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '20' },
    workers: { type: 'string', default: '3' },
    units: { type: 'string', default: '6' },
    out: { type: 'string', default: 'bench/results/verify-live.json' },
  },
});
const rounds = Number(values.rounds);
const workerCount = Number(values.workers);
// More units per round than workers, so that audit copies compete with primary work for the workers' time.
const unitsPerRound = Number(values.units);

interface PhaseResult {
  phase: string;
  wallMs: number;
  rounds: number;
  accuracy: number;
  cost: CostSummary;
}

async function phase(
  name: string,
  labels: string[],
  trusted: boolean,
  policyFloor?: number,
  jobRounds = rounds,
): Promise<PhaseResult> {
  const c = await startTestCoordinator(testStore('pglite'));
  c.scheduler.verification.configure({ policyFloor });
  const workers = labels.map((l) => spawnWorker(c.url, l, 'wasm'));
  try {
    if (trusted) {
      for (const w of workers) {
        await c.db.query(
          `INSERT INTO account_trust (account, consecutive_valid, total_valid, failures, updated_at)
           VALUES ($1, 1000000, 1000000, 0, $2)`,
          [w.account, Date.now()],
        );
      }
    }
    // Wait until every worker is connected, so that start-up time does not count.
    await waitFor('workers connected', async () => {
      const r = await c.db.query<{ n: number }>('SELECT count(DISTINCT account)::int AS n FROM workers');
      return Number(r.rows[0].n) >= workers.length;
    });
    const t0 = Date.now();
    const job = await postJob(
      c.url,
      smallMnistJob({
        name: `verify-live ${name}`,
        rounds: jobRounds,
        unitsPerRound,
        targetAccuracy: undefined,
        verification: { minAuditProbability: 0, checkpointEvery: 0, tolerance: 0 },
      }),
    );
    const done = await waitFor(
      `${name} job`,
      async () => {
        const j = await getJob(c.url, job.id);
        return j.status === 'completed' ? j : null;
      },
      30 * 60_000,
    );
    const wallMs = Date.now() - t0;
    const cost = await verificationCost(c.db, job.id);
    return { phase: name, wallMs, rounds: done.round, accuracy: done.metrics.at(-1)?.accuracy ?? 0, cost };
  } finally {
    await stopWorkers(workers);
    await c.destroy();
  }
}

const labels = (prefix: string) => Array.from({ length: workerCount }, (_, i) => `${prefix}-${i}`);
const results: PhaseResult[] = [];
// A short unreported run first: the first coordinator and worker processes of a run pay for cold caches.
await phase('warm-up', labels('live-warmup'), true, 0, 3);
results.push(await phase('reference', labels('live-trusted'), true, 0));
results.push(await phase('trusted', labels('live-trusted'), true));
results.push(await phase('new', labels(`live-new-${Date.now()}`), false));

const ref = results[0];
const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
console.log(
  `verify-live: ${rounds} rounds x ${unitsPerRound} units of 24 steps (batch 32), ${workerCount} wasm worker processes`,
);
console.log('phase      wall s  +wall   audits disputes  audit steps  referee  cheap(eq)  overhead(steps)  accuracy');
for (const r of results) {
  const c = r.cost;
  console.log(
    [
      r.phase.padEnd(9),
      (r.wallMs / 1000).toFixed(1).padStart(7),
      pct(r.wallMs / ref.wallMs - 1).padStart(7),
      String(c.audits).padStart(8),
      String(c.disputes).padStart(8),
      `${c.auditSteps}/${c.primarySteps}`.padStart(12),
      String(c.refereeSteps).padStart(8),
      c.cheapStepEquivalents.toFixed(1).padStart(10),
      pct(c.overhead).padStart(16),
      r.accuracy.toFixed(3).padStart(9),
    ].join(' '),
  );
}
writeFileSync(
  values.out!,
  `${JSON.stringify({ at: new Date().toISOString(), rounds, unitsPerRound, workers: workerCount, results }, null, 2)}\n`,
);
process.exit(0);
