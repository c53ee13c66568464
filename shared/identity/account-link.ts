import { type Address, isAddress, toChecksumAddress } from './address.js';
import { recoverPersonalSignAddress } from './personal-sign.js';
import { InvalidSignatureError } from './signature.js';

/**
 * Account link: a browser's local key (`from`) hands its credit, now and for all later work, to a real wallet
 * (`to`). Both keys sign the same text with EIP-191 personal_sign: `from` proves it owns the credit, `to` proves it
 * accepts it. The text is laid out like EIP-4361 (domain, URI, chain id, single-use nonce, issued-at, expiry) but
 * with its own first line and two address lines, so a link message can never pass as a sign-in and vice versa.
 *
 *     localhost:8080 wants you to link two accounts:
 *     From: 0x…  (the local key)
 *     To: 0x…    (the wallet)
 *
 *     Move all credit of From to To, now and for all later work. This cannot be undone.
 *
 *     URI: http://localhost:8080/
 *     Version: 1
 *     Chain ID: 1
 *     Nonce: …
 *     Issued At: 2026-01-01T00:00:00.000Z
 *     Expiration Time: 2026-01-01T00:10:00.000Z
 */
export interface AccountLinkFields {
  /** RFC 3986 authority (host[:port]) of the coordinator. */
  domain: string;
  /** The local key's address: the account whose credit moves. */
  from: string;
  /** The wallet's address: the account that receives it. */
  to: string;
  uri: string;
  chainId: number;
  nonce: string;
  issuedAt: string | Date;
  expirationTime: string | Date;
}

export interface AccountLinkMessage {
  domain: string;
  from: Address;
  to: Address;
  uri: string;
  chainId: number;
  nonce: string;
  issuedAt: string;
  expirationTime: string;
}

export const LINK_STATEMENT = 'Move all credit of From to To, now and for all later work. This cannot be undone.';
const HEADER_SUFFIX = ' wants you to link two accounts:';

