import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex } from '@noble/hashes/utils.js';

/** Lower-case hex sha256 of some bytes: the content address used for weights, datasets and checkpoints. */
export function sha256Hex(bytes: Uint8Array): string {
  return bytesToHex(sha256(bytes));
}

interface SubtleDigest {
  digest(algorithm: string, data: Uint8Array): Promise<ArrayBuffer>;
}

function subtle(): SubtleDigest | null {
  // WebCrypto exists in Node >= 19 and in browsers, but only in secure contexts (https, localhost) there.
  const c = (globalThis as { crypto?: { subtle?: SubtleDigest } }).crypto;
  return c?.subtle && typeof c.subtle.digest === 'function' ? c.subtle : null;
}

/**
 * Same value as sha256Hex, computed by native WebCrypto when the context has it (several times faster than the JS
 * implementation, and off the main thread in Node), else by the JS implementation.
 */
export async function sha256HexAsync(bytes: Uint8Array): Promise<string> {
  const s = subtle();
  if (!s) return sha256Hex(bytes);
  try {
    return bytesToHex(new Uint8Array(await s.digest('SHA-256', bytes)));
  } catch {
    return sha256Hex(bytes);
  }
}
