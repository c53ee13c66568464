/**
 * The tolerance tau: two honest results of the same unit may differ by floating-point noise (different backends,
 * different summation orders), never by more than tau in relative distance (shared/verify/distance.ts).
 *
 * Measured (bench/verify.ts, docs/VERIFICATION.md): honest cpu-vs-wasm relative distances of deltas for MNIST MLP
 * units range from 2.6e-7 (fresh weights) to ~2e-6 (late training, small deltas; Adam). The smallest cheat worth
 * detecting (a 1e-3 relative poison; a 1.1x scaled delta or half the steps are far larger) sits at >= 1e-3.
 * DEFAULT_TOLERANCE = 1e-4 leaves ~50x above the worst honest distance seen and 10x below the smallest meaningful
 * cheat, so neither side is close to the line. Jobs may override it (JobSpec.verification.tolerance), or calibrate it from
 * honest pairs with calibrateTolerance.
 */
export const DEFAULT_TOLERANCE = 1e-4;

/** Never calibrate below this: float32 round-off alone reaches ~1e-7 after a few hundred steps. */
export const TOLERANCE_FLOOR = 1e-5;

/** Never calibrate above this: beyond it, a 1e-3 poison would pass as noise. */
export const TOLERANCE_CEILING = 1e-3;

/** How far above the worst observed honest distance tau is placed. */
export const CALIBRATION_MARGIN = 100;

export interface CalibrateOptions {
  margin?: number;
  floor?: number;
  ceiling?: number;
}

/**
 * tau from the relative distances of honest result pairs: max observed x margin, clamped to [floor, ceiling].
 * Throws if any honest distance is non-finite (that is a bug to fix, not noise to tolerate).
 */
export function calibrateTolerance(honestDistances: readonly number[], opts: CalibrateOptions = {}): number {
  const margin = opts.margin ?? CALIBRATION_MARGIN;
  const floor = opts.floor ?? TOLERANCE_FLOOR;
  const ceiling = opts.ceiling ?? TOLERANCE_CEILING;
  let worst = 0;
  for (const d of honestDistances) {
    if (!Number.isFinite(d) || d < 0) throw new Error(`honest distance ${d} is not a finite non-negative number`);
    if (d > worst) worst = d;
  }
  return Math.min(ceiling, Math.max(floor, worst * margin));
}

/**
 * The tau a job uses: its own setting when > 0, else the default; never below TOLERANCE_FLOOR, since a tighter tau
 * would convict honest cross-backend noise (submit refuses such a setting; this guards jobs stored before).
 */
export function jobTolerance(configured: number | undefined): number {
  return configured && configured > 0 ? Math.max(TOLERANCE_FLOOR, configured) : DEFAULT_TOLERANCE;
}
