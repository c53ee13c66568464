import * as tf from '@tensorflow/tfjs';
import { sha256HexAsync } from '../hash.js';
import { assertCanTrainOn } from './backend-support.js';
import { batchSource, HOST_MEMORY_BACKENDS } from './device-dataset.js';
import { InnerOptimizerState } from './inner-optimizer.js';
import { meanLoss } from './losses.js';
import { withModel } from './model-cache.js';
import type { TrainUnitInput, TrainUnitOutput, TrainUnitSpec, WeightSet } from './types.js';
import {
  applyWeights,
  cloneWeights,
  encodeWeights,
  hashWeightsAsync,
  modelWeightNames,
  subtractWeights,
} from './weights-format.js';

/**
 * One work unit: `steps` optimizer steps of `batchSize` examples from `startWeights`, on the current tfjs backend.
 *
 * Training state = the model's weights (model.getWeights() order, stable names) followed by the inner optimizer's
 * slots ('@opt/<weight>/m' ...). Checkpoints are sha256 hashes of that state (hashWeights of the state WeightSet):
 *   - for a full run, after steps k, 2k, ... and after the last step when steps is not a multiple of k;
 *   - for a segment [fromStep, toStep), after every multiple of k inside it and always after toStep,
 * so running a segment from the state at a checkpoint reproduces the full run's later checkpoints bit-exactly on
 * the same backend. finalHash = hashWeights(finalWeights) (weights only), deltaHash = hashWeights(delta).
 *
 * FLOPs are estimated as 6 x trainable parameters x examples (forward 2, backward 4 multiply-adds per weight per
 * example): exact for dense layers, an undercount for convolutions, whose weights are reused at every position.
 */

export class TrainAborted extends Error {
  constructor(message = 'training abandoned') {
    super(message);
    this.name = 'TrainAborted';
  }
}

/** On GPU backends losses are read (and onStep called) in groups, so the device pipeline is not drained per step. */
const GPU_LOSS_GROUP = 8;

/** k in effect: the spec's checkpointEvery, or steps/8 (at least 1) when it is 0; never more than steps. */
export function effectiveCheckpointEvery(steps: number, checkpointEvery: number): number {
  const k = checkpointEvery > 0 ? checkpointEvery : Math.max(1, Math.round(steps / 8));
  return Math.min(k, steps);
}

/** Steps after which a run over [fromStep, toStep) of a `steps`-step unit records a checkpoint. */
export function checkpointStepsFor(steps: number, checkpointEvery: number, fromStep = 0, toStep = steps): number[] {
  const k = effectiveCheckpointEvery(steps, checkpointEvery);
  const out: number[] = [];
  for (let s = (Math.floor(fromStep / k) + 1) * k; s < toStep; s += k) out.push(s);
  out.push(toStep);
  return out;
}

export function trainableParamCount(model: tf.LayersModel): number {
  return model.trainableWeights.reduce((n, w) => n + w.shape.reduce<number>((a, d) => a * (d ?? 1), 1), 0);
}

/** 6 x trainable parameters x examples (see the module comment). */
export function estimateFlops(trainableParams: number, examples: number): number {
  return 6 * trainableParams * examples;
}

/** Stateless per-(unit, step, layer) dropout seed, so masks are reproducible yet differ between steps. */
function dropoutSeed(salt: number, step: number, layer: number): number {
  let h = Math.imul(salt ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(step + 1, 0xc2b2ae35) ^ Math.imul(layer + 1, 0x27d4eb2f);
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d);
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b);
  return (h ^ (h >>> 16)) >>> 0;
}

function validate(input: TrainUnitInput, from: number, to: number): void {
  const { spec, dataset, indices } = input;
  const posInt = (v: number) => Number.isSafeInteger(v) && v > 0;
  if (!posInt(spec.steps)) throw new Error('trainUnit: spec.steps must be a positive integer');
  if (!posInt(spec.batchSize)) throw new Error('trainUnit: spec.batchSize must be a positive integer');
  if (!Number.isSafeInteger(spec.checkpointEvery) || spec.checkpointEvery < 0) {
    throw new Error('trainUnit: spec.checkpointEvery must be a non-negative integer');
  }
  if (!Number.isSafeInteger(from) || !Number.isSafeInteger(to) || from < 0 || to <= from || to > spec.steps) {
    throw new Error(`trainUnit: step range [${from}, ${to}) is not inside [0, ${spec.steps})`);
  }
  if (from > 0 && !input.fromState) throw new Error('trainUnit: fromStep > 0 needs fromState (the checkpoint state)');
  if (!(indices instanceof Int32Array) || indices.length !== spec.steps * spec.batchSize) {
    throw new Error(`trainUnit: indices must be an Int32Array of steps x batchSize = ${spec.steps * spec.batchSize}`);
  }
  const end = to * spec.batchSize;
  for (let i = from * spec.batchSize; i < end; i++) {
    if (!(indices[i] >= 0 && indices[i] < dataset.trainExamples)) {
      throw new Error(
        `trainUnit: index ${i} = ${indices[i]} is outside the training split [0, ${dataset.trainExamples})`,
      );
    }
  }
}

