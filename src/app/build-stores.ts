import { createAuditLog, type AuditLog } from '../audit/audit-log.js';
import type { Logger } from '../log.js';
import { createQueues, type Queues } from '../queue/queues.js';
import type { Scrub } from '../security/scrubber.js';
import { createFollowUps, type FollowUps } from '../store/follow-ups.js';
import { createPokes, type Pokes } from '../store/pokes.js';
import { createRunIndex, type RunIndex } from '../store/run-index.js';
import { createRunStore, type RunStore } from '../store/run-store.js';
import type { Connections } from './connections.js';

/** The shared state of every role, all in Redis (SPEC §8: any number of processes side by side). */
export interface Stores {
  audit: AuditLog;
  queues: Queues;
  store: RunStore;
  index: RunIndex;
  followUps: FollowUps;
  pokes: Pokes;
}

export interface BuildStoresDeps {
  connections: Pick<Connections, 'redis' | 'bullmq'>;
  prefix: string;
  clock: () => Date;
  auditKey: Buffer;
  auditCheckpointEvery: number;
  log: Logger;
  scrub: Scrub;
}

export function buildStores({
  connections,
  prefix,
  clock,
  auditKey,
  auditCheckpointEvery,
  log,
  scrub,
}: BuildStoresDeps): Stores {
  const { redis, bullmq } = connections;
  const queues = createQueues({ connection: bullmq, prefix });
  return {
    audit: createAuditLog({ redis, prefix, clock, key: auditKey, log, checkpointEvery: auditCheckpointEvery, scrub }),
    queues,
    // Every stored change refreshes the run's card (coalesced by the chat outbox).
    store: createRunStore({
      redis,
      prefix,
      clock,
      onChanged: async ({ after }) => queues.refreshCard(after.id, after.version),
    }),
    index: createRunIndex({ redis, prefix }),
    followUps: createFollowUps({ redis, prefix }),
    pokes: createPokes({ redis, prefix }),
  };
}