const AUTHORITY =
  /^(?:[A-Za-z0-9\-._~!$&'()*+,;=:%]+@)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::\d{1,5})?$/;
const URI = /^[A-Za-z][A-Za-z0-9+.-]*:[^\s]+$/;
const NONCE = /^[A-Za-z0-9]{8,}$/;
const DATE_TIME =
  /^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$/i;

export class AccountLinkFormatError extends Error {
  readonly code = 'malformed';
}

function check(ok: boolean, message: string): void {
  if (!ok) throw new AccountLinkFormatError(message);
}

function dateText(value: string | Date, field: string): string {
  const text = value instanceof Date ? value.toISOString() : value;
  check(typeof text === 'string' && DATE_TIME.test(text) && !Number.isNaN(Date.parse(text)), `${field}: RFC 3339`);
  return text;
}

/** Validates the fields and writes the exact text both keys sign (LF line ends, no trailing newline). */
export function buildAccountLinkMessage(f: AccountLinkFields): string {
  check(typeof f.domain === 'string' && AUTHORITY.test(f.domain), 'domain must be an RFC 3986 authority');
  check(isAddress(f.from), 'from must be a 0x address with a valid EIP-55 checksum');
  check(isAddress(f.to), 'to must be a 0x address with a valid EIP-55 checksum');
  check(typeof f.uri === 'string' && URI.test(f.uri), 'uri must be an RFC 3986 URI');
  check(Number.isSafeInteger(f.chainId) && f.chainId >= 1, 'chainId must be a positive integer');
  check(typeof f.nonce === 'string' && NONCE.test(f.nonce), 'nonce must be at least 8 letters or digits');
  return [
    `${f.domain}${HEADER_SUFFIX}`,
    `From: ${toChecksumAddress(f.from)}`,
    `To: ${toChecksumAddress(f.to)}`,
    '',
    LINK_STATEMENT,
    '',
    `URI: ${f.uri}`,
    'Version: 1',
    `Chain ID: ${f.chainId}`,
    `Nonce: ${f.nonce}`,
    `Issued At: ${dateText(f.issuedAt, 'issuedAt')}`,
    `Expiration Time: ${dateText(f.expirationTime, 'expirationTime')}`,
  ].join('\n');
}

/** Strict parse: exactly the layout above, EIP-55 addresses, every field present. */
export function parseAccountLinkMessage(text: string): AccountLinkMessage {
  check(typeof text === 'string' && text.length <= 4000, 'message must be a string of at most 4000 characters');
  check(!text.includes('\r'), 'message lines must end with LF only');
  const lines = text.split('\n');
  check(lines.length === 12, `message must have 12 lines, got ${lines.length}`);
  const header = lines[0];
  check(header.endsWith(HEADER_SUFFIX), `line 1 must end with "${HEADER_SUFFIX.trim()}"`);
  const domain = header.slice(0, -HEADER_SUFFIX.length);
  check(AUTHORITY.test(domain), 'line 1: domain must be an RFC 3986 authority');
  const field = (n: number, label: string): string => {
    const line = lines[n - 1];
    check(line.startsWith(`${label}: `), `line ${n}: expected "${label}: …"`);
    return line.slice(label.length + 2);
  };
  const from = field(2, 'From');
  check(isAddress(from, { strict: true }), 'line 2: From must be an EIP-55 checksummed address');
  const to = field(3, 'To');
  check(isAddress(to, { strict: true }), 'line 3: To must be an EIP-55 checksummed address');
  check(lines[3] === '' && lines[5] === '', 'lines 4 and 6 must be empty');
  check(lines[4] === LINK_STATEMENT, `line 5 must be the statement "${LINK_STATEMENT}"`);
  const uri = field(7, 'URI');
  check(URI.test(uri), 'URI: not an RFC 3986 URI');
  check(field(8, 'Version') === '1', "Version must be '1'");
  const chainText = field(9, 'Chain ID');
  check(/^[1-9]\d{0,15}$/.test(chainText) && Number.isSafeInteger(Number(chainText)), 'Chain ID: positive integer');
  const nonce = field(10, 'Nonce');
  check(NONCE.test(nonce), 'Nonce: at least 8 letters or digits');
  return {
    domain,
    from: from as Address,
    to: to as Address,
    uri,
    chainId: Number(chainText),
    nonce,
    issuedAt: dateText(field(11, 'Issued At'), 'Issued At'),
    expirationTime: dateText(field(12, 'Expiration Time'), 'Expiration Time'),
  };
}

export type AccountLinkErrorCode =
  | 'malformed'
  | 'same_address'
  | 'wrong_domain'
  | 'wrong_uri'
  | 'wrong_chain'
  | 'not_yet_valid'
  | 'expired'
  | 'bad_signature'
  | 'wrong_signer'
  | 'nonce_reused'
  | 'nonce_unknown'
  | 'nonce_expired';

/** Which request field an error points at (JSON pointer into {message, localSignature, walletSignature}). */
export type AccountLinkField = '/message' | '/localSignature' | '/walletSignature';

export type AccountLinkResult =
  | { ok: true; message: AccountLinkMessage }
  | { ok: false; code: AccountLinkErrorCode; reason: string; field: AccountLinkField };

export interface VerifyAccountLinkOptions {
  message: string;
  /** personal_sign of `message` by `From` (the local key). */
  localSignature: string;
  /** personal_sign of `message` by `To` (the wallet). */
  walletSignature: string;
  expectedDomain: string;
  expectedChainId: number;
  /** When set, the URI must equal it, or start with it when it ends with '/'. */
  /**
   * The URI the message must carry: a string (equal, or a prefix when it ends with '/'), or a check of the URI (the
   * coordinator's: any http(s)/ws(s) URI on its own domain).
   */
  expectedUri?: string | ((uri: string) => boolean);
  now: number;
  /** Default 60 s. */
  clockSkewMs?: number;
  /** A message issued longer ago than this is expired. Default 15 minutes. */
  maxAgeMs?: number;
  /** Consumes the nonce; called last, only when everything else holds, so a forgery never burns a nonce. */
  nonceCheck: (nonce: string, message: AccountLinkMessage) => Promise<'ok' | 'used' | 'unknown' | 'expired'>;
}

/** Checks the text, both signatures and finally the nonce. */
export async function verifyAccountLink(opts: VerifyAccountLinkOptions): Promise<AccountLinkResult> {
  const fail = (
    code: AccountLinkErrorCode,
    reason: string,
    field: AccountLinkField = '/message',
  ): AccountLinkResult => ({
    ok: false,
    code,
    reason,
    field,
  });
  let msg: AccountLinkMessage;
  try {
    msg = parseAccountLinkMessage(opts.message);
  } catch (err) {
    if (err instanceof AccountLinkFormatError) return fail('malformed', err.message);
    throw err;
  }
  if (msg.from === msg.to) return fail('same_address', 'From and To are the same address');
  if (msg.domain.toLowerCase() !== opts.expectedDomain.toLowerCase()) {
    return fail('wrong_domain', `message is for domain ${msg.domain}, this server is ${opts.expectedDomain}`);
  }
  if (opts.expectedUri !== undefined) {
    const want = opts.expectedUri;
    const ok =
      typeof want === 'function' ? want(msg.uri) : want.endsWith('/') ? msg.uri.startsWith(want) : msg.uri === want;
    if (!ok) {
      const expected = typeof want === 'function' ? 'a URI of this server' : want;
      return fail('wrong_uri', `message URI ${msg.uri} is not ${expected}`);
    }
  }
  if (msg.chainId !== opts.expectedChainId) {
    return fail('wrong_chain', `message is for chain ${msg.chainId}, expected ${opts.expectedChainId}`);
  }
  const skew = opts.clockSkewMs ?? 60_000;
  const issued = Date.parse(msg.issuedAt);
  if (issued > opts.now + skew) return fail('not_yet_valid', `issued at ${msg.issuedAt}, in the future`);
  if (Date.parse(msg.expirationTime) <= opts.now) return fail('expired', `expired at ${msg.expirationTime}`);
  const maxAge = opts.maxAgeMs ?? 15 * 60_000;
  if (issued < opts.now - maxAge) return fail('expired', `issued at ${msg.issuedAt}, older than ${maxAge} ms`);

  for (const [signature, expected, field, who] of [
    [opts.localSignature, msg.from, '/localSignature', 'From (the local key)'],
    [opts.walletSignature, msg.to, '/walletSignature', 'To (the wallet)'],
  ] as const) {
    let signer: Address;
    try {
      signer = recoverPersonalSignAddress(opts.message, signature);
    } catch (err) {
      if (err instanceof InvalidSignatureError) return fail('bad_signature', err.message, field);
      throw err;
    }
    if (signer !== expected) return fail('wrong_signer', `signed by ${signer}, not by ${who} ${expected}`, field);
  }

  const verdict = await opts.nonceCheck(msg.nonce, msg);
  if (verdict === 'used') return fail('nonce_reused', 'the nonce was already used');
  if (verdict === 'unknown') return fail('nonce_unknown', 'the nonce was not issued by this server for a link');
  if (verdict === 'expired') return fail('nonce_expired', 'the nonce expired before it was used');
  return { ok: true, message: msg };
}

/** UTF-8 text as 0x hex: what EIP-1193 personal_sign takes as its data parameter. */
export function utf8Hex(text: string): `0x${string}` {
  let out = '0x';
  for (const b of new TextEncoder().encode(text)) out += b.toString(16).padStart(2, '0');
  return out as `0x${string}`;
}
