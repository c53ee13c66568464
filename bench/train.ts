/**
 * bench:train — training throughput of trainUnit against a plain tfjs `model.fit` loop, per backend.
 *
 *   npm run bench:train                 cpu, wasm, and webgpu when an adapter exists (~2-3 minutes on 2 cores)
 *   npm run bench:train -- --quick      fewer repetitions, shorter measurements
 *   npm run bench:train -- --no-webgpu  skip WebGPU
 *
 * Then the CNN template's trainUnit throughput on cpu and on wasm (whose missing conv gradient is bridged to cpu).
 *
 * For each backend x model (784-128-10, 784-256-10 MNIST MLPs) x batch (32, 128): a warm-up of both paths, then
 * interleaved timed runs of the same number of steps from the same weights with SGD 0.1; each path's best run is
 * kept (best-of-N resists noise from other processes on a shared machine). trainUnit's figure includes everything a
 * worker pays per unit: batch assembly from the JS dataset, the per-step loss read and the checkpoint hashes
 * (k = steps/8, as jobs default to). model.fit gets its data as ready-made tensors, as fit users do. Both paths
 * are timed from weights in JS memory to trained weights in JS memory (set weights, train, read weights back).
 *
 * Writes a table to stdout, bench/results/train.json, and the `## bench:train` section of docs/BENCHMARKS.md.
 */

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { pathToFileURL } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { measureCoordinatorOverhead as coordinatorOverhead } from './coordinator-overhead.js';
import '@tensorflow/tfjs-backend-wasm';
import { chooseNodeBackend } from '../bin/node-backend.js';
import { buildMnistDataset } from '../coordinator/store/builtin/mnist.js';
import { assignExamples } from '../shared/train/assign.js';
import { mnistCnnModel, mnistMlpModel } from '../shared/train/templates.js';
import { trainUnit } from '../shared/train/train-unit.js';
import type { Dataset, WeightSet } from '../shared/train/types.js';
import { BRIDGED_WASM_KERNELS } from '../shared/train/wasm-gradient-kernels.js';
import { applyWeights, weightsFromModel, weightsFromModelAsync } from '../shared/train/weights-format.js';

const QUICK = process.argv.includes('--quick');
const SKIP_WEBGPU = process.argv.includes('--no-webgpu');
const HIDDEN_SIZES = [128, 256];
const BATCHES = [32, 128];
const LEARNING_RATE = 0.1;

type Backend = 'cpu' | 'wasm' | 'webgpu';

/**
 * Per backend: how long one timed run should last, repetitions per path, step bounds and checkpoint spacing
 * (0 = steps/8, the job default). WebGPU here is usually SwiftShader (Vulkan on the CPU) and slow, so it gets
 * a fixed 6 steps with a checkpoint every 3, and two timed pairs.
 */
const PLAN: Record<Backend, { seconds: number; reps: number; minSteps: number; maxSteps: number; k: number }> = {
  cpu: { seconds: QUICK ? 0.5 : 0.8, reps: QUICK ? 2 : 3, minSteps: 8, maxSteps: 200, k: 0 },
  wasm: { seconds: QUICK ? 0.5 : 0.8, reps: QUICK ? 3 : 6, minSteps: 16, maxSteps: 400, k: 0 },
  webgpu: { seconds: 0, reps: QUICK ? 1 : 2, minSteps: 6, maxSteps: 6, k: 3 },
};

export interface TrainBenchRow {
  backend: Backend;
  adapter?: string;
  model: string;
  batch: number;
  steps: number;
  checkpointEvery: number;
  unitExamplesPerSecond: number;
  fitExamplesPerSecond: number;
  /** Median over back-to-back (unit, fit) pairs of unit / fit: the acceptance target is >= 0.9. */
  ratio: number;
  /** Best trainUnit run over best fit run. */
  bestRatio: number;
  pairs: number;
  /** Mean share of trainUnit's wall time spent reading, encoding and hashing checkpoint states. */
  checkpointShare: number;
}

