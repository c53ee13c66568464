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

/** Datasets: rows describe them, the bytes live in the blob store under their sha256 (the dataset id). */
export class DatasetRepo {
  private decoded = new Map<string, Dataset>();

  constructor(
    private readonly db: Db,
    private readonly blobs: BlobStore,
  ) {}

  /** Stores an uploaded dataset file. Throws with a reason when the bytes are not a valid dataset. */
  async add(bytes: Uint8Array, builtin = false): Promise<DatasetView> {
    const ds = decodeDataset(bytes);
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
        builtin,
      ],
    );
    this.decoded.set(id, ds);
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

  /** Registers the built-in datasets once per store. */
  async ensureBuiltins(): Promise<void> {
    for (const [name, build] of Object.entries(BUILTINS)) {
      const { rows } = await this.db.query<{ id: string }>('SELECT id FROM datasets WHERE builtin AND name = $1', [
        name,
      ]);
      if (rows.length > 0 && (await this.blobs.has(rows[0].id))) continue;
      await this.add(build(), true);
    }
  }

  /** Finds a dataset by id or built-in name. */
  async find(ref: string): Promise<DatasetView | null> {
    const { rows } = await this.db.query<DatasetRow>(
      'SELECT * FROM datasets WHERE id = $1 OR (builtin AND name = $1) ORDER BY builtin DESC LIMIT 1',
      [ref],
    );
    return rows[0] ? toView(rows[0]) : null;
  }

  async list(): Promise<DatasetView[]> {
    const { rows } = await this.db.query<DatasetRow>('SELECT * FROM datasets ORDER BY created_at');
    return rows.map(toView);
  }

  /** The decoded dataset, memoised: evaluation and the referee read it every round. */
  async load(id: string): Promise<Dataset> {
    const hit = this.decoded.get(id);
    if (hit) return hit;
    const bytes = await this.blobs.get(id);
    if (!bytes) throw new Error(`dataset ${id} has no bytes in the blob store`);
    const ds = decodeDataset(bytes);
    this.decoded.set(id, ds);
    return ds;
  }
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
