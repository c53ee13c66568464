import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Builds the web app (npm run build: vite build + the widget tag) when dist/web is missing or older than its
 * sources, once even when several test files ask at the same time (a lock directory serialises them).
 * Usable as a vitest globalSetup (default export) or called from a test file's beforeAll (ensureWebBuilt).
 */
const ROOT = process.cwd();
export const WEB_DIR = join(ROOT, 'dist/web');
const STAMP = join(WEB_DIR, '.build-stamp');
const LOCK = join(ROOT, 'dist/.web-build-lock');
/** Everything that goes into the bundles: the pages, the shared code the training worker bundles, the configs. */
const SOURCES = ['web', 'shared', 'public', 'vite.config.ts', 'package-lock.json'];

function newestMtime(path: string): number {
  if (!existsSync(path)) return 0;
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  let newest = st.mtimeMs;
  for (const entry of readdirSync(path)) {
    if (entry === 'node_modules' || entry.startsWith('.')) continue;
    newest = Math.max(newest, newestMtime(join(path, entry)));
  }
  return newest;
}

export function webBuildIsFresh(): boolean {
  if (!existsSync(STAMP) || !existsSync(join(WEB_DIR, 'widget.js'))) return false;
  const built = statSync(STAMP).mtimeMs;
  return SOURCES.every((s) => newestMtime(join(ROOT, s)) <= built);
}

function build(): void {
  const started = Date.now();
  const res = spawnSync('npm', ['run', 'build', '--silent'], { cwd: ROOT, encoding: 'utf8', env: process.env });
  if (res.status !== 0) throw new Error(`web build failed:\n${res.stdout}\n${res.stderr}`);
  // The stamp's time is when the build started: a source saved during the build makes the next run rebuild.
  const t = new Date(started);
  writeFileSync(STAMP, t.toISOString());
  utimesSync(STAMP, t, t);
}

export async function ensureWebBuilt(timeoutMs = 300_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  mkdirSync(join(ROOT, 'dist'), { recursive: true });
  for (;;) {
    if (webBuildIsFresh()) return;
    try {
      mkdirSync(LOCK);
    } catch {
      // Someone else is building: wait for them; a lock left by a killed run is taken over after 3 minutes.
      if (existsSync(LOCK) && Date.now() - statSync(LOCK).mtimeMs > 180_000)
        rmSync(LOCK, { recursive: true, force: true });
      if (Date.now() > end) throw new Error('timed out waiting for another web build');
      await new Promise((r) => setTimeout(r, 500));
      continue;
    }
    try {
      if (!webBuildIsFresh()) build();
      return;
    } finally {
      rmSync(LOCK, { recursive: true, force: true });
    }
  }
}

export default async function setup(): Promise<void> {
  await ensureWebBuilt();
}
