import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // Gate rooms keep their tests beside their code (workers/gates/<gate>/*.test.ts).
    include: ['test/**/*.test.ts', 'workers/**/*.test.ts'],
    globalSetup: ['test/helpers/global-redis.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Integration tests spawn processes and share one throwaway Redis (isolated by key prefix);
    // two cores, so keep file parallelism modest.
    maxWorkers: 2,
    pool: 'forks',
  },
});