// ---- measurement ---------------------------------------------------------------------------------------------------

async function initialWeights(modelJson: object): Promise<WeightSet> {
  const model = await tf.models.modelFromJSON(modelJson as Parameters<typeof tf.models.modelFromJSON>[0]);
  const w = weightsFromModel(model);
  model.dispose();
  return w;
}

/** Examples per second of trainUnit over `steps` steps of batch `batch`, and the share of time spent on checkpoints. */
export async function measureTrainUnit(
  model: object,
  weights: WeightSet,
  dataset: Dataset,
  steps: number,
  batch: number,
  checkpointEvery = 0,
  adapter?: string,
): Promise<{ rate: number; checkpointShare: number }> {
  const t0 = performance.now();
  const out = await trainUnit({
    model,
    spec: {
      steps,
      batchSize: batch,
      checkpointEvery,
      optimizer: { type: 'sgd', learningRate: LEARNING_RATE },
      loss: 'categoricalCrossentropy',
    },
    startWeights: weights,
    dataset,
    indices: assignExamples(17, steps, batch, dataset.trainExamples),
    adapter,
  });
  const ms = performance.now() - t0;
  return { rate: out.examples / (ms / 1000), checkpointShare: (out.timings.checkpointMs ?? 0) / ms };
}

/** A compiled model plus its fit data, built once per configuration so that only fit itself is timed. */
export async function prepareFit(model: object, dataset: Dataset, steps: number, batch: number) {
  const m = await tf.models.modelFromJSON(model as Parameters<typeof tf.models.modelFromJSON>[0]);
  m.compile({ optimizer: tf.train.sgd(LEARNING_RATE), loss: 'categoricalCrossentropy' });
  const idx = assignExamples(17, steps, batch, dataset.trainExamples);
  const width = dataset.featureShape.reduce((a, b) => a * b, 1);
  const x = new Float32Array(idx.length * width);
  const y = new Int32Array(idx.length);
  idx.forEach((row, i) => {
    x.set(dataset.features.subarray(row * width, (row + 1) * width), i * width);
    y[i] = dataset.labels[row];
  });
  const xs = tf.tensor2d(x, [idx.length, width]);
  const ys = tf.tidy(() => tf.cast(tf.oneHot(tf.tensor1d(y, 'int32'), dataset.numClasses), 'float32'));
  return {
    /** Like a unit, from weights in JS memory to trained weights in JS memory. */
    async run(weights: WeightSet): Promise<number> {
      const t0 = performance.now();
      applyWeights(m, weights);
      await m.fit(xs, ys, { batchSize: batch, epochs: 1, shuffle: false, verbose: 0 });
      await weightsFromModelAsync(m);
      return idx.length / ((performance.now() - t0) / 1000);
    },
    dispose() {
      tf.dispose([xs, ys]);
      m.dispose();
    },
  };
}

