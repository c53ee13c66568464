import { parseArgs } from 'node:util';
import { runHeadlessWorker, workerAccount } from './headless-worker.js';
import type { NodeBackend } from './node-backend.js';
import { DEFAULT_WORKER_KEY_FILE, resolveWorkerKey, type WorkerKey } from './worker-key.js';

/**
 * `npm run worker -- --coordinator http://localhost:8080 [--key-file key.json]` trains units until Ctrl-C, which
 * releases the unit in hand so the coordinator reissues it at once. The worker proves its account by signing the
 * coordinator's challenge with its key: --key-file, else SWARMGRAD_PRIVATE_KEY, else ./data/worker-key.json (created
 * on first run). --account is optional; when given it must be the key's address.
 */
const { values } = parseArgs({
  options: {
    coordinator: { type: 'string', default: process.env.SWARMGRAD_COORDINATOR ?? 'http://localhost:8080' },
    account: { type: 'string', default: process.env.SWARMGRAD_ACCOUNT || undefined },
    'key-file': { type: 'string', default: process.env.SWARMGRAD_KEY_FILE || undefined },
    backend: { type: 'string' },
    quiet: { type: 'boolean', default: false },
  },
});

let key: WorkerKey;
try {
  key = resolveWorkerKey({ keyFile: values['key-file'], envKey: process.env.SWARMGRAD_PRIVATE_KEY });
  workerAccount({ account: values.account, privateKey: key.privateKey });
} catch (err) {
  console.error((err as Error).message);
  process.exit(2);
}
if (key.source === 'generated') {
  console.log(`created a worker key in ${key.file ?? DEFAULT_WORKER_KEY_FILE}: keep it, it holds your credit`);
}

const backend = values.backend as NodeBackend | undefined;
if (backend && !['webgpu', 'wasm', 'cpu'].includes(backend)) {
  console.error(`--backend must be webgpu, wasm or cpu (got ${backend})`);
  process.exit(2);
}

let stopping = false;
let accepted = 0;
let rejected = 0;
const worker = await runHeadlessWorker({
  coordinator: values.coordinator!,
  account: values.account,
  privateKey: key.privateKey,
  backend,
  onEvent: (e) => {
    if (e.type === 'receipt' && e.receipt.status !== 'pending') {
      if (e.receipt.status === 'accepted') accepted++;
      else rejected++;
      console.log(
        `${e.receipt.status} ${e.receipt.leaseId} ${e.receipt.resultHash.slice(0, 12)} ${e.receipt.reason ?? ''}` +
          ` (accepted ${accepted}, rejected ${rejected})`,
      );
    } else if (e.type === 'lease' && !values.quiet) {
      console.log(`training ${e.jobName}: ${e.steps} steps (${e.leaseId})`);
    } else if (e.type === 'log') {
      console.log(`[${e.level}] ${e.message}`);
    } else if (e.type === 'state' && (e.state === 'offline' || e.state === 'stopped')) {
      console.log(`state: ${e.state}`);
      // Stopped without Ctrl-C: the coordinator refused this worker (e.g. 4401, a failed challenge).
      if (e.state === 'stopped' && !stopping) setTimeout(() => process.exit(3), 10);
    }
  },
});
console.log(
  `swarmgrad worker ${worker.account} on ${worker.choice.backend}${worker.choice.adapter ? ` (${worker.choice.adapter})` : ''} -> ${values.coordinator}`,
);

process.on('SIGINT', () => {
  if (stopping) process.exit(130);
  stopping = true;
  console.log('stopping: releasing the unit in hand (Ctrl-C again to force)');
  void worker.stop().then(() => process.exit(0));
});
process.on('SIGTERM', () => void worker.stop().then(() => process.exit(0)));
