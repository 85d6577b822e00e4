import { PassThrough } from 'node:stream';
import { z } from 'zod';
import { createConsoleChat } from '../src/adapters/console/console-chat.js';
import { createUnsandboxed } from '../src/adapters/sandbox/unsandboxed.js';
import { buildStores } from '../src/app/build-stores.js';
import { openConnections, waitForRedis } from '../src/app/connections.js';
import { resolveAuditKey } from '../src/app/resolve-audit-key.js';
import { createWorkerRole, type RecoverySettings } from '../src/app/worker-role.js';
import { loadConfig, secretValues } from '../src/config/config.js';
import type { GateOutcome } from '../src/domain/run.js';
import { createLogger } from '../src/log.js';
import { createMetrics } from '../src/metrics.js';
import { createCancellation } from '../src/queue/cancellation.js';
import { createScrubber } from '../src/security/scrubber.js';
import type { GateStep } from '../workers/gates/gate-step.js';

/**
 * One shipgate worker in a process of its own for the recovery benchmark (bench/recovery-bench.ts),
 * which SIGKILLs it. It is shipgate's worker role as `SHIPGATE_ROLE=worker` runs it — the run, chat
 * and maintenance BullMQ workers with the given lock and stall settings, the real run processor,
 * chat outbox and Redis stores — composed without the Slack, GitHub, Kubernetes and model adapters,
 * whose loading would make each of the benchmark's ~50 process starts three times as costly and
 * which play no part in handing a job over. The agent gate's step is replaced by one that tells the
 * parent when it starts (the run is moving in this process) and then holds until the parent
 * releases it; the console chat writes the cards and replies nowhere.
 */

export const RECOVERY_POLICY = `
repos:
  acme/docs: {}
limits: { activeRunsPerUser: 1000, activeRuns: 10000 }
`;

const recoverySchema = z.object({
  lockDuration: z.number().int().positive(),
  stalledInterval: z.number().int().positive(),
  maxStalledCount: z.number().int().nonnegative(),
});
const inputSchema = z.object({
  redisUrl: z.string(),
  prefix: z.string(),
  auditKey: z.string(),
  recovery: recoverySchema,
});
export type ChildInput = z.infer<typeof inputSchema>;

export type ChildRequest = { op: 'release'; runId: string } | { op: 'stop' };
const requestSchema = z.discriminatedUnion('op', [
  z.object({ op: z.literal('release'), runId: z.string() }),
  z.object({ op: z.literal('stop') }),
]);

/** `step`: the agent step started for the run in this process, at `at` (Date.now()). */
export type ChildEvent =
  | { type: 'ready'; pid: number }
  | { type: 'step'; runId: string; at: number; pid: number }
  | { type: 'error'; error: string };
export const childEventSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('ready'), pid: z.number() }),
  z.object({ type: z.literal('step'), runId: z.string(), at: z.number(), pid: z.number() }),
  z.object({ type: z.literal('error'), error: z.string() }),
]);

const send = (event: ChildEvent): void => {
  process.send?.(event);
};

async function main(input: ChildInput): Promise<void> {
  const config = loadConfig(
    {
      REDIS_URL: input.redisUrl,
      SHIPGATE_REDIS_PREFIX: input.prefix,
      SHIPGATE_AUDIT_KEY: input.auditKey,
      SHIPGATE_ROLE: 'worker',
      LOG_LEVEL: 'silent',
    },
    { readFile: () => RECOVERY_POLICY },
  );
  const log = createLogger({ level: 'silent', destination: new PassThrough() });
  const clock = () => new Date();
  const connections = openConnections({ url: config.redisUrl, subscribe: true, log });
  await waitForRedis(connections.redis, config.redisUrl);
  const scrub = createScrubber(secretValues(config)).scrub;
  const stores = buildStores({
    connections,
    prefix: config.redisPrefix,
    clock,
    auditKey: resolveAuditKey(config.auditKey, log),
    auditCheckpointEvery: config.auditCheckpointEvery,
    log,
    scrub,
  });
  const cancellation = await createCancellation({
    publisher: connections.redis,
    subscriber: connections.subscriber,
    prefix: config.redisPrefix,
  });
  const output = new PassThrough();
  output.resume();
  const chat = createConsoleChat({ input: new PassThrough(), output, command: config.policy.command });

  const held = new Map<string, (outcome: GateOutcome) => void>();
  const hold: GateStep = {
    run({ run, signal }) {
      send({ type: 'step', runId: run.id, at: Date.now(), pid: process.pid });
      return new Promise<GateOutcome>((resolve, reject) => {
        held.set(run.id, resolve);
        signal.addEventListener(
          'abort',
          () => reject(signal.reason instanceof Error ? signal.reason : new Error('aborted')),
          { once: true },
        );
      });
    },
  };
  const recovery: RecoverySettings = input.recovery;
  const worker = createWorkerRole({
    policy: config.policy,
    stores,
    chat: chat.port,
    steps: { agent: hold },
    notConfigured: {
      pr: 'not part of the recovery benchmark',
      ci: 'not part of the recovery benchmark',
      merge: 'not part of the recovery benchmark',
    },
    sandbox: createUnsandboxed(),
    cancellation,
    onRunEnded: async () => undefined,
    redis: connections.redis,
    bullmq: connections.bullmq,
    prefix: config.redisPrefix,
    clock,
    log,
    metrics: createMetrics(),
    scrub,
    recovery,
  });
  await worker.start();

  process.on('message', (message: unknown) => {
    const parsed = requestSchema.safeParse(message);
    if (!parsed.success) return;
    const request = parsed.data;
    if (request.op === 'release') {
      // The run has been measured: its step fails, the run ends and the job completes, so this
      // worker holds nothing the next kill would hand over with it.
      held.get(request.runId)?.({ kind: 'failed', summary: 'released by the recovery benchmark' });
      held.delete(request.runId);
      return;
    }
    void (async () => {
      await worker.close();
      await cancellation.close();
      await stores.audit.close();
      await stores.queues.close();
      await connections.close();
      process.disconnect();
    })();
  });
  send({ type: 'ready', pid: process.pid });
}

const raw = process.env['SHIPGATE_BENCH_CHILD'];
if (raw !== undefined) {
  main(inputSchema.parse(JSON.parse(raw))).catch((error: unknown) => {
    send({ type: 'error', error: error instanceof Error ? (error.stack ?? error.message) : String(error) });
    process.stderr.write(
      `recovery bench child failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
    );
    process.exit(1);
  });
}
