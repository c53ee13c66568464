import { sha256Hex } from '../hash.js';

/** The lease a blob is fetched for: the coordinator serves a unit's blobs to the worker holding it, nobody else. */
export interface BlobAccess {
  leaseId: string;
  token: string;
}

/** Where a worker gets content-addressed blobs (model JSON, weights, datasets). */
export interface BlobSource {
  get(hash: string, access?: BlobAccess): Promise<Uint8Array>;
}

/** Request headers proving the right to read a unit's blobs (coordinator/api/blobs.ts). */
export function blobAccessHeaders(access?: BlobAccess): Record<string, string> {
  return access ? { authorization: `Lease ${access.leaseId}:${access.token}` } : {};
}

/**
 * Fetches /api/v1/blobs/:hash and refuses bytes that do not hash to the name: a tampering proxy or a broken
 * download must never reach training. Keeps the most recent blobs in memory (datasets are reused by every unit).
 */
export function httpBlobSource(baseUrl: string, maxEntries = 8, fetchImpl: typeof fetch = fetch): BlobSource {
  const cache = new Map<string, Promise<Uint8Array>>();
  return {
    get(hash, access) {
      const hit = cache.get(hash);
      if (hit) {
        cache.delete(hash);
        cache.set(hash, hit);
        return hit;
      }
      const p = (async () => {
        const res = await fetchImpl(`${baseUrl.replace(/\/$/, '')}/api/v1/blobs/${hash}`, {
          headers: blobAccessHeaders(access),
        });
        if (!res.ok) throw new Error(`blob ${hash.slice(0, 12)}: HTTP ${res.status}`);
        const bytes = new Uint8Array(await res.arrayBuffer());
        if (sha256Hex(bytes) !== hash) throw new Error(`blob ${hash.slice(0, 12)}: content does not match its hash`);
        return bytes;
      })();
      p.catch(() => cache.delete(hash));
      cache.set(hash, p);
      while (cache.size > maxEntries) cache.delete(cache.keys().next().value as string);
      return p;
    },
  };
}
