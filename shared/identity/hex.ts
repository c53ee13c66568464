import { bytesToHex, hexToBytes } from '@noble/hashes/utils.js';

/** A 0x-prefixed hex string. */
export type Hex = `0x${string}`;

export function toHex(bytes: Uint8Array): Hex {
  return `0x${bytesToHex(bytes)}`;
}

/** Strict: 0x prefix, even length, hex digits only; `bytes` checks the decoded length when given. */
export function fromHex(hex: string, bytes?: number, what = 'hex value'): Uint8Array {
  if (typeof hex !== 'string' || !/^0x([0-9a-fA-F]{2})*$/.test(hex)) {
    throw new TypeError(`${what} must be a 0x-prefixed even-length hex string`);
  }
  const out = hexToBytes(hex.slice(2));
  if (bytes !== undefined && out.length !== bytes) throw new TypeError(`${what} must be ${bytes} bytes`);
  return out;
}

export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Big-endian 32-byte word of an unsigned value (two's complement for negatives, as the EVM does). */
export function word(value: bigint): Uint8Array {
  const v = value < 0n ? (1n << 256n) + value : value;
  if (v < 0n || v >= 1n << 256n) throw new RangeError('value does not fit in 256 bits');
  const out = new Uint8Array(32);
  let rest = v;
  for (let i = 31; i >= 0; i--) {
    out[i] = Number(rest & 0xffn);
    rest >>= 8n;
  }
  return out;
}

export function bytesToBigInt(bytes: Uint8Array): bigint {
  let v = 0n;
  for (const b of bytes) v = (v << 8n) | BigInt(b);
  return v;
}
