import { availableParallelism } from 'node:os';

/** COMPUTE_THREADS, else 1 on machines with two cores or fewer, else min(4, cores - 1). */
export function computeThreadsFromEnv(env: Record<string, string | undefined> = process.env): number {
  const v = env.COMPUTE_THREADS;
  if (v !== undefined && v !== '') {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1 || n > 64) throw new Error(`COMPUTE_THREADS: expected 1..64, got "${v}"`);
    return n;
  }
  const cores = availableParallelism();
  return cores <= 2 ? 1 : Math.min(4, cores - 1);
}
