import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allMigrations } from '../coordinator/app.js';
import { type BlobStore, blobStoreFor, DbBlobStore, FileBlobStore } from '../coordinator/store/blobs.js';
import type { Db } from '../coordinator/store/db.js';
import { runMigrations } from '../coordinator/store/migrate.js';
import { sha256Hex } from '../shared/hash.js';
import { dropTestDb, openTestDb } from './helpers/stores.js';

/** One contract, both implementations: the database one on real PostgreSQL, the file one in a temp folder. */
const IMPLS = ['db on postgres', 'files'] as const;

describe.each(IMPLS)('blob store: %s', (impl) => {
  let db: Db & { schema?: string };
  let dir: string;
  let blobs: BlobStore;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'swarmgrad-blobs-'));
    db = await openTestDb('postgres');
    await runMigrations(db, allMigrations());
    blobs = impl === 'files' ? new FileBlobStore(join(dir, 'blobs')) : new DbBlobStore(db);
  });
  afterAll(async () => {
    await dropTestDb(db);
    rmSync(dir, { recursive: true, force: true });
  });

  it('put returns the sha256; get returns the same bytes; has sees it', async () => {
    const bytes = new Uint8Array(randomBytes(10_000));
    const hash = await blobs.put(bytes);
    expect(hash).toBe(sha256Hex(bytes));
    expect(await blobs.has(hash)).toBe(true);
    const back = await blobs.get(hash);
    expect(back).not.toBeNull();
    expect(Buffer.from(back as Uint8Array).equals(Buffer.from(bytes))).toBe(true);
  });

  it('stores a view of a larger buffer by its own bytes only', async () => {
    const whole = new Uint8Array(randomBytes(4096));
    const view = whole.subarray(100, 1100);
    const hash = await blobs.put(view);
    expect(hash).toBe(sha256Hex(view));
    expect((await blobs.get(hash))?.byteLength).toBe(1000);
  });

  it('put is idempotent: the same bytes twice give one blob', async () => {
    const bytes = new Uint8Array(randomBytes(512));
    const [a, b] = await Promise.all([blobs.put(bytes), blobs.put(bytes)]);
    expect(a).toBe(b);
    expect(await blobs.put(bytes.slice())).toBe(a);
    if (impl !== 'files') {
      const { rows } = await db.query<{ n: number; size: number }>(
        'SELECT count(*)::int AS n, max(size) AS size FROM blobs WHERE hash = $1',
        [a],
      );
      expect(rows[0]).toEqual({ n: 1, size: 512 });
    }
  });

  it('the empty blob is a blob', async () => {
    const hash = await blobs.put(new Uint8Array(0));
    expect(hash).toBe(sha256Hex(new Uint8Array(0)));
    expect((await blobs.get(hash))?.byteLength).toBe(0);
  });

  it('an unknown hash: has false, get null', async () => {
    const unknown = sha256Hex(new Uint8Array(randomBytes(32)));
    expect(await blobs.has(unknown)).toBe(false);
    expect(await blobs.get(unknown)).toBeNull();
  });

  it('a malformed id: has false, get throws naming it', async () => {
    for (const bad of ['abc', 'A'.repeat(64), `${'0'.repeat(63)}g`, '../../etc/passwd', `${'0'.repeat(64)}0`]) {
      expect(await blobs.has(bad)).toBe(false);
      await expect(blobs.get(bad)).rejects.toThrow(`not a blob id: ${bad}`);
    }
  });

  it('a blob of several MiB round-trips', async () => {
    const bytes = new Uint8Array(randomBytes(8 * 1024 * 1024));
    const hash = await blobs.put(bytes);
    const back = await blobs.get(hash);
    expect(back?.byteLength).toBe(bytes.byteLength);
    expect(sha256Hex(back as Uint8Array)).toBe(hash);
  });
});

describe('blobStoreFor', () => {
  it('picks the database on PostgreSQL and files on PGlite', async () => {
    const pgDb = await openTestDb('postgres');
    const lite = await openTestDb('pglite');
    try {
      expect(blobStoreFor(pgDb, '/nowhere')).toBeInstanceOf(DbBlobStore);
      expect(blobStoreFor(lite, '/nowhere')).toBeInstanceOf(FileBlobStore);
    } finally {
      await dropTestDb(pgDb);
      await dropTestDb(lite);
    }
  });
});
