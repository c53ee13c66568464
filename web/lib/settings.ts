import { openAppDb } from './db.js';

/** The volunteer's polite-contribution controls, persisted in IndexedDB. */
export interface VolunteerSettings {
  /** Duty cycle, 10..100 (% of wall time spent training). */
  intensity: number;
  pauseWhenHidden: boolean;
  pauseOnBattery: boolean;
  /** Battery level (%) under which training pauses while unplugged. */
  batteryThreshold: number;
  autoReconnect: boolean;
  /** 'auto' follows the benchmark; anything else is the volunteer's override. */
  backend: BackendChoice;
  /** Size cap of the IndexedDB blob cache, MiB. */
  cacheCapMiB: number;
}

export type BackendName = 'webgpu' | 'wasm' | 'cpu';
export type BackendChoice = 'auto' | BackendName;

export interface BenchmarkResult {
  backend: BackendName;
  /** Training examples per second on the benchmark model; 0 when the backend failed. */
  examplesPerSecond: number;
  /** Wall time of the whole benchmark of this backend, loading and kernel compilation included. */
  ms?: number;
  error?: string;
}

export const DEFAULT_SETTINGS: VolunteerSettings = {
  intensity: 100,
  pauseWhenHidden: true,
  pauseOnBattery: true,
  batteryThreshold: 30,
  autoReconnect: true,
  backend: 'auto',
  cacheCapMiB: 512,
};

const SETTINGS_KEY = 'volunteer';
const ACCOUNT_KEY = 'account';
const BENCH_KEY = 'benchmark';

/** Keeps only known keys with sane values, so an old or hand-edited record cannot break the page. */
export function sanitizeSettings(raw: unknown): VolunteerSettings {
  const r = (raw && typeof raw === 'object' ? raw : {}) as Partial<Record<keyof VolunteerSettings, unknown>>;
  const num = (v: unknown, lo: number, hi: number, d: number) =>
    typeof v === 'number' && Number.isFinite(v) ? Math.min(hi, Math.max(lo, Math.round(v))) : d;
  const bool = (v: unknown, d: boolean) => (typeof v === 'boolean' ? v : d);
  const d = DEFAULT_SETTINGS;
  return {
    intensity: num(r.intensity, 10, 100, d.intensity),
    pauseWhenHidden: bool(r.pauseWhenHidden, d.pauseWhenHidden),
    pauseOnBattery: bool(r.pauseOnBattery, d.pauseOnBattery),
    batteryThreshold: num(r.batteryThreshold, 5, 95, d.batteryThreshold),
    autoReconnect: bool(r.autoReconnect, d.autoReconnect),
    backend: (['auto', 'webgpu', 'wasm', 'cpu'] as const).includes(r.backend as BackendChoice)
      ? (r.backend as BackendChoice)
      : d.backend,
    cacheCapMiB: num(r.cacheCapMiB, 16, 8192, d.cacheCapMiB),
  };
}

export async function loadSettings(): Promise<VolunteerSettings> {
  const db = await openAppDb();
  return sanitizeSettings(await db.get('settings', SETTINGS_KEY));
}

export async function saveSettings(s: VolunteerSettings): Promise<void> {
  const db = await openAppDb();
  await db.put('settings', { ...sanitizeSettings(s) }, SETTINGS_KEY);
}

export async function loadAccount(): Promise<string | undefined> {
  const db = await openAppDb();
  const v = await db.get('settings', ACCOUNT_KEY);
  return typeof v === 'string' ? v : undefined;
}

export async function saveAccount(address: string): Promise<void> {
  const db = await openAppDb();
  await db.put('settings', address, ACCOUNT_KEY);
}

export interface StoredBenchmark {
  at: number;
  results: BenchmarkResult[];
  chosen: BackendName;
  /** The adapter it ran on: a different one (new GPU, new browser) makes the result stale. */
  adapter?: string;
}

export async function loadBenchmark(): Promise<StoredBenchmark | undefined> {
  const db = await openAppDb();
  return (await db.get('settings', BENCH_KEY)) as StoredBenchmark | undefined;
}

export async function saveBenchmark(b: StoredBenchmark): Promise<void> {
  const db = await openAppDb();
  await db.put('settings', b, BENCH_KEY);
}
