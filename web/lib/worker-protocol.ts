import type { WorkerEvent } from '../../shared/worker-client/worker-loop.js';
import type { BackendName, BenchmarkResult } from './settings.js';

/** Messages between a page and its training Web Worker (web/volunteer/train.worker.ts). */

/** 'obscured': the widget frame is not visibly on screen (web/widget/visibility.ts). */
export type PauseReason = 'user' | 'hidden' | 'battery' | 'obscured';

export interface StartConfig {
  coordinatorUrl: string;
  account: string;
  /** The local key (0x hex) that signs the coordinator's challenge; its address is `account`. */
  privateKey: string;
  /** Credits go here instead of `account` (the widget pays its embedding site's data-account). */
  payTo?: string;
  backend: BackendName;
  adapter?: string;
  capabilities?: Record<string, unknown>;
  intensity: number;
  autoReconnect: boolean;
  cacheCapBytes: number;
  /** Pause reasons already in force when the loop starts (tab hidden, battery low). */
  pausedFor: PauseReason[];
}

export type PageToWorker =
  /** Benchmarks the backends in order; with untilDecided, stops at the first one chooseBackend would take. */
  | { type: 'benchmark'; backends: BackendName[]; untilDecided?: boolean }
  | { type: 'start'; config: StartConfig }
  | { type: 'pause'; reason: PauseReason }
  | { type: 'resume'; reason: PauseReason }
  | { type: 'settings'; intensity?: number; cacheCapBytes?: number }
  | { type: 'stop' };

export type WorkerToPage =
  | { type: 'event'; event: WorkerEvent }
  | { type: 'benchmark'; results: BenchmarkResult[] }
  | { type: 'backend'; backend: BackendName }
  | { type: 'stopped' }
  | { type: 'fatal'; message: string };
