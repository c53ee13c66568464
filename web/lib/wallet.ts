/**
 * A volunteer's payout identity. For now an address is 20 random bytes shaped like an Ethereum address; a later
 * task replaces this with a real key pair that signs the coordinator's challenge.
 */
const ADDRESS = /^0x[0-9a-fA-F]{40}$/;

export function isAddress(s: string): boolean {
  return ADDRESS.test(s.trim());
}

export function generateAddress(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(20));
  return `0x${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
}

/** 0x1234…abcd, for tight layouts. */
export function shortAddress(s: string): string {
  return s.length > 14 ? `${s.slice(0, 6)}…${s.slice(-4)}` : s;
}
