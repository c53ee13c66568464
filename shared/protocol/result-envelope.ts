import type { ResultHeader, RevealHeader } from './messages.js';

/**
 * A result travels as one binary WebSocket frame so header and payload can never be split or reordered:
 *   'SGR1' | u32 LE header length | UTF-8 JSON header | delta bytes (weights format).
 * A revealed checkpoint state uses the same frame with a RevealHeader (`type: 'reveal'`) and the state as payload.
 */
const MAGIC = [0x53, 0x47, 0x52, 0x31]; // 'SGR1'
const MAX_HEADER = 1 << 20;

export function encodeResultEnvelope(header: ResultHeader | RevealHeader, payload: Uint8Array): Uint8Array {
  const head = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + head.length + payload.length);
  out.set(MAGIC, 0);
  new DataView(out.buffer).setUint32(4, head.length, true);
  out.set(head, 8);
  out.set(payload, 8 + head.length);
  return out;
}

export interface DecodedEnvelope {
  header: unknown;
  payload: Uint8Array;
}

/** Splits an envelope; the header still needs schema validation by the receiver. Throws with a reason. */
export function decodeResultEnvelope(bytes: Uint8Array): DecodedEnvelope {
  if (bytes.length < 8 || MAGIC.some((b, i) => bytes[i] !== b)) throw new Error('bad envelope magic');
  const len = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(4, true);
  if (len > MAX_HEADER || 8 + len > bytes.length) throw new Error('envelope header length out of range');
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + len)));
  } catch {
    throw new Error('envelope header is not JSON');
  }
  return { header, payload: bytes.subarray(8 + len) };
}
