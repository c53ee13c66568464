import { sha256Hex } from '../../shared/hash.js';
import { type BlobAccess, type BlobSource, blobAccessHeaders } from '../../shared/worker-client/blob-source.js';
import { type BlobMeta, openAppDb } from './db.js';

/**
 * Content-addressed IndexedDB cache of datasets and weights: blobs are named by their sha256, so a cached copy is
 * valid forever and only the space it takes matters. Least recently used blobs go first once the cap is reached.
 */
export interface BlobCacheStats {
  entries: number;
  bytes: number;
}

export class IdbBlobCache implements BlobSource {
  /** Downloads in flight, so two units asking for the same dataset share one fetch. */
  private inflight = new Map<string, Promise<Uint8Array>>();

  constructor(
    private readonly baseUrl: string,
    private capBytes: number,
    private readonly fetchImpl: typeof fetch = (input, init) => fetch(input, init),
  ) {}

  setCap(bytes: number): void {
    this.capBytes = bytes;
  }

  get(hash: string, access?: BlobAccess): Promise<Uint8Array> {
    const pending = this.inflight.get(hash);
    if (pending) return pending;
    const p = this.load(hash, access).finally(() => this.inflight.delete(hash));
    this.inflight.set(hash, p);
    return p;
  }

  private async load(hash: string, access?: BlobAccess): Promise<Uint8Array> {
    const cached = await readBlob(hash).catch(() => undefined);
    // A cache entry is re-checked: storage can be corrupted, and a wrong blob must never reach training.
    if (cached && (await digestHex(cached)) === hash) {
      await touch(hash).catch(() => {});
      return cached;
    }
    const res = await this.fetchImpl(`${this.baseUrl.replace(/\/$/, '')}/api/v1/blobs/${hash}`, {
      headers: blobAccessHeaders(access),
    });
    if (!res.ok) throw new Error(`blob ${hash.slice(0, 12)}: HTTP ${res.status}`);
    const bytes = new Uint8Array(await res.arrayBuffer());
    if ((await digestHex(bytes)) !== hash)
      throw new Error(`blob ${hash.slice(0, 12)}: content does not match its hash`);
    // Caching is best effort: a full quota must not fail the unit.
    await putBlob(hash, bytes, this.capBytes).catch(() => {});
    return bytes;
  }
}

/** sha256 via WebCrypto where it exists (fast, native); the pure-JS one elsewhere (plain-http origins). */
export async function digestHex(bytes: Uint8Array): Promise<string> {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) return sha256Hex(bytes);
  const buf = await subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, '0')).join('');
}

async function readBlob(hash: string): Promise<Uint8Array | undefined> {
  const db = await openAppDb();
  return db.get('blobs', hash);
}

async function touch(hash: string): Promise<void> {
  const db = await openAppDb();
  const tx = db.transaction('blobMeta', 'readwrite');
  const meta = await tx.store.get(hash);
  if (meta) await tx.store.put({ ...meta, lastUsed: Date.now() });
  await tx.done;
}

/**
 * Which cached blobs to evict, least recently used first, so that `incoming` more bytes fit under `capBytes`.
 * Returns null when the incoming blob alone is over the cap (it is then not cached at all).
 */
export function planEviction(
  cached: readonly BlobMeta[],
  incoming: { hash: string; size: number },
  capBytes: number,
): string[] | null {
  if (incoming.size > capBytes) return null;
  const others = cached.filter((m) => m.hash !== incoming.hash).sort((a, b) => a.lastUsed - b.lastUsed);
  let total = others.reduce((s, m) => s + m.size, 0);
  const evict: string[] = [];
  for (const m of others) {
    if (total + incoming.size <= capBytes) break;
    evict.push(m.hash);
    total -= m.size;
  }
  return evict;
}

/** Stores a blob, first evicting the least recently used ones until it fits under the cap. */
export async function putBlob(hash: string, bytes: Uint8Array, capBytes: number): Promise<boolean> {
  const db = await openAppDb();
  const tx = db.transaction(['blobs', 'blobMeta'], 'readwrite');
  const metas = tx.objectStore('blobMeta');
  const evict = planEviction(await metas.getAll(), { hash, size: bytes.byteLength }, capBytes);
  if (evict === null) {
    await tx.done;
    return false;
  }
  for (const h of evict) {
    await tx.objectStore('blobs').delete(h);
    await metas.delete(h);
  }
  await tx.objectStore('blobs').put(bytes, hash);
  await metas.put({ hash, size: bytes.byteLength, lastUsed: Date.now() });
  await tx.done;
  return true;
}

export async function blobCacheStats(): Promise<BlobCacheStats> {
  const db = await openAppDb();
  const all = await db.getAll('blobMeta');
  return { entries: all.length, bytes: all.reduce((s, m) => s + m.size, 0) };
}

export async function listCachedHashes(): Promise<string[]> {
  const db = await openAppDb();
  const all = await db.getAllFromIndex('blobMeta', 'byLastUsed');
  return all.map((m) => m.hash);
}

export async function clearBlobCache(): Promise<void> {
  const db = await openAppDb();
  const tx = db.transaction(['blobs', 'blobMeta'], 'readwrite');
  await Promise.all([tx.objectStore('blobs').clear(), tx.objectStore('blobMeta').clear(), tx.done]);
}
