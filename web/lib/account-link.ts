import {
  addressFromPrivateKey,
  buildAccountLinkMessage,
  type Hex,
  personalSign,
  toChecksumAddress,
  utf8Hex,
} from '../../shared/identity/index.js';
import type { LinkView } from '../../shared/protocol/account-link-api.js';
import { createClient } from '../../shared/protocol/api-client.js';

/**
 * Linking the browser's local key to a real wallet (POST /api/v1/accounts/link, docs/LEDGER.md "Account links"):
 * the local key and the wallet (an EIP-1193 provider such as window.ethereum) both personal_sign one message, and
 * from then on the local key's credit, earned and to come, belongs to the wallet.
 */
export interface Eip1193Provider {
  request(args: { method: string; params?: unknown[] }): Promise<unknown>;
}

/** The page's injected wallet, when there is one. */
export function injectedWallet(): Eip1193Provider | null {
  const eth = (globalThis as { ethereum?: Eip1193Provider }).ethereum;
  return eth && typeof eth.request === 'function' ? eth : null;
}

/** Where the account's credit goes, when it was linked (GET /api/v1/accounts/:address). */
export async function fetchLinkedWallet(origin: string, address: string): Promise<string | null> {
  const account = await createClient({ baseUrl: origin }).account(address, 1);
  return account.linkedTo?.address ?? null;
}

/** The link message for `to`, over a fresh link nonce: what both keys sign. */
export async function prepareLink(origin: string, privateKey: Hex, to: string): Promise<string> {
  const wallet = toChecksumAddress(to);
  const from = addressFromPrivateKey(privateKey);
  if (wallet === from) throw new Error('the wallet is this browser key itself');
  const n = await createClient({ baseUrl: origin }).linkNonce();
  return buildAccountLinkMessage({
    domain: n.domain,
    from,
    to: wallet,
    uri: n.uri,
    chainId: n.chainId,
    nonce: n.nonce,
    issuedAt: new Date(),
    // The nonce's own expiry bounds the message.
    expirationTime: new Date(n.expiresAt),
  });
}

/** Signs `message` with the local key and posts it with the wallet's signature; returns the link. */
export async function submitLink(
  origin: string,
  privateKey: Hex,
  message: string,
  walletSignature: string,
): Promise<LinkView> {
  // A refusal is an ApiRequestError whose message the page shows as it is.
  return createClient({ baseUrl: origin }).linkAccounts({
    message,
    localSignature: personalSign(message, privateKey),
    walletSignature,
  });
}

/** Asks the wallet for its account and its signature, signs with the local key, then links; returns the link. */
export async function linkToWallet(origin: string, privateKey: Hex, wallet: Eip1193Provider): Promise<LinkView> {
  const accounts = (await wallet.request({ method: 'eth_requestAccounts' })) as string[];
  if (!Array.isArray(accounts) || typeof accounts[0] !== 'string') throw new Error('the wallet shared no account');
  const to = toChecksumAddress(accounts[0]);
  const message = await prepareLink(origin, privateKey, to);
  // EIP-1193 personal_sign takes the message as hex-encoded UTF-8 and the signing address.
  const walletSignature = (await wallet.request({ method: 'personal_sign', params: [utf8Hex(message), to] })) as string;
  return submitLink(origin, privateKey, message, walletSignature);
}
