import { afterEach, describe, expect, it } from 'vitest';
import type { GateOutcome } from '../../src/domain/run.js';
import type { GateContext, GateStep } from '../../workers/gates/gate-step.js';
import { DISCORD_APP_ID, startTestBot, type TestBot } from '../helpers/bot.js';
import { buttonClick, callbackOf, sendInteraction } from '../helpers/discord-requests.js';
import type { DiscordMessage, DiscordServer } from '../helpers/discord-server.js';
import { eventually } from '../helpers/eventually.js';
import { DISCORD_ALICE, DISCORD_BOB, DISCORD_SHOP, discordShip, startWorld, type World } from '../helpers/world.js';

/**
 * Issue 13: the same runs, buttons and threads on Discord. The real bot serves POST
 * /discord/interactions, verifies each interaction's Ed25519 signature, and talks to a local
 * Discord REST v10 server through the real @discordjs/rest.
 */

const SHOP = `discord:${DISCORD_SHOP}`;
const POLICY = `
repos:
  acme/shop:
    channels: [${SHOP}]
    requesters: [discord:${DISCORD_ALICE}]
    checks: { test: test -f src/health.js }
budgets: { maxAgentTurns: 20, maxCiIterations: 3, maxTokensPerRun: 2000000, maxCostUsdPerRun: 10, maxRunMinutes: 60 }
`;
const FILES = { 'src/server.js': 'module.exports = {};\n' };

let world: World | undefined;
let bot: TestBot | undefined;
afterEach(async () => {
  const problems = (await world?.stop()) ?? [];
  world = undefined;
  const fakes = bot?.discord?.server.unexpected ?? [];
  await bot?.stop();
  bot = undefined;
  expect(problems).toEqual([]);
  expect(fakes).toEqual([]);
});

function step(decide: (context: GateContext) => Promise<GateOutcome> | GateOutcome): GateStep {
  return { run: async (context) => decide(context) };
}

const describeMessage = (m: DiscordMessage) => JSON.stringify(m.embeds);
/** The card: the channel's messages (top level). */
const cards = (server: DiscordServer) => server.messages(DISCORD_SHOP);
/** Replies in the thread started from the card (its id is the card's). */
const replies = (server: DiscordServer, card: DiscordMessage) => server.messages(card.id);
const buttonsOf = (m: DiscordMessage) => m.components.flatMap((row) => row.components);

function discordOf(b: TestBot): DiscordServer {
  const server = b.discord?.server;
  if (server === undefined) throw new Error('not a Discord bot');
  return server;
}

async function stubBot(
  name: string,
  steps: Record<string, GateStep>,
  extra: { discordRateLimitEvery?: number } = {},
): Promise<TestBot> {
  const started = await startTestBot({
    name,
    policy: POLICY,
    chat: 'discord',
    steps,
    cardUpdateIntervalMs: 200,
    ...extra,
  });
  discordOf(started).addChannel(DISCORD_SHOP, 'shop');
  bot = started;
  return started;
}

describe('Discord: /ship to PR and CI', { timeout: 120_000 }, () => {
  it('acks within 3 s, posts the card once with a Cancel button, and the gate replies in the thread started from it', async () => {
    const w = await startWorld({
      name: 'discord-flow',
      policy: POLICY,
      files: FILES,
      chat: 'discord',
      tuning: { firstPollMs: 100 },
    });
    world = w;
    w.model.script(
      {
        content: [
          {
            type: 'tool_use',
            id: 'c1',
            name: 'str_replace_based_edit_tool',
            input: { command: 'create', path: '/repo/src/health.js', file_text: "module.exports = () => 'ok';\n" },
          },
        ],
      },
      { content: [{ type: 'text', text: 'Added src/health.js with a /healthz handler.' }] },
    );
    const runId = await w.ship('acme/shop add a /healthz endpoint');
    const server = discordOf(w.bot);

    const card = await server.waitFor((s) => cards(s)[0], 10_000, 'the card');
    expect(buttonsOf(card).map((b) => [b.label, b.style, b.custom_id])).toEqual([['Cancel', 4, `cancel|${runId}`]]);
    expect(describeMessage(card)).toContain(runId);

    const sha = await eventually(
      async () => {
        const run = await w.bot.app.store.get(runId);
        return run?.gates.find((g) => g.name === 'ci')?.state === 'running'
          ? run.artifacts.agent?.commitSha
          : undefined;
      },
      'a pushed commit under CI',
      60_000,
    );
    w.github.setCheckRuns('acme/shop', sha, [{ name: 'test', conclusion: 'success' }]);
    await eventually(
      async () => (await w.bot.app.store.get(runId))?.gates.find((g) => g.name === 'ci')?.state === 'passed',
      'CI passed',
      30_000,
    );

    const thread = server.channel(card.id);
    expect(thread).toMatchObject({ type: 11, parent_id: DISCORD_SHOP });
    const shown = await server.waitFor(
      (s) => {
        const texts = replies(s, card).map(describeMessage);
        return ['agent', 'pr', 'ci'].every((gate) => texts.some((t) => t.includes(`**${gate}** passed`)))
          ? texts
          : undefined;
      },
      15_000,
      'agent, pr and ci replies',
    );
    for (const gate of ['agent', 'pr', 'ci'])
      expect(shown.filter((t) => t.includes(`**${gate}** passed`))).toHaveLength(1);
    expect(w.github.pulls('acme/shop')).toHaveLength(1);
    // One card, whatever was updated since; every bot message silent.
    expect(cards(server)).toHaveLength(1);
    expect(
      server.requests.filter(
        (r) => r.method === 'POST' && r.path === `/channels/${DISCORD_SHOP}/messages` && r.status === 200,
      ),
    ).toHaveLength(1);
  });
});

