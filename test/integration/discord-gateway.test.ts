import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/config.js';
import type { GateOutcome } from '../../src/domain/run.js';
import type { GateStep } from '../../workers/gates/gate-step.js';
import { DISCORD_APP_ID, DISCORD_TOKEN, startTestBot, type TestBot } from '../helpers/bot.js';
import { TEST_AUDIT_KEY } from '../helpers/audit-key.js';
import { INTENTS } from '../helpers/discord-gateway.js';
import type { DiscordMessage, DiscordServer } from '../helpers/discord-server.js';
import { eventually } from '../helpers/eventually.js';
import { DISCORD_ALICE, DISCORD_BOB, DISCORD_SHOP, discordShip } from '../helpers/world.js';

/**
 * Issue 13, thread mentions over the Gateway (`DISCORD_GATEWAY=1`): the real @discordjs/ws
 * WebSocketManager, pointed at the fake Gateway through GET /gateway/bot on the REST fake, connects
 * (HELLO, IDENTIFY, READY, heartbeats acknowledged), and a person's MESSAGE_CREATE in a run's
 * thread that mentions the bot becomes a follow-up for that run, as a Slack thread mention does.
 * The fake blanks message content for a session without MESSAGE_CONTENT, as Discord does, except
 * where the bot is mentioned: that is all shipgate needs, so it asks for no privileged intent.
 */

const SHOP = `discord:${DISCORD_SHOP}`;
const POLICY = `
repos:
  acme/shop:
    channels: [${SHOP}]
    requesters: [discord:${DISCORD_ALICE}, discord:${DISCORD_BOB}]
budgets: { maxAgentTurns: 20, maxCiIterations: 3, maxTokensPerRun: 2000000, maxCostUsdPerRun: 10, maxRunMinutes: 60 }
`;
/** Another bot in the server (a CI notifier, say). */
const OTHER_BOT = '1310000000000000290';

let bot: TestBot | undefined;
afterEach(async () => {
  const fakes = bot?.discord?.server.unexpected ?? [];
  await bot?.stop();
  bot = undefined;
  expect(fakes).toEqual([]);
});

/** The agent gate never finishes: the run stays where a follow-up is queued for the agent. */
const waiting: Record<string, GateStep> = {
  agent: { run: async (): Promise<GateOutcome> => ({ kind: 'pending', summary: 'working', recheckAfterMs: 60_000 }) },
};

function discordOf(b: TestBot): DiscordServer {
  const server = b.discord?.server;
  if (server === undefined) throw new Error('not a Discord bot');
  return server;
}

/** The bot's replies to one message (message_reference), in the thread. */
const answersTo = (server: DiscordServer, thread: string, message: DiscordMessage): DiscordMessage[] =>
  server
    .messages(thread)
    .filter((m) => m.author.id === server.botUserId && m.message_reference?.message_id === message.id);
const unescape = (markdown: string): string => markdown.replace(/\\(.)/g, '$1');

