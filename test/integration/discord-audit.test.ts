import { createHmac } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { canonicalJson, GENESIS_HASH } from '../../src/audit/audit-log.js';
import type { GateOutcome } from '../../src/domain/run.js';
import type { GateContext, GateStep } from '../../workers/gates/gate-step.js';
import { TEST_AUDIT_KEY_BYTES } from '../helpers/audit-key.js';
import { startTestBot, type TestBot } from '../helpers/bot.js';
import type { DiscordMessage, DiscordServer } from '../helpers/discord-server.js';
import { eventually } from '../helpers/eventually.js';
import { DISCORD_ALICE, DISCORD_SHOP, discordShip } from '../helpers/world.js';

/**
 * Issue 13, `/ship audit <run-id>` on Discord: the evidence summary as one reply in the run's
 * thread and the JSON Lines export attached to a message there, sent by the real @discordjs/rest as
 * a multipart/form-data Create Message (payload_json plus files[0]), which the fake parses and
 * stores. The attached bytes are the run's part of the audit chain: every line's HMAC recomputes
 * with the audit key and links to the event before it in the whole log.
 */

const SHOP = `discord:${DISCORD_SHOP}`;
const POLICY = `
repos:
  acme/docs:
    channels: [${SHOP}]
    requesters: [discord:${DISCORD_ALICE}]
`;
const COMMIT = 'a1b2c3d4e5f6a7b8c9d0a1b2c3d4e5f6a7b8c9d0';
const MERGE = 'f0e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b6a7f8e9';
const PR_URL = 'https://github.example/acme/docs/pull/7';

