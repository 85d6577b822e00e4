import { Queue } from 'bullmq';
import type { RedisOptions } from 'ioredis';
import type { Logger } from '../log.js';
import type { ScriptedJob } from './scripted-job.js';

/**
 * BullMQ queues and their typed jobs. Job ids are deterministic so that a
 * redelivered command, a retried step or a restarted worker adds nothing new
 * (BullMQ ignores an add whose id already exists). BullMQ forbids ':' in
 * custom ids, hence the dots.
 */

export const RUN_QUEUE = 'runs';
export const CHAT_QUEUE = 'chat';
/** Periodic upkeep shared by every worker: the reconcile of runs without a job (src/app/recover-runs.ts). */
export const MAINTENANCE_QUEUE = 'maintenance';

/** Move a run forward from its current gate. */
export interface AdvanceJob {
  runId: string;
}

export type ReplyContent =
  | { type: 'gate'; gate: string; outcome: 'passed' | 'failed' | 'skipped' | 'retry-from'; summary: string }
  | { type: 'ended' }
  /**
   * The agent's diagnosis of red deploy gate `stage` before fix forward `fix` (issue 11): the model's
   * account (scrubbed) and the bot's own list of the reads it made.
   */
  | { type: 'diagnosis'; stage: string; fix: number; text: string; looked: string[]; clusterUnavailable?: string | undefined }
  /** An outside system is out of reach and the run's job will try again (attempt `attempt` of `of`). */
  | { type: 'retrying'; gate: string; attempt: number; of: number; reason: string };

export type ChatJob =
  /** Bring the run's card up to at least `version` (posting the root message first if needed). */
  | { kind: 'card'; runId: string; version: number }
  /** One thread reply, posted at most once under `key`. */
  | { kind: 'reply'; runId: string; key: string; content: ReplyContent }
  /** The run's approval request `nonce`: posted once in the thread, then updated in place as it is decided. */
  | { kind: 'approval'; runId: string; nonce: string }
  /**
   * `/ship audit <run>`: the evidence summary as a thread reply and the JSON Lines export as a file
   * in the thread, each once per `request` (a digest of the command's delivery id); `requestedBy` is
   * who asked and `channel` where, for the audit event that records the export.
   */
  | { kind: 'evidence'; runId: string; request: string; requestedBy: string; channel: string };

export function advanceJobId(runId: string, seq: number): string {
  return `${runId}.${seq}`;
}

export interface Queues {
  runs: Queue<AdvanceJob>;
  chat: Queue<ChatJob>;
  /** Adds (or wakes) the run's current job: a delayed one is promoted, a missing one created. */
  wakeRun(runId: string, jobSeq: number): Promise<void>;
  /** Adds the run's job number `jobSeq` (due now) only when no job with its id exists. */
  ensureRunJob(runId: string, jobSeq: number): Promise<void>;
  /** Schedules the run's job number `jobSeq`, optionally after a delay. */
  scheduleRun(runId: string, jobSeq: number, delayMs?: number): Promise<void>;
  /**
   * The run's job number `jobSeq`, due now, as `scheduleRun` would add it, for a store script to add
   * in the same step as it stores the run (`/ship`: one Redis round trip before the ack).
   */
  runJob(runId: string, jobSeq: number): ScriptedJob;
  /**
   * The run's first card job as data for a store script: `/ship` stores it with the run. The card
   * job's name, data and options with its own id and no deduplication key (a script cannot set one);
   * test/integration/ship-redis-work.test.ts compares it with the same Queue.add.
   */
  cardJob(runId: string, version: number): ScriptedJob;
  refreshCard(runId: string, version: number): Promise<void>;
  reply(runId: string, key: string, content: ReplyContent): Promise<void>;
  /**
   * Brings the approval message of request `nonce` up to date. `stamp` names the state it must show
   * (e.g. `pending-1`): the job id includes it, so a retried caller adds nothing and a new state a new job.
   */
  approvalMessage(runId: string, nonce: string, stamp: string): Promise<void>;
  /** Queues one `/ship audit` answer; the same `request` again (a redelivered command) adds nothing. */
  evidence(job: { runId: string; request: string; requestedBy: string; channel: string }): Promise<void>;
  /** 1-based positions of waiting runs, oldest first. */
  queuePositions(): Promise<Map<string, number>>;
  close(): Promise<void>;
}

