import { type DBSchema, type IDBPDatabase, openDB } from 'idb';

/**
 * The one IndexedDB database of the web app (per origin, so the widget's iframe on the coordinator's origin keeps
 * its own copy, apart from any host page). Stores: settings (key/value), blobs (content-addressed bytes) and
 * blobMeta (size and last use per blob, kept apart so LRU scans never read the bytes).
 */
export interface SwarmgradDb extends DBSchema {
  settings: { key: string; value: unknown };
  blobs: { key: string; value: Uint8Array };
  blobMeta: { key: string; value: BlobMeta; indexes: { byLastUsed: number } };
  receipts: { key: string; value: StoredReceipt; indexes: { byAt: number } };
}

export interface BlobMeta {
  hash: string;
  size: number;
  lastUsed: number;
}

/** A receipt as the volunteer page keeps it (the loop's Receipt plus nothing else). */
export interface StoredReceipt {
  leaseId: string;
  jobName: string;
  resultHash: string;
  status: 'pending' | 'accepted' | 'rejected';
  reason?: string;
  at: number;
  examples: number;
  backend: string;
}

export const DB_NAME = 'swarmgrad';
const DB_VERSION = 1;

let opened: Promise<IDBPDatabase<SwarmgradDb>> | null = null;

export function openAppDb(): Promise<IDBPDatabase<SwarmgradDb>> {
  opened ??= openDB<SwarmgradDb>(DB_NAME, DB_VERSION, {
    upgrade(db) {
      db.createObjectStore('settings');
      db.createObjectStore('blobs');
      db.createObjectStore('blobMeta', { keyPath: 'hash' }).createIndex('byLastUsed', 'lastUsed');
      db.createObjectStore('receipts', { keyPath: 'leaseId' }).createIndex('byAt', 'at');
    },
  });
  return opened;
}
