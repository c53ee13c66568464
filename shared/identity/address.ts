import { secp256k1 } from '@noble/curves/secp256k1.js';
import { keccak_256 } from '@noble/hashes/sha3.js';
import { utf8ToBytes } from '@noble/hashes/utils.js';
import { fromHex, type Hex, toHex } from './hex.js';

/** An EIP-55 mixed-case checksummed address. */
export type Address = Hex;

/** A private key: 0x + 64 hex digits, or its 32 raw bytes. */
export type PrivateKey = Hex | Uint8Array;

const HEX40 = /^0x[0-9a-fA-F]{40}$/;

export class InvalidAddressError extends TypeError {
  readonly code = 'invalid_address';
  constructor(readonly value: unknown) {
    super(`not an Ethereum address (0x + 40 hex digits with a valid EIP-55 checksum): ${String(value).slice(0, 60)}`);
  }
}

/** EIP-55: each hex letter is upper-cased when the matching nibble of keccak256(lower-case hex) is >= 8. */
export function toChecksumAddress(address: string): Address {
  if (typeof address !== 'string' || !HEX40.test(address)) throw new InvalidAddressError(address);
  const lower = address.slice(2).toLowerCase();
  const hash = keccak_256(utf8ToBytes(lower));
  let out = '0x';
  for (let i = 0; i < 40; i++) {
    const nibble = (hash[i >> 1] >> (i % 2 === 0 ? 4 : 0)) & 0xf;
    out += nibble >= 8 ? lower[i].toUpperCase() : lower[i];
  }
  return out as Address;
}

/**
 * True for a 20-byte hex address. All-lower and all-upper case carry no checksum and are accepted;
 * mixed case must be the exact EIP-55 form (a typo in a checksummed address is caught here).
 * With `strict`, only the checksummed form passes.
 */
export function isAddress(value: unknown, opts: { strict?: boolean } = {}): value is Address {
  if (typeof value !== 'string' || !HEX40.test(value)) return false;
  const body = value.slice(2);
  if (!opts.strict && (body === body.toLowerCase() || body === body.toUpperCase())) return true;
  return toChecksumAddress(value) === value;
}

/** Canonical (checksummed) form of any valid address; throws InvalidAddressError otherwise. */
export function normalizeAddress(value: unknown): Address {
  if (!isAddress(value)) throw new InvalidAddressError(value);
  return toChecksumAddress(value);
}

export function sameAddress(a: string, b: string): boolean {
  return isAddress(a) && isAddress(b) && a.toLowerCase() === b.toLowerCase();
}

export function privateKeyBytes(key: PrivateKey): Uint8Array {
  const bytes = typeof key === 'string' ? fromHex(key, 32, 'private key') : key;
  if (!(bytes instanceof Uint8Array) || !secp256k1.utils.isValidSecretKey(bytes)) {
    throw new TypeError('private key must be 32 bytes in 1..n-1 of secp256k1');
  }
  return bytes;
}

/** Address of an uncompressed (65-byte, 0x04-prefixed) or compressed (33-byte) secp256k1 public key. */
export function addressFromPublicKey(publicKey: Uint8Array): Address {
  const point = secp256k1.Point.fromBytes(publicKey);
  const uncompressed = point.toBytes(false);
  return toChecksumAddress(toHex(keccak_256(uncompressed.subarray(1)).subarray(12)));
}

export function addressFromPrivateKey(key: PrivateKey): Address {
  return addressFromPublicKey(secp256k1.getPublicKey(privateKeyBytes(key), false));
}

/** A fresh key from the platform CSPRNG (crypto.getRandomValues in browsers and Node). */
export function generatePrivateKey(): Hex {
  return toHex(secp256k1.utils.randomSecretKey());
}
