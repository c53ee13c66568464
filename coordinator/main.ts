import { startCoordinator } from './app.js';

/** `npm run coordinator`: the coordinator alone, configured by environment variables (README). */
const c = await startCoordinator();
c.app.log.info(`swarmgrad coordinator on ${c.url} (store: ${c.db.kind})`);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    void c.close().then(() => process.exit(0));
  });
}
