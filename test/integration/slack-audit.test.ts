import { PassThrough } from 'node:stream';
import { Redis } from 'ioredis';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { z } from 'zod';
import { main as auditCli } from '../../src/cli/audit-cli.js';
import type { GateOutcome } from '../../src/domain/run.js';
import type { GateContext, GateStep } from '../../workers/gates/gate-step.js';
import { TEST_AUDIT_KEY } from '../helpers/audit-key.js';
import { SIGNING_SECRET, startTestBot, type TestBot } from '../helpers/bot.js';
import { eventually } from '../helpers/eventually.js';
import { sendSlashCommand } from '../helpers/slack-requests.js';
import type { SlackMessage } from '../helpers/slack-server.js';

/**
 * Issue 10, `/ship audit <run-id>` over the real Bolt app and WebClient: the evidence summary as one
 * reply in the run's thread and the JSON Lines export as one file in it (files.uploadV2 against the
 * fake Web API), byte for byte what `npm run audit-log -- export` prints.
 */

const POLICY = `
repos:
  acme/docs: {}
`;
const COMMIT = 'a1b2c3d4e5f6a7b8c9d0a1b2c3d4e5f6a7b8c9d0';
const MERGE = 'f0e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b6a7f8e9';
const PR_URL = 'https://github.example/acme/docs/pull/7';

let bot: TestBot | undefined;
afterEach(async () => {
  expect(bot?.slack.unexpected ?? []).toEqual([]);
  await bot?.stop();
  bot = undefined;
});

/** A gate that records its evidence through the gate's real audit hook, then passes. */
function step(record: (context: GateContext) => Promise<void>): GateStep {
  return {
    async run(context): Promise<GateOutcome> {
      await record(context);
      return { kind: 'passed', summary: `${context.gate.name} ok` };
    },
  };
}

const steps = {
  agent: step((c) => c.audit('commit.created', { commit: COMMIT, branch: 'shipgate/sg-fix-typo' }, COMMIT, { once: true })),
  pr: step((c) => c.audit('pr.opened', { number: 7, url: PR_URL, head: 'shipgate/sg-fix-typo', commit: COMMIT }, '7', { once: true })),
  ci: step((c) => c.audit('ci.verdict', { commit: COMMIT, pr: 7, verdict: 'passed', summary: '3/3 checks' }, COMMIT)),
  merge: step((c) => c.audit('pr.merged', { pr: 7, mergeCommit: MERGE, head: 'shipgate/sg-fix-typo' }, MERGE, { once: true })),
};

const ackSchema = z.object({ response_type: z.literal('ephemeral'), text: z.string() });

async function command(b: TestBot, text: string, extra: { trigger_id?: string; user_id?: string } = {}) {
  const result = await sendSlashCommand(b.eventsUrl, SIGNING_SECRET, { text, user_id: 'UALICE', channel_id: 'CDOCS', ...extra });
  expect(result.status).toBe(200);
  expect(result.elapsedMs).toBeLessThan(3_000);
  return ackSchema.parse(result.json).text;
}

async function finishedRun(b: TestBot): Promise<{ runId: string; root: SlackMessage }> {
  const runId = /sg-[a-z0-9]{8}/.exec(await command(b, 'acme/docs fix the typo'))?.[0];
  if (runId === undefined) throw new Error('no run id');
  await eventually(async () => (await b.app.store.get(runId))?.state === 'done', 'run done', 10_000);
  const root = await b.slack.waitFor((s) => s.messages('CDOCS').find((m) => m.thread_ts === undefined || m.thread_ts === m.ts), 5_000, 'root card');
  // The run's own replies (four gates and the end) are in before the evidence, so nothing else moves.
  await b.slack.waitFor((s) => s.messages('CDOCS').filter((m) => m.thread_ts === root.ts && m.ts !== root.ts).length >= 5, 5_000, 'gate replies');
  return { runId, root };
}

const text = (message: SlackMessage): string => `${message.text ?? ''} ${JSON.stringify(message.blocks ?? [])}`;
const evidenceReplies = (b: TestBot, root: SlackMessage, runId: string) =>
  b.slack.messages('CDOCS').filter((m) => m.thread_ts === root.ts && m.ts !== root.ts && (m.text ?? '').startsWith(`Evidence of ${runId}`));

function capture(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  let out = '';
  stream.on('data', (chunk: Buffer) => {
    out += chunk.toString('utf8');
  });
  return { stream, text: () => out };
}

/** `npm run audit-log -- export <runId>`, in-process with the bot's environment. */
async function cliExport(b: TestBot, runId: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const stdout = capture();
  const stderr = capture();
  const env = { REDIS_URL: inject('redisUrl'), SHIPGATE_REDIS_PREFIX: b.config.redisPrefix, SHIPGATE_AUDIT_KEY: TEST_AUDIT_KEY };
  const code = await auditCli(['export', runId], env, { stdout: stdout.stream, stderr: stderr.stream });
  await new Promise((r) => setImmediate(r));
  return { code, stdout: stdout.text(), stderr: stderr.text() };
}

