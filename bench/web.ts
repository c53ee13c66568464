/**
 * bench:web — training throughput of the browser worker (the volunteer page's Web Worker in headless Chromium)
 * against the headless Node worker (bin/worker.ts), on the same backend, model and job shape, against one real
 * coordinator on loopback.
 *
 *   npm run bench:web                      webgpu, wasm and cpu; 25 s measured per run (~6 minutes on 2 cores)
 *   npm run bench:web -- --quick           10 s per run
 *   npm run bench:web -- --backends wasm   only the named backends (comma-separated)
 *
 * Each run gets a fresh job (MNIST MLP 784-128-10, SGD 0.1, batch 32, H = 50 steps) and a single worker. The first
 * result is the warm-up (downloads, kernel compilation); the figure is the examples of the results that follow
 * divided by the time between the first and the last one, so it is end-to-end worker throughput: training plus
 * result upload and acknowledgement, the same for both. Rounds are longer than the window, and the coordinator does
 * not recompute the new account's audit copies itself, so neither round closes nor audits share the cores or make
 * the worker wait.
 * WebGPU is SwiftShader in both (Chromium's, and Dawn's through the Vulkan ICD), i.e. Vulkan on the CPU.
 *
 * Writes a table to stdout, bench/results/web.json, and the `## bench:web` section of docs/BENCHMARKS.md.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { addressFromPrivateKey, generatePrivateKey } from '../shared/identity/index.js';
import { mnistMlpModel } from '../shared/train/templates.js';
import { ensureWebBuilt } from '../test/helpers/build-web.js';
import { postJob, startTestCoordinator, type TestCoordinator, testStore } from '../test/helpers/cluster.js';
import { launchChromium } from '../test/helpers/web-browser.js';

type Backend = 'webgpu' | 'wasm' | 'cpu';
type Env = 'browser' | 'node';

const { values } = parseArgs({
  options: { quick: { type: 'boolean', default: false }, backends: { type: 'string', default: 'webgpu,wasm,cpu' } },
});
const WINDOW_MS = values.quick ? 10_000 : 25_000;
const BACKENDS = values.backends!.split(',').map((s) => s.trim()) as Backend[];
const WARMUP_TIMEOUT_MS = 180_000;
const BATCH = 32;
const STEPS = 50;

interface Row {
  backend: Backend;
  env: Env;
  results: number;
  examples: number;
  seconds: number;
  examplesPerSecond: number | null;
  secondsPerUnit: number | null;
  adapter?: string;
}

function jobSpec(name: string): Record<string, unknown> {
  return {
    name,
    model: mnistMlpModel(128),
    dataset: 'mnist',
    loss: 'categoricalCrossentropy',
    optimizer: { type: 'sgd', learningRate: 0.1 },
    batchSize: BATCH,
    localSteps: STEPS,
    // Longer than any window: the worker never waits for a round to close.
    unitsPerRound: 1000,
    rounds: 10_000,
    unitDeadlineMs: 300_000,
    // Credits; far more than a run spends. Every job escrows a budget from the requester's balance.
    budget: 1_000,
  };
}

async function createJob(c: TestCoordinator, name: string): Promise<string> {
  return (await postJob(c.url, jobSpec(name), c.requester.apiKey)).id;
}

interface ResultRow {
  examples: number;
  created_at: number;
}

async function results(c: TestCoordinator, jobId: string, account: string): Promise<ResultRow[]> {
  const { rows } = await c.db.query<ResultRow>(
    'SELECT examples, created_at FROM results WHERE job_id = $1 AND lower(account) = lower($2) ORDER BY created_at',
    [jobId, account],
  );
  return rows.map((r) => ({ examples: Number(r.examples), created_at: Number(r.created_at) }));
}

/** Waits for the warm-up result, then measures for WINDOW_MS (longer if fewer than 3 results came in). */
async function measure(c: TestCoordinator, jobId: string, account: string): Promise<Omit<Row, 'backend' | 'env'>> {
  const end = Date.now() + WARMUP_TIMEOUT_MS;
  while ((await results(c, jobId, account)).length === 0) {
    if (Date.now() > end) throw new Error('no result within the warm-up timeout');
    await new Promise((r) => setTimeout(r, 250));
  }
  const start = Date.now();
  let rows: ResultRow[] = [];
  while (Date.now() - start < WINDOW_MS || (rows.length < 3 && Date.now() - start < 3 * WINDOW_MS)) {
    await new Promise((r) => setTimeout(r, 250));
    rows = await results(c, jobId, account);
  }
  if (process.env.BENCH_DEBUG)
    console.log(`result times (ms): ${rows.map((r) => r.created_at - rows[0].created_at).join(' ')}`);
  const after = rows.slice(1);
  const seconds = after.length ? (rows[rows.length - 1].created_at - rows[0].created_at) / 1000 : 0;
  const examples = after.reduce((s, r) => s + r.examples, 0);
  return {
    results: after.length,
    examples,
    seconds,
    examplesPerSecond: seconds > 0 ? examples / seconds : null,
    secondsPerUnit: after.length ? seconds / after.length : null,
  };
}

