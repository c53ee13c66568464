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
const USAGE = `Usage: npm run worker -- [options]

Trains work units of a swarmgrad coordinator until Ctrl-C (which hands the unit in hand back at once).

Options:
  --coordinator URL   the coordinator (env SWARMGRAD_COORDINATOR; default http://localhost:8080)
  --key-file PATH     the signing key, i.e. your account; created with a new key when PATH does not exist
                      (env SWARMGRAD_KEY_FILE; else env SWARMGRAD_PRIVATE_KEY; else ${DEFAULT_WORKER_KEY_FILE})
  --account ADDRESS   optional check: must be the key's address (env SWARMGRAD_ACCOUNT)
  --backend NAME      webgpu, wasm or cpu (default: the fastest that works here)
  --quiet             no line per unit
  -h, --help          this text

Key file format: JSON {"address": "0x...", "privateKey": "0x..."} (written with mode 0600), or one line with the
0x-prefixed 64-hex-digit private key. Keep it: the credit your worker earns belongs to that key.
`;

let parsed: ReturnType<typeof parseOptions>;
function parseOptions() {
  return parseArgs({
    options: {
      coordinator: { type: 'string', default: process.env.SWARMGRAD_COORDINATOR ?? 'http://localhost:8080' },
      account: { type: 'string', default: process.env.SWARMGRAD_ACCOUNT || undefined },
      'key-file': { type: 'string', default: process.env.SWARMGRAD_KEY_FILE || undefined },
      backend: { type: 'string' },
      quiet: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
}
try {
  parsed = parseOptions();
} catch (err) {
  // Unknown options and missing values: say which, and how to ask for the list, without a stack trace.
  console.error(`${(err as Error).message}\n\n${USAGE}`);
  process.exit(2);
}
const { values } = parsed;
if (values.help) {
  console.log(USAGE);
  process.exit(0);
}

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
