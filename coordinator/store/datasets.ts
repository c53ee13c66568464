import { sha256Hex } from '../../shared/hash.js';
import type { DatasetView } from '../../shared/protocol/job-spec.js';
import { decodeDataset } from '../../shared/train/dataset-format.js';
import type { Dataset } from '../../shared/train/types.js';
import type { BlobStore } from './blobs.js';
import { mnistDatasetBytes } from './builtin/mnist.js';
import type { Db } from './db.js';

interface DatasetRow {
  id: string;
  name: string;
  examples: number;
  train_examples: number;
  feature_shape: number[];
  num_classes: number;
  bytes: number;
}

const BUILTINS: Record<string, () => Uint8Array> = { mnist: mnistDatasetBytes };

export interface DatasetRepoOptions {
  /** Bytes of decoded datasets kept in memory (least recently used go first); decoded is ~4x the file. */
  cacheBytes?: number;
  /** Dataset bytes one account may upload per rolling 24 hours (0: no limit). */
  uploadQuotaBytesPerDay?: number;
}

export const DEFAULT_DATASET_CACHE_BYTES = 1024 * 1024 * 1024;
export const DEFAULT_UPLOAD_QUOTA_BYTES_PER_DAY = 1024 * 1024 * 1024;
const DAY_MS = 86_400_000;

/** An upload over the account's daily quota (the API answers 429 with this message). */
export class UploadQuotaExceeded extends Error {
  constructor(
    readonly usedBytes: number,
    readonly quotaBytes: number,
    readonly retryAfterSeconds: number,
  ) {
    super(
      `upload quota exceeded: ${usedBytes} of ${quotaBytes} dataset bytes uploaded by this account in the last 24 hours ` +
        `(DATASET_UPLOAD_QUOTA_BYTES); retry in ${retryAfterSeconds} s`,
    );
  }
}

/**
 * Datasets: rows describe them, the bytes live in the blob store under their sha256 (the dataset id). A dataset
 * belongs to the accounts that uploaded it (dataset_uploads): only they see it, list it and train on it; the
 * built-in ones are public. Workers reach the bytes only through a lease on a unit that uses them (api/blobs.ts).
 */
export class DatasetRepo {
  /** Decoded datasets, least recently used first, bounded by decodedBytes <= cacheBytes. */
  private decoded = new Map<string, Dataset>();
  private decodedBytes = 0;
  private readonly cacheBytes: number;
  private readonly quotaBytes: number;

  constructor(
    private readonly db: Db,
    private readonly blobs: BlobStore,
    opts: DatasetRepoOptions = {},
  ) {
    this.cacheBytes = opts.cacheBytes ?? DEFAULT_DATASET_CACHE_BYTES;
    this.quotaBytes = opts.uploadQuotaBytesPerDay ?? DEFAULT_UPLOAD_QUOTA_BYTES_PER_DAY;
  }

  /**
   * Stores an uploaded dataset file for `owner` (none: a built-in). Throws UploadQuotaExceeded when the owner's uploads
   * of the last 24 hours would exceed the quota, and an Error with a reason when the bytes are not a valid dataset.
   */
  async add(bytes: Uint8Array, owner: string | null): Promise<DatasetView> {
    const ds = decodeDataset(bytes);
    // Charged before the bytes are stored: a failure after it costs quota, never storage beyond the quota.
    if (owner !== null) await this.chargeQuota(owner, sha256Hex(bytes), bytes.length);
    const id = await this.blobs.put(bytes);
    await this.db.query(
      `INSERT INTO datasets (id, name, examples, train_examples, feature_shape, num_classes, bytes, builtin)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING`,
      [
        id,
        ds.name,
        ds.examples,
        ds.trainExamples,
        JSON.stringify(ds.featureShape),
        ds.numClasses,
        bytes.length,
        owner === null,
      ],
    );
    this.remember(id, ds);
    return toView({
      id,
      name: ds.name,
      examples: ds.examples,
      train_examples: ds.trainExamples,
      feature_shape: ds.featureShape,
      num_classes: ds.numClasses,
      bytes: bytes.length,
    });
  }

  /** Bytes `owner` may still upload now (Infinity without a quota). */
  async quotaLeft(owner: string): Promise<number> {
    if (this.quotaBytes <= 0) return Number.POSITIVE_INFINITY;
    const { rows } = await this.db.query<{ used: string | number }>(
      'SELECT COALESCE(sum(bytes), 0) AS used FROM dataset_uploads WHERE owner = $1 AND at > $2',
      [owner, Date.now() - DAY_MS],
    );
    return Math.max(0, this.quotaBytes - Number(rows[0]?.used ?? 0));
  }

