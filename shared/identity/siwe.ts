import { type Address, isAddress, toChecksumAddress } from './address.js';
import { recoverPersonalSignAddress } from './personal-sign.js';
import { InvalidSignatureError } from './signature.js';

/**
 * EIP-4361 Sign-In with Ethereum: the exact message text, a strict parser and a verifier that checks every field
 * the issue requires (domain, chain id, issued-at, expiry, single-use nonce) plus the EIP-191 signature.
 */
export interface SiweFields {
  /** RFC 3986 authority (host[:port]) asking for the sign-in, e.g. `swarmgrad.example:8080`. */
  domain: string;
  /** Optional URI scheme of the origin (`https`), printed as `scheme://domain`. */
  scheme?: string;
  address: string;
  /** One line of human-readable text; omitted when undefined or empty. */
  statement?: string;
  uri: string;
  version: '1';
  chainId: number;
  /** At least 8 ASCII letters or digits, chosen by the server. */
  nonce: string;
  /** RFC 3339 date-time; a Date is written with toISOString(). */
  issuedAt: string | Date;
  expirationTime?: string | Date;
  notBefore?: string | Date;
  requestId?: string;
  resources?: string[];
}

/** A parsed message: every date kept as the exact text that was signed. */
export interface SiweMessage extends Omit<SiweFields, 'issuedAt' | 'expirationTime' | 'notBefore' | 'address'> {
  address: Address;
  issuedAt: string;
  expirationTime?: string;
  notBefore?: string;
}

export type SiweErrorCode =
  | 'malformed'
  | 'bad_signature'
  | 'wrong_address'
  | 'expired'
  | 'missing_expiration'
  | 'not_yet_valid'
  | 'wrong_domain'
  | 'wrong_uri'
  | 'wrong_chain'
  | 'nonce_reused'
  | 'nonce_unknown'
  | 'nonce_expired';

export class SiweFormatError extends Error {
  readonly code = 'malformed';
}