describe('Discord Gateway: thread mentions', { timeout: 90_000 }, () => {
  it('connects with the real WebSocketManager (GUILD_MESSAGES only); a mention by the requester in the run’s thread is a follow-up, once; everything else is ignored or refused', async () => {
    const b = await startTestBot({
      name: 'discord-gateway',
      policy: POLICY,
      chat: 'discord',
      steps: waiting,
      cardUpdateIntervalMs: 200,
      env: { DISCORD_GATEWAY: '1' },
    });
    bot = b;
    const server = discordOf(b);
    server.addChannel(DISCORD_SHOP, 'shop');

    // Identified, READY, and beating: the second acknowledged heartbeat comes a full interval after READY.
    const session = await server.waitFor(
      (s) => s.gateway.sessions.find((x) => x.identify !== undefined && x.heartbeats >= 2),
      30_000,
      'an identified session with heartbeats',
    );
    expect(server.requests.some((r) => r.method === 'GET' && r.path === '/gateway/bot' && r.status === 200)).toBe(true);
    expect(session.query).toBe('v=10&encoding=json');
    expect(session.identify).toMatchObject({ token: 'discord-test-bot-token-not-real', shard: [0, 1] });
    // Not privileged: the fake would have closed the session with 4014.
    expect(session.identify?.intents).toBe(INTENTS.guildMessages);
    expect(session.closedWith).toBeUndefined();

    const { answer } = await discordShip(b, 'run', { repo: 'acme/shop', task: 'add a /healthz endpoint' });
    const runId = /sg-[a-z0-9]{8}/.exec(answer)?.[0] ?? '';
    const card = await server.waitFor((s) => s.messages(DISCORD_SHOP)[0], 30_000, 'the card');
    const thread = await server.waitFor(
      (s) => (s.channel(card.id) === undefined ? undefined : card.id),
      30_000,
      'the card thread',
    );
    // The outbox records where the card lives (the thread index) just after the post returns.
    await eventually(async () => (await b.app.store.get(runId))?.chat.card === card.id, 'the card recorded on the run');
    const ping = `<@${server.botUserId}>`;
    const alice = { id: DISCORD_ALICE, username: 'alice' };

    // Ignored: no mention; a mention in the channel, not the thread; a bot's mention; the bot's own posts (dispatched too).
    const quiet = server.postUserMessage(thread, alice, 'this looks good so far');
    const inChannel = server.postUserMessage(DISCORD_SHOP, alice, `${ping} please also add a test`, {
      mentions: [server.botUserId],
    });
    const otherBot = server.postUserMessage(
      thread,
      { id: OTHER_BOT, username: 'ci-bot', bot: true },
      `${ping} build #12 is green`,
      { mentions: [server.botUserId] },
    );

    // The requester's mention in the thread: queued for the agent, answered as a reply to it.
    const instruction = server.postUserMessage(
      thread,
      alice,
      `${ping} also add a test for <@${DISCORD_BOB}>'s edge case`,
      { mentions: [server.botUserId, DISCORD_BOB] },
    );
    const [reply] = await server.waitFor(
      (s) => (answersTo(s, thread, instruction).length > 0 ? answersTo(s, thread, instruction) : undefined),
      30_000,
      'the answer to the mention',
    );
    expect(unescape(reply?.content ?? '')).toContain(`Queued for the agent of run ${runId}`);
    const followUps = await eventually(async () => {
      const events = (await b.app.audit.eventsForRun(runId)).filter((e) => e.type === 'run.follow_up');
      return events.length > 0 ? events : undefined;
    }, 'the follow-up recorded');
    expect(followUps.map((e) => [e.actor, e.data['text']])).toEqual([
      [`discord:${DISCORD_ALICE}`, `also add a test for @${DISCORD_BOB}'s edge case`],
    ]);

    // The Gateway delivers the same message again (a resumed session replays it): nothing new.
    server.gateway.messageCreated({
      ...instruction,
      guild_id: server.guildId,
      mentions: [{ id: server.botUserId, username: 'shipgate', bot: true }],
    });

    // Someone else (allowed to request runs, but not this run's requester): refused and audited, in the thread.
    const bobsTry = server.postUserMessage(
      thread,
      { id: DISCORD_BOB, username: 'bob' },
      `${ping} drop the tests instead`,
      { mentions: [server.botUserId] },
    );
    const [refusal] = await server.waitFor(
      (s) => (answersTo(s, thread, bobsTry).length > 0 ? answersTo(s, thread, bobsTry) : undefined),
      30_000,
      'the refusal',
    );
    expect(unescape(refusal?.content ?? '')).toContain(
      `Only the requester (<@${DISCORD_ALICE}>) can instruct this run's agent`,
    );

    // The refusal was audited before it was answered; the replayed delivery recorded nothing again.
    const events = await b.app.audit.eventsForRun(runId);
    expect(events.filter((e) => e.type === 'run.follow_up')).toHaveLength(1);
    expect(events.filter((e) => e.type === 'command.refused').map((e) => e.actor)).toEqual([`discord:${DISCORD_BOB}`]);

    // Stopping waits for every message being handled, and closes the session normally.
    await b.stop();
    bot = undefined;
    expect(session.closedWith).toBe(1000);
    expect(server.unexpected).toEqual([]);
    for (const ignored of [quiet, inChannel, otherBot]) {
      expect(answersTo(server, thread, ignored)).toEqual([]);
      expect(answersTo(server, DISCORD_SHOP, ignored)).toEqual([]);
    }
    expect(answersTo(server, thread, instruction)).toHaveLength(1);
    expect(answersTo(server, thread, bobsTry)).toHaveLength(1);
    // The bot never answered itself: every reply it posted in the thread answers a person.
    const botReplies = server
      .messages(thread)
      .filter((m) => m.author.id === server.botUserId && m.message_reference !== undefined);
    expect(botReplies).toHaveLength(2);
  });

  it('without DISCORD_GATEWAY the bot never opens a Gateway session', async () => {
    const b = await startTestBot({ name: 'discord-no-gateway', policy: POLICY, chat: 'discord', steps: waiting });
    bot = b;
    const server = discordOf(b);
    server.addChannel(DISCORD_SHOP, 'shop');
    // A command round trip: the bot is up and answering.
    await discordShip(b, 'help', {});
    expect(server.gateway.sessions).toEqual([]);
    expect(server.requests.filter((r) => r.path === '/gateway/bot')).toEqual([]);
  });
});

describe('DISCORD_GATEWAY', () => {
  const discord = {
    DISCORD_PUBLIC_KEY: 'ab'.repeat(32),
    DISCORD_BOT_TOKEN: DISCORD_TOKEN,
    DISCORD_APPLICATION_ID: DISCORD_APP_ID,
    SHIPGATE_AUDIT_KEY: TEST_AUDIT_KEY,
  };
  const load = (env: Record<string, string>) => loadConfig(env, { readFile: () => POLICY });
  function problems(env: Record<string, string>): string {
    try {
      load(env);
    } catch (error) {
      if (error instanceof ConfigError) return error.problems.join('\n');
      throw error;
    }
    return '';
  }

  it('is off unless set to 1, and 1 turns the Gateway on for the Discord chat', () => {
    expect(load(discord).discord?.gateway).toBe(false);
    expect(load({ ...discord, DISCORD_GATEWAY: '0' }).discord?.gateway).toBe(false);
    expect(load({ ...discord, DISCORD_GATEWAY: '1' }).discord?.gateway).toBe(true);
  });
  it('names the key and how to fix it for any other value, and for 1 without Discord', () => {
    const wrong = problems({ ...discord, DISCORD_GATEWAY: 'yes' });
    expect(wrong).toContain('DISCORD_GATEWAY');
    expect(wrong).toContain('must be 1 or 0');
    expect(wrong).toContain('Fix: set it to 1');
    const alone = problems({ DISCORD_GATEWAY: '1', SHIPGATE_AUDIT_KEY: TEST_AUDIT_KEY });
    expect(alone).toContain('DISCORD_GATEWAY');
    expect(alone).toContain('Discord is not configured');
  });
});
