import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import {
  type Address,
  addressFromPrivateKey,
  generatePrivateKey,
  type Hex,
  privateKeyBytes,
} from '../../shared/identity/index.js';

/**
 * The key the coordinator signs payout statements with: COORDINATOR_PRIVATE_KEY when set, else the one stored in
 * DATA_DIR/coordinator-key.json, created (mode 0600) on first start. Payers trust its address, so it must stay the
 * same across restarts and replicas: give every replica the same env var in production.
 */
export function loadCoordinatorKey(opts: { privateKey?: string; dataDir: string }): {
  privateKey: Hex;
  address: Address;
  source: 'env' | 'file' | 'generated';
} {
  if (opts.privateKey) {
    privateKeyBytes(opts.privateKey as Hex);
    return {
      privateKey: opts.privateKey as Hex,
      address: addressFromPrivateKey(opts.privateKey as Hex),
      source: 'env',
    };
  }
  const file = join(opts.dataDir, 'coordinator-key.json');
  if (existsSync(file)) {
    const stored = JSON.parse(readFileSync(file, 'utf8')) as { privateKey?: string };
    if (typeof stored.privateKey !== 'string') throw new Error(`${file} has no privateKey`);
    privateKeyBytes(stored.privateKey as Hex);
    return {
      privateKey: stored.privateKey as Hex,
      address: addressFromPrivateKey(stored.privateKey as Hex),
      source: 'file',
    };
  }
  const privateKey = generatePrivateKey();
  const address = addressFromPrivateKey(privateKey);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify({ address, privateKey }, null, 2)}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
  return { privateKey, address, source: 'generated' };
}