const HEADER_SUFFIX = ' wants you to sign in with your Ethereum account:';
const SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*$/;
// RFC 3986 authority: userinfo@host:port, no path, query, whitespace or control characters.
const AUTHORITY =
  /^(?:[A-Za-z0-9\-._~!$&'()*+,;=:%]+@)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::\d{1,5})?$/;
const URI = /^[A-Za-z][A-Za-z0-9+.-]*:[^\s]+$/;
const NONCE = /^[A-Za-z0-9]{8,}$/;
const DATE_TIME =
  /^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$/i;
// EIP-4361 statement: RFC 3986 reserved / unreserved characters and spaces, one line.
const STATEMENT = /^[A-Za-z0-9\-._~:/?#[\]@!$&'()*+,;= ]+$/;
const REQUEST_ID = /^[A-Za-z0-9\-._~!$&'()*+,;=:@%]*$/;

function dateText(value: string | Date, field: string): string {
  const text = value instanceof Date ? value.toISOString() : value;
  if (typeof text !== 'string' || !DATE_TIME.test(text) || Number.isNaN(Date.parse(text))) {
    throw new SiweFormatError(`${field} must be an RFC 3339 date-time, got ${String(text).slice(0, 40)}`);
  }
  return text;
}

function check(ok: boolean, message: string): void {
  if (!ok) throw new SiweFormatError(message);
}

/** Validates the fields and writes the exact EIP-4361 text (LF line ends, no trailing newline). */
export function buildSiweMessage(fields: SiweFields): string {
  check(typeof fields.domain === 'string' && AUTHORITY.test(fields.domain), 'domain must be an RFC 3986 authority');
  check(fields.scheme === undefined || SCHEME.test(fields.scheme), 'scheme must be an RFC 3986 scheme');
  check(isAddress(fields.address), 'address must be a 0x address with a valid EIP-55 checksum');
  const statement = fields.statement === '' ? undefined : fields.statement;
  check(statement === undefined || STATEMENT.test(statement), 'statement must be one line of URI-safe ASCII text');
  check(typeof fields.uri === 'string' && URI.test(fields.uri), 'uri must be an RFC 3986 URI');
  check(fields.version === '1', "version must be '1'");
  check(Number.isSafeInteger(fields.chainId) && fields.chainId >= 1, 'chainId must be a positive integer');
  check(typeof fields.nonce === 'string' && NONCE.test(fields.nonce), 'nonce must be at least 8 letters or digits');
  check(fields.requestId === undefined || REQUEST_ID.test(fields.requestId), 'requestId holds forbidden characters');
  for (const r of fields.resources ?? []) check(URI.test(r), `resource is not a URI: ${r.slice(0, 60)}`);

  const origin = fields.scheme ? `${fields.scheme}://${fields.domain}` : fields.domain;
  const lines = [`${origin}${HEADER_SUFFIX}`, toChecksumAddress(fields.address), ''];
  if (statement !== undefined) lines.push(statement);
  lines.push(
    '',
    `URI: ${fields.uri}`,
    `Version: ${fields.version}`,
    `Chain ID: ${fields.chainId}`,
    `Nonce: ${fields.nonce}`,
    `Issued At: ${dateText(fields.issuedAt, 'issuedAt')}`,
  );
  if (fields.expirationTime !== undefined) {
    lines.push(`Expiration Time: ${dateText(fields.expirationTime, 'expirationTime')}`);
  }
  if (fields.notBefore !== undefined) lines.push(`Not Before: ${dateText(fields.notBefore, 'notBefore')}`);
  if (fields.requestId !== undefined) lines.push(`Request ID: ${fields.requestId}`);
  if (fields.resources !== undefined) {
    lines.push('Resources:');
    for (const r of fields.resources) lines.push(`- ${r}`);
  }
  return lines.join('\n');
}

/**
 * Strict parse: the exact line layout of EIP-4361, fields in their fixed order, nothing extra, EIP-55 address.
 * Throws SiweFormatError naming the first line that does not fit.
 */
export function parseSiweMessage(text: string): SiweMessage {
  check(typeof text === 'string' && text.length <= 8192, 'message must be a string of at most 8192 characters');
  check(!text.includes('\r'), 'message lines must end with LF only');
  const lines = text.split('\n');
  let i = 0;
  const next = (): string | undefined => lines[i++];

  const header = next() ?? '';
  check(header.endsWith(HEADER_SUFFIX), `line 1 must end with "${HEADER_SUFFIX.trim()}"`);
  const origin = header.slice(0, -HEADER_SUFFIX.length);
  let scheme: string | undefined;
  let domain = origin;
  const sep = origin.indexOf('://');
  if (sep >= 0) {
    scheme = origin.slice(0, sep);
    domain = origin.slice(sep + 3);
    check(SCHEME.test(scheme), 'line 1: invalid scheme');
  }
  check(AUTHORITY.test(domain), 'line 1: domain must be an RFC 3986 authority');

  const address = next() ?? '';
  check(isAddress(address, { strict: true }), 'line 2: address must be EIP-55 checksummed');
  check(next() === '', 'line 3 must be empty');

  let statement: string | undefined;
  const maybeStatement = next();
  if (maybeStatement !== '') {
    check(maybeStatement !== undefined && STATEMENT.test(maybeStatement), `line ${i}: invalid statement`);
    statement = maybeStatement;
    check(next() === '', `line ${i}: expected an empty line after the statement`);
  }

  const field = (label: string, optional: boolean): string | undefined => {
    const line = lines[i];
    if (line?.startsWith(`${label}: `)) {
      i++;
      return line.slice(label.length + 2);
    }
    check(optional, `line ${i + 1}: expected "${label}: …"`);
    return undefined;
  };
  const uri = field('URI', false)!;
  check(URI.test(uri), 'URI: not an RFC 3986 URI');
  const version = field('Version', false);
  check(version === '1', "Version must be '1'");
  const chainText = field('Chain ID', false)!;
  check(/^[1-9]\d{0,15}$/.test(chainText) && Number.isSafeInteger(Number(chainText)), 'Chain ID: positive integer');
  const nonce = field('Nonce', false)!;
  check(NONCE.test(nonce), 'Nonce: at least 8 letters or digits');
  const issuedAt = dateText(field('Issued At', false)!, 'Issued At');
  const expiration = field('Expiration Time', true);
  const notBefore = field('Not Before', true);
  const requestId = field('Request ID', true);
  check(requestId === undefined || REQUEST_ID.test(requestId), 'Request ID holds forbidden characters');

  let resources: string[] | undefined;
  if (lines[i] === 'Resources:') {
    i++;
    resources = [];
    while (i < lines.length) {
      const line = lines[i++];
      check(line.startsWith('- ') && URI.test(line.slice(2)), `line ${i}: resource must be "- <URI>"`);
      resources.push(line.slice(2));
    }
  }
  check(i === lines.length, `line ${i + 1}: unexpected text after the message`);

  const msg: SiweMessage = {
    domain,
    address: address as Address,
    uri,
    version: '1',
    chainId: Number(chainText),
    nonce,
    issuedAt,
  };
  if (scheme !== undefined) msg.scheme = scheme;
  if (statement !== undefined) msg.statement = statement;
  if (expiration !== undefined) msg.expirationTime = dateText(expiration, 'Expiration Time');
  if (notBefore !== undefined) msg.notBefore = dateText(notBefore, 'Not Before');
  if (requestId !== undefined) msg.requestId = requestId;
  if (resources !== undefined) msg.resources = resources;
  return msg;
}

/** What a nonce store answers: true/'ok' consumes it; the others say why it cannot be used. */
export type NonceVerdict = boolean | 'ok' | 'used' | 'unknown' | 'expired';

export interface VerifySiweOptions {
  message: string;
  signature: string;
  /** The authority this server answers on; the message's domain must equal it (case-insensitive host). */
  expectedDomain: string;
  expectedChainId?: number;
  /**
   * The URI the message must carry: a string (equal, or a prefix when it ends with '/'), or a check of the URI (the
   * coordinator's: any http(s)/ws(s) URI on its own domain).
   */
  expectedUri?: string | ((uri: string) => boolean);
  /** When set, the signed-in address must be this one (the hello's account, a re-auth of a session). */
  expectedAddress?: string;
  /** When set, the nonce must be exactly this one (a challenge bound to one connection). */
  expectedNonce?: string;
  now: Date | number;
  /** Allowed clock difference for issued-at / not-before in the future. Default 60 s. */
  clockSkewMs?: number;
  /** A message issued longer ago than this is expired even without an expiry. Default 24 h. */
  maxAgeMs?: number;
  /** The issue requires every message to carry an expiry; default true. */
  requireExpiration?: boolean;
  /**
   * Consumes the nonce (single use). Called last, only for a message that passed every other check, so a forged
   * message can never burn a legitimate nonce.
   */
  nonceCheck: (nonce: string, message: SiweMessage) => NonceVerdict | Promise<NonceVerdict>;
}

export type SiweResult =
  | { ok: true; address: Address; message: SiweMessage }
  | { ok: false; code: SiweErrorCode; reason: string };

const fail = (code: SiweErrorCode, reason: string): SiweResult => ({ ok: false, code, reason });

export async function verifySiwe(opts: VerifySiweOptions): Promise<SiweResult> {
  let msg: SiweMessage;
  try {
    msg = parseSiweMessage(opts.message);
  } catch (err) {
    return fail('malformed', (err as Error).message);
  }
  const now = typeof opts.now === 'number' ? opts.now : opts.now.getTime();
  const skew = opts.clockSkewMs ?? 60_000;
  const maxAge = opts.maxAgeMs ?? 86_400_000;

  if (msg.domain.toLowerCase() !== opts.expectedDomain.toLowerCase()) {
    return fail('wrong_domain', `message is for domain ${msg.domain}, this server is ${opts.expectedDomain}`);
  }
  if (opts.expectedUri !== undefined) {
    const want = opts.expectedUri;
    const uriOk =
      typeof want === 'function' ? want(msg.uri) : want.endsWith('/') ? msg.uri.startsWith(want) : msg.uri === want;
    if (!uriOk) {
      const expected = typeof want === 'function' ? 'a URI of this server' : want;
      return fail('wrong_uri', `message URI ${msg.uri} is not ${expected}`);
    }
  }
  if (opts.expectedChainId !== undefined && msg.chainId !== opts.expectedChainId) {
    return fail('wrong_chain', `message is for chain ${msg.chainId}, expected ${opts.expectedChainId}`);
  }
  if (opts.expectedNonce !== undefined && msg.nonce !== opts.expectedNonce) {
    return fail('nonce_unknown', 'message does not carry the challenge issued to this connection');
  }
  const issued = Date.parse(msg.issuedAt);
  if (issued > now + skew) return fail('not_yet_valid', `issued at ${msg.issuedAt}, in the future`);
  if (msg.notBefore !== undefined && Date.parse(msg.notBefore) > now + skew) {
    return fail('not_yet_valid', `not valid before ${msg.notBefore}`);
  }
  if (msg.expirationTime === undefined) {
    if (opts.requireExpiration ?? true) return fail('missing_expiration', 'message must carry an Expiration Time');
  } else if (Date.parse(msg.expirationTime) <= now) {
    return fail('expired', `expired at ${msg.expirationTime}`);
  }
  if (issued < now - maxAge) return fail('expired', `issued at ${msg.issuedAt}, older than ${maxAge} ms`);

  let signer: Address;
  try {
    signer = recoverPersonalSignAddress(opts.message, opts.signature);
  } catch (err) {
    if (err instanceof InvalidSignatureError) return fail('bad_signature', err.message);
    throw err;
  }
  if (signer !== msg.address) {
    return fail('wrong_address', `signature was made by ${signer}, not by the message's address ${msg.address}`);
  }
  if (opts.expectedAddress !== undefined && opts.expectedAddress.toLowerCase() !== msg.address.toLowerCase()) {
    return fail('wrong_address', `signed in as ${msg.address}, expected ${opts.expectedAddress}`);
  }

  const verdict = await opts.nonceCheck(msg.nonce, msg);
  if (verdict === 'used' || verdict === false) return fail('nonce_reused', 'nonce already used or never issued');
  if (verdict === 'unknown') return fail('nonce_unknown', 'nonce was not issued by this server');
  if (verdict === 'expired') return fail('nonce_expired', 'nonce expired before it was used');
  return { ok: true, address: msg.address, message: msg };
}
