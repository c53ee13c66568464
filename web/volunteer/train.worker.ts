/// <reference lib="webworker" />
import { buildWorkerAuth, type Hex } from '../../shared/identity/index.js';
import { WorkerLoop } from '../../shared/worker-client/worker-loop.js';
import { IdbBlobCache } from '../lib/blob-cache.js';
import { benchmarkIsDecided } from '../lib/choose-backend.js';
import { DutyCycle } from '../lib/duty-cycle.js';
import type { PageToWorker, PauseReason, StartConfig, WorkerToPage } from '../lib/worker-protocol.js';
import { activateBackend } from './backends.js';
import { benchmarkBackend } from './benchmark.js';

/**
 * The training Web Worker: tfjs and the worker loop run here, off the page's main thread. The page sends commands
 * (benchmark, start, pause/resume with a reason, settings, stop) and gets the loop's events back.
 */
declare const self: DedicatedWorkerGlobalScope;

let loop: WorkerLoop | null = null;
let config: StartConfig | null = null;
let cache: IdbBlobCache | null = null;
const duty = new DutyCycle(100);
const pausedFor = new Set<PauseReason>();

function post(msg: WorkerToPage): void {
  self.postMessage(msg);
}

/** Whether the loop was told to pause (its state alone can say 'downloading' while a pause is pending). */
let loopPaused = false;

function applyPause(): void {
  if (!loop) return;
  if (pausedFor.size > 0 && !loopPaused) {
    loopPaused = true;
    loop.pause();
  } else if (pausedFor.size === 0 && loopPaused) {
    loopPaused = false;
    // The pause must not count as work, or the duty cycle would sleep it off again after resuming.
    duty.reset();
    loop.resume();
  }
}

async function start(c: StartConfig): Promise<void> {
  if (loop && loop.state !== 'stopped') return;
  config = c;
  await activateBackend(c.backend);
  post({ type: 'backend', backend: c.backend });
  duty.set(c.intensity);
  cache = new IdbBlobCache(c.coordinatorUrl, c.cacheCapBytes);
  pausedFor.clear();
  for (const r of c.pausedFor) pausedFor.add(r);
  const l = new WorkerLoop({
    coordinatorUrl: c.coordinatorUrl,
    account: c.account,
    backend: c.backend,
    adapter: c.adapter,
    capabilities: c.capabilities,
    openSocket: (url) => new WebSocket(url),
    blobs: cache,
    gate: duty.gate,
    reconnect: { minMs: 1_000, maxMs: 10_000 },
    payTo: c.payTo,
    // The coordinator credits only a hello signed over its challenge, by the local key.
    authenticate: async (ch) => {
      const { message, signature } = buildWorkerAuth({
        privateKey: c.privateKey as Hex,
        domain: ch.domain,
        uri: ch.uri,
        chainId: ch.chainId,
        challenge: ch.nonce,
      });
      return { message, signature };
    },
  });
  loop = l;
  l.on((event) => {
    post({ type: 'event', event });
    if (event.type === 'state' && event.state === 'offline' && !config?.autoReconnect && loop === l) {
      // Auto reconnect is off: give up instead of retrying; the volunteer starts again by hand.
      void l.stop().then(() => post({ type: 'event', event: { type: 'state', state: 'offline' } }));
    }
  });
  loopPaused = false;
  l.start();
  applyPause();
}

async function handle(msg: PageToWorker): Promise<void> {
  switch (msg.type) {
    case 'benchmark': {
      const results = [];
      for (const b of msg.backends) {
        results.push(await benchmarkBackend(b));
        if (msg.untilDecided && benchmarkIsDecided(results)) break;
      }
      post({ type: 'benchmark', results });
      break;
    }
    case 'start':
      await start(msg.config);
      break;
    case 'pause':
      pausedFor.add(msg.reason);
      applyPause();
      break;
    case 'resume':
      pausedFor.delete(msg.reason);
      applyPause();
      break;
    case 'settings':
      if (msg.intensity !== undefined) duty.set(msg.intensity);
      if (msg.cacheCapBytes !== undefined) cache?.setCap(msg.cacheCapBytes);
      break;
    case 'stop':
      if (loop) await loop.stop();
      loop = null;
      post({ type: 'stopped' });
      break;
  }
}

// Commands are handled one at a time so that, e.g., a stop never overtakes the start it follows.
let queue: Promise<void> = Promise.resolve();
self.onmessage = (ev: MessageEvent<PageToWorker>) => {
  queue = queue.then(() =>
    handle(ev.data).catch((err: unknown) => {
      post({ type: 'fatal', message: err instanceof Error ? err.message : String(err) });
    }),
  );
};
