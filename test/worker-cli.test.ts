import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestCoordinator, type TestCoordinator, testStore } from './helpers/cluster.js';

/** Runs the headless worker CLI; resolves when it exits or when `until` matches its output (then kills it). */
function runWorker(args: string[], until?: RegExp, timeoutMs = 60_000): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'bin/worker.ts', ...args], {
      cwd: process.cwd(),
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, SWARMGRAD_PRIVATE_KEY: '', SWARMGRAD_KEY_FILE: '', LOG_LEVEL: 'warn' },
    });
    let out = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`worker CLI timed out; output:\n${out}`));
    }, timeoutMs);
    const onData = (d: Buffer) => {
      out += String(d);
      if (until?.test(out)) child.kill('SIGKILL');
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

describe('worker CLI', () => {
  let c: TestCoordinator;
  const dir = mkdtempSync(join(tmpdir(), 'swarmgrad-cli-'));
  beforeAll(async () => {
    c = await startTestCoordinator(testStore('pglite'));
  });
  afterAll(async () => {
    await c?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('--help prints the usage and the key file format, exit 0; an unknown option is a one-line error, exit 2', async () => {
    const help = await runWorker(['--help']);
    expect(help.code).toBe(0);
    expect(help.out).toContain('Usage: npm run worker');
    expect(help.out).toContain('Key file format');
    const bad = await runWorker(['--no-such-option']);
    expect(bad.code).toBe(2);
    expect(bad.out).toContain("Unknown option '--no-such-option'");
    expect(bad.out).not.toMatch(/\n\s+at /); // no stack trace
  });

  it('--key-file PATH that does not exist is created with a new key, says so, and signs in with it', async () => {
    const file = join(dir, 'sub', 'my-key.json');
    const run = await runWorker(
      ['--key-file', file, '--coordinator', c.url, '--backend', 'cpu'],
      /swarmgrad worker 0x/,
    );
    expect(run.out).toContain(`created a worker key in ${file}`);
    expect(existsSync(file)).toBe(true);
    const key = JSON.parse(readFileSync(file, 'utf8')) as { address: string; privateKey: string };
    expect(key.privateKey).toMatch(/^0x[0-9a-f]{64}$/);
    // The worker was welcomed by the coordinator under the new key's address.
    expect(run.out).toContain(`swarmgrad worker ${key.address}`);
    // The same file is read, not replaced, on the next start.
    const again = await runWorker(
      ['--key-file', file, '--coordinator', c.url, '--backend', 'cpu'],
      /swarmgrad worker 0x/,
    );
    expect(again.out).not.toContain('created a worker key');
    expect(again.out).toContain(`swarmgrad worker ${key.address}`);
  });
});
