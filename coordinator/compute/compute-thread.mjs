// Bootstrap of a compute thread (pool.ts starts it; thread.ts is the thread). A worker thread does not inherit the
// TypeScript loader in every runner (vitest forks, tsx, plain node), so it registers tsx itself before loading the
// TypeScript module.
import { readlinkSync } from 'node:fs';
import { setPriority } from 'node:os';
import { register } from 'tsx/esm/api';

// Background work yields the CPU to the event loop: on Linux a thread has its own nice value, set through its thread
// id (/proc/thread-self -> <pid>/task/<tid>). Elsewhere the thread keeps the process's priority.
try {
  const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
  if (Number.isInteger(tid) && tid > 0) setPriority(tid, 10);
} catch {
  // no /proc, or not allowed: run at normal priority
}

register();
await import('./thread.ts');
