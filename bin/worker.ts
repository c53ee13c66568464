import { parseArgs } from 'node:util';
import { runHeadlessWorker } from './headless-worker.js';
import type { NodeBackend } from './node-backend.js';

/**
 * `npm run worker -- --coordinator http://localhost:8080 --account 0x…` trains units until Ctrl-C, which releases
 * the unit in hand so the coordinator reissues it at once.
 */
const { values } = parseArgs({
  options: {
    coordinator: { type: 'string', default: process.env.SWARMGRAD_COORDINATOR ?? 'http://localhost:8080' },
    account: { type: 'string', default: process.env.SWARMGRAD_ACCOUNT ?? '0x0000000000000000000000000000000000000001' },
    backend: { type: 'string' },
    quiet: { type: 'boolean', default: false },
  },
});

const backend = values.backend as NodeBackend | undefined;
if (backend && !['webgpu', 'wasm', 'cpu'].includes(backend)) {
  console.error(`--backend must be webgpu, wasm or cpu (got ${backend})`);
  process.exit(2);
}

let accepted = 0;
let rejected = 0;
const worker = await runHeadlessWorker({
  coordinator: values.coordinator!,
  account: values.account!,
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
    }
  },
});
console.log(
  `swarmgrad worker on ${worker.choice.backend}${worker.choice.adapter ? ` (${worker.choice.adapter})` : ''} -> ${values.coordinator}`,
);

let stopping = false;
process.on('SIGINT', () => {
  if (stopping) process.exit(130);
  stopping = true;
  console.log('stopping: releasing the unit in hand (Ctrl-C again to force)');
  void worker.stop().then(() => process.exit(0));
});
process.on('SIGTERM', () => void worker.stop().then(() => process.exit(0)));
