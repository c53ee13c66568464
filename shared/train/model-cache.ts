import * as tf from '@tensorflow/tfjs';

/**
 * Built models cached per (backend, model JSON): building a LayersModel from JSON costs far more than one unit's
 * setup should, and workers run many units of the same job. Each entry has a lock because callers share the
 * model's variables (training, evaluation and referee work may overlap in one process).
 */

interface Entry {
  model: tf.LayersModel;
  queue: Promise<void>;
  lastUsed: number;
}

const MAX_ENTRIES = 4;
const cache = new Map<string, Promise<Entry>>();
let clock = 0;

function keyOf(modelJson: object): string {
  return `${tf.getBackend()}\u0000${JSON.stringify(modelJson)}`;
}

async function build(modelJson: object): Promise<Entry> {
  // modelFromJSON takes the bare {class_name, config} topology that checkModelJson returns.
  const model = await tf.models.modelFromJSON(modelJson as Parameters<typeof tf.models.modelFromJSON>[0]);
  return { model, queue: Promise.resolve(), lastUsed: clock++ };
}

async function evictIfNeeded(): Promise<void> {
  if (cache.size <= MAX_ENTRIES) return;
  const entries = await Promise.all([...cache.entries()].map(async ([k, p]) => [k, await p] as const));
  entries.sort((a, b) => a[1].lastUsed - b[1].lastUsed);
  for (const [k, e] of entries.slice(0, cache.size - MAX_ENTRIES)) {
    cache.delete(k);
    // Dispose only after every queued user has finished with it.
    void e.queue.then(() => e.model.dispose());
  }
}

/**
 * Runs `fn` with exclusive use of the cached model for this JSON on the current backend. The model's weights are
 * whatever the previous user left: callers always set the weights they need.
 */
export async function withModel<T>(modelJson: object, fn: (model: tf.LayersModel) => Promise<T>): Promise<T> {
  const key = keyOf(modelJson);
  let pending = cache.get(key);
  if (!pending) {
    pending = build(modelJson);
    cache.set(key, pending);
    pending.catch(() => cache.delete(key));
    await evictIfNeeded();
  }
  const entry = await pending;
  entry.lastUsed = clock++;
  const run = entry.queue.then(() => fn(entry.model));
  entry.queue = run.then(
    () => undefined,
    () => undefined,
  );
  return run;
}

/** Disposes every cached model (tests, backend switches, memory pressure). */
export async function clearModelCache(): Promise<void> {
  const entries = await Promise.allSettled([...cache.values()]);
  cache.clear();
  for (const e of entries) if (e.status === 'fulfilled') await e.value.queue.then(() => e.value.model.dispose());
}