let bot: TestBot | undefined;
afterEach(async () => {
  const fakes = bot?.discord?.server.unexpected ?? [];
  await bot?.stop();
  bot = undefined;
  expect(fakes).toEqual([]);
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
  agent: step((c) =>
    c.audit('commit.created', { commit: COMMIT, branch: 'shipgate/sg-fix-typo' }, COMMIT, { once: true }),
  ),
  pr: step((c) =>
    c.audit('pr.opened', { number: 7, url: PR_URL, head: 'shipgate/sg-fix-typo', commit: COMMIT }, '7', { once: true }),
  ),
  ci: step((c) => c.audit('ci.verdict', { commit: COMMIT, pr: 7, verdict: 'passed', summary: '3/3 checks' }, COMMIT)),
  merge: step((c) =>
    c.audit('pr.merged', { pr: 7, mergeCommit: MERGE, head: 'shipgate/sg-fix-typo' }, MERGE, { once: true }),
  ),
};

const unescape = (markdown: string): string => markdown.replace(/\\(.)/g, '$1');
const text = (m: DiscordMessage): string =>
  unescape([m.content, ...m.embeds.flatMap((e) => [e.title ?? '', e.description ?? ''])].join('\n'));

const exportedLine = z
  .object({
    seq: z.number().int(),
    type: z.string(),
    actor: z.string(),
    runId: z.string().nullable(),
    prevHash: z.string(),
    hash: z.string(),
  })
  .loose();

describe('/ship audit <run-id> on Discord', { timeout: 90_000 }, () => {
  it('answers at once, posts the summary in the thread and attaches the run’s verifying audit chain as a file, once', async () => {
    const b = await startTestBot({
      name: 'discord-audit',
      policy: POLICY,
      chat: 'discord',
      steps,
      cardUpdateIntervalMs: 200,
    });
    bot = b;
    const server: DiscordServer = b.discord!.server;
    server.addChannel(DISCORD_SHOP, 'shop');
    const started = await discordShip(b, 'run', { repo: 'acme/docs', task: 'fix the typo' });
    const runId = /sg-[a-z0-9]{8}/.exec(started.answer)?.[0] ?? '';
    await eventually(async () => (await b.app.store.get(runId))?.state === 'done', 'run done', 30_000);
    const card = await server.waitFor((s) => s.messages(DISCORD_SHOP)[0], 30_000, 'the card');
    // The run's own replies (four gates and the end) are in before the evidence.
    await server.waitFor((s) => (s.messages(card.id).length >= 5 ? true : undefined), 30_000, 'the gate replies');

    const { answer } = await discordShip(b, 'audit', { run: runId });
    expect(unescape(answer)).toContain(`Audit trail of ${runId}`);

    const upload = await server.waitFor(
      (s) => s.messages(card.id).find((m) => m.attachments.length > 0),
      30_000,
      'the evidence upload',
    );
    const summaries = server.messages(card.id).filter((m) => text(m).includes(`Evidence of ${runId}`));
    expect(summaries).toHaveLength(1);
    const summary = text(summaries[0]!);
    expect(summary).toContain(`<@${DISCORD_ALICE}>`);
    expect(summary).toContain(COMMIT.slice(0, 12));
    expect(summary).toContain(MERGE.slice(0, 12));
    expect(summary).toContain('chain verifies');

    // One file, sent as multipart (payload_json + files[0]) and linked to its attachment entry.
    expect(upload.attachments).toHaveLength(1);
    const file = upload.attachments[0]!;
    expect(file.filename).toMatch(new RegExp(`^${runId}-evidence-[0-9a-f]{16}\\.jsonl$`));
    expect(file.size).toBe(Buffer.byteLength(file.content, 'utf8'));
    expect(upload.author.id).toBe(server.botUserId);
    expect(upload.channel_id).toBe(card.id);

    // The bytes are the run's export as stored, through its own audit.exported record...
    expect(file.content).toBe(await b.app.audit.exportRun(runId));
    const lines = file.content
      .trim()
      .split('\n')
      .map((line) => exportedLine.parse(JSON.parse(line)));
    expect(lines.map((l) => l.type)).toEqual(
      expect.arrayContaining(['run.requested', 'commit.created', 'pr.opened', 'ci.verdict', 'pr.merged', 'run.done']),
    );
    expect(lines.at(-1)).toMatchObject({ type: 'audit.exported', actor: `discord:${DISCORD_ALICE}` });
    expect(lines.every((l) => l.runId === runId)).toBe(true);
    // ...and they verify: each line's HMAC recomputes with the key, and links to the event before it in the whole log.
    const all = await b.app.audit.allEvents();
    const hashBySeq = new Map(all.map((e) => [e.seq, e.hash]));
    for (const [index, raw] of file.content.trim().split('\n').entries()) {
      // The chain's scheme: HMAC-SHA256 under the audit key of the canonical JSON of every field but `hash`.
      const { hash: _hash, ...rest } = z.record(z.string(), z.unknown()).parse(JSON.parse(raw));
      const line = lines[index]!;
      expect(createHmac('sha256', TEST_AUDIT_KEY_BYTES).update(canonicalJson(rest)).digest('hex')).toBe(line.hash);
      expect(line.prevHash).toBe(line.seq === 1 ? GENESIS_HASH : hashBySeq.get(line.seq - 1));
    }
    expect(await b.app.audit.verify()).toMatchObject({ ok: true });

    // A retry of the chat job uploads nothing again; the same command redelivered neither.
    const jobs = await b.app.queues.chat.getJobs(['completed']);
    const job = jobs.find((j) => j.data.kind === 'evidence');
    if (job === undefined) throw new Error('no completed evidence job');
    const firstFinish = job.finishedOn ?? 0;
    await job.retry('completed');
    await eventually(
      async () => ((await b.app.queues.chat.getJob(job.id ?? ''))?.finishedOn ?? 0) > firstFinish,
      'retried job ran again',
      30_000,
    );
    expect(server.messages(card.id).filter((m) => m.attachments.length > 0)).toHaveLength(1);
    expect(server.messages(card.id).filter((m) => text(m).includes(`Evidence of ${runId}`))).toHaveLength(1);
  });
});
