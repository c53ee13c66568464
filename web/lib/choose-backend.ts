import type { BackendName, BenchmarkResult } from './settings.js';

export const BACKEND_ORDER: BackendName[] = ['webgpu', 'wasm', 'cpu'];

/** Examples/s below which a backend is not worth using while another works (units would crawl to their deadline). */
export const MIN_USEFUL_EPS = 50;

/**
 * The backend to train with, from benchmark results. Backends are preferred in BACKEND_ORDER (webgpu, wasm, cpu):
 * the first that worked and reached MIN_USEFUL_EPS wins. A GPU backend leaves the CPU to the volunteer's own work
 * and gains on models larger than the benchmark's, so it is preferred even where wasm measures faster on the tiny
 * benchmark model (the page then says so and the volunteer can override). When nothing reaches the floor, the
 * fastest backend that worked; without any working result, the first candidate.
 */
export function chooseBackend(results: readonly BenchmarkResult[], candidates: readonly BackendName[]): BackendName {
  const ok = results.filter((r) => !r.error && r.examplesPerSecond > 0 && candidates.includes(r.backend));
  for (const b of BACKEND_ORDER) {
    const r = ok.find((x) => x.backend === b);
    if (r && r.examplesPerSecond >= MIN_USEFUL_EPS) return b;
  }
  if (ok.length === 0) return candidates[0] ?? 'cpu';
  return ok.reduce((best, r) => (r.examplesPerSecond > best.examplesPerSecond ? r : best)).backend;
}

/** The backends a Start benchmark needs: in order, up to the first one that will be chosen anyway. */
export function benchmarkIsDecided(results: readonly BenchmarkResult[]): boolean {
  const last = results[results.length - 1];
  return !!last && !last.error && last.examplesPerSecond >= MIN_USEFUL_EPS;
}

/** A faster backend than the chosen one, when one measured at least `ratio` times faster. */
export function fasterAlternative(
  results: readonly BenchmarkResult[],
  chosen: BackendName,
  ratio = 2,
): { backend: BackendName; times: number } | null {
  const mine = results.find((r) => r.backend === chosen && !r.error)?.examplesPerSecond ?? 0;
  if (mine <= 0) return null;
  let best: BenchmarkResult | null = null;
  for (const r of results) if (!r.error && (!best || r.examplesPerSecond > best.examplesPerSecond)) best = r;
  if (!best || best.backend === chosen || best.examplesPerSecond < ratio * mine) return null;
  return { backend: best.backend, times: best.examplesPerSecond / mine };
}

/** What to show before any benchmark ran: the best candidate by order. */
export function provisionalBackend(candidates: readonly BackendName[]): BackendName {
  return BACKEND_ORDER.find((b) => candidates.includes(b)) ?? 'cpu';
}
