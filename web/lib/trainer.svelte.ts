import type { Receipt, WorkerEvent, WorkerState } from '../../shared/worker-client/worker-loop.js';
import { openAppDb } from './db.js';
import type { BackendName, BenchmarkResult } from './settings.js';
import type { PageToWorker, PauseReason, StartConfig, WorkerToPage } from './worker-protocol.js';

/**
 * The page's side of the training Web Worker, as reactive state for the Svelte views. It starts the worker only
 * when asked (benchmark or start: nothing is downloaded or computed before), relays commands, folds the loop's
 * events into what the page shows, and applies the polite-contribution policies the page can observe: pause
 * while the tab is hidden and while the battery is low and unplugged.
 */
export interface Policy {
  pauseWhenHidden: boolean;
  pauseOnBattery: boolean;
  batteryThreshold: number;
}

export interface LogLine {
  at: number;
  level: 'info' | 'warn' | 'error';
  message: string;
}

const MAX_LOSSES = 120;
const MAX_RECEIPTS = 50;
const MAX_LOGS = 40;

interface BatteryLike extends EventTarget {
  charging: boolean;
  level: number;
}

export class Trainer {
  /** The loop's state; 'idle' before the first start. */
  state = $state<WorkerState>('idle');
  running = $state(false);
  backend = $state<BackendName | null>(null);
  workerId = $state<string | null>(null);
  jobName = $state<string | null>(null);
  leaseId = $state<string | null>(null);
  step = $state(0);
  steps = $state(0);
  examplesPerSecond = $state(0);
  losses = $state<number[]>([]);
  unitsCompleted = $state(0);
  unitsAccepted = $state(0);
  unitsRejected = $state(0);
  receipts = $state<Receipt[]>([]);
  logs = $state<LogLine[]>([]);
  pausedFor = $state<PauseReason[]>([]);
  benchmarking = $state(false);

  private worker: Worker | null = null;
  private policy: Policy = { pauseWhenHidden: true, pauseOnBattery: true, batteryThreshold: 30 };
  private battery: BatteryLike | null = null;
  private benchmarkWaiters: ((r: BenchmarkResult[]) => void)[] = [];
  private stopWaiters: (() => void)[] = [];
  private readonly onVisibility = () => this.applyPolicy();
  private readonly onBattery = () => this.applyPolicy();

  constructor(private readonly persistReceipts = true) {
    document.addEventListener('visibilitychange', this.onVisibility);
  }

  /** Receipts kept from earlier visits, newest first. */
  async loadReceipts(): Promise<void> {
    if (!this.persistReceipts) return;
    const db = await openAppDb();
    const all = await db.getAllFromIndex('receipts', 'byAt');
    this.receipts = all.reverse().slice(0, MAX_RECEIPTS);
  }

  benchmark(backends: BackendName[], untilDecided = false): Promise<BenchmarkResult[]> {
    this.benchmarking = true;
    const p = new Promise<BenchmarkResult[]>((resolve) => this.benchmarkWaiters.push(resolve));
    this.send({ type: 'benchmark', backends, untilDecided });
    return p.finally(() => {
      this.benchmarking = false;
    });
  }

  start(config: Omit<StartConfig, 'pausedFor'>, policy: Policy): void {
    this.policy = policy;
    this.running = true;
    this.pausedFor = this.pausedFor.filter((r) => r !== 'user');
    // policyReasons() below carries 'obscured' over: a frame that starts off screen starts paused.
    this.resetUnit();
    void this.watchBattery();
    const pausedFor = this.policyReasons();
    this.pausedFor = pausedFor;
    this.send({ type: 'start', config: { ...config, pausedFor } });
  }

  pause(): void {
    this.setReason('user', true);
  }

  resume(): void {
    this.setReason('user', false);
  }

  /** The page's own observation that the trainer is not visibly on screen (the widget frame): paused until it is. */
  setObscured(on: boolean): void {
    if (!this.running) {
      this.pausedFor = on
        ? [...this.pausedFor.filter((r) => r !== 'obscured'), 'obscured']
        : this.pausedFor.filter((r) => r !== 'obscured');
      return;
    }
    this.setReason('obscured', on);
  }

  /** Stops the loop; the coordinator is told to release the unit in hand so it is reissued at once. */
  async stop(): Promise<void> {
    if (!this.worker) return;
    const p = new Promise<void>((resolve) => this.stopWaiters.push(resolve));
    this.send({ type: 'stop' });
    await p;
    this.running = false;
    this.pausedFor = [];
    this.resetUnit();
  }

  updatePolicy(policy: Policy): void {
    this.policy = policy;
    if (policy.pauseOnBattery) void this.watchBattery();
    this.applyPolicy();
  }

  setIntensity(percent: number): void {
    if (this.worker) this.send({ type: 'settings', intensity: percent });
  }

  setCacheCap(bytes: number): void {
    if (this.worker) this.send({ type: 'settings', cacheCapBytes: bytes });
  }

