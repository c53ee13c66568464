import { type Address, addressFromPrivateKey, normalizeAddress, type PrivateKey, sameAddress } from './address.js';
import type { Hex } from './hex.js';
import { InvalidSignatureError } from './signature.js';
import {
  hashTypedData,
  recoverTypedDataSigner,
  signTypedData,
  type TypedData,
  type TypedDataDomain,
  typedDataDigestHex,
} from './typed-data.js';

/**
 * The payout statement: the coordinator's signed word that an account has vested a cumulative amount of credit.
 * docs/LEDGER.md documents the schema. `vested` is cumulative and `statementId` grows per account, so a newer
 * statement supersedes the older ones: a payer pays `vested - alreadyPaid` for the highest statementId it has seen.
 */
export interface PayoutStatement {
  account: Address;
  /** Cumulative vested credit of `account`, in micro-credits (1 credit = 1,000,000). */
  vested: bigint;
  /** 1, 2, 3, … per account. */
  statementId: bigint;
  /** Unix seconds. */
  issuedAt: bigint;
}

export const PAYOUT_TYPES = {
  PayoutStatement: [
    { name: 'account', type: 'address' },
    { name: 'vested', type: 'uint256' },
    { name: 'statementId', type: 'uint256' },
    { name: 'issuedAt', type: 'uint64' },
  ],
} as const;

export const PAYOUT_DOMAIN_NAME = 'swarmgrad';
export const PAYOUT_DOMAIN_VERSION = '1';

export interface PayoutDomainOptions {
  chainId: number;
  verifyingContract?: string;
}

export function payoutDomain(opts: PayoutDomainOptions): TypedDataDomain {
  const domain: TypedDataDomain = { name: PAYOUT_DOMAIN_NAME, version: PAYOUT_DOMAIN_VERSION, chainId: opts.chainId };
  if (opts.verifyingContract !== undefined) domain.verifyingContract = normalizeAddress(opts.verifyingContract);
  return domain;
}

export function payoutTypedData(statement: PayoutStatement, opts: PayoutDomainOptions): TypedData {
  return {
    types: PAYOUT_TYPES,
    primaryType: 'PayoutStatement',
    domain: payoutDomain(opts),
    message: { ...statement, account: normalizeAddress(statement.account) },
  };
}

export interface SignedPayoutStatement {
  statement: PayoutStatement;
  domain: TypedDataDomain;
  digest: Hex;
  signature: Hex;
  signer: Address;
}

export function signPayoutStatement(
  statement: PayoutStatement,
  opts: PayoutDomainOptions,
  key: PrivateKey,
): SignedPayoutStatement {
  const data = payoutTypedData(statement, opts);
  const signer = addressFromPrivateKey(key);
  return {
    statement,
    domain: data.domain,
    digest: typedDataDigestHex(data),
    signature: signTypedData(data, key),
    signer,
  };
}

/** True when `signature` over `statement` was made by `expectedSigner` (the coordinator's published address). */
export function verifyPayoutStatement(
  statement: PayoutStatement,
  opts: PayoutDomainOptions,
  signature: string,
  expectedSigner: string,
): boolean {
  try {
    return sameAddress(recoverTypedDataSigner(payoutTypedData(statement, opts), signature), expectedSigner);
  } catch (err) {
    if (err instanceof InvalidSignatureError) return false;
    throw err;
  }
}

export const hashPayoutStatement = (statement: PayoutStatement, opts: PayoutDomainOptions): Uint8Array =>
  hashTypedData(payoutTypedData(statement, opts));