async function benchConfig(
  backend: Backend,
  adapter: string | undefined,
  hidden: number,
  batch: number,
  dataset: Dataset,
  log: (s: string) => void,
): Promise<TrainBenchRow> {
  const plan = PLAN[backend];
  const model = mnistMlpModel(hidden);
  const weights = await initialWeights(model);
  // Warm-up: builds and caches the model, compiles kernels/shaders, and gives a rate to size the timed runs.
  const warmSteps = Math.min(4, plan.minSteps);
  await measureTrainUnit(model, weights, dataset, warmSteps, batch, plan.k, adapter);
  const rate =
    plan.seconds > 0 ? (await measureTrainUnit(model, weights, dataset, warmSteps, batch, plan.k, adapter)).rate : 0;
  const steps = Math.max(plan.minSteps, Math.min(plan.maxSteps, Math.round((rate * plan.seconds) / batch)));
  const fit = await prepareFit(model, dataset, steps, batch);
  await fit.run(weights);
  const units: number[] = [];
  const fits: number[] = [];
  const shares: number[] = [];
  const unit = async () => {
    const m = await measureTrainUnit(model, weights, dataset, steps, batch, plan.k, adapter);
    shares.push(m.checkpointShare);
    return m.rate;
  };
  for (let r = 0; r < plan.reps; r++) {
    // Back-to-back pairs in alternating order (fit, unit / unit, fit): each pair sees about the same machine load,
    // and drift favours neither path.
    if (r % 2 === 0) {
      fits.push(await fit.run(weights));
      units.push(await unit());
    } else {
      units.push(await unit());
      fits.push(await fit.run(weights));
    }
  }
  const bestUnit = Math.max(...units);
  const bestFit = Math.max(...fits);
  const pairRatios = units.map((u, i) => u / fits[i]).sort((a, b) => a - b);
  const medianPairRatio =
    pairRatios.length % 2 === 1
      ? pairRatios[pairRatios.length >> 1]
      : (pairRatios[pairRatios.length / 2 - 1] + pairRatios[pairRatios.length / 2]) / 2;
  fit.dispose();
  const row: TrainBenchRow = {
    backend,
    ...(adapter ? { adapter } : {}),
    model: `784-${hidden}-10`,
    batch,
    steps,
    checkpointEvery: plan.k > 0 ? plan.k : Math.max(1, Math.round(steps / 8)),
    unitExamplesPerSecond: bestUnit,
    fitExamplesPerSecond: bestFit,
    ratio: medianPairRatio,
    bestRatio: bestUnit / bestFit,
    pairs: plan.reps,
    checkpointShare: shares.reduce((a, b) => a + b, 0) / shares.length,
  };
  log(
    `${backend.padEnd(6)} ${row.model.padEnd(10)} batch ${String(batch).padStart(3)}  steps ${String(steps).padStart(3)}  ` +
      `trainUnit ${bestUnit.toFixed(0).padStart(6)} ex/s  fit ${bestFit.toFixed(0).padStart(6)} ex/s  ` +
      `ratio ${row.ratio.toFixed(2)} (best/best ${row.bestRatio.toFixed(2)})  checkpoints ${(100 * row.checkpointShare).toFixed(0)}%`,
  );
  return row;
}

async function useBackend(backend: Backend): Promise<{ ok: boolean; adapter?: string }> {
  if (backend === 'webgpu') {
    const choice = await chooseNodeBackend('webgpu').catch(() => null);
    return choice?.backend === 'webgpu' ? { ok: true, adapter: choice.adapter } : { ok: false };
  }
  const ok = await tf.setBackend(backend);
  await tf.ready();
  return { ok };
}

// ---- coordinator overhead (to be added) ------------------------------------------------------------------------------
// The lead adds a coordinator-overhead measurement here: return a result to have it written to train.json under
// `coordinatorOverhead` and appended to the docs section as `lines`; null leaves both out.

export interface OverheadResult {
  json: Record<string, unknown>;
  lines: string[];
}

export async function measureCoordinatorOverhead(
  _dataset: Dataset,
  log: (s: string) => void,
): Promise<OverheadResult | null> {
  const o = await coordinatorOverhead();
  log(
    `coordinator overhead per unit (${o.store}, ${o.units} units): lease ${o.leaseMs.toFixed(1)} ms, upload ${o.uploadMs.toFixed(1)} ms, aggregation ${o.aggregationMsPerUnit.toFixed(1)} ms, total ${o.totalMsPerUnit.toFixed(1)} ms`,
  );
  return {
    json: { ...o },
    lines: [
      `Coordinator overhead per unit (demo MLP 784-128-10, 4 units per round, real sockets on loopback, ${o.store}, ${o.units} units, workers answering at once): ` +
        `lease ${o.leaseMs.toFixed(1)} ms, upload + checks ${o.uploadMs.toFixed(1)} ms, aggregation + outer step + held-out evaluation ${o.aggregationMsPerUnit.toFixed(1)} ms per unit; total ${o.totalMsPerUnit.toFixed(1)} ms per unit.`,
    ],
  };
}

