import { createHash } from 'node:crypto';
import {
  type Address,
  addressFromPrivateKey,
  buildSiweMessage,
  buildWorkerAuth,
  type Hex,
  personalSign,
} from '../../shared/identity/index.js';
import type { ChallengeMsg } from '../../shared/protocol/messages.js';
import { RawWorker } from './raw-worker.js';

/** A deterministic test account: the same label always gives the same key, so failures reproduce. */
export interface TestIdentity {
  label: string;
  privateKey: Hex;
  address: Address;
}

export function testIdentity(label: string): TestIdentity {
  const privateKey = `0x${createHash('sha256').update(`swarmgrad-test:${label}`).digest('hex')}` as Hex;
  return { label, privateKey, address: addressFromPrivateKey(privateKey) };
}

export const identityOf = (who: string | TestIdentity): TestIdentity =>
  typeof who === 'string' ? testIdentity(who) : who;

/** RawWorker.hello's signer: the SIWE answer to the coordinator's challenge, signed with `privateKey`. */
export function workerSigner(
  privateKey: Hex,
  over: { domain?: string; chainId?: number; now?: Date; ttlMs?: number } = {},
): (c: ChallengeMsg) => Promise<{ message: string; signature: string }> {
  return async (c) => {
    const { message, signature } = buildWorkerAuth({
      privateKey,
      domain: over.domain ?? c.domain,
      uri: c.uri,
      chainId: over.chainId ?? c.chainId,
      challenge: c.nonce,
      now: over.now,
      ttlMs: over.ttlMs,
    });
    return { message, signature };
  };
}

/** A RawWorker of a test identity that has said a signed hello (and got its welcome). */
export async function signedWorker(
  url: string,
  who: string | TestIdentity,
  resume?: { leaseId: string; token: string }[],
): Promise<RawWorker & { identity: TestIdentity }> {
  const identity = identityOf(who);
  const w = Object.assign(new RawWorker(url, identity.address), { identity });
  await w.hello(resume, workerSigner(identity.privateKey));
  return w;
}

export interface NonceInfo {
  nonce: string;
  domain: string;
  chainId: number;
  uri: string;
  statement: string;
  expiresAt: number;
}

export async function getNonce(url: string): Promise<NonceInfo> {
  const res = await fetch(`${url}/api/v1/auth/nonce`);
  if (!res.ok) throw new Error(`GET nonce: ${res.status}`);
  return (await res.json()) as NonceInfo;
}

/** The SIWE message a browser wallet would sign for this nonce; `over` forges any field. */
export function siweMessage(
  n: NonceInfo,
  address: string,
  over: Partial<Parameters<typeof buildSiweMessage>[0]> = {},
): string {
  const now = Date.now();
  return buildSiweMessage({
    domain: n.domain,
    address,
    statement: n.statement,
    uri: n.uri,
    version: '1',
    chainId: n.chainId,
    nonce: n.nonce,
    issuedAt: new Date(now),
    expirationTime: new Date(now + 600_000),
    ...over,
  });
}

export async function postSignIn(url: string, message: string, signature: string): Promise<Response> {
  return fetch(`${url}/api/v1/auth/signin`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ message, signature }),
  });
}

/** Signs in over HTTP like a wallet would; returns the session token. */
export async function signIn(url: string, who: string | TestIdentity): Promise<{ token: string; address: string }> {
  const id = identityOf(who);
  const message = siweMessage(await getNonce(url), id.address);
  const res = await postSignIn(url, message, personalSign(message, id.privateKey));
  if (!res.ok) throw new Error(`sign-in: ${res.status} ${await res.text()}`);
  return (await res.json()) as { token: string; address: string };
}

/** Signs in and creates an API key (the requester's path to a key); returns the key. */
export async function apiKeyFor(url: string, who: string | TestIdentity, label = 'test'): Promise<string> {
  const { token } = await signIn(url, who);
  const res = await fetch(`${url}/api/v1/keys`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ label }),
  });
  if (res.status !== 201) throw new Error(`create key: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { key: string }).key;
}

export const bearer = (key: string): Record<string, string> => ({ authorization: `Bearer ${key}` });

/** Posts a marketplace offer for `who` (signed in through its API key) at `price` credits per TFLOP. */
export async function postOffer(url: string, who: TestIdentity, price: number): Promise<Response> {
  return fetch(`${url}/api/v1/offers`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...bearer(await apiKeyFor(url, who)) },
    body: JSON.stringify({
      minPricePerTflop: price,
      deviceClass: 'webgpu-discrete',
      benchmark: { examplesPerSecond: 5000, backend: 'webgpu' },
      hoursAvailable: 8,
    }),
  });
}