  dispose(): void {
    document.removeEventListener('visibilitychange', this.onVisibility);
    this.battery?.removeEventListener('levelchange', this.onBattery);
    this.battery?.removeEventListener('chargingchange', this.onBattery);
    this.worker?.terminate();
    this.worker = null;
  }

  // ---- internals ------------------------------------------------------------------------------------------

  private ensureWorker(): Worker {
    if (this.worker) return this.worker;
    const w = new Worker(new URL('../volunteer/train.worker.ts', import.meta.url), {
      type: 'module',
      name: 'swarmgrad-trainer',
    });
    w.onmessage = (ev: MessageEvent<WorkerToPage>) => this.onWorkerMessage(ev.data);
    w.onerror = (ev) => {
      this.log('error', `training worker failed: ${ev.message || 'script error'}`);
      this.running = false;
    };
    this.worker = w;
    return w;
  }

  private send(msg: PageToWorker): void {
    // Svelte state proxies cannot be structured-cloned; the messages are plain JSON, so a JSON copy is exact.
    this.ensureWorker().postMessage(JSON.parse(JSON.stringify(msg)));
  }

  private onWorkerMessage(msg: WorkerToPage): void {
    switch (msg.type) {
      case 'event':
        this.onEvent(msg.event);
        break;
      case 'benchmark':
        for (const w of this.benchmarkWaiters.splice(0)) w(msg.results);
        break;
      case 'backend':
        this.backend = msg.backend;
        break;
      case 'stopped':
        for (const w of this.stopWaiters.splice(0)) w();
        break;
      case 'fatal':
        this.log('error', msg.message);
        this.running = false;
        for (const w of this.benchmarkWaiters.splice(0)) w([]);
        for (const w of this.stopWaiters.splice(0)) w();
        break;
    }
  }

  private onEvent(e: WorkerEvent): void {
    switch (e.type) {
      case 'state':
        this.state = e.state;
        break;
      case 'welcome':
        this.workerId = e.workerId;
        this.log('info', `connected as ${e.workerId}`);
        break;
      case 'lease':
        this.resetUnit();
        this.leaseId = e.leaseId;
        this.jobName = e.jobName;
        this.steps = e.steps;
        break;
      case 'step':
        this.step = e.step;
        this.steps = e.steps;
        this.examplesPerSecond = e.examplesPerSecond;
        this.losses = [...this.losses.slice(-(MAX_LOSSES - 1)), e.loss];
        break;
      case 'receipt':
        this.onReceipt(e.receipt);
        break;
      case 'log':
        this.log(e.level, e.message);
        break;
    }
  }

  private onReceipt(r: Receipt): void {
    if (r.status === 'pending') this.unitsCompleted++;
    else if (r.status === 'accepted') this.unitsAccepted++;
    else this.unitsRejected++;
    const rest = this.receipts.filter((x) => x.leaseId !== r.leaseId);
    this.receipts = [r, ...rest].slice(0, MAX_RECEIPTS);
    if (this.persistReceipts) void openAppDb().then((db) => db.put('receipts', { ...r }));
  }

  private resetUnit(): void {
    this.jobName = null;
    this.leaseId = null;
    this.step = 0;
    this.steps = 0;
    this.examplesPerSecond = 0;
  }

  private log(level: LogLine['level'], message: string): void {
    this.logs = [...this.logs.slice(-(MAX_LOGS - 1)), { at: Date.now(), level, message }];
  }

  private policyReasons(): PauseReason[] {
    const reasons: PauseReason[] = this.pausedFor.filter((r) => r === 'user' || r === 'obscured');
    if (this.policy.pauseWhenHidden && document.visibilityState === 'hidden') reasons.push('hidden');
    const b = this.battery;
    if (this.policy.pauseOnBattery && b && !b.charging && b.level * 100 < this.policy.batteryThreshold) {
      reasons.push('battery');
    }
    return reasons;
  }

  private applyPolicy(): void {
    if (!this.running) return;
    const want = this.policyReasons();
    for (const r of ['hidden', 'battery'] as const) this.setReason(r, want.includes(r));
  }

  private setReason(reason: PauseReason, on: boolean): void {
    const has = this.pausedFor.includes(reason);
    if (on === has) return;
    this.pausedFor = on ? [...this.pausedFor, reason] : this.pausedFor.filter((r) => r !== reason);
    if (this.worker && this.running) this.send({ type: on ? 'pause' : 'resume', reason });
  }

  private async watchBattery(): Promise<void> {
    if (this.battery) return;
    const nav = navigator as Navigator & { getBattery?: () => Promise<BatteryLike> };
    if (typeof nav.getBattery !== 'function') return;
    try {
      this.battery = await nav.getBattery();
      this.battery.addEventListener('levelchange', this.onBattery);
      this.battery.addEventListener('chargingchange', this.onBattery);
      this.applyPolicy();
    } catch {
      // The Battery API can be refused (permissions policy); the policy then never triggers.
    }
  }
}
