import { type CreditOutcome, type CreditUnitInput, checkCreditInput, type Ledger } from './ledger.js';

export interface CreditBatcherOptions {
  /** Most units per transaction. Default 500. */
  maxBatch?: number;
  /** Batches in flight at once (each is one transaction). Default 2. */
  concurrency?: number;
}

/**
 * Per-unit crediting with batch throughput: `credit(unit)` resolves with that unit's outcome, while units that
 * arrive as earlier batches are still being written are gathered into the next `creditUnits` transaction. With no
 * backlog a unit is written alone at once (no added latency); under load batches grow by themselves, which is what
 * lifts throughput from a few hundred to thousands of units per second (docs/BENCHMARKS.md, bench:ledger).
 */
export class CreditBatcher {
  private readonly maxBatch: number;
  private readonly concurrency: number;
  private queue: { unit: CreditUnitInput; resolve: (o: CreditOutcome) => void; reject: (e: unknown) => void }[] = [];
  private inFlight = 0;
  private scheduled = false;
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly ledger: Ledger,
    opts: CreditBatcherOptions = {},
  ) {
    this.maxBatch = opts.maxBatch ?? 500;
    this.concurrency = opts.concurrency ?? 2;
  }

  /** Credits one accepted unit; invalid input rejects at once, alone, so it can never spoil a batch. */
  credit(unit: CreditUnitInput): Promise<CreditOutcome> {
    let clean: CreditUnitInput;
    try {
      clean = checkCreditInput(unit);
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ unit: clean, resolve, reject });
      this.schedule();
    });
  }

  /** Units waiting or being written. */
  get backlog(): number {
    return this.queue.length;
  }

  /** Resolves when nothing is queued or in flight (shutdown, tests). */
  async drain(): Promise<void> {
    if (this.queue.length === 0 && this.inFlight === 0) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    // Let the current tick's synchronous burst of credit() calls join the first batch.
    queueMicrotask(() => {
      this.scheduled = false;
      this.pump();
    });
  }

  private pump(): void {
    while (this.inFlight < this.concurrency && this.queue.length > 0) {
      const batch = this.queue.splice(0, this.maxBatch);
      this.inFlight++;
      this.ledger
        .creditUnits(batch.map((b) => b.unit))
        .then(
          (outcomes) => {
            for (const [i, b] of batch.entries()) b.resolve(outcomes[i]);
          },
          (err) => {
            for (const b of batch) b.reject(err);
          },
        )
        .finally(() => {
          this.inFlight--;
          if (this.queue.length > 0) this.pump();
          else if (this.inFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
        });
    }
  }
}
