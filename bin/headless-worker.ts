import WebSocket from 'ws';
import { addressFromPrivateKey, buildWorkerAuth, type Hex, sameAddress } from '../shared/identity/index.js';
import { type WorkerEvent, WorkerLoop } from '../shared/worker-client/worker-loop.js';
import { type BackendChoice, chooseNodeBackend, type NodeBackend } from './node-backend.js';

export interface HeadlessWorkerOptions {
  coordinator: string;
  /** The account results are credited to; derived from privateKey when omitted (and must match it when given). */
  account?: string;
  /** Signs the coordinator's challenge. Without it the hello is unsigned (only coordinators with auth off take it). */
  privateKey?: Hex;
  backend?: NodeBackend;
  onEvent?: (e: WorkerEvent) => void;
  reconnect?: { minMs: number; maxMs: number };
}

export interface HeadlessWorker {
  loop: WorkerLoop;
  choice: BackendChoice;
  account: string;
  stop(): Promise<void>;
}

/** The account a worker runs as: the key's address; a given --account must be that same address. */
export function workerAccount(opts: { account?: string; privateKey?: Hex }): string {
  if (!opts.privateKey) {
    if (!opts.account) throw new Error('a worker needs a private key (or, with auth off, an account)');
    return opts.account;
  }
  const derived = addressFromPrivateKey(opts.privateKey);
  if (opts.account && !sameAddress(opts.account, derived)) {
    throw new Error(`--account ${opts.account} is not the address of the worker key (${derived})`);
  }
  return derived;
}

/** A worker in this Node process: the shared WorkerLoop over the `ws` WebSocket client. */
export async function runHeadlessWorker(opts: HeadlessWorkerOptions): Promise<HeadlessWorker> {
  const account = workerAccount(opts);
  const choice = await chooseNodeBackend(opts.backend);
  const key = opts.privateKey;
  const loop = new WorkerLoop({
    coordinatorUrl: opts.coordinator,
    account,
    backend: choice.backend,
    adapter: choice.adapter,
    capabilities: { userAgent: `node/${process.version}` },
    openSocket: (url) => new WebSocket(url),
    reconnect: opts.reconnect,
    authenticate: key
      ? async (challenge) => {
          const { message, signature } = buildWorkerAuth({
            privateKey: key,
            domain: challenge.domain,
            uri: challenge.uri,
            chainId: challenge.chainId,
            challenge: challenge.nonce,
          });
          return { message, signature };
        }
      : undefined,
  });
  if (opts.onEvent) loop.on(opts.onEvent);
  loop.start();
  return { loop, choice, account, stop: () => loop.stop() };
}
