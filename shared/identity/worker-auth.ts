import { addressFromPrivateKey, type PrivateKey } from './address.js';
import { personalSign } from './personal-sign.js';
import { buildSiweMessage } from './siwe.js';

/**
 * The worker side of the WebSocket challenge: a SIWE message whose nonce is the coordinator's challenge, signed with
 * the worker's key (headless: key file or env var; browser: local key or wallet). It goes into `hello.auth`.
 */
export interface WorkerAuthOptions {
  privateKey: PrivateKey;
  /** The coordinator's authority (host[:port]) as the worker reached it. */
  domain: string;
  /** e.g. `ws://host:port/api/v1/worker`. */
  uri: string;
  chainId: number;
  challenge: string;
  now?: Date;
  /** How long the answer stays valid; default 5 minutes. */
  ttlMs?: number;
}

export const WORKER_AUTH_STATEMENT = 'Authenticate this swarmgrad worker; credit results to this address.';

export function buildWorkerAuth(opts: WorkerAuthOptions): { address: string; message: string; signature: string } {
  const now = opts.now ?? new Date();
  const address = addressFromPrivateKey(opts.privateKey);
  const message = buildSiweMessage({
    domain: opts.domain,
    address,
    statement: WORKER_AUTH_STATEMENT,
    uri: opts.uri,
    version: '1',
    chainId: opts.chainId,
    nonce: opts.challenge,
    issuedAt: now,
    expirationTime: new Date(now.getTime() + (opts.ttlMs ?? 300_000)),
  });
  return { address, message, signature: personalSign(message, opts.privateKey) };
}
