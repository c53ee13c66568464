import {
  addressFromPrivateKey,
  buildSiweMessage,
  personalSign,
  toChecksumAddress,
} from '../../shared/identity/index.js';
import { createClient } from '../../shared/protocol/api-client.js';
import { loadOrCreateKey } from '../lib/local-key.js';

/**
 * Sign-in with Ethereum for the dashboard: a wallet extension (window.ethereum) signs when there is one, otherwise
 * the browser's local key (the volunteer page's). The session token it returns is used as the API key.
 */
interface Eip1193 {
  request(args: { method: string; params?: unknown[] }): Promise<unknown>;
}

export interface Session {
  token: string;
  address: string;
  expiresAt: number;
  via: 'wallet' | 'local key';
}

export async function signIn(origin: string): Promise<Session> {
  const client = createClient({ baseUrl: origin });
  const n = await client.authNonce();
  const ethereum = (globalThis as { ethereum?: Eip1193 }).ethereum;
  let address: string;
  let sign: (message: string) => Promise<string>;
  let via: Session['via'];
  if (ethereum) {
    const accounts = (await ethereum.request({ method: 'eth_requestAccounts' })) as string[];
    if (!accounts?.[0]) throw new Error('the wallet shared no account');
    address = toChecksumAddress(accounts[0]);
    sign = async (message) =>
      (await ethereum.request({ method: 'personal_sign', params: [message, address] })) as string;
    via = 'wallet';
  } else {
    const key = await loadOrCreateKey('volunteer');
    address = addressFromPrivateKey(key);
    sign = async (message) => personalSign(message, key);
    via = 'local key';
  }
  const now = new Date();
  const message = buildSiweMessage({
    domain: n.domain,
    address,
    statement: n.statement,
    uri: n.uri,
    version: '1',
    chainId: n.chainId,
    nonce: n.nonce,
    issuedAt: now,
    // The coordinator wants an expiry on the message; the nonce's own expiry bounds it.
    expirationTime: new Date(n.expiresAt),
  });
  const s = await client.signIn(message, await sign(message));
  return { ...s, via };
}
