import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startCoordinator } from '../coordinator/app.js';
import { devConveniences } from '../coordinator/config.js';
import { toMicro } from '../coordinator/credits/money.js';
import { demoJobSpec } from '../coordinator/demo-job.js';
import { addressFromPrivateKey, generatePrivateKey, type Hex } from '../shared/identity/index.js';

/**
 * `npm start`: builds the web app if needed, starts the coordinator on the embedded database and, in development
 * mode, sets up a demo requester (a local key, an API key, credits from the faucet) that owns the MNIST demo job
 * (queued once per data folder with a budget), then says what to do next.
 */
const DEMO_CREDITS = 1000;
const DEMO_BUDGET = 10;

const webDir = process.env.WEB_DIR ?? './dist/web';
if (!existsSync(`${webDir}/index.html`) && process.env.SKIP_WEB_BUILD !== '1') {
  console.log('building the web app (first start only)…');
  const r = spawnSync('npm', ['run', 'build'], { stdio: 'inherit' });
  if (r.status !== 0) console.warn('web build failed; the REST API and workers still run');
}

const c = await startCoordinator({ logLevel: process.env.LOG_LEVEL ?? 'warn' });

/** The demo requester lives in DATA_DIR/demo-requester.json: development only, the key is stored in clear. */
async function demoRequester(): Promise<{ address: string; apiKey: string }> {
  const file = join(c.config.dataDir, 'demo-requester.json');
  let saved: { privateKey: Hex; address: string; apiKey?: string } | null = null;
  if (existsSync(file)) saved = JSON.parse(readFileSync(file, 'utf8'));
  if (!saved) {
    const privateKey = generatePrivateKey();
    saved = { privateKey, address: addressFromPrivateKey(privateKey) };
  }
  if (!saved.apiKey || !(await c.accounts.authenticateApiKey(saved.apiKey))) {
    saved.apiKey = (await c.accounts.createApiKey(saved.address, 'demo (npm start)')).key;
  }
  writeFileSync(file, `${JSON.stringify(saved, null, 2)}\n`, { mode: 0o600 });
  // One deposit per demo account, made in this process (not through the HTTP faucet, which stays closed unless
  // this coordinator listens on loopback only): the event key makes a restart a no-op.
  await c.ledger.deposit(saved.address, toMicro(DEMO_CREDITS), `faucet:demo:${saved.address}`, 'npm start demo');
  return { address: saved.address, apiKey: saved.apiKey };
}

let lines: string;
if (c.config.devMode) {
  const requester = await demoRequester();
  const { rows } = await c.db.query<{ id: string; status: string }>(
    `SELECT id, status FROM jobs WHERE name = $1 AND owner = $2 ORDER BY created_at DESC LIMIT 1`,
    [demoJobSpec().name, requester.address],
  );
  let demo = rows[0];
  if (!demo) {
    const res = await c.app.inject({
      method: 'POST',
      url: '/api/v1/jobs',
      headers: { authorization: `Bearer ${requester.apiKey}` },
      payload: demoJobSpec({ budget: DEMO_BUDGET }),
    });
    if (res.statusCode !== 201) throw new Error(`demo job refused: ${res.body}`);
    demo = res.json();
  }
  const auth = `-H 'Authorization: Bearer ${requester.apiKey}'`;
  const faucet = devConveniences(c.config)
    ? 'open (development mode on loopback)'
    : `closed: listening on ${c.config.host}, so only an admin key (ADMIN_KEYS) may mint; HOST=127.0.0.1 opens it`;
  lines = `demo requester ${requester.address}: ${DEMO_CREDITS} credits, owns demo job ${demo.id} (${demo.status})
dev API key: ${requester.apiKey}
HTTP faucet: ${faucet}

Next:
  • contribute from this machine:   npm run worker -- --coordinator ${c.url}
    (creates ./data/worker-key.json on first run; its address is the account that earns credit)
  • or open ${c.url}/ in a browser and press "Start contributing"
  • watch it:                        ${c.url}/requester   or   curl ${auth} ${c.url}/api/v1/jobs/${demo.id}
  • credits of an account:           curl ${c.url}/api/v1/accounts/<address>
  • the trained model (tfjs):        curl ${auth} ${c.url}/api/v1/jobs/${demo.id}/model/model.json
  • API docs:                        ${c.url}/api/v1/docs`;
} else {
  lines = `production mode: no demo job, no faucet. Sign in (POST /api/v1/auth/signin), create an API key
(POST /api/v1/keys) and submit jobs with a budget. API docs: ${c.url}/api/v1/docs`;
}

console.log(`
swarmgrad coordinator: ${c.url}   (store: ${c.db.kind}, data: ${c.config.dataDir})
payout statements signed by ${c.signerAddress}
${lines}
`);

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    void c.close().then(() => process.exit(0));
  });
}
