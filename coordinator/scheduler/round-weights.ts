import type { WeightSet } from '../../shared/train/types.js';
import { decodeWeights, encodeWeights } from '../../shared/train/weights-format.js';
import type { BlobStore } from '../store/blobs.js';

/**
 * Decoded weight blobs by hash. Every result of a round is checked against the round's weights, and the model
 * download serves the latest ones, so decoding each blob once matters. Content addressing makes caching safe.
 */
export class WeightCache {
  private cache = new Map<string, WeightSet>();

  constructor(
    private readonly blobs: BlobStore,
    private readonly max = 16,
  ) {}

  async get(hash: string): Promise<WeightSet> {
    const hit = this.cache.get(hash);
    if (hit) {
      this.cache.delete(hash);
      this.cache.set(hash, hit);
      return hit;
    }
    const bytes = await this.blobs.get(hash);
    if (!bytes) throw new Error(`weights blob ${hash} is missing`);
    const w = decodeWeights(bytes);
    this.remember(hash, w);
    return w;
  }

  /** `encoded`: the blob and its hash when already made off the event loop (compute pool, encodeWeights). */
  async put(w: WeightSet, encoded?: { bytes: Uint8Array; hash: string }): Promise<string> {
    const hash = encoded ? await this.blobs.put(encoded.bytes, encoded.hash) : await this.blobs.put(encodeWeights(w));
    this.remember(hash, w);
    return hash;
  }

  private remember(hash: string, w: WeightSet): void {
    this.cache.set(hash, w);
    while (this.cache.size > this.max) this.cache.delete(this.cache.keys().next().value as string);
  }
}