function checkOutput(model: tf.LayersModel, numClasses: number): void {
  if (model.outputs.length !== 1)
    throw new Error(`trainUnit: the model has ${model.outputs.length} outputs; one is supported`);
  const shape = model.outputs[0].shape;
  if (shape.length !== 2 || shape[1] !== numClasses) {
    throw new Error(`trainUnit: model output shape [${shape.join(',')}] does not match [batch, ${numClasses} classes]`);
  }
}

/** Loads a full state (weights then slots) after checking it has exactly the layout this model and optimizer use. */
function loadState(model: tf.LayersModel, opt: InnerOptimizerState, state: WeightSet): void {
  const weightNames = modelWeightNames(model);
  const expected = [...weightNames, ...opt.slots.map((s) => s.name)];
  if (state.names.length !== expected.length || state.names.some((n, i) => n !== expected[i])) {
    throw new Error(
      `trainUnit: fromState holds [${state.names.join(', ')}] but this model and optimizer need [${expected.join(', ')}]`,
    );
  }
  const n = weightNames.length;
  applyWeights(model, {
    names: state.names.slice(0, n),
    shapes: state.shapes.slice(0, n),
    data: state.data.slice(0, n),
  });
  opt.slots.forEach((slot, i) => {
    const got = state.shapes[n + i];
    if (got.length !== slot.variable.shape.length || got.some((d, j) => d !== slot.variable.shape[j])) {
      throw new Error(
        `trainUnit: fromState "${slot.name}" has shape [${got.join(',')}], expected [${slot.variable.shape.join(',')}]`,
      );
    }
  });
  opt.load(state.data.slice(n));
}

/**
 * Reads a state without copying where the backend allows. The arrays may be the backend's own storage (cpu), so
 * they must be encoded or cloned before the next training step replaces the variables' data.
 */
async function readStateView(tensors: tf.Tensor[], names: string[]): Promise<WeightSet> {
  const values = await Promise.all(tensors.map((t) => t.data()));
  return { names, shapes: tensors.map((t) => t.shape.slice()), data: values as Float32Array[] };
}

function now(): number {
  return typeof performance !== 'undefined' ? performance.now() : Date.now();
}

