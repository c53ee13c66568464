/**
 * The container shared by the weights (SGW1) and dataset (SGD1) formats:
 *
 *   offset 0   4 bytes   ASCII magic
 *   offset 4   u32 LE    header length H in bytes
 *   offset 8   H bytes   UTF-8 JSON header
 *   then       0-3 zero bytes so that the body starts on a 4-byte boundary
 *   then       the body (format specific)
 *
 * Keeping the body 4-byte aligned lets decoders view float32/int32 data without copying byte by byte.
 */

const PREFIX_BYTES = 8;
/** Headers are small (names and shapes); a bound stops a hostile length from allocating gigabytes. */
const MAX_HEADER_BYTES = 16 * 1024 * 1024;

export const IS_LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

export function alignTo4(n: number): number {
  return (n + 3) & ~3;
}

/** Bytes of the prefix, header and padding: where the body starts. */
export function containerBodyOffset(headerBytes: Uint8Array): number {
  return alignTo4(PREFIX_BYTES + headerBytes.length);
}

/** Allocates the whole file and writes magic, header and padding; the caller fills the body. */
export function allocateContainer(
  magic: string,
  header: unknown,
  bodyBytes: number,
): { bytes: Uint8Array; bodyOffset: number } {
  const headerBytes = new TextEncoder().encode(JSON.stringify(header));
  const bodyOffset = containerBodyOffset(headerBytes);
  const bytes = new Uint8Array(bodyOffset + bodyBytes);
  for (let i = 0; i < 4; i++) bytes[i] = magic.charCodeAt(i);
  new DataView(bytes.buffer).setUint32(4, headerBytes.length, true);
  bytes.set(headerBytes, PREFIX_BYTES);
  return { bytes, bodyOffset };
}

/** Parses magic, header length, JSON header and padding. Throws an Error naming `what` on malformed input. */
export function readContainer(bytes: Uint8Array, magic: string, what: string): { header: unknown; bodyOffset: number } {
  if (!(bytes instanceof Uint8Array)) throw new Error(`${what}: expected bytes (Uint8Array)`);
  if (bytes.length < PREFIX_BYTES)
    throw new Error(`${what}: truncated: ${bytes.length} bytes is shorter than the 8-byte prefix`);
  const found = String.fromCharCode(bytes[0], bytes[1], bytes[2], bytes[3]);
  if (found !== magic)
    throw new Error(`${what}: bad magic ${JSON.stringify(found)}, expected ${JSON.stringify(magic)}`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = view.getUint32(4, true);
  if (headerLength > MAX_HEADER_BYTES)
    throw new Error(`${what}: header length ${headerLength} exceeds ${MAX_HEADER_BYTES}`);
  if (PREFIX_BYTES + headerLength > bytes.length) {
    throw new Error(
      `${what}: truncated: header of ${headerLength} bytes but only ${bytes.length - PREFIX_BYTES} follow`,
    );
  }
  let header: unknown;
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(
      bytes.subarray(PREFIX_BYTES, PREFIX_BYTES + headerLength),
    );
    header = JSON.parse(text);
  } catch (err) {
    throw new Error(`${what}: header is not valid UTF-8 JSON (${(err as Error).message})`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) {
    throw new Error(`${what}: header must be a JSON object`);
  }
  const bodyOffset = alignTo4(PREFIX_BYTES + headerLength);
  if (bodyOffset > bytes.length) throw new Error(`${what}: truncated inside the header padding`);
  for (let i = PREFIX_BYTES + headerLength; i < bodyOffset; i++) {
    if (bytes[i] !== 0) throw new Error(`${what}: header padding byte at offset ${i} is not zero`);
  }
  return { header, bodyOffset };
}

/** Copies `count` little-endian float32 values starting at `offset` (need not be aligned in memory). */
export function readFloat32(bytes: Uint8Array, offset: number, count: number): Float32Array {
  const out = new Float32Array(count);
  if (IS_LITTLE_ENDIAN) {
    new Uint8Array(out.buffer).set(bytes.subarray(offset, offset + count * 4));
  } else {
    const view = new DataView(bytes.buffer, bytes.byteOffset + offset, count * 4);
    for (let i = 0; i < count; i++) out[i] = view.getFloat32(i * 4, true);
  }
  return out;
}

/** Writes float32 values little-endian at `offset`. */
export function writeFloat32(bytes: Uint8Array, offset: number, values: Float32Array): void {
  if (IS_LITTLE_ENDIAN) {
    bytes.set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength), offset);
  } else {
    const view = new DataView(bytes.buffer, bytes.byteOffset + offset, values.length * 4);
    for (let i = 0; i < values.length; i++) view.setFloat32(i * 4, values[i], true);
  }
}

/** Copies `count` little-endian int32 values starting at `offset`. */
export function readInt32(bytes: Uint8Array, offset: number, count: number): Int32Array {
  const out = new Int32Array(count);
  if (IS_LITTLE_ENDIAN) {
    new Uint8Array(out.buffer).set(bytes.subarray(offset, offset + count * 4));
  } else {
    const view = new DataView(bytes.buffer, bytes.byteOffset + offset, count * 4);
    for (let i = 0; i < count; i++) out[i] = view.getInt32(i * 4, true);
  }
  return out;
}

export function writeInt32(bytes: Uint8Array, offset: number, values: Int32Array): void {
  if (IS_LITTLE_ENDIAN) {
    bytes.set(new Uint8Array(values.buffer, values.byteOffset, values.byteLength), offset);
  } else {
    const view = new DataView(bytes.buffer, bytes.byteOffset + offset, values.length * 4);
    for (let i = 0; i < values.length; i++) view.setInt32(i * 4, values[i], true);
  }
}

/** Product of a shape's dimensions, checked to be a non-negative safe integer. */
export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function isDimArray(v: unknown, allowZero: boolean): v is number[] {
  return (
    Array.isArray(v) && v.every((d) => typeof d === 'number' && Number.isSafeInteger(d) && (allowZero ? d >= 0 : d > 0))
  );
}
