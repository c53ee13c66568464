import { mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sha256HexAsync } from '../../shared/hash.js';
import type { Db } from './db.js';

/**
 * Content-addressed blobs (datasets, model JSON, weights, deltas): named by their sha256, written once, never
 * changed, so `put` is idempotent and any copy of a blob is as good as any other.
 */
export interface BlobStore {
  /**
   * Stores the bytes (a no-op when they are already there) and returns their sha256, lowercase hex. The hash is
   * computed off the event loop (WebCrypto); `knownHash` skips it, and only for bytes the coordinator encoded and
   * hashed itself (its compute pool), never for bytes anyone sent.
   */
  put(bytes: Uint8Array, knownHash?: string): Promise<string>;
  /** Whether the blob exists; false for anything that is not a blob id. */
  has(hash: string): Promise<boolean>;
  /** Returns the bytes, or null when no such blob exists. Throws on a malformed id. */
  get(hash: string): Promise<Uint8Array | null>;
}

const BLOB_ID = /^[0-9a-f]{64}$/;

function checkId(hash: string): string {
  if (!BLOB_ID.test(hash)) throw new Error(`not a blob id: ${hash}`);
  return hash;
}

/**
 * The store for a coordinator: the database itself on PostgreSQL, so that every replica sharing it serves every blob
 * (a replica's DATA_DIR is its own); files under DATA_DIR/blobs with PGlite, where there is one process anyway and
 * files are faster than bytea rows in an embedded (wasm) database and keep the PGlite data folder small.
 */
export function blobStoreFor(db: Db, dataDir: string): BlobStore {
  return db.kind === 'postgres' ? new DbBlobStore(db) : new FileBlobStore(join(dataDir, 'blobs'));
}

/**
 * Blob files under one folder, fanned out by the first two hex digits. Writes go through a temp file and rename so
 * a crash never leaves a half blob under a valid name.
 */
export class FileBlobStore implements BlobStore {
  constructor(private readonly root: string) {}

  private pathOf(hash: string): string {
    return join(this.root, hash.slice(0, 2), checkId(hash));
  }

  async put(bytes: Uint8Array, knownHash?: string): Promise<string> {
    const hash = knownHash ?? (await sha256HexAsync(bytes));
    const path = this.pathOf(hash);
    if (await this.has(hash)) return hash;
    await mkdir(join(this.root, hash.slice(0, 2)), { recursive: true });
    const tmp = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
    await writeFile(tmp, bytes);
    await rename(tmp, path);
    return hash;
  }

  async has(hash: string): Promise<boolean> {
    try {
      await stat(this.pathOf(hash));
      return true;
    } catch {
      return false;
    }
  }

  async get(hash: string): Promise<Uint8Array | null> {
    try {
      return new Uint8Array(await readFile(this.pathOf(hash)));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }
}

/**
 * Blobs as rows of the `blobs` table (migration 0010_blobs). A blob is at most MAX_UPLOAD_BYTES (64 MiB by default),
 * well inside bytea's 1 GiB limit; reading one holds its hex text form (2x) and the bytes briefly in memory, and
 * PostgreSQL stores it TOASTed (compressed where that helps, out of line).
 */
export class DbBlobStore implements BlobStore {
  constructor(private readonly db: Db) {}

  async put(bytes: Uint8Array, knownHash?: string): Promise<string> {
    const hash = knownHash ?? (await sha256HexAsync(bytes));
    // Skip sending megabytes that are already stored (built-in datasets at every start, a repeated model).
    if (await this.has(hash)) return hash;
    await this.db.query(
      `INSERT INTO blobs (hash, bytes, size, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (hash) DO NOTHING`,
      [hash, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), bytes.byteLength, Date.now()],
    );
    return hash;
  }

  async has(hash: string): Promise<boolean> {
    if (!BLOB_ID.test(hash)) return false;
    const { rows } = await this.db.query('SELECT 1 FROM blobs WHERE hash = $1', [hash]);
    return rows.length > 0;
  }

  async get(hash: string): Promise<Uint8Array | null> {
    const { rows } = await this.db.query<{ bytes: Uint8Array }>('SELECT bytes FROM blobs WHERE hash = $1', [
      checkId(hash),
    ]);
    if (rows.length === 0) return null;
    const b = rows[0].bytes;
    return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  }
}
