import { secp256k1 } from '@noble/curves/secp256k1.js';
import { type Address, addressFromPublicKey, type PrivateKey, privateKeyBytes } from './address.js';
import { concatBytes, fromHex, type Hex, toHex } from './hex.js';

/**
 * Ethereum's 65-byte signature encoding, r || s || v with v = 27 + recovery bit, over a 32-byte digest that the
 * caller already hashed (EIP-191 and EIP-712 each define their own digest).
 */
export class InvalidSignatureError extends TypeError {
  readonly code = 'bad_signature';
}

export function signDigest(digest: Uint8Array, key: PrivateKey): Hex {
  if (digest.length !== 32) throw new TypeError('digest must be 32 bytes');
  // RFC 6979 deterministic nonce and low-s, as every Ethereum signer produces.
  const rec = secp256k1.sign(digest, privateKeyBytes(key), { prehash: false, format: 'recovered' });
  // noble's 'recovered' layout is recovery || r || s; Ethereum puts v last and offsets it by 27.
  return toHex(concatBytes(rec.subarray(1), Uint8Array.of(27 + rec[0])));
}

/**
 * Recovers the signer of `digest`. Rejects anything but 65 bytes, v outside {0, 1, 27, 28}, r or s out of range,
 * and high-s signatures (malleable twins of valid ones, which no honest wallet emits).
 */
export function recoverDigestAddress(digest: Uint8Array, signature: string): Address {
  let bytes: Uint8Array;
  try {
    bytes = fromHex(signature, 65, 'signature');
  } catch (err) {
    throw new InvalidSignatureError((err as Error).message);
  }
  const v = bytes[64];
  const recovery = v >= 27 ? v - 27 : v;
  if (recovery !== 0 && recovery !== 1) throw new InvalidSignatureError(`signature v must be 27 or 28, got ${v}`);
  try {
    const sig = secp256k1.Signature.fromBytes(bytes.subarray(0, 64), 'compact');
    if (sig.hasHighS()) throw new InvalidSignatureError('signature s is in the upper half of the curve order');
    const point = sig.addRecoveryBit(recovery).recoverPublicKey(digest);
    return addressFromPublicKey(point.toBytes(false));
  } catch (err) {
    if (err instanceof InvalidSignatureError) throw err;
    throw new InvalidSignatureError(`signature does not recover a public key: ${(err as Error).message}`);
  }
}
