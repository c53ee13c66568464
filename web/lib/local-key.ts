import { addressFromPrivateKey, generatePrivateKey, type Hex } from '../../shared/identity/index.js';
import { openAppDb } from './db.js';

/**
 * The browser's own secp256k1 key, kept in IndexedDB: it signs the coordinator's worker challenge (and, on the
 * requester dashboard without a wallet extension, the sign-in message). Separate slots keep the widget's key apart
 * from the volunteer's, although both live on the coordinator's origin.
 */
export type KeySlot = 'volunteer' | 'widget';

const slotKey = (slot: KeySlot) => `privateKey:${slot}`;
const PRIVATE_KEY = /^0x[0-9a-fA-F]{64}$/;

/** A pasted private key, normalized to 0x + 64 lowercase hex; null when it is not one or not a valid scalar. */
export function parsePrivateKey(text: string): Hex | null {
  let s = text.trim();
  if (/^[0-9a-fA-F]{64}$/.test(s)) s = `0x${s}`;
  if (!PRIVATE_KEY.test(s)) return null;
  try {
    addressFromPrivateKey(s as Hex);
  } catch {
    return null;
  }
  return s.toLowerCase() as Hex;
}

export async function loadKey(slot: KeySlot): Promise<Hex | null> {
  const db = await openAppDb();
  const v = await db.get('settings', slotKey(slot));
  return typeof v === 'string' ? parsePrivateKey(v) : null;
}

export async function saveKey(slot: KeySlot, key: Hex): Promise<void> {
  const db = await openAppDb();
  await db.put('settings', key, slotKey(slot));
}

/** The slot's key, created (and stored) on first use. */
export async function loadOrCreateKey(slot: KeySlot): Promise<Hex> {
  const existing = await loadKey(slot);
  if (existing) return existing;
  const key = generatePrivateKey();
  await saveKey(slot, key);
  return key;
}

export { addressFromPrivateKey };

export const generateKey = (): Hex => generatePrivateKey();