  /** Books `size` bytes against the owner's rolling 24-hour quota, or throws; serialised per owner (no race). */
  private async chargeQuota(owner: string, datasetId: string, size: number): Promise<void> {
    const now = Date.now();
    await this.db.tx(async (q) => {
      await q.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`dataset-quota:${owner}`]);
      if (this.quotaBytes > 0) {
        const { rows } = await q.query<{ used: string | number; oldest: string | number | null }>(
          `SELECT COALESCE(sum(bytes), 0) AS used, min(at) AS oldest FROM dataset_uploads WHERE owner = $1 AND at > $2`,
          [owner, now - DAY_MS],
        );
        const used = Number(rows[0]?.used ?? 0);
        if (used + size > this.quotaBytes) {
          const oldest = Number(rows[0]?.oldest ?? now);
          throw new UploadQuotaExceeded(used, this.quotaBytes, Math.max(1, Math.ceil((oldest + DAY_MS - now) / 1000)));
        }
      }
      await q.query('INSERT INTO dataset_uploads (owner, dataset_id, bytes, at) VALUES ($1, $2, $3, $4)', [
        owner,
        datasetId,
        size,
        now,
      ]);
    });
  }

  /** Registers the built-in datasets once per store. */
  async ensureBuiltins(): Promise<void> {
    for (const [name, build] of Object.entries(BUILTINS)) {
      const { rows } = await this.db.query<{ id: string }>('SELECT id FROM datasets WHERE builtin AND name = $1', [
        name,
      ]);
      if (rows.length > 0 && (await this.blobs.has(rows[0].id))) continue;
      await this.add(build(), null);
    }
  }

  /** Finds a dataset by id or built-in name, among the built-ins and those `owner` uploaded. */
  async find(ref: string, owner: string | null): Promise<DatasetView | null> {
    const { rows } = await this.db.query<DatasetRow>(
      `SELECT * FROM datasets d
       WHERE (d.builtin AND (d.name = $1 OR d.id = $1))
          OR (d.id = $1 AND EXISTS (SELECT 1 FROM dataset_uploads u WHERE u.dataset_id = d.id AND u.owner = $2))
       ORDER BY d.builtin DESC LIMIT 1`,
      [ref, owner],
    );
    return rows[0] ? toView(rows[0]) : null;
  }

  /** The built-in datasets and those `owner` uploaded. */
  async list(owner: string | null): Promise<DatasetView[]> {
    const { rows } = await this.db.query<DatasetRow>(
      `SELECT * FROM datasets d
       WHERE d.builtin OR EXISTS (SELECT 1 FROM dataset_uploads u WHERE u.dataset_id = d.id AND u.owner = $1)
       ORDER BY d.created_at`,
      [owner],
    );
    return rows.map(toView);
  }

  /** The decoded dataset, memoised within the cache budget: evaluation and the referee read it every round. */
  async load(id: string): Promise<Dataset> {
    const hit = this.decoded.get(id);
    if (hit) {
      this.decoded.delete(id);
      this.decoded.set(id, hit);
      return hit;
    }
    const bytes = await this.blobs.get(id);
    if (!bytes) throw new Error(`dataset ${id} has no bytes in the blob store`);
    const ds = decodeDataset(bytes);
    this.remember(id, ds);
    return ds;
  }

  /** Bytes the decoded cache holds now (tests, metrics). */
  get cachedBytes(): number {
    return this.decodedBytes;
  }

  private remember(id: string, ds: Dataset): void {
    if (this.decoded.has(id)) return;
    const size = decodedSize(ds);
    // One dataset above the whole budget is used and dropped, never kept.
    if (size > this.cacheBytes) return;
    this.decoded.set(id, ds);
    this.decodedBytes += size;
    while (this.decodedBytes > this.cacheBytes) {
      const [oldest, old] = this.decoded.entries().next().value as [string, Dataset];
      this.decoded.delete(oldest);
      this.decodedBytes -= decodedSize(old);
    }
  }
}

function decodedSize(ds: Dataset): number {
  return ds.features.byteLength + ds.labels.byteLength;
}

function toView(r: DatasetRow): DatasetView {
  return {
    id: r.id,
    name: r.name,
    examples: r.examples,
    trainExamples: r.train_examples,
    evalExamples: r.examples - r.train_examples,
    featureShape: r.feature_shape,
    numClasses: r.num_classes,
    bytes: Number(r.bytes),
  };
}
