import { keccak_256 } from '@noble/hashes/sha3.js';
import { utf8ToBytes } from '@noble/hashes/utils.js';
import { type Address, isAddress, type PrivateKey } from './address.js';
import { concatBytes, fromHex, type Hex, toHex, word } from './hex.js';
import { recoverDigestAddress, signDigest } from './signature.js';

/** EIP-712 structured data hashing and signing (types, encodeType, hashStruct, domain separator, digest). */
export interface TypedField {
  name: string;
  type: string;
}
export type TypedTypes = Record<string, readonly TypedField[]>;

export interface TypedDataDomain {
  name?: string;
  version?: string;
  chainId?: number | bigint;
  verifyingContract?: string;
  salt?: Hex;
}

export interface TypedData {
  /** May include EIP712Domain; when absent it is derived from the fields present in `domain`. */
  types: TypedTypes;
  primaryType: string;
  domain: TypedDataDomain;
  message: Record<string, unknown>;
}

export class TypedDataError extends TypeError {
  readonly code = 'bad_typed_data';
}

// The canonical field order of EIP712Domain; only the fields a domain sets are part of its type.
const DOMAIN_FIELDS: readonly TypedField[] = [
  { name: 'name', type: 'string' },
  { name: 'version', type: 'string' },
  { name: 'chainId', type: 'uint256' },
  { name: 'verifyingContract', type: 'address' },
  { name: 'salt', type: 'bytes32' },
];

export function domainType(domain: TypedDataDomain): TypedField[] {
  return DOMAIN_FIELDS.filter((f) => domain[f.name as keyof TypedDataDomain] !== undefined);
}

const baseType = (type: string): string => type.replace(/(\[\d*\])+$/, '');

function dependencies(primary: string, types: TypedTypes, found: Set<string> = new Set()): Set<string> {
  const name = baseType(primary);
  if (found.has(name) || types[name] === undefined) return found;
  found.add(name);
  for (const f of types[name]) dependencies(f.type, types, found);
  return found;
}

/** `Name(type1 name1,…)` followed by every referenced struct type, sorted by name. */
export function encodeType(primary: string, types: TypedTypes): string {
  if (!types[primary]) throw new TypedDataError(`unknown struct type ${primary}`);
  const deps = [...dependencies(primary, types)].filter((t) => t !== primary).sort();
  return [primary, ...deps].map((t) => `${t}(${types[t].map((f) => `${f.type} ${f.name}`).join(',')})`).join('');
}

export function typeHash(primary: string, types: TypedTypes): Uint8Array {
  return keccak_256(utf8ToBytes(encodeType(primary, types)));
}

function toBigInt(value: unknown, field: string): bigint {
  if (typeof value === 'bigint') return value;
  if (typeof value === 'number' && Number.isSafeInteger(value)) return BigInt(value);
  if (typeof value === 'string' && /^(-?\d+|0x[0-9a-fA-F]+)$/.test(value)) return BigInt(value);
  throw new TypedDataError(`${field}: expected an integer, got ${String(value).slice(0, 40)}`);
}

function encodeValue(type: string, value: unknown, types: TypedTypes, field: string): Uint8Array {
  if (types[type]) return hashStruct(type, value as Record<string, unknown>, types);
  const array = /^(.*)\[(\d*)\]$/.exec(type);
  if (array) {
    if (!Array.isArray(value)) throw new TypedDataError(`${field}: expected an array`);
    if (array[2] !== '' && value.length !== Number(array[2])) {
      throw new TypedDataError(`${field}: expected ${array[2]} items, got ${value.length}`);
    }
    return keccak_256(concatBytes(...value.map((v, i) => encodeValue(array[1], v, types, `${field}[${i}]`))));
  }
  if (type === 'string') {
    if (typeof value !== 'string') throw new TypedDataError(`${field}: expected a string`);
    return keccak_256(utf8ToBytes(value));
  }
  if (type === 'bytes') {
    const bytes = value instanceof Uint8Array ? value : fromHex(String(value), undefined, field);
    return keccak_256(bytes);
  }
  if (type === 'bool') {
    if (typeof value !== 'boolean') throw new TypedDataError(`${field}: expected a boolean`);
    return word(value ? 1n : 0n);
  }
  if (type === 'address') {
    if (!isAddress(value)) throw new TypedDataError(`${field}: expected an address`);
    return word(BigInt(value));
  }
  const fixed = /^bytes(\d+)$/.exec(type);
  if (fixed) {
    const n = Number(fixed[1]);
    if (n < 1 || n > 32) throw new TypedDataError(`${field}: invalid type ${type}`);
    const bytes = value instanceof Uint8Array ? value : fromHex(String(value), undefined, field);
    if (bytes.length !== n) throw new TypedDataError(`${field}: expected ${n} bytes`);
    const out = new Uint8Array(32);
    out.set(bytes);
    return out;
  }
  const int = /^(u?)int(\d+)$/.exec(type);
  if (int) {
    const bits = Number(int[2]);
    if (bits < 8 || bits > 256 || bits % 8 !== 0) throw new TypedDataError(`${field}: invalid type ${type}`);
    const v = toBigInt(value, field);
    const [min, max] = int[1]
      ? [0n, (1n << BigInt(bits)) - 1n]
      : [-(1n << BigInt(bits - 1)), (1n << BigInt(bits - 1)) - 1n];
    if (v < min || v > max) throw new TypedDataError(`${field}: ${v} does not fit ${type}`);
    return word(v);
  }
  throw new TypedDataError(`${field}: unknown type ${type}`);
}

/** keccak256(typeHash || encodeData(value)); every member of the type must be present. */
export function hashStruct(primary: string, value: Record<string, unknown>, types: TypedTypes): Uint8Array {
  if (value === null || typeof value !== 'object') throw new TypedDataError(`${primary}: expected an object`);
  const fields = types[primary];
  if (!fields) throw new TypedDataError(`unknown struct type ${primary}`);
  const parts = [typeHash(primary, types)];
  for (const f of fields) {
    if (value[f.name] === undefined) throw new TypedDataError(`${primary}.${f.name} is missing`);
    parts.push(encodeValue(f.type, value[f.name], types, `${primary}.${f.name}`));
  }
  return keccak_256(concatBytes(...parts));
}

export function hashDomain(domain: TypedDataDomain): Uint8Array {
  const types = { EIP712Domain: domainType(domain) };
  return hashStruct('EIP712Domain', domain as Record<string, unknown>, types);
}

/** The digest that is signed: keccak256(0x19 0x01 || domainSeparator || hashStruct(message)). */
export function hashTypedData(data: TypedData): Uint8Array {
  const { EIP712Domain: _omit, ...types } = data.types;
  if (data.primaryType === 'EIP712Domain') throw new TypedDataError('primaryType cannot be EIP712Domain');
  return keccak_256(
    concatBytes(Uint8Array.of(0x19, 0x01), hashDomain(data.domain), hashStruct(data.primaryType, data.message, types)),
  );
}

export function signTypedData(data: TypedData, key: PrivateKey): Hex {
  return signDigest(hashTypedData(data), key);
}

export function recoverTypedDataSigner(data: TypedData, signature: string): Address {
  return recoverDigestAddress(hashTypedData(data), signature);
}

export const typedDataDigestHex = (data: TypedData): Hex => toHex(hashTypedData(data));