describe('/ship audit <run-id>', () => {
  it('posts the chain of custody in the run’s thread and attaches the export, once, byte-identical to the CLI export', async () => {
    bot = await startTestBot({ name: 'audit', policy: POLICY, steps, cardUpdateIntervalMs: 200 });
    const b = bot;
    const { runId, root } = await finishedRun(b);

    const ack = await command(b, `audit ${runId}`, { trigger_id: 'audit.1' });
    expect(ack).toContain(`Audit trail of ${runId}`);
    expect(ack).toContain('on their way');

    const [upload] = await b.slack.waitFor((s) => (s.uploads().length > 0 ? s.uploads() : undefined), 10_000, 'evidence upload');
    const summaries = evidenceReplies(b, root, runId);
    expect(summaries).toHaveLength(1);
    const summary = text(summaries[0]!);
    expect(summary).toContain('<@UALICE>');
    expect(summary).toContain(COMMIT.slice(0, 12));
    expect(summary).toContain(PR_URL);
    expect(summary).toContain(MERGE.slice(0, 12));
    expect(summary).toContain('chain verifies');
    expect(summary).toContain('every link present');

    expect(upload).toMatchObject({ channel: 'CDOCS', thread_ts: root.ts });
    expect(upload?.filename).toMatch(new RegExp(`^${runId}-evidence-[0-9a-f]{16}\\.jsonl$`));
    // The file is the run's export through its own audit.exported record, exactly as the CLI prints it.
    const cli = await cliExport(b, runId);
    expect(cli.code).toBe(0);
    expect(upload?.bytes.toString('utf8')).toBe(cli.stdout);
    expect(upload?.bytes.equals(Buffer.from(await b.app.audit.exportRun(runId), 'utf8'))).toBe(true);
    const lines = (upload?.bytes.toString('utf8') ?? '').trim().split('\n').map((line) => z.object({ type: z.string(), actor: z.string() }).parse(JSON.parse(line)));
    expect(lines.map((l) => l.type)).toEqual(expect.arrayContaining(['run.requested', 'commit.created', 'pr.opened', 'ci.verdict', 'pr.merged', 'run.done']));
    expect(lines.at(-1)).toEqual({ type: 'audit.exported', actor: 'UALICE' });

    // A retry of the same chat job (BullMQ retrying it, or a worker that died after the upload) and a
    // redelivery of the command post nothing and upload nothing again.
    const jobs = await b.app.queues.chat.getJobs(['completed']);
    const job = jobs.find((j) => j.data.kind === 'evidence');
    if (job === undefined) throw new Error('no completed evidence job');
    const firstFinish = job.finishedOn ?? 0;
    await job.retry('completed');
    await command(b, `audit ${runId}`, { trigger_id: 'audit.1' });
    await eventually(async () => ((await b.app.queues.chat.getJob(job.id ?? ''))?.finishedOn ?? 0) > firstFinish, 'retried job ran again', 5_000);
    await new Promise((r) => setTimeout(r, 300));
    expect(b.slack.uploads()).toHaveLength(1);
    expect(evidenceReplies(b, root, runId)).toHaveLength(1);
    expect((await b.app.audit.eventsForRun(runId)).filter((e) => e.type === 'audit.exported')).toHaveLength(1);

    // Asking again later is a new export: a second summary and file, which now include the first export.
    await command(b, `audit ${runId}`, { trigger_id: 'audit.2' });
    await b.slack.waitFor((s) => s.uploads().length === 2, 10_000, 'second upload');
    expect(evidenceReplies(b, root, runId)).toHaveLength(2);
    expect(b.slack.uploads()[1]?.bytes.toString('utf8')).toBe((await cliExport(b, runId)).stdout);
  });

  it('answers an unknown run id clearly and uploads nothing', async () => {
    bot = await startTestBot({ name: 'audit-unknown', policy: POLICY, steps });
    const ack = await command(bot, 'audit sg-00000000');
    expect(ack).toContain('There is no run sg-00000000');
    await new Promise((r) => setTimeout(r, 500));
    expect(bot.slack.uploads()).toEqual([]);
    expect(bot.slack.callsOf('files.getUploadURLExternal')).toEqual([]);
    expect(bot.slack.callsOf('chat.postMessage')).toEqual([]);
  });

  it('reports a tampered chain as not verifying', async () => {
    bot = await startTestBot({ name: 'audit-tamper', policy: POLICY, steps, cardUpdateIntervalMs: 200 });
    const b = bot;
    const { runId, root } = await finishedRun(b);
    // Someone with write access to Redis but not the key rewrites what was asked for.
    const redis = new Redis(inject('redisUrl'));
    try {
      const logKey = `${b.config.redisPrefix}:audit:log`;
      const rows = await redis.lrange(logKey, 0, -1);
      const index = rows.findIndex((row) => row.includes('"run.requested"') && row.includes(runId));
      expect(index).toBeGreaterThanOrEqual(0);
      await redis.lset(logKey, index, (rows[index] ?? '').replace('fix the typo', 'delete the database'));
    } finally {
      await redis.quit();
    }

    await command(b, `audit ${runId}`);
    await b.slack.waitFor((s) => s.uploads().length === 1, 10_000, 'evidence upload');
    const summaries = evidenceReplies(b, root, runId);
    expect(summaries).toHaveLength(1);
    const summary = text(summaries[0]!);
    expect(summary).toContain('does not verify');
    expect(summary).not.toContain('chain verifies');
    expect(summary).toMatch(/broken at event #\d+ \(run\.requested\)/);
  });
});