/** How often a run's job is tried before the run fails (the first try included). */
export const RUN_JOB_ATTEMPTS = 8;

const RUN_JOB_OPTIONS = {
  attempts: RUN_JOB_ATTEMPTS,
  backoff: { type: 'exponential', delay: 2_000 },
  removeOnComplete: true,
  removeOnFail: { age: 7 * 24 * 3600 },
} as const;

export const CHAT_JOB_OPTIONS = {
  attempts: 10,
  backoff: { type: 'exponential', delay: 1_000 },
  removeOnComplete: { age: 3600 },
  removeOnFail: { age: 7 * 24 * 3600 },
} as const;

/** Where the chat outbox keeps each run's reply order (src/store/outbox-store.ts): recorded as replies are enqueued. */
export interface ReplyOrder {
  enqueueReply(runId: string, key: string): Promise<void>;
}

/**
 * `base` (a JSON object's text) with `fields` (keys base lacks) added at its end: the job options as
 * JSON without spreading and stringifying the constant part again for every `/ship`.
 */
function jsonWith(base: string, fields: Record<string, string | number>): string {
  return `${base.slice(0, -1)},${JSON.stringify(fields).slice(1)}`;
}
const RUN_JOB_OPTIONS_JSON = JSON.stringify(RUN_JOB_OPTIONS);
const CHAT_JOB_OPTIONS_JSON = JSON.stringify(CHAT_JOB_OPTIONS);

/** A job's keys for ADD_STANDARD_JOB_LUA in `queue`: its hash, then the queue's own keys (computed once). */
function scriptedJobKeys(queue: { toKey(type: string): string }): (jobId: string) => ScriptedJob['keys'] {
  const own = [queue.toKey('wait'), queue.toKey('paused'), queue.toKey('meta'), queue.toKey('active'), queue.toKey('events'), queue.toKey('marker')] as const;
  return (jobId) => [queue.toKey(jobId), ...own];
}

