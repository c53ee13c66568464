import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import {
  type Address,
  addressFromPrivateKey,
  generatePrivateKey,
  type Hex,
  privateKeyBytes,
} from '../shared/identity/index.js';

/** Where a headless worker keeps its key when neither --key-file nor SWARMGRAD_PRIVATE_KEY names one. */
export const DEFAULT_WORKER_KEY_FILE = './data/worker-key.json';

export interface WorkerKey {
  privateKey: Hex;
  address: Address;
  source: 'env' | 'file' | 'generated';
  /** The key file read or written. */
  file?: string;
}

function parseKey(text: string, where: string): Hex {
  const trimmed = text.trim();
  let key: unknown = trimmed;
  if (trimmed.startsWith('{')) key = (JSON.parse(trimmed) as { privateKey?: unknown }).privateKey;
  if (typeof key !== 'string') throw new Error(`${where}: expected a JSON file with "privateKey" or a 0x… hex key`);
  const hex = (key.startsWith('0x') ? key : `0x${key}`) as Hex;
  try {
    privateKeyBytes(hex);
  } catch (err) {
    throw new Error(`${where}: not a secp256k1 private key (${(err as Error).message})`);
  }
  return hex;
}

/**
 * The worker's signing key, the account its results are credited to:
 *   1. --key-file PATH, created with a fresh key (mode 0600) when it does not exist yet;
 *   2. the SWARMGRAD_PRIVATE_KEY environment variable;
 *   3. DEFAULT_WORKER_KEY_FILE, created the same way the first time.
 * A key file is JSON {"address": "0x…", "privateKey": "0x…"} (address informative) or one bare 0x… hex line.
 */
export function resolveWorkerKey(opts: { keyFile?: string; envKey?: string; defaultFile?: string }): WorkerKey {
  if (!opts.keyFile && opts.envKey) {
    const privateKey = parseKey(opts.envKey, 'SWARMGRAD_PRIVATE_KEY');
    return { privateKey, address: addressFromPrivateKey(privateKey), source: 'env' };
  }
  const file = resolve(opts.keyFile ?? opts.defaultFile ?? DEFAULT_WORKER_KEY_FILE);
  if (existsSync(file)) {
    const privateKey = parseKey(readFileSync(file, 'utf8'), opts.keyFile ?? file);
    return { privateKey, address: addressFromPrivateKey(privateKey), source: 'file', file };
  }
  const privateKey = generatePrivateKey();
  const address = addressFromPrivateKey(privateKey);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify({ address, privateKey }, null, 2)}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
  return { privateKey, address, source: 'generated', file };
}

// `npx tsx bin/worker-key.ts [--key-file PATH]`: prints the worker address (creating the key file when needed).
if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const i = process.argv.indexOf('--key-file');
  const key = resolveWorkerKey({
    keyFile: i > 0 ? process.argv[i + 1] : undefined,
    envKey: process.env.SWARMGRAD_PRIVATE_KEY,
  });
  console.log(
    key.source === 'generated' ? `new worker key ${key.file}\naddress ${key.address}` : `address ${key.address}`,
  );
}
