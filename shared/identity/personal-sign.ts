import { keccak_256 } from '@noble/hashes/sha3.js';
import { utf8ToBytes } from '@noble/hashes/utils.js';
import type { Address, PrivateKey } from './address.js';
import { concatBytes, type Hex } from './hex.js';
import { recoverDigestAddress, signDigest } from './signature.js';

/**
 * EIP-191 version 0x45 ("personal_sign"): keccak256("\x19Ethereum Signed Message:\n" + byteLength + message).
 * A string is signed as its UTF-8 bytes (what wallets do with a text message such as a SIWE message).
 */
export function hashPersonalMessage(message: string | Uint8Array): Uint8Array {
  const body = typeof message === 'string' ? utf8ToBytes(message) : message;
  const prefix = utf8ToBytes(`\x19Ethereum Signed Message:\n${body.length}`);
  return keccak_256(concatBytes(prefix, body));
}

export function personalSign(message: string | Uint8Array, key: PrivateKey): Hex {
  return signDigest(hashPersonalMessage(message), key);
}

/** Throws InvalidSignatureError when the signature is malformed; any well-formed signature recovers *some* address. */
export function recoverPersonalSignAddress(message: string | Uint8Array, signature: string): Address {
  return recoverDigestAddress(hashPersonalMessage(message), signature);
}