export function createQueues({
  connection,
  prefix,
  replyOrder,
  log,
}: {
  connection: RedisOptions;
  prefix: string;
  replyOrder?: ReplyOrder | undefined;
  /** Where the queues' connection errors go; without it BullMQ writes them to the console. */
  log?: Logger | undefined;
}): Queues {
  const bullPrefix = `${prefix}:bull`;
  const runs = new Queue<AdvanceJob>(RUN_QUEUE, { connection, prefix: bullPrefix });
  const chat = new Queue<ChatJob>(CHAT_QUEUE, { connection, prefix: bullPrefix });
  if (log !== undefined) {
    for (const [name, queue] of [['runs', runs], ['chat', chat]] as const) {
      queue.on('error', (error) => log.error({ queue: name, err: error }, 'queue error'));
    }
  }
  const runKeys = scriptedJobKeys(runs);
  const chatKeys = scriptedJobKeys(chat);

  return {
    runs,
    chat,
    async wakeRun(runId, jobSeq) {
      const id = advanceJobId(runId, jobSeq);
      const job = await runs.getJob(id);
      if (job === undefined) {
        await runs.add('advance', { runId }, { ...RUN_JOB_OPTIONS, jobId: id });
        return;
      }
      const state = await job.getState();
      try {
        if (state === 'delayed') await job.promote();
        else if (state === 'failed') await job.retry('failed');
      } catch (error) {
        // Read, then act, races the job itself: a delayed job that became due (or a failed one retried)
        // in between is already on its way, which is all a wake wants.
        if ((await job.getState()) !== state) return;
        throw error;
      }
    },
    async ensureRunJob(runId, jobSeq) {
      if ((await runs.getJob(advanceJobId(runId, jobSeq))) !== undefined) return;
      await runs.add('advance', { runId }, { ...RUN_JOB_OPTIONS, jobId: advanceJobId(runId, jobSeq) });
    },
    async scheduleRun(runId, jobSeq, delayMs = 0) {
      await runs.add('advance', { runId }, { ...RUN_JOB_OPTIONS, jobId: advanceJobId(runId, jobSeq), delay: delayMs });
    },
    runJob(runId, jobSeq) {
      const jobId = advanceJobId(runId, jobSeq);
      // Name, data and options exactly as scheduleRun hands them to BullMQ (which stores them as JSON).
      const opts = jsonWith(RUN_JOB_OPTIONS_JSON, { jobId, delay: 0 });
      return { keys: runKeys(jobId), args: [jobId, 'advance', JSON.stringify({ runId } satisfies AdvanceJob), opts, String(Date.now())] };
    },
    cardJob(runId, version) {
      // The run's first card job: a plain job with its own id, since a script cannot set BullMQ's
      // deduplication key; refreshCard's deduplicated job may then run beside it, which the outbox
      // makes harmless (one root post under its lease, and only a newer stored version renders).
      const jobId = `${runId}.card.${version}`;
      const opts = jsonWith(CHAT_JOB_OPTIONS_JSON, { jobId });
      return { keys: chatKeys(jobId), args: [jobId, 'card', JSON.stringify({ kind: 'card', runId, version } satisfies ChatJob), opts, String(Date.now())] };
    },
    async refreshCard(runId, version) {
      // One card job per run at a time (BullMQ's deduplication): a change while the run's card job
      // waits or is delayed adds nothing, since that job renders whatever is stored when it runs; a
      // change while it is active is kept as one next job, created when the active one finishes, so
      // the change it missed is still shown. `version` only names, in logs, the change that asked.
      await chat.add('card', { kind: 'card', runId, version }, { ...CHAT_JOB_OPTIONS, deduplication: { id: `${runId}.card`, keepLastIfActive: true } });
    },
    async reply(runId, key, content) {
      // The reply's place in its thread, before the job exists: the outbox posts a run's replies in
      // this order (a retried enqueue keeps the first place).
      await replyOrder?.enqueueReply(runId, key);
      // BullMQ refuses `:` in custom ids, and stage gates are named `stage:<name>`; `~` cannot clash with
      // a gate name (policy names are lower-case words), and keys without `:` keep the ids they had.
      await chat.add(
        'reply',
        { kind: 'reply', runId, key, content },
        { ...CHAT_JOB_OPTIONS, jobId: `${runId}.reply.${key.replaceAll(':', '~')}` },
      );
    },
    async approvalMessage(runId, nonce, stamp) {
      await chat.add(
        'approval',
        { kind: 'approval', runId, nonce },
        { ...CHAT_JOB_OPTIONS, jobId: `${runId}.approval.${nonce}.${stamp.replaceAll(':', '~')}` },
      );
    },
    async evidence({ runId, request, requestedBy, channel }) {
      await chat.add('evidence', { kind: 'evidence', runId, request, requestedBy, channel }, { ...CHAT_JOB_OPTIONS, jobId: `${runId}.evidence.${request}` });
    },
    async queuePositions() {
      const waiting = await runs.getJobs(['waiting', 'prioritized'], 0, -1, true);
      const positions = new Map<string, number>();
      for (const job of waiting) {
        if (!positions.has(job.data.runId)) positions.set(job.data.runId, positions.size + 1);
      }
      return positions;
    },
    async close() {
      await settleInit([runs, chat]);
      await Promise.all([runs.close(), chat.close()]);
    },
  };
}

/**
 * Waits for BullMQ objects to finish connecting before they are closed. BullMQ's RedisConnection
 * re-emits a failed initialisation as an 'error' event after close() has removed every listener,
 * which surfaces as an unhandled "Connection is closed" rejection when a Queue or Worker is closed
 * while its handshake (CLIENT SETNAME, INFO) is still in flight. The composition root already waits
 * for that handshake in start(), so this matters for a stop during start (a signal). Bounded, so a
 * Redis outage cannot hold shutdown; the bound is generous because a loaded machine or a slow
 * Redis can take seconds (2 s was not enough: `npm start </dev/null` crashed).
 */
export async function settleInit(
  objects: readonly { waitUntilReady(): Promise<unknown> }[],
  timeoutMs = 10_000,
): Promise<void> {
  const timeout = new Promise<void>((resolve) => setTimeout(resolve, timeoutMs).unref());
  await Promise.race([Promise.all(objects.map((object) => object.waitUntilReady().catch(() => undefined))), timeout]);
}
