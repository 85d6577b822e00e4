import { Redis } from 'ioredis';
import { afterEach, describe, expect, inject, it } from 'vitest';
import { eventually } from '../helpers/eventually.js';
import { sendSlashCommand } from '../helpers/slack-requests.js';
import { SIGNING_SECRET, startTestBot, type TestBot } from '../helpers/bot.js';

/**
 * Runs stored before the chat port became neutral recorded their card as
 * `chat: { channel, ts }`. A deployed bot must keep reading them: the card is
 * still edited in place and replies still go to its thread.
 */

let bot: TestBot | undefined;
let redis: Redis | undefined;
afterEach(async () => {
  expect(bot?.slack.unexpected ?? []).toEqual([]);
  await bot?.stop();
  redis?.disconnect();
  bot = undefined;
});

describe('runs stored with the old chat shape', () => {
  it('load with their card reference, keep their card and thread, and are written back in the new shape', async () => {
    bot = await startTestBot({ name: 'old-chat' });
    const b = bot;
    redis = new Redis(inject('redisUrl'));
    const ship = (text: string) => sendSlashCommand(b.eventsUrl, SIGNING_SECRET, { text, user_id: 'UALICE', channel_id: 'CSHOP' });
    const ack = await ship('acme/shop add a /healthz endpoint');
    const runId = /sg-[a-z0-9]{8}/.exec(JSON.stringify(ack.json))?.[0] ?? '';
    const root = await b.slack.waitFor((s) => s.messages('CSHOP').find((m) => m.thread_ts === undefined), 5_000, 'root card');
    // Settled: waiting at the agent gate (not configured here), with the card recorded.
    await eventually(async () => {
      const run = await b.app.store.get(runId);
      return run?.state === 'waiting' && run.chat.card === root.ts;
    }, 'run waiting with its card recorded', 10_000);

    // Rewrite the stored record as an older shipgate wrote it.
    const key = `${b.config.redisPrefix}:run:${runId}`;
    const json = (await redis.hget(key, 'json')) ?? '';
    expect(json).toContain(`"chat":{"channel":"CSHOP","card":"${root.ts}"}`);
    await redis.hset(key, 'json', json.replace(`"card":"${root.ts}"`, `"ts":"${root.ts}"`));

    expect((await b.app.store.get(runId))?.chat).toEqual({ channel: 'CSHOP', card: root.ts });

    // A change to the old run edits the same card and replies in its thread; no second card appears.
    const updatesBefore = root.updateCount;
    await ship(`cancel ${runId}`);
    await eventually(async () => (await b.app.store.get(runId))?.state === 'cancelled', 'run cancelled', 10_000);
    await b.slack.waitFor((s) => s.messages('CSHOP').find((m) => m.thread_ts === root.ts && m.ts !== root.ts && /cancelled/.test(JSON.stringify(m.blocks ?? []))), 10_000, 'cancelled reply in the thread');
    await eventually(async () => root.updateCount > updatesBefore, 'card edited in place', 10_000);
    // A thread's root carries its own ts as thread_ts once it has replies.
    expect(b.slack.messages('CSHOP').filter((m) => m.thread_ts === undefined || m.thread_ts === m.ts)).toHaveLength(1);
    expect(await redis.hget(key, 'json')).toContain(`"chat":{"channel":"CSHOP","card":"${root.ts}"}`);
  });
});
