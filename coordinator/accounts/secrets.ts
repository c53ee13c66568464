import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

export const SESSION_PREFIX = 'sgs_';
export const API_KEY_PREFIX = 'sgk_';

/** 32 random bytes, base64url, behind a prefix that tells sessions and API keys apart in an Authorization header. */
export function newSecret(prefix: string): string {
  return `${prefix}${randomBytes(32).toString('base64url')}`;
}

/** Only this hash is stored; a leaked table does not leak usable tokens. */
export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret, 'utf8').digest('hex');
}

/** A SIWE nonce: 128 random bits as 32 hex digits (EIP-4361 wants >= 8 alphanumerics). */
export function newNonce(): string {
  return randomBytes(16).toString('hex');
}

export const newId = (prefix: string): string => `${prefix}${randomBytes(8).toString('hex')}`;

/** Constant-time comparison (through hashes, so lengths need not match). */
export function secretEquals(a: string, b: string): boolean {
  return timingSafeEqual(createHash('sha256').update(a).digest(), createHash('sha256').update(b).digest());
}
