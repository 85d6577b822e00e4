import { spawn } from 'node:child_process';
import { resolve } from 'node:path';
import { PassThrough } from 'node:stream';
import { z } from 'zod';
import { createShipgate } from '../src/app/create-shipgate.js';
import { isEntryModule } from '../src/cli/entry.js';
import { createLogger } from '../src/log.js';
import { startBaselineBoltApp } from './baseline-bolt.js';
import { startBaselineSlackApp } from './baseline-slack.js';
import { benchBotConfig, BOT_TOKEN, SIGNING_SECRET } from './bench-bot.js';

/**
 * One server of the ack benchmark in a Node process of its own: the bare node:http baseline, the
 * bare Bolt baseline, or one shipgate role (web: takes the commands; worker: posts the cards). The
 * parent (bench/ack-bench.ts) starts it, learns its URL, asks for its CPU time around a burst and
 * stops it, over the IPC channel. Each server under test thus has an event loop and a CPU account
 * of its own, shared with neither the load client nor the fake Slack.
 */

const inputSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('http') }),
  z.object({ kind: z.literal('bolt'), slackApiUrl: z.string() }),
  z.object({
    kind: z.literal('shipgate'),
    role: z.enum(['web', 'worker']),
    redisUrl: z.string(),
    prefix: z.string(),
    slackApiUrl: z.string(),
    auditKey: z.string(),
  }),
]);
export type AckServerInput = z.infer<typeof inputSchema>;

const requestSchema = z.object({ id: z.number().int(), op: z.enum(['cpu', 'stop']) });
type AckServerRequest = z.infer<typeof requestSchema>;

const replySchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('ready'), url: z.string() }),
  z.object({ type: z.literal('cpu'), id: z.number().int(), cpuMs: z.number() }),
  z.object({ type: z.literal('stopped'), id: z.number().int() }),
  z.object({ type: z.literal('error'), id: z.number().int(), message: z.string() }),
]);
type AckServerReply = z.infer<typeof replySchema>;

export interface AckServer {
  /** Where it takes `/ship` (the web role's and the baselines'); '' for the worker role. */
  url: string;
  /** CPU time (user + system) the process has used since it started, in ms. */
  cpuMs(): Promise<number>;
  stop(): Promise<void>;
}

const ENV_INPUT = 'SHIPGATE_BENCH_ACK_SERVER';

export async function startAckServer(input: AckServerInput): Promise<AckServer> {
  const child = spawn(process.execPath, ['--import', 'tsx', resolve(import.meta.dirname, 'ack-server-process.ts')], {
    cwd: resolve(import.meta.dirname, '..'),
    env: { ...process.env, [ENV_INPUT]: JSON.stringify(input) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const pending = new Map<number, { resolve: (reply: AckServerReply) => void; reject: (error: Error) => void }>();
  let ready: ((url: string) => void) | undefined;
  const started = new Promise<string>((resolveStart, rejectStart) => {
    ready = resolveStart;
    void exited.then((code) =>
      rejectStart(new Error(`the ${input.kind} server process exited (${String(code)}) before it was ready`)),
    );
  });
  child.on('message', (message: unknown) => {
    const reply = replySchema.parse(message);
    if (reply.type === 'ready') {
      ready?.(reply.url);
      return;
    }
    const waiter = pending.get(reply.id);
    pending.delete(reply.id);
    if (reply.type === 'error') waiter?.reject(new Error(`${input.kind} server process: ${reply.message}`));
    else waiter?.resolve(reply);
  });
  void exited.then((code) => {
    for (const waiter of pending.values())
      waiter.reject(new Error(`the ${input.kind} server process exited (${String(code)})`));
    pending.clear();
  });
  const startTimeout = setTimeout(() => child.kill('SIGKILL'), 60_000);
  let url: string;
  try {
    url = await started;
  } finally {
    clearTimeout(startTimeout);
  }
  let nextId = 1;
  const ask = (op: AckServerRequest['op']): Promise<AckServerReply> => {
    const id = nextId++;
    return new Promise((resolveReply, reject) => {
      pending.set(id, { resolve: resolveReply, reject });
      child.send({ id, op } satisfies AckServerRequest);
    });
  };
  let stopping: Promise<void> | undefined;
  return {
    url,
    async cpuMs() {
      const reply = await ask('cpu');
      if (reply.type !== 'cpu')
        throw new Error(`${input.kind} server process answered ${reply.type} to a CPU question`);
      return reply.cpuMs;
    },
    stop() {
      stopping ??= (async () => {
        if (child.exitCode === null && child.connected) {
          await Promise.race([ask('stop').catch(() => undefined), new Promise((r) => setTimeout(r, 15_000))]);
        }
        const killer = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await exited;
        clearTimeout(killer);
      })();
      return stopping;
    },
  };
}

async function serve(input: AckServerInput): Promise<{ url: string; close(): Promise<void> }> {
  switch (input.kind) {
    case 'http':
      return startBaselineSlackApp(SIGNING_SECRET);
    case 'bolt':
      return startBaselineBoltApp({
        signingSecret: SIGNING_SECRET,
        botToken: BOT_TOKEN,
        slackApiUrl: input.slackApiUrl,
      });
    case 'shipgate': {
      const config = benchBotConfig(input);
      // Silent, like the other two: a log line per command would be the logger's cost, not the ack's.
      const log = createLogger({ level: 'silent', destination: new PassThrough() });
      // Production settings: card updates every 3 s, chat writes paced at 10/s.
      const app = createShipgate({ config, log });
      await app.start();
      return {
        url: input.role === 'web' ? `http://127.0.0.1:${app.port()}/slack/events` : '',
        close: () => app.stop(),
      };
    }
  }
}

async function main(input: AckServerInput): Promise<void> {
  const server = await serve(input);
  const send = (reply: AckServerReply): void => {
    process.send?.(reply);
  };
  process.on('message', (message: unknown) => {
    const request = requestSchema.parse(message);
    if (request.op === 'cpu') {
      const usage = process.cpuUsage();
      send({ type: 'cpu', id: request.id, cpuMs: (usage.user + usage.system) / 1000 });
      return;
    }
    server.close().then(
      // Exits once the answer is out: a role's stray timer or socket must not keep it alive.
      () =>
        process.send?.({ type: 'stopped', id: request.id } satisfies AckServerReply, undefined, {}, () =>
          process.exit(0),
        ),
      (error: unknown) =>
        send({ type: 'error', id: request.id, message: error instanceof Error ? error.message : String(error) }),
    );
  });
  send({ type: 'ready', url: server.url });
}

if (isEntryModule(process.argv[1], import.meta.url)) {
  const raw = process.env[ENV_INPUT];
  main(inputSchema.parse(JSON.parse(raw ?? 'null'))).catch((error: unknown) => {
    process.stderr.write(
      `ack server process failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
    );
    process.exit(1);
  });
}
