/**
 * How much training the coordinator does on behalf of others (self-audits, whole-unit runs after a silence,
 * divergence checks, re-executions), per job and per account, over a sliding window. Anyone can cause such work for
 * free (a silent tab, a non-finite delta, a job of huge units), so it is bounded: beyond a budget the work waits
 * until the window frees it, and it is charged to whoever caused it. Counted in example-steps (steps x batch size),
 * the unit a referee's time is proportional to. In memory, per replica: a restart forgets the window, which only
 * allows one more window's work.
 */

export interface WorkBudgetOptions {
  /** Example-steps the coordinator may train for one job per window. */
  perJob: number;
  /** Example-steps the coordinator may train because of one account per window. */
  perAccount: number;
  windowMs: number;
}

export const DEFAULT_WORK_BUDGET: WorkBudgetOptions = {
  perJob: 20_000_000,
  perAccount: 5_000_000,
  windowMs: 60 * 60_000,
};

interface Spend {
  at: number;
  amount: number;
}

/** Keys kept at most; the oldest windows go first (forgetting one only allows more work). */
const MAX_KEYS = 50_000;

export class WorkBudget {
  private readonly spent = new Map<string, Spend[]>();

  constructor(
    private opts: WorkBudgetOptions = DEFAULT_WORK_BUDGET,
    private readonly now: () => number = Date.now,
  ) {}

  configure(opts: Partial<WorkBudgetOptions>): void {
    this.opts = { ...this.opts, ...opts };
  }

  get options(): Readonly<WorkBudgetOptions> {
    return this.opts;
  }

  /** Spent within the window under a key. */
  private used(key: string): number {
    const list = this.spent.get(key);
    if (!list) return 0;
    const from = this.now() - this.opts.windowMs;
    while (list.length > 0 && list[0].at <= from) list.shift();
    if (list.length === 0) this.spent.delete(key);
    return list.reduce((s, x) => s + x.amount, 0);
  }

  jobUsed(jobId: string): number {
    return this.used(`job:${jobId}`);
  }

  accountUsed(account: string): number {
    return this.used(`account:${account}`);
  }

  /**
   * May the coordinator train `amount` example-steps for this job, because of these accounts? A job or account
   * that has used nothing in the window may always have one piece of work, however large (so a job of huge units
   * still moves, one unit per window); otherwise the piece must fit in what is left.
   */
  allows(jobId: string, amount: number, accounts: readonly string[] = []): string | null {
    const job = this.jobUsed(jobId);
    if (job > 0 && job + amount > this.opts.perJob) {
      return `job ${jobId} has used ${job} of its ${this.opts.perJob} coordinator example-steps per window`;
    }
    for (const a of accounts) {
      const used = this.accountUsed(a);
      if (used > 0 && used + amount > this.opts.perAccount) {
        return `account ${a} has caused ${used} of its ${this.opts.perAccount} coordinator example-steps per window`;
      }
    }
    return null;
  }

  /** Records work done for a job, charged to the accounts that caused it (none for the job's own self-audits). */
  charge(jobId: string, amount: number, accounts: readonly string[] = []): void {
    if (!(amount > 0)) return;
    const at = this.now();
    for (const key of [`job:${jobId}`, ...accounts.map((a) => `account:${a}`)]) {
      const list = this.spent.get(key) ?? [];
      list.push({ at, amount });
      this.spent.set(key, list);
    }
    if (this.spent.size > MAX_KEYS) {
      for (const key of [...this.spent.keys()].slice(0, this.spent.size - MAX_KEYS)) this.spent.delete(key);
    }
  }
}
