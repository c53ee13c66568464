/**
 * Duty-cycle throttle: after each burst of work the gate sleeps long enough that work takes `intensity` of the
 * wall time (busy / (busy + idle) = intensity). Awaited by the worker loop between training steps.
 */
const MAX_IDLE_MS = 5_000;

export class DutyCycle {
  private burstStart = now();

  constructor(
    private intensity: number,
    private readonly sleep: (ms: number) => Promise<void> = (ms) => new Promise((r) => setTimeout(r, ms)),
  ) {}

  /** Intensity in percent, clamped to 10..100. */
  set(percent: number): void {
    this.intensity = Math.min(100, Math.max(10, percent));
  }

  get percent(): number {
    return this.intensity;
  }

  /** Idle time owed after `busyMs` of work at the current intensity. */
  idleFor(busyMs: number): number {
    const f = this.intensity / 100;
    return f >= 1 ? 0 : (busyMs * (1 - f)) / f;
  }

  readonly gate = async (): Promise<void> => {
    const busy = now() - this.burstStart;
    // Capped so that one slow step (a download, a GC pause) does not stall the loop for long.
    const idle = Math.min(MAX_IDLE_MS, this.idleFor(busy));
    // Sleeping for under a few ms costs more in timer overhead than it gives back.
    if (idle >= 4) await this.sleep(idle);
    this.burstStart = now();
  };

  /** Called when work resumes after a pause, so the pause is not counted as work. */
  reset(): void {
    this.burstStart = now();
  }
}

function now(): number {
  return performance.now();
}
