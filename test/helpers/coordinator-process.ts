import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { StoreKind } from './stores.js';

/**
 * A test coordinator in its own process, for tests that must tell a crash or a memory blow-up of the coordinator
 * from one of the test (the fuzzing test): `spawnCoordinator` starts this file, which runs startTestCoordinator and
 * prints one JSON line with the URL and the requester's key; SIGTERM stops it and deletes its store.
 */
export interface CoordinatorProcess {
  url: string;
  apiKey: string;
  requester: string;
  child: ChildProcess;
  /** Output of the process (warnings, errors, a crash's stack). */
  output: string[];
  /** Resident set size of the process now, bytes (Linux /proc). */
  rss(): number;
  /** Set when the process exited (a crash while the test still runs). */
  exited: { code: number | null; signal: string | null } | null;
  stop(): Promise<void>;
}

interface Ready {
  url: string;
  apiKey: string;
  requester: string;
}

export async function spawnCoordinator(kind: StoreKind = 'pglite', timeoutMs = 60_000): Promise<CoordinatorProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), kind], {
    cwd: process.cwd(),
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, SWARMGRAD_COORDINATOR_PROCESS: '1' },
  });
  const output: string[] = [];
  const proc = { child, output, exited: null } as unknown as CoordinatorProcess;
  child.on('exit', (code, signal) => {
    proc.exited = { code, signal };
  });
  child.stderr?.on('data', (d) => output.push(String(d)));
  const ready = await new Promise<Ready>((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => reject(new Error(`coordinator process not ready: ${output.join('')}`)), timeoutMs);
    child.stdout?.on('data', (d) => {
      buf += String(d);
      const line = buf.split('\n').find((l) => l.startsWith('{"ready":'));
      if (line) {
        clearTimeout(t);
        resolve((JSON.parse(line) as { ready: Ready }).ready);
      } else if (buf.length > 100_000) buf = buf.slice(-10_000);
      output.push(String(d));
    });
    child.once('exit', () => reject(new Error(`coordinator process exited: ${output.join('')}`)));
  });
  return Object.assign(proc, ready, {
    rss: () => {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
      return m ? Number(m[1]) * 1024 : 0;
    },
    stop: () =>
      new Promise<void>((resolve) => {
        if (proc.exited) return resolve();
        const kill = setTimeout(() => child.kill('SIGKILL'), 20_000);
        child.once('exit', () => {
          clearTimeout(kill);
          resolve();
        });
        child.kill('SIGTERM');
      }),
  });
}

// The child side: start, announce, stop cleanly on SIGTERM.
if (process.env.SWARMGRAD_COORDINATOR_PROCESS === '1' && process.argv[1] === fileURLToPath(import.meta.url)) {
  const { startTestCoordinator, testStore } = await import('./cluster.js');
  const c = await startTestCoordinator(testStore((process.argv[2] as StoreKind) ?? 'pglite'));
  process.stdout.write(
    `${JSON.stringify({ ready: { url: c.url, apiKey: c.requester.apiKey, requester: c.requester.address } })}\n`,
  );
  process.once('SIGTERM', () => {
    c.destroy().finally(() => process.exit(0));
  });
}
