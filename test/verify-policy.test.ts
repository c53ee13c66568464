import { describe, expect, it } from 'vitest';
import type { WeightSet } from '../shared/train/types.js';
import { maxTensorRelativeDistance, relativeDistance, stateDistance } from '../shared/verify/distance.js';
import { calibrateTolerance, DEFAULT_TOLERANCE, jobTolerance, TOLERANCE_FLOOR } from '../shared/verify/tolerance.js';
import {
  auditProbability,
  DEFAULT_MIN_AUDIT_PROBABILITY,
  isTrusted,
  newTrust,
  recordFailure,
  recordValid,
  TRUSTED_AFTER,
  type TrustState,
  undetectedProbability,
} from '../shared/verify/trust.js';

function ws(...tensors: number[][]): WeightSet {
  return {
    names: tensors.map((_, i) => `t${i}`),
    shapes: tensors.map((t) => [t.length]),
    data: tensors.map((t) => Float32Array.from(t)),
  };
}

describe('trust policy transitions', () => {
  it('audits every unit of a new account until TRUSTED_AFTER valid results, then decays as 1/CV to the floor', () => {
    let t: TrustState = newTrust();
    for (let i = 0; i < TRUSTED_AFTER; i++) {
      expect(auditProbability(t, 0)).toBe(1);
      expect(isTrusted(t)).toBe(false);
      t = recordValid(t);
    }
    expect(isTrusted(t)).toBe(true);
    expect(auditProbability(t, 0)).toBeCloseTo(Math.max(DEFAULT_MIN_AUDIT_PROBABILITY, 1 / TRUSTED_AFTER), 12);
    for (let i = 0; i < 90; i++) t = recordValid(t);
    expect(t.consecutiveValid).toBe(100);
    expect(auditProbability(t, 0)).toBe(DEFAULT_MIN_AUDIT_PROBABILITY);
    // 1/CV wins while it is above the floor (policy floor lowered to see it).
    expect(auditProbability({ ...t, consecutiveValid: 20 }, 0, 0.01)).toBeCloseTo(0.05, 12);
    expect(auditProbability({ ...t, consecutiveValid: 1000 }, 0, 0.01)).toBeCloseTo(0.01, 12);
  });

  it('a job can raise the audit probability but not lower it below the policy floor', () => {
    const trusted: TrustState = { consecutiveValid: 500, totalValid: 500, failures: 0 };
    expect(auditProbability(trusted, 0.3)).toBe(0.3);
    expect(auditProbability(trusted, 0.01)).toBe(DEFAULT_MIN_AUDIT_PROBABILITY);
    expect(auditProbability(trusted, 2)).toBe(1);
  });

  it('a failure resets CV so the account is audited on every unit again', () => {
    const trusted: TrustState = { consecutiveValid: 500, totalValid: 700, failures: 1 };
    const caught = recordFailure(trusted);
    expect(caught).toEqual({ consecutiveValid: 0, totalValid: 700, failures: 2 });
    expect(auditProbability(caught, 0)).toBe(1);
    expect(trusted.consecutiveValid).toBe(500); // pure: the input is untouched
  });

  it('the floor catches a turncoat within 50 cheated units in >= 99% of cases', () => {
    expect(undetectedProbability(DEFAULT_MIN_AUDIT_PROBABILITY, 50)).toBeLessThanOrEqual(0.01);
    expect(undetectedProbability(0.05, 50)).toBeGreaterThan(0.01); // why 0.05 would not be enough
  });
});

describe('distances and tolerance', () => {
  it('relative distance is ||a-b|| / max norm and infinite on NaN', () => {
    expect(relativeDistance(ws([3, 4]), ws([3, 4]))).toBe(0);
    expect(relativeDistance(ws([3, 4]), ws([0, 0]))).toBe(1);
    expect(relativeDistance(ws([1, 0], [0]), ws([1, 0], [0.5]))).toBeCloseTo(0.5 / Math.sqrt(1.25), 6);
    expect(relativeDistance(ws([0, 0]), ws([0, 0]))).toBe(0);
    expect(relativeDistance(ws([1, Number.NaN]), ws([1, 0]))).toBe(Number.POSITIVE_INFINITY);
    expect(() => relativeDistance(ws([1, 2]), ws([1]))).toThrow(/length differs/);
  });

  it('per-tensor max distance sees a tampered small tensor that the global distance dilutes', () => {
    const big = Array.from({ length: 1000 }, () => 1);
    const a = ws(big, [0.01]);
    const b = ws(big, [0.02]);
    expect(relativeDistance(a, b)).toBeLessThan(1e-3);
    expect(maxTensorRelativeDistance(a, b)).toBeCloseTo(0.5, 6);
  });

  it('state distance measures progress from the start, so a poison is not diluted by the weights norm', () => {
    const start = ws(Array.from({ length: 100 }, () => 10));
    // Two states that moved by 1 per coordinate from the start; b carries an extra 0.01 on one coordinate.
    const moved = Array.from({ length: 100 }, () => 11);
    const a = ws(moved, [5]); // weights then one optimizer slot
    const bMoved = moved.slice();
    bMoved[0] += 0.1;
    const b = ws(bMoved, [5]);
    expect(relativeDistance(a, b)).toBeLessThan(1e-3); // diluted by ||weights|| ~ 110
    expect(stateDistance(a, b, start)).toBeCloseTo(0.1 / Math.sqrt(99 + 1.1 ** 2), 6); // relative to progress ~ 10
    // Slots are compared relative to their own norm.
    expect(stateDistance(ws(moved, [5]), ws(moved, [6]), start)).toBeCloseTo(1 / 6, 6);
    expect(stateDistance(ws(moved, [Number.NaN]), ws(moved, [6]), start)).toBe(Number.POSITIVE_INFINITY);
  });

  it('calibrateTolerance = max x margin clamped to the floor/ceiling; job override wins', () => {
    expect(calibrateTolerance([1e-7, 5e-7, 2e-7])).toBeCloseTo(5e-5, 12);
    expect(calibrateTolerance([1e-9])).toBe(TOLERANCE_FLOOR);
    expect(calibrateTolerance([1e-2])).toBe(1e-3);
    expect(calibrateTolerance([1e-6], { margin: 10, floor: 0 })).toBeCloseTo(1e-5, 12);
    expect(() => calibrateTolerance([Number.NaN])).toThrow(/not a finite/);
    expect(jobTolerance(0)).toBe(DEFAULT_TOLERANCE);
    expect(jobTolerance(3e-4)).toBe(3e-4);
  });
});