// ---- the CNN template on cpu and wasm ---------------------------------------------------------------------------------

/** The gradient kernels a Conv2D model needs beyond the forward pass. */
const CNN_KERNELS: readonly string[] = ['Conv2DBackpropFilter', 'Conv2DBackpropInput'];

export interface CnnRow {
  backend: Backend;
  batch: number;
  steps: number;
  examplesPerSecond: number;
  /** Gradient kernels this backend borrows from cpu (shared/train/wasm-gradient-kernels.ts). */
  bridged: string[];
}

/**
 * trainUnit on the dashboard's CNN template (two Conv2D layers). wasm has no Conv2DBackpropFilter of its own and
 * runs the bridged cpu kernel for it, so this shows what the bridge costs against cpu, which has all its kernels.
 */
async function benchCnn(dataset: Dataset, log: (s: string) => void): Promise<CnnRow[]> {
  const rows: CnnRow[] = [];
  const batch = 32;
  const steps = QUICK ? 4 : 8;
  for (const backend of ['cpu', 'wasm'] as const) {
    if (!(await useBackend(backend)).ok) continue;
    const model = mnistCnnModel();
    const weights = await initialWeights(model);
    await measureTrainUnit(model, weights, dataset, 2, batch); // warm-up: kernels, model cache
    let best = 0;
    for (let rep = 0; rep < (QUICK ? 1 : 2); rep++) {
      best = Math.max(best, (await measureTrainUnit(model, weights, dataset, steps, batch)).rate);
    }
    const bridged = backend === 'wasm' ? BRIDGED_WASM_KERNELS.filter((k) => CNN_KERNELS.includes(k)) : [];
    rows.push({ backend, batch, steps, examplesPerSecond: best, bridged });
    log(`cnn ${backend}: ${best.toFixed(0)} ex/s${bridged.length ? ` (bridged: ${bridged.join(', ')})` : ''}`);
  }
  return rows;
}

// ---- report ----------------------------------------------------------------------------------------------------------

