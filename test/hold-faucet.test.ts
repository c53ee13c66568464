import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isLoopbackHost } from '../coordinator/config.js';
import { startTestCoordinator, type TestCoordinator, testStore, waitFor } from './helpers/cluster.js';
import { bearer, testIdentity } from './helpers/identities.js';

/**
 * The default start has no open faucet: minting credit over HTTP needs an admin key unless the coordinator is a
 * development one that listens on loopback only; `npm start` still funds its demo job (in-process).
 */

const faucet = (url: string, headers: Record<string, string> = {}) =>
  fetch(`${url}/api/v1/faucet`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ address: testIdentity('faucet-taker').address, amount: 10_000 }),
  });

describe('faucet on a coordinator reachable from the network', () => {
  let c: TestCoordinator;
  const admin = 'faucet-admin-key-for-tests';

  beforeAll(async () => {
    // Development mode (NODE_ENV is not production), listening on every interface, as `npm start` does.
    c = await startTestCoordinator(testStore('pglite'), { host: '0.0.0.0', devMode: true, adminKeys: [admin] });
  }, 120_000);

  afterAll(async () => {
    await c?.destroy();
  });

  it('refuses to mint without an admin key (even in development mode); an admin key mints', async () => {
    const open = await faucet(c.url);
    expect(open.status).toBe(403);
    expect(((await open.json()) as { message: string }).message).toMatch(/admin key/);
    expect((await faucet(c.url, bearer(c.requester.apiKey))).status).toBe(403);
    expect((await c.ledger.balances(testIdentity('faucet-taker').address)).available).toBe(0);
    const minted = await faucet(c.url, bearer(admin));
    expect(minted.status).toBe(200);
  });

  it('knows loopback addresses', () => {
    for (const h of ['127.0.0.1', 'localhost', '::1', '127.1.2.3']) expect(isLoopbackHost(h)).toBe(true);
    for (const h of ['0.0.0.0', '::', '10.0.0.1', '192.168.1.2', 'example.com']) expect(isLoopbackHost(h)).toBe(false);
  });
});

describe('npm start (bin/start.ts) with its defaults', () => {
  let child: ChildProcess | undefined;
  const dataDir = mkdtempSync(join(tmpdir(), 'swarmgrad-start-'));

  afterAll(async () => {
    if (child && child.exitCode === null) {
      const exited = new Promise((r) => child!.once('exit', r));
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10_000))]);
      if (child.exitCode === null) child.kill('SIGKILL');
    }
    rmSync(dataDir, { recursive: true, force: true });
  });

  it('funds its demo job but leaves the HTTP faucet closed', async () => {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      NODE_ENV: 'development',
      PORT: '0',
      DATA_DIR: dataDir,
      SKIP_WEB_BUILD: '1',
      LOG_LEVEL: 'warn',
    };
    for (const k of ['HOST', 'DATABASE_URL', 'DATABASE_SCHEMA', 'ADMIN_KEYS', 'PUBLIC_DOMAIN']) delete env[k];
    child = spawn(process.execPath, ['--import', 'tsx', 'bin/start.ts'], { cwd: process.cwd(), env });
    let out = '';
    child.stdout?.on('data', (d) => {
      out += String(d);
    });
    child.stderr?.on('data', (d) => {
      out += String(d);
    });
    const started = await waitFor(
      'npm start to print its banner',
      async () => {
        if (child?.exitCode !== null) throw new Error(`start exited: ${out}`);
        const url = /swarmgrad coordinator: (http:\/\/\S+)/.exec(out)?.[1];
        const key = /dev API key: (sgk_\S+)/.exec(out)?.[1];
        const job = /owns demo job (\S+)/.exec(out)?.[1];
        return url && key && job ? { url, key, job } : null;
      },
      120_000,
    );
    expect(out).toMatch(/HTTP faucet: closed/);
    const res = await faucet(started.url);
    expect(res.status).toBe(403);
    // The demo job is funded: its budget sits in escrow.
    const job = (await (
      await fetch(`${started.url}/api/v1/jobs/${started.job}`, { headers: bearer(started.key) })
    ).json()) as { billing?: { budget: number; escrow: number } };
    expect(job.billing?.budget).toBe(10_000_000);
    expect(job.billing?.escrow).toBeGreaterThan(0);
  }, 180_000);
});
