// Bootstrap of a compute thread (pool.ts starts it; thread.ts is the thread). A worker thread does not inherit the
// TypeScript loader in every runner (vitest forks, tsx, plain node), so it registers tsx itself before loading the
// TypeScript module.
import { register } from 'tsx/esm/api';

register();
await import('./thread.ts');