/** Each run's job is cancelled after it, or the next run's worker would be handed units of both jobs. */
async function cancelJob(c: TestCoordinator, jobId: string): Promise<void> {
  await fetch(`${c.url}/api/v1/jobs/${jobId}/cancel`, {
    method: 'POST',
    headers: { authorization: `Bearer ${c.requester.apiKey}` },
  });
}

async function runBrowser(c: TestCoordinator, backend: Backend): Promise<Row> {
  const jobId = await createJob(c, `bench browser ${backend}`);
  const browser = await launchChromium();
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await page.goto(`${c.url.replace('127.0.0.1', 'localhost')}/`);
    await page.getByTestId('webgpu-adapter').waitFor();
    const adapter = backend === 'webgpu' ? (await page.getByTestId('webgpu-adapter').textContent())?.trim() : undefined;
    // The page signs with a key it made and kept in this (fresh) browser profile; results carry its address.
    const accountBox = page.getByRole('textbox', { name: 'Wallet address credits go to' });
    await page.waitForFunction(() =>
      /^0x[0-9a-fA-F]{40}$/.test((document.getElementById('account') as HTMLInputElement)?.value ?? ''),
    );
    const account = await accountBox.inputValue();
    await page.getByLabel('Backend').selectOption(backend);
    await page.getByRole('button', { name: 'Start contributing' }).click();
    const m = await measure(c, jobId, account);
    await page.getByRole('button', { name: 'Stop' }).click();
    return { backend, env: 'browser', adapter, ...m };
  } finally {
    await browser.close();
    await cancelJob(c, jobId);
  }
}

async function runNode(c: TestCoordinator, backend: Backend): Promise<Row> {
  const privateKey = generatePrivateKey();
  const account = addressFromPrivateKey(privateKey);
  const jobId = await createJob(c, `bench node ${backend}`);
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', 'bin/worker.ts', '--coordinator', c.url, '--backend', backend, '--quiet'],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, LOG_LEVEL: 'warn', SWARMGRAD_PRIVATE_KEY: privateKey },
    },
  );
  let output = '';
  child.stdout.on('data', (d) => {
    output += String(d);
  });
  child.stderr.on('data', (d) => {
    output += String(d);
  });
  try {
    const m = await measure(c, jobId, account);
    const adapter = /\(([^)]*)\) ->/.exec(output)?.[1];
    return { backend, env: 'node', adapter: backend === 'webgpu' ? adapter : undefined, ...m };
  } catch (err) {
    throw new Error(`${String(err)}\nworker output:\n${output}`);
  } finally {
    // SIGINT lets the worker release its unit, as Ctrl-C does.
    child.kill('SIGINT');
    await new Promise((r) => child.once('exit', r));
    await cancelJob(c, jobId);
  }
}

function fmt(n: number | null, digits = 0): string {
  return n === null ? '–' : n.toFixed(digits);
}

