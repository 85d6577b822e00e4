import { PassThrough } from 'node:stream';
import { getHeapSpaceStatistics } from 'node:v8';
import { createShipgate, type Shipgate } from '../src/app/create-shipgate.js';
import { loadConfig } from '../src/config/config.js';
import { currentGate, type Run } from '../src/domain/run.js';
import { createLogger } from '../src/log.js';
import { DEPLOY_POLICY, deployEnv, deployPolicy, deployRun, enqueueDeployRun, fakeSha } from './deploy-world.js';

/**
 * shipgate in a process of its own for the memory section of the deploy benchmark (bench/deploy-bench.ts),
 * so that its heap is only the bot's: the fakes (Slack, the Kubernetes API server) stay in the
 * parent. Started with `--expose-gc`; the parent drives it over the IPC channel.
 */

export interface ChildInput {
  redisUrl: string;
  prefix: string;
  slackApiUrl: string;
  kubeconfig: string;
  chatWritesPerSecond: number;
  cardUpdateIntervalMs: number;
  /** The Freight the stage-gate half of the runs carries (it exists, and is never promoted). */
  holdFreight: string;
}

export type ChildRequest =
  | { id: number; op: 'create'; from: number; count: number }
  | { id: number; op: 'status' }
  | { id: number; op: 'heap' }
  | { id: number; op: 'heldRunsHeap' }
  | { id: number; op: 'stop' };

export interface ChildStatus {
  active: number;
  /** Active runs in state `waiting` whose current (deploy) gate has been looked at. */
  waiting: number;
  withCard: number;
  states: string;
  runJobs: Record<string, number>;
  chatJobs: Record<string, number>;
}

export type ChildReply =
  | { id: number; ok: true; status?: ChildStatus; heapUsed?: number; spaces?: Record<string, number>; bytesPerRun?: number }
  | { id: number; ok: false; error: string };

export const memoryRunId = (i: number): string => `sg-mem${String(i).padStart(5, '0')}`;
export const MEMORY_HOLD_SHA = fakeSha('memory/hold');

const input = JSON.parse(process.env['SHIPGATE_BENCH_CHILD'] ?? 'null') as ChildInput | null;
const gc = (globalThis as { gc?: () => void }).gc;

/** heapUsed after full collections. */
function collect(): number {
  if (gc === undefined) throw new Error('the bench child needs --expose-gc');
  for (let i = 0; i < 3; i++) gc();
  return process.memoryUsage().heapUsed;
}

async function main(config: ChildInput): Promise<void> {
  const policy = deployPolicy(config.redisUrl);
  const loaded = loadConfig(deployEnv(config.redisUrl, config.prefix, config.slackApiUrl, config.kubeconfig), { readFile: () => DEPLOY_POLICY });
  const log = createLogger({ level: 'silent', destination: new PassThrough() });
  // Production poll settings; only the chat pacing and the card spacing are changed (1,000 cards at 10 writes/s would take minutes).
  const app: Shipgate = createShipgate({ config: loaded, log, chatWritesPerSecond: config.chatWritesPerSecond, cardUpdateIntervalMs: config.cardUpdateIntervalMs });
  await app.start();

  const handle = async (request: ChildRequest): Promise<ChildReply> => {
    switch (request.op) {
      case 'create': {
        const now = new Date();
        for (let i = request.from; i < request.from + request.count; i++) {
          const id = memoryRunId(i);
          // Alternate: one waits at freight (no Freight carries its commit), the next at stage:dev (its Freight is never promoted).
          const spec = i % 2 === 0 ? { id, mergeSha: fakeSha(`memory/${id}`), userId: `U${300 + (i % 50)}` } : { id, mergeSha: MEMORY_HOLD_SHA, userId: `U${300 + (i % 50)}`, freight: { name: config.holdFreight } };
          await enqueueDeployRun(app, policy, deployRun(policy, spec, now));
        }
        return { id: request.id, ok: true };
      }
      case 'status': {
        const runs = await app.store.listActive();
        const states = new Map<string, number>();
        for (const run of runs) {
          const gate = currentGate(run);
          const where = gate === undefined ? run.state : `${run.state} at ${gate.name}`;
          states.set(where, (states.get(where) ?? 0) + 1);
        }
        const looked = (run: Run): boolean => run.state === 'waiting' && currentGate(run)?.summary !== undefined;
        return {
          id: request.id,
          ok: true,
          status: {
            active: runs.length,
            waiting: runs.filter(looked).length,
            withCard: runs.filter((run) => run.chat.card !== undefined).length,
            states: [...states].map(([state, count]) => `${count} ${state}`).join(', '),
            runJobs: await app.queues.runs.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'failed'),
            chatJobs: await app.queues.chat.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'failed', 'completed'),
          },
        };
      }
      case 'heap': {
        const heapUsed = collect();
        const spaces = Object.fromEntries(getHeapSpaceStatistics().map((space) => [space.space_name, space.space_used_size]));
        // Compiled code grows as the JIT warms to new paths, not with runs: the figure is the data spaces.
        const code = (spaces['code_space'] ?? 0) + (spaces['code_large_object_space'] ?? 0);
        return { id: request.id, ok: true, heapUsed: heapUsed - code, spaces };
      }
      case 'heldRunsHeap': {
        // The baseline: what a bot that kept its waiting runs in memory would hold (each run parsed from its JSON).
        const runs = await app.store.listActive();
        const texts = runs.map((run) => JSON.stringify(run));
        const before = collect();
        const held = new Map<string, Run>();
        for (const text of texts) {
          const run = JSON.parse(text) as Run;
          held.set(run.id, run);
        }
        const after = collect();
        const bytesPerRun = (after - before) / Math.max(1, held.size);
        held.clear();
        return { id: request.id, ok: true, bytesPerRun };
      }
      case 'stop':
        await app.stop();
        return { id: request.id, ok: true };
    }
  };

  process.on('message', (message: ChildRequest) => {
    handle(message).then(
      (reply) => {
        process.send?.(reply);
        if (message.op === 'stop') process.disconnect();
      },
      (error: unknown) => process.send?.({ id: message.id, ok: false, error: error instanceof Error ? (error.stack ?? error.message) : String(error) } satisfies ChildReply),
    );
  });
  process.send?.({ id: 0, ok: true } satisfies ChildReply);
}

if (input !== null) {
  main(input).catch((error: unknown) => {
    process.stderr.write(`bench child failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  });
}