describe('Discord: buttons, signatures and rate limits', { timeout: 60_000 }, () => {
  const waiting = () => ({ agent: step(() => ({ kind: 'pending', summary: 'working', recheckAfterMs: 60_000 })) });

  it('Cancel by the requester cancels the run; a stranger’s click is refused to them alone', async () => {
    const b = await stubBot('discord-cancel', waiting());
    const server = discordOf(b);
    const { answer } = await discordShip(b, 'run', { repo: 'acme/shop', task: 'add a /healthz endpoint' });
    const runId = /sg-[a-z0-9]{8}/.exec(answer)?.[0] ?? '';
    const card = await server.waitFor((s) => cards(s)[0], 10_000, 'the card');
    const cancel = buttonsOf(card)[0]?.custom_id ?? '';
    const discord = b.discord!;

    const stranger = buttonClick(
      server,
      DISCORD_APP_ID,
      { userId: DISCORD_BOB },
      { channelId: DISCORD_SHOP },
      card.id,
      cancel,
    );
    const refused = await sendInteraction(discord.interactionsUrl, discord.keys, stranger.body);
    expect(callbackOf(refused)?.type).toBe(6);
    const refusal = await server.waitFor(
      (s) => s.webhookCalls.find((c) => c.token === stranger.token),
      10_000,
      'the refusal',
    );
    expect(refusal.body).toMatchObject({ flags: 64, allowed_mentions: { parse: [] } });
    expect(refusal.body.content).toContain('Only the requester');
    expect((await b.app.store.get(runId))?.state).not.toBe('cancelled');

    const mine = buttonClick(
      server,
      DISCORD_APP_ID,
      { userId: DISCORD_ALICE },
      { channelId: DISCORD_SHOP },
      card.id,
      cancel,
    );
    const clicked = await sendInteraction(discord.interactionsUrl, discord.keys, mine.body);
    expect(clicked.status).toBe(200);
    expect(callbackOf(clicked)?.type).toBe(6);
    await eventually(async () => (await b.app.store.get(runId))?.state === 'cancelled', 'run cancelled', 20_000);
    // The card shows it and loses its Cancel button.
    await server.waitFor(
      (s) =>
        cards(s)[0] !== undefined &&
        buttonsOf(cards(s)[0]!).length === 0 &&
        /cancel/i.test(describeMessage(cards(s)[0]!))
          ? true
          : undefined,
      10_000,
      'the card without buttons',
    );
    expect(cards(server)).toHaveLength(1);
  });

  it('answers PING, and refuses a bad, missing or stale signature with 401 without doing anything', async () => {
    const b = await stubBot('discord-signature', waiting());
    const server = discordOf(b);
    const discord = b.discord!;
    const ping = await sendInteraction(
      discord.interactionsUrl,
      discord.keys,
      JSON.stringify({ id: '1', type: 1, token: 't', application_id: DISCORD_APP_ID, version: 1 }),
    );
    expect(ping.status).toBe(200);
    expect(ping.json).toEqual({ type: 1 });

    const { slashCommand } = await import('../helpers/discord-requests.js');
    const command = slashCommand(
      server,
      DISCORD_APP_ID,
      { userId: DISCORD_ALICE },
      { channelId: DISCORD_SHOP },
      'run',
      { repo: 'acme/shop', task: 'add a /healthz endpoint' },
    );
    const forged = await sendInteraction(discord.interactionsUrl, discord.keys, command.body, {
      signature: 'ab'.repeat(64),
    });
    expect(forged.status).toBe(401);
    const missing = await sendInteraction(discord.interactionsUrl, discord.keys, command.body, { signature: null });
    expect(missing.status).toBe(401);
    const stale = String(Math.floor(Date.now() / 1000) - 3600);
    const old = await sendInteraction(discord.interactionsUrl, discord.keys, command.body, { timestamp: stale });
    expect(old.status).toBe(401);
    await new Promise((r) => setTimeout(r, 300));
    expect(await b.app.store.listActive()).toEqual([]);
    expect(server.requests).toEqual([]);
    expect(server.webhookCalls).toEqual([]);
  });

  it('rides over 429s and a lost answer: every message once (nonce + enforce_nonce)', async () => {
    const passes = {
      agent: step(() => ({ kind: 'passed', summary: 'agent ok' })),
      pr: step(() => ({ kind: 'passed', summary: 'pr ok' })),
      ci: step(() => ({ kind: 'pending', summary: 'waiting', recheckAfterMs: 60_000 })),
    };
    const b = await stubBot('discord-429', passes, { discordRateLimitEvery: 2 });
    const server = discordOf(b);
    // The card's create lands, but its answer is lost: @discordjs/rest retries the 502 with the same nonce.
    server.loseNextAnswer('POST /channels/:channel/messages');
    const { answer } = await discordShip(b, 'run', { repo: 'acme/shop', task: 'add a /healthz endpoint' });
    expect(answer).toMatch(/sg-[a-z0-9]{8}/);
    const card = await server.waitFor((s) => cards(s)[0], 15_000, 'the card');
    await server.waitFor(
      (s) =>
        ['agent ok', 'pr ok'].every((t) => replies(s, card).some((m) => describeMessage(m).includes(t)))
          ? true
          : undefined,
      20_000,
      'two replies',
    );
    await new Promise((r) => setTimeout(r, 500));
    expect(server.requests.some((r) => r.status === 429)).toBe(true);
    expect(server.requests.some((r) => r.status === 502)).toBe(true);
    expect(cards(server)).toHaveLength(1);
    for (const text of ['agent ok', 'pr ok'])
      expect(replies(server, card).filter((m) => describeMessage(m).includes(text))).toHaveLength(1);
  });
});