function table(rows: Row[]): string[] {
  const lines = [
    '| backend | worker | results measured | examples/s | s per unit | browser / node |',
    '| --- | --- | ---: | ---: | ---: | ---: |',
  ];
  for (const r of rows) {
    const node = rows.find((x) => x.backend === r.backend && x.env === 'node');
    const ratio =
      r.env === 'browser' && node?.examplesPerSecond && r.examplesPerSecond
        ? (r.examplesPerSecond / node.examplesPerSecond).toFixed(2)
        : '';
    lines.push(
      `| ${r.backend} | ${r.env} | ${r.results} | ${fmt(r.examplesPerSecond)} | ${fmt(r.secondsPerUnit, 2)} | ${ratio} |`,
    );
  }
  return lines;
}

function writeDocs(rows: Row[], seconds: number, load: number[]): void {
  const path = 'docs/BENCHMARKS.md';
  let doc = '# Benchmarks\n';
  try {
    doc = readFileSync(path, 'utf8');
  } catch {
    // first section
  }
  const adapters = [...new Set(rows.map((r) => `${r.env}: ${r.adapter}`).filter((a) => !a.endsWith('undefined')))];
  const section = [
    '## bench:web',
    '',
    `\`npm run bench:web\` (${new Date().toISOString().slice(0, 10)}, ${values.quick ? 'quick, ' : ''}2 CPU cores shared with other work, Node ${process.version}, headless Chromium). ` +
      'End-to-end examples per second of one worker on a fresh job (MNIST MLP 784-128-10, SGD, batch 32, H = 50, rounds longer than the window, no self-audits) against a coordinator on loopback: ' +
      'the browser worker is the volunteer page (Web Worker, backend picked in the page), the node worker is `bin/worker.ts` in its own process. ' +
      `The first result is warm-up; the figure is the examples of the later results over the time from the first to the last (${WINDOW_MS / 1000} s window), ` +
      'so it includes result upload and acknowledgement. Raw figures: bench/results/web.json.',
    '',
    ...table(rows),
    '',
    adapters.length ? `WebGPU adapters (software Vulkan on the CPU in both, not a GPU): ${adapters.join('; ')}.` : '',
    '',
    `Run time ${seconds.toFixed(0)} s; 1-minute load average ${load.map((l) => l.toFixed(1)).join(' -> ')} (start -> end): the coordinator, the worker and the browser share the 2 cores, so absolute figures move with the machine's load.`,
    '',
  ].join('\n');
  const re = /## bench:web\n[\s\S]*?(?=\n## |$)/;
  doc = re.test(doc) ? doc.replace(re, section) : `${doc.trimEnd()}\n\n${section}`;
  writeFileSync(path, doc.endsWith('\n') ? doc : `${doc}\n`);
}

async function main(): Promise<void> {
  const t0 = Date.now();
  const load0 = loadavg()[0];
  await ensureWebBuilt();
  // A coordinator on PGlite with a funded requester and its API key (the tests' helper).
  const c = await startTestCoordinator(testStore('pglite'), { idleRetryMs: 200, sweepEveryMs: 500 });
  // Each worker's account is new, so all its units are audited; with no second account the coordinator would
  // recompute them itself on the same cores. Audit copies wait instead: this bench measures workers, not audits.
  c.scheduler.verification.configure({ selfAuditAfterMs: null });
  const rows: Row[] = [];
  try {
    for (const backend of BACKENDS) {
      for (const env of ['browser', 'node'] as const) {
        process.stdout.write(`${backend} ${env}… `);
        const row = env === 'browser' ? await runBrowser(c, backend) : await runNode(c, backend);
        rows.push(row);
        console.log(`${fmt(row.examplesPerSecond)} ex/s over ${row.results} results`);
      }
    }
  } finally {
    await c.destroy();
  }
  const seconds = (Date.now() - t0) / 1000;
  console.log(`\n${table(rows).join('\n')}\n`);
  mkdirSync('bench/results', { recursive: true });
  writeFileSync(
    'bench/results/web.json',
    `${JSON.stringify({ at: new Date().toISOString(), windowMs: WINDOW_MS, batch: BATCH, steps: STEPS, rows }, null, 2)}\n`,
  );
  writeDocs(rows, seconds, [load0, loadavg()[0]]);
}

await main();