export async function trainUnit(input: TrainUnitInput): Promise<TrainUnitOutput> {
  const t0 = now();
  const spec: TrainUnitSpec = input.spec;
  const from = input.fromStep ?? 0;
  const to = input.toStep ?? spec.steps;
  validate(input, from, to);
  const B = spec.batchSize;
  const boundaries = new Set(checkpointStepsFor(spec.steps, spec.checkpointEvery, from, to));
  const backend = tf.getBackend();
  try {
    assertCanTrainOn(input.model, backend);
  } catch (err) {
    throw new Error(`trainUnit: ${(err as Error).message}`);
  }

  return withModel(input.model, async (model) => {
    checkOutput(model, input.dataset.numClasses);
    const weightNames = modelWeightNames(model);
    const trainable = model.trainableWeights;
    const vars = trainable.map((w) => w.read() as tf.Variable);
    const opt = new InnerOptimizerState(
      spec.optimizer,
      vars,
      trainable.map((w) => w.originalName ?? w.name),
    );
    const stateTensors = (): tf.Tensor[] => [
      ...model.weights.map((w) => w.read()),
      ...opt.slots.map((s) => s.variable),
    ];
    const stateNames = [...weightNames, ...opt.slots.map((s) => s.name)];
    const pending: { step: number; loss: tf.Scalar }[] = [];
    try {
      if (input.fromState) loadState(model, opt, input.fromState);
      else applyWeights(model, input.startWeights);
      const source = batchSource(input.dataset);
      const dropouts = model.layers.filter((l) => l.getClassName() === 'Dropout');
      const salt = input.indices[0] ?? 0;
      // Host-memory backends read a scalar for free; GPU ones would drain their pipeline every step.
      const lossGroup = HOST_MEMORY_BACKENDS.has(backend) ? 1 : GPU_LOSS_GROUP;
      const t1 = now();

      const losses: number[] = [];
      // Hashes are computed off the training path (WebCrypto) and collected at the end.
      const checkpointHashes: Promise<string>[] = [];
      const checkpointSteps: number[] = [];
      const checkpointStates: WeightSet[] = [];
      let finalWeights: WeightSet | null = null;
      let checkpointMs = 0;

      const flushLosses = async () => {
        if (pending.length === 0) return;
        const batch = pending.splice(0);
        // One read per flush: a single scalar directly, a group through one stacked tensor.
        const stacked = batch.length === 1 ? null : tf.stack(batch.map((p) => p.loss));
        let values: number[];
        try {
          // Copied out before the tensors are disposed (the cpu backend hands out its own storage).
          values = Array.from(await (stacked ?? batch[0].loss).data());
        } finally {
          stacked?.dispose();
          tf.dispose(batch.map((p) => p.loss));
        }
        for (let i = 0; i < batch.length; i++) {
          losses.push(values[i]);
          if (input.onStep) await input.onStep(batch[i].step, values[i]);
        }
        if (input.yieldToEventLoop) await new Promise((r) => setTimeout(r, 0));
      };

      for (let step = from; step < to; step++) {
        if (input.shouldStop?.()) throw new TrainAborted();
        dropouts.forEach((layer, i) => {
          // Dropout reads its private `seed` at call time; a per-step seed makes masks reproducible.
          (layer as unknown as { seed?: number }).seed = dropoutSeed(salt, step, i);
        });
        const loss = tf.tidy(() => {
          const { x, y } = source.batch(input.indices.subarray(step * B, (step + 1) * B));
          const { value, grads } = tf.variableGrads(() => {
            const out = model.apply(x, { training: true }) as tf.Tensor;
            let total = meanLoss(spec.loss, y, out);
            // Weight regularizers add to the objective exactly as in model.fit.
            for (const penalty of model.calculateLosses()) total = tf.add(total, penalty);
            return total as tf.Scalar;
          }, vars);
          opt.apply(vars.map((v) => grads[v.name]));
          return value;
        });
        pending.push({ step, loss });
        const done = step + 1;
        if (boundaries.has(done)) {
          await flushLosses();
          const tc = now();
          const view = await readStateView(stateTensors(), stateNames);
          checkpointHashes.push(sha256HexAsync(encodeWeights(view)));
          checkpointSteps.push(done);
          if (input.keepCheckpointStates) checkpointStates.push(cloneWeights(view));
          if (done === to) {
            const n = weightNames.length;
            finalWeights = cloneWeights({
              names: view.names.slice(0, n),
              shapes: view.shapes.slice(0, n),
              data: view.data.slice(0, n),
            });
          }
          checkpointMs += now() - tc;
        } else if (pending.length >= lossGroup) {
          await flushLosses();
        }
      }
      await flushLosses();
      const tc = now();
      const checkpoints = await Promise.all(checkpointHashes);
      checkpointMs += now() - tc;
      const t2 = now();

      // `to` is always a boundary, so the final weights were read there.
      const final = finalWeights!;
      const delta = subtractWeights(final, input.startWeights);
      const [finalHash, deltaHash] = await Promise.all([hashWeightsAsync(final), hashWeightsAsync(delta)]);
      const examples = (to - from) * B;
      const output: TrainUnitOutput = {
        delta,
        finalWeights: final,
        losses,
        checkpoints,
        finalHash,
        deltaHash,
        examples,
        flops: estimateFlops(trainableParamCount(model), examples),
        backend,
        timings: { totalMs: now() - t0, trainMs: t2 - t1, setupMs: t1 - t0, checkpointMs },
        checkpointSteps,
        fromStep: from,
        toStep: to,
        finalStateHash: checkpoints[checkpoints.length - 1],
      };
      if (input.keepCheckpointStates) output.checkpointStates = checkpointStates;
      if (input.adapter !== undefined) output.adapter = input.adapter;
      return output;
    } finally {
      tf.dispose(pending.map((p) => p.loss));
      opt.dispose();
    }
  });
}
