import WebSocket from 'ws';
import { type WorkerEvent, WorkerLoop } from '../shared/worker-client/worker-loop.js';
import { type BackendChoice, chooseNodeBackend, type NodeBackend } from './node-backend.js';

export interface HeadlessWorkerOptions {
  coordinator: string;
  account: string;
  backend?: NodeBackend;
  onEvent?: (e: WorkerEvent) => void;
  reconnect?: { minMs: number; maxMs: number };
}

export interface HeadlessWorker {
  loop: WorkerLoop;
  choice: BackendChoice;
  stop(): Promise<void>;
}

/** A worker in this Node process: the shared WorkerLoop over the `ws` WebSocket client. */
export async function runHeadlessWorker(opts: HeadlessWorkerOptions): Promise<HeadlessWorker> {
  const choice = await chooseNodeBackend(opts.backend);
  const loop = new WorkerLoop({
    coordinatorUrl: opts.coordinator,
    account: opts.account,
    backend: choice.backend,
    adapter: choice.adapter,
    capabilities: { userAgent: `node/${process.version}` },
    openSocket: (url) => new WebSocket(url),
    reconnect: opts.reconnect,
  });
  if (opts.onEvent) loop.on(opts.onEvent);
  loop.start();
  return { loop, choice, stop: () => loop.stop() };
}
