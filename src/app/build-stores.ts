import { createAuditLog, type AuditLog } from '../audit/audit-log.js';
import { createAgentConversationStore, type AgentConversations } from '../store/agent-conversation-store.js';
import { createApprovalStore, type ApprovalStore } from '../store/approval-store.js';
import type { Logger } from '../log.js';
import { createQueues, type Queues } from '../queue/queues.js';
import type { Scrub } from '../security/scrubber.js';
import { createClaims, type Claims } from '../store/claims.js';
import { isTerminal } from '../domain/run.js';
import { createPromotionQueue, type PromotionQueue } from '../store/promotion-queue.js';
import { createEtagCache } from '../store/etag-cache.js';
import type { EtagCache } from '../ports/github.js';
import { createFollowUps, type FollowUps } from '../store/follow-ups.js';
import { createLocalForgeStore, type LocalForgeStore } from '../store/local-forge-store.js';
import { createOutboxStore, type OutboxStore } from '../store/outbox-store.js';
import { createTtlCache, type TtlCache } from '../store/ttl-cache.js';
import { createWriteLimiter, type WriteLimiter } from '../store/write-limiter.js';
import { createPokes, type Pokes } from '../store/pokes.js';
import { createRunIndex, type RunIndex } from '../store/run-index.js';
import { createRunStore, type RunStore } from '../store/run-store.js';
import type { Connections } from './connections.js';
import { wakeRun } from './wake-runs.js';

/** The shared state of every role, all in Redis (SPEC §8: any number of processes side by side). */
export interface Stores {
  audit: AuditLog;
  queues: Queues;
  store: RunStore;
  index: RunIndex;
  followUps: FollowUps;
  pokes: Pokes;
  /** The chat outbox's records (posted keys, the root lease, card coalescing). */
  outbox: OutboxStore;
  /** Paces chat writes across every worker, well under Slack's per-workspace limits (SPEC §10: zero 429s). */
  chatWrites: WriteLimiter;
  /** Shared by every worker, so a poll by any of them can be a 304 (SPEC §10). */
  etagCache: EtagCache;
  /** Required checks per repository and branch (branch protection answers cost a request each). */
  requiredChecksCache: TtlCache;
  /** Exclusive claims across workers (the look-then-create of a Promotion). */
  claims: Claims;
  /** Approval requests and their decisions, one atomic transition each. */
  approvals: ApprovalStore;
  /** Per-stage promotion queues: one run at a time creates its Promotion into a Kargo Stage. */
  promotionQueue: PromotionQueue;
  /** The local forge's pull requests and CI results (local mode, SPEC §8). */
  localForge: LocalForgeStore;
  /** The agent's conversation after its last turn, so a restarted agent step continues it. */
  conversations: AgentConversations;
}

export interface BuildStoresDeps {
  connections: Pick<Connections, 'redis' | 'bullmq'>;
  prefix: string;
  clock: () => Date;
  auditKey: Buffer;
  auditCheckpointEvery: number;
  log: Logger;
  scrub: Scrub;
  /** Chat write pacing (default 10 per second); only the memory benchmark raises it. */
  chatWritesPerSecond?: number | undefined;
}

export function buildStores({
  connections,
  prefix,
  clock,
  auditKey,
  auditCheckpointEvery,
  log,
  scrub,
  chatWritesPerSecond,
}: BuildStoresDeps): Stores {
  const { redis, bullmq } = connections;
  const outbox = createOutboxStore({ redis, prefix });
  const queues = createQueues({ connection: bullmq, prefix, replyOrder: outbox, log });
  // Every stored change refreshes the run's card (coalesced by the chat outbox).
  const store = createRunStore({
    redis,
    prefix,
    clock,
    onChanged: async ({ after }) => queues.refreshCard(after.id, after.version),
  });
  const pokes = createPokes({ redis, prefix });
  return {
    audit: createAuditLog({ redis, prefix, clock, key: auditKey, log, checkpointEvery: auditCheckpointEvery, scrub }),
    queues,
    store,
    index: createRunIndex({ redis, prefix }),
    followUps: createFollowUps({ redis, prefix }),
    pokes,
    outbox,
    chatWrites: createWriteLimiter({ redis, prefix, perSecond: chatWritesPerSecond ?? 10 }),
    etagCache: createEtagCache({ redis, prefix }),
    requiredChecksCache: createTtlCache({ redis, prefix, ttlSeconds: 600 }),
    claims: createClaims({ redis, prefix }),
    approvals: createApprovalStore({ redis, prefix }),
    localForge: createLocalForgeStore({ redis, prefix }),
    conversations: createAgentConversationStore({ redis, prefix, auditKey }),
    promotionQueue: createPromotionQueue({
      redis,
      prefix,
      clock,
      isActive: async (runId) => {
        const run = await store.get(runId);
        return run !== undefined && !isTerminal(run.state);
      },
      // A missed wake costs only latency: the run's gate polls as a fallback.
      wake: async (runId) => {
        await wakeRun({ store, pokes, queues }, runId).catch((error: unknown) => log.warn({ err: error, runId }, 'waking the next run of a promotion queue failed'));
      },
    }),
  };
}
