import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ComputePool } from '../coordinator/compute/pool.js';
import { localCompute } from '../coordinator/compute/tasks.js';
import { initTfBackend } from '../coordinator/tf-backend.js';
import { assignExamples } from '../shared/train/assign.js';
import { TrainAborted } from '../shared/train/train-unit.js';
import { hashWeights, subtractWeights } from '../shared/train/weights-format.js';
import { DEFAULT_CHEAP_CHECK_BOUNDS } from '../shared/verify/cheap-checks.js';
import { smallMlp, spec, syntheticDataset } from './helpers/train-fixtures.js';

/**
 * The compute pool runs the coordinator's tensor work in worker threads on the coordinator's backend (wasm): every
 * result must equal, bit for bit, what the same task computes on the main thread, or verification would change.
 */
describe('compute pool', () => {
  let pool: ComputePool;
  let dataset: ReturnType<typeof syntheticDataset>;
  let model: object;

  beforeAll(async () => {
    expect(await initTfBackend('wasm')).toBe('wasm');
    dataset = syntheticDataset(400, 20, 4);
    model = smallMlp(20, 4);
    pool = new ComputePool({ threads: 2, testHooks: true });
  });
  afterAll(async () => {
    await pool.close();
  });

  it('computes initial weights, training, cheap checks and evaluation exactly as the main thread', async () => {
    const start = await localCompute.buildInitialWeights(model);
    const fromPool = await pool.buildInitialWeights(model);
    expect(fromPool.shapes).toEqual(start.shapes);
    expect(fromPool.names).toEqual(start.names);

    const s = spec({ steps: 12, batchSize: 8, checkpointEvery: 4 });
    const indices = assignExamples(7, s.steps, s.batchSize, dataset.trainExamples);
    const req = { model, spec: s, startWeights: start, dataset, indices, keepCheckpointStates: true };
    const [mine, theirs] = await Promise.all([localCompute.trainUnit(req), pool.trainUnit(req)]);
    expect(theirs.deltaHash).toBe(mine.deltaHash);
    expect(theirs.checkpoints).toEqual(mine.checkpoints);
    expect(theirs.losses).toEqual(mine.losses);
    expect(theirs.stepsRun).toBe(12);
    expect(theirs.backend).toBe('wasm');
    expect(hashWeights(theirs.delta)).toBe(mine.deltaHash);

    // A segment resumed from a checkpoint state (what the referee runs) reproduces the later checkpoints.
    const segment = await pool.trainUnit({
      ...req,
      fromStep: 4,
      fromState: (mine.checkpointStates ?? [])[0],
      toStep: 8,
    });
    expect(segment.stepsRun).toBe(4);
    expect(segment.checkpoints.at(-1)).toBe(mine.checkpoints[1]);

    const input = {
      model,
      dataset,
      loss: s.loss,
      steps: s.steps,
      batchSize: s.batchSize,
      checkpointEvery: 4,
      indices,
      startWeights: start,
      delta: mine.delta,
      checkpoints: mine.checkpoints,
      losses: mine.losses,
    };
    const [c1, c2] = await Promise.all([
      localCompute.cheapCheck(input, DEFAULT_CHEAP_CHECK_BOUNDS),
      pool.cheapCheck(input, DEFAULT_CHEAP_CHECK_BOUNDS),
    ]);
    expect(c2).toEqual(c1);
    expect(c2.firstLoss?.recomputed).toBe(c1.firstLoss?.recomputed);

    const [e1, e2] = await Promise.all([
      localCompute.evaluate(model, mine.finalWeights, dataset, { loss: s.loss }),
      pool.evaluate(model, mine.finalWeights, dataset, { loss: s.loss }),
    ]);
    expect(e2).toEqual(e1);

    const jobSpec = { batchSize: 8, localSteps: 12, optimizer: s.optimizer, loss: s.loss } as never;
    expect(await pool.trialStep(model, jobSpec, dataset, start)).toBeNull();
    // The weights the thread keeps by reference are copies: a result never empties the caller's objects.
    expect(subtractWeights(start, start).data[0].length).toBe(start.data[0].length);
  });

  it('rejects with the thread error, cancels between steps, and replaces a thread that dies', async () => {
    await expect(
      pool.evaluate({ class_name: 'Nope', config: {} }, { names: [], shapes: [], data: [] }, dataset, {}),
    ).rejects.toThrow(/Nope/);

    const start = await pool.buildInitialWeights(model);
    const s = spec({ steps: 400, batchSize: 32, checkpointEvery: 0 });
    const indices = assignExamples(3, s.steps, s.batchSize, dataset.trainExamples);
    let stop = false;
    const long = pool.trainUnit({ model, spec: s, startWeights: start, dataset, indices, shouldStop: () => stop });
    setTimeout(() => {
      stop = true;
    }, 200);
    await expect(long).rejects.toBeInstanceOf(TrainAborted);

    const crash = pool.crashThreadForTest();
    await expect(crash).rejects.toThrow(/compute thread died running exit/);
    // Still serving, on both threads at once.
    const evals = await Promise.all([1, 2, 3].map(() => pool.evaluate(model, start, dataset, {})));
    expect(evals[0]).toEqual(evals[2]);
    expect(pool.size).toBeLessThanOrEqual(2);
  });
});