function writeDocs(
  rows: TrainBenchRow[],
  cnn: CnnRow[],
  overhead: OverheadResult | null,
  seconds: number,
  load: number[],
): void {
  const path = 'docs/BENCHMARKS.md';
  let doc = '';
  try {
    doc = readFileSync(path, 'utf8');
  } catch {
    doc = '# Benchmarks\n';
  }
  const adapters = [...new Set(rows.map((r) => r.adapter).filter(Boolean))];
  const lines = [
    '## bench:train',
    '',
    `\`npm run bench:train\` (${new Date().toISOString().slice(0, 10)}, ${QUICK ? 'quick, ' : ''}2 CPU cores shared with other work, Node ${process.version}, tfjs ${tf.version.tfjs}). ` +
      "Examples per second of `trainUnit` against a plain `model.fit` loop on the same backend, model, batch, step count and start weights (SGD 0.1, categorical cross-entropy, MNIST), measured as back-to-back pairs in alternating order; the ratio is the median over pairs of trainUnit / fit, the throughputs are each path's best run. " +
      'trainUnit includes batch assembly, a loss read per step (per 8 steps on GPU backends) and a state read + sha256 every k steps (k = steps/8 as jobs default to; 3 on WebGPU), whose share of the trainUnit time is the last column; fit gets pre-built tensors. Both are timed from weights in JS memory to trained weights read back. Target: ratio >= 0.9. Raw figures: bench/results/train.json.',
    '',
    '| backend | model | batch | steps | k | pairs | trainUnit ex/s (best) | model.fit ex/s (best) | ratio (median of pairs) | best / best | checkpoint share |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map(
      (r) =>
        `| ${r.backend} | ${r.model} | ${r.batch} | ${r.steps} | ${r.checkpointEvery} | ${r.pairs} | ${r.unitExamplesPerSecond.toFixed(0)} | ${r.fitExamplesPerSecond.toFixed(0)} | ${r.ratio.toFixed(2)} | ${r.bestRatio.toFixed(2)} | ${(100 * r.checkpointShare).toFixed(0)}% |`,
    ),
    '',
  ];
  if (adapters.length > 0)
    lines.push(`WebGPU adapter: ${adapters.join(', ')} (software Vulkan on the CPU, not a GPU).`, '');
  const worst = Math.min(...rows.map((r) => r.ratio));
  lines.push(
    `Worst ratio ${worst.toFixed(2)}; run time ${seconds.toFixed(0)} s; 1-minute load average ${load.map((l) => l.toFixed(1)).join(' -> ')} (start -> end) on 2 cores, so absolute figures move with whatever else the machine runs; the ratio compares runs interleaved under the same load.`,
    '',
  );
  if (cnn.length > 0) {
    const cpu = cnn.find((r) => r.backend === 'cpu');
    lines.push(
      `The CNN template (two Conv2D layers, SGD 0.1, batch ${cnn[0].batch}, ${cnn[0].steps} steps, best of the runs): wasm borrows the gradient kernels it lacks from cpu (\`shared/train/wasm-gradient-kernels.ts\`).`,
      '',
      '| backend | trainUnit ex/s | vs cpu | kernels bridged to cpu |',
      '| --- | ---: | ---: | --- |',
      ...cnn.map(
        (r) =>
          `| ${r.backend} | ${r.examplesPerSecond.toFixed(0)} | ${cpu ? (r.examplesPerSecond / cpu.examplesPerSecond).toFixed(2) : '-'} | ${r.bridged.join(', ') || 'none'} |`,
      ),
      '',
    );
  }
  if (overhead) lines.push(...overhead.lines, '');
  const section = lines.join('\n');
  const re = /## bench:train\n[\s\S]*?(?=\n## |$)/;
  doc = re.test(doc) ? doc.replace(re, section) : `${doc.trimEnd()}\n\n${section}`;
  writeFileSync(path, doc.endsWith('\n') ? doc : `${doc}\n`);
}

export async function main(): Promise<void> {
  const t0 = performance.now();
  const loadStart = loadavg()[0];
  const log = (s: string) => console.log(s);
  const dataset = buildMnistDataset();
  const rows: TrainBenchRow[] = [];
  const backends: Backend[] = SKIP_WEBGPU ? ['cpu', 'wasm'] : ['cpu', 'wasm', 'webgpu'];
  for (const backend of backends) {
    const { ok, adapter } = await useBackend(backend);
    if (!ok) {
      log(`${backend}: not available, skipped`);
      continue;
    }
    if (adapter) log(`webgpu adapter: ${adapter}`);
    const tb = performance.now();
    for (const hidden of HIDDEN_SIZES) {
      for (const batch of BATCHES) rows.push(await benchConfig(backend, adapter, hidden, batch, dataset, log));
    }
    log(`${backend}: ${((performance.now() - tb) / 1000).toFixed(0)} s`);
  }
  const cnn = await benchCnn(dataset, log);
  await useBackend('wasm');
  const overhead = await measureCoordinatorOverhead(dataset, log);
  const seconds = (performance.now() - t0) / 1000;
  const load = [loadStart, loadavg()[0]];
  const worst = Math.min(...rows.map((r) => r.ratio));
  log(`worst trainUnit/fit ratio ${worst.toFixed(2)} (target >= 0.9); ${seconds.toFixed(0)} s`);
  mkdirSync('bench/results', { recursive: true });
  writeFileSync(
    'bench/results/train.json',
    `${JSON.stringify({ date: new Date().toISOString(), quick: QUICK, node: process.version, rows, cnn, worstRatio: worst, seconds, loadAverage: load, ...(overhead ? { coordinatorOverhead: overhead.json } : {}) }, null, 2)}\n`,
  );
  writeDocs(rows, cnn, overhead, seconds, load);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await main();
  // Dawn keeps the process alive after WebGPU use.
  process.exit(0);
}
