import { defineConfig } from 'vitest/config';

// Tests share real services (PostgreSQL, loopback ports, Chromium), so files run in separate forks
// with generous timeouts: training real models on 2 CPU cores takes seconds, not milliseconds.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Browser tests load the built web app; build it once (only when sources changed) before any file runs.
    globalSetup: ['test/helpers/build-web.ts'],
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 120_000,
    fileParallelism: true,
    maxWorkers: 2,
  },
});
