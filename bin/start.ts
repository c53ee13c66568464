import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { startCoordinator } from '../coordinator/app.js';
import { demoJobSpec } from '../coordinator/demo-job.js';

/**
 * `npm start`: builds the web app if needed, starts the coordinator on the embedded database, queues the MNIST demo
 * job (once per data folder) and says what to do next.
 */
const webDir = process.env.WEB_DIR ?? './dist/web';
if (!existsSync(`${webDir}/index.html`) && process.env.SKIP_WEB_BUILD !== '1') {
  console.log('building the web app (first start only)…');
  const r = spawnSync('npm', ['run', 'build'], { stdio: 'inherit' });
  if (r.status !== 0) console.warn('web build failed; the REST API and workers still run');
}

const c = await startCoordinator({ logLevel: process.env.LOG_LEVEL ?? 'warn' });
const { rows } = await c.db.query<{ id: string; status: string }>(
  `SELECT id, status FROM jobs WHERE name = $1 ORDER BY created_at DESC LIMIT 1`,
  [demoJobSpec().name],
);
let demo = rows[0];
if (!demo) {
  const res = await c.app.inject({ method: 'POST', url: '/api/v1/jobs', payload: demoJobSpec() });
  if (res.statusCode !== 201) throw new Error(`demo job refused: ${res.body}`);
  demo = res.json();
}

console.log(`
swarmgrad coordinator: ${c.url}   (store: ${c.db.kind}, data: ${c.config.dataDir})
demo job ${demo.id}: ${demo.status}

Next:
  • contribute from this machine:   npm run worker -- --coordinator ${c.url} --account 0xYourAddress
  • or open ${c.url}/ in a browser and press "Start contributing"
  • watch it:                        ${c.url}/requester   or   curl ${c.url}/api/v1/jobs/${demo.id}
  • the trained model (tfjs):        ${c.url}/api/v1/jobs/${demo.id}/model/model.json
  • API docs:                        ${c.url}/api/v1/docs
`);

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    void c.close().then(() => process.exit(0));
  });
}
