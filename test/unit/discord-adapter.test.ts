import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { composeChats, type ChatAdapter } from '../../src/app/build-chat.js';
import { main as register } from '../../src/cli/discord-register.js';
import { loadConfig } from '../../src/config/config.js';
import { mapAction, mapCommand, interactionSchema } from '../../src/adapters/discord/discord-interactions.js';
import { escapeMarkdown, toDiscordMarkdown, truncateMarkdown } from '../../src/adapters/discord/discord-markdown.js';
import {
  decodeCustomId,
  encodeCustomId,
  nonceOf,
  toDiscordMessage,
} from '../../src/adapters/discord/discord-message.js';
import { createDiscordPrincipals } from '../../src/adapters/discord/discord-principals.js';
import { discordPublicKey, verifyDiscordSignature } from '../../src/adapters/discord/discord-signature.js';
import { withVouchedGroups } from '../../src/domain/principals.js';
import { isPrincipal } from '../../src/domain/authorise.js';
import type { ChatPort } from '../../src/ports/chat.js';
import { bold, code, link, pre, principal, quote, rich } from '../../src/render/view.js';
import { DISCORD_APP_ID, DISCORD_TOKEN } from '../helpers/bot.js';
import { buttonClick, modalSubmit, signInteraction, slashCommand, testKeys } from '../helpers/discord-requests.js';
import { startDiscordServer } from '../helpers/discord-server.js';

const keys = testKeys();
const key = discordPublicKey(keys.publicKeyHex);
const now = Math.floor(Date.now() / 1000);

describe('Discord signature verification', () => {
  const body = Buffer.from('{"type":1}');
  const timestamp = String(now);
  const signature = signInteraction(keys, timestamp, body.toString());

  it('accepts a body signed with the application key', () => {
    expect(verifyDiscordSignature({ key, signature, timestamp, body, nowSeconds: now })).toEqual({ ok: true });
  });
  it('refuses a missing, malformed or foreign signature', () => {
    expect(verifyDiscordSignature({ key, signature: undefined, timestamp, body, nowSeconds: now }).ok).toBe(false);
    expect(verifyDiscordSignature({ key, signature, timestamp: undefined, body, nowSeconds: now }).ok).toBe(false);
    expect(verifyDiscordSignature({ key, signature: 'zz', timestamp, body, nowSeconds: now }).ok).toBe(false);
    const other = testKeys();
    expect(
      verifyDiscordSignature({
        key,
        signature: signInteraction(other, timestamp, body.toString()),
        timestamp,
        body,
        nowSeconds: now,
      }),
    ).toEqual({ ok: false, reason: 'bad signature' });
  });
  it('refuses a replay with the body changed, or with another timestamp, or too old', () => {
    expect(
      verifyDiscordSignature({ key, signature, timestamp, body: Buffer.from('{"type":2}'), nowSeconds: now }).ok,
    ).toBe(false);
    expect(verifyDiscordSignature({ key, signature, timestamp: String(now + 1), body, nowSeconds: now }).ok).toBe(
      false,
    );
    expect(verifyDiscordSignature({ key, signature, timestamp, body, nowSeconds: now + 3600 })).toEqual({
      ok: false,
      reason: 'stale timestamp',
    });
  });
  it('reads the portal’s hex key and refuses anything else', () => {
    expect(() => discordPublicKey('00')).toThrow(/64 hex/);
  });
});

describe('Discord rendering', () => {
  it('escapes markdown, tokens and mass mentions in literal text', () => {
    const shown = toDiscordMarkdown(rich`${'**bold** <@123456789012345678> [x](https://evil) @everyone `x` # title'}`);
    expect(shown).not.toMatch(/(^|[^\\])\*\*/);
    expect(shown).not.toMatch(/(^|[^\\])<@/);
    expect(shown).toContain('\\[x\\]\\(https://evil\\)');
    expect(shown).not.toMatch(/@everyone/);
    expect(escapeMarkdown('# heading\n- item\n1. one')).toBe('\\# heading\n\\- item\n1\\. one');
  });
  it('writes mentions only for ids Discord owns, links as masked links, code that cannot break out', () => {
    expect(
      toDiscordMarkdown([
        principal('discord:123456789012345678'),
        principal('discord:role:123456789012345679'),
        principal('UALICE'),
      ]),
    ).toBe('<@123456789012345678><@&123456789012345679>@UALICE');
    expect(toDiscordMarkdown([link('https://github.com/acme/shop/pull/1', 'PR #1')])).toBe(
      '[PR #1](<https://github.com/acme/shop/pull/1>)',
    );
    expect(toDiscordMarkdown([link('javascript:alert(1)', 'x')])).not.toContain('](');
    expect(toDiscordMarkdown([code('a`b')])).toBe('`aˋb`');
    expect(toDiscordMarkdown([pre('x\n```\n@here')])).toBe('```\nx\n``\u200b`\n@here\n```');
    expect(toDiscordMarkdown([bold('a*b'), quote('> q\nline')])).toBe('**a\\*b**> \\> q\n> line');
  });
  it('renders a card as one silent embed with its buttons in an action row', () => {
    const message = toDiscordMessage({
      text: 'Run sg-12345678',
      blocks: [
        { type: 'header', text: 'Run sg-12345678 on acme/shop' },
        { type: 'section', text: rich`Task: ${'add a /healthz endpoint'}` },
        { type: 'context', text: rich`tokens 12k` },
        {
          type: 'actions',
          buttons: [{ actionId: 'shipgate.cancel', label: 'Cancel', value: 'sg-12345678', style: 'danger' }],
        },
      ],
    });
    expect(message.allowed_mentions).toEqual({ parse: [] });
    expect(message.embeds[0]?.title).toBe('Run sg-12345678 on acme/shop');
    expect(message.embeds[0]?.description).toBe('Task: add a /healthz endpoint\n-# tokens 12k');
    expect(message.components).toEqual([
      {
        type: 1,
        components: [{ type: 2, style: 4, label: 'Cancel', custom_id: 'cancel|sg-12345678', disabled: false }],
      },
    ]);
  });
  it('keeps within Discord limits: description cut without an open fence, at most 5 rows of 5', () => {
    const long = toDiscordMessage({ text: '', blocks: [{ type: 'section', text: [pre('x'.repeat(5000))] }] });
    const description = long.embeds[0]?.description ?? '';
    expect(description.length).toBeLessThanOrEqual(4096);
    expect((description.match(/```/g) ?? []).length % 2).toBe(0);
    const many = toDiscordMessage({
      text: 't',
      blocks: [
        {
          type: 'actions',
          buttons: Array.from({ length: 30 }, (_, i) => ({ actionId: 'shipgate.x', label: `b${i}`, value: String(i) })),
        },
      ],
    });
    expect(many.components).toHaveLength(5);
    expect(many.components.every((row) => row.components.length <= 5)).toBe(true);
    expect(truncateMarkdown('a'.repeat(50), 20).length).toBeLessThanOrEqual(20);
  });
  it('carries an approval’s value in the custom_id and a post key as a ≤25-character nonce', () => {
    const value = `sg-12345678|${'f'.repeat(40)}|${'a'.repeat(32)}`;
    const id = encodeCustomId('shipgate.approve', value);
    expect(id?.length).toBeLessThanOrEqual(100);
    expect(decodeCustomId(id ?? '')).toEqual({ actionId: 'shipgate.approve', value });
    expect(encodeCustomId('shipgate.approve', 'x'.repeat(200))).toBeUndefined();
    expect(nonceOf('sg-12345678.root')).toHaveLength(25);
    expect(nonceOf('sg-12345678.root')).toBe(nonceOf('sg-12345678.root'));
    expect(nonceOf('sg-12345678.root')).not.toBe(nonceOf('sg-12345678.gate.agent'));
  });
});

describe('Discord interactions → events', async () => {
  const server = await startDiscordServer({ token: DISCORD_TOKEN, applicationId: DISCORD_APP_ID });
  const alice = { userId: '1310000000000000201', roles: ['1310000000000000301'] };
  const parse = (body: string) => interactionSchema.parse(JSON.parse(body));

  it('maps /ship run to the parser’s text, with the member’s roles vouched', () => {
    const { body } = slashCommand(server, DISCORD_APP_ID, alice, { channelId: '1310000000000000100' }, 'run', {
      repo: 'acme/shop',
      task: 'add a /healthz endpoint for <@1310000000000000202>',
    });
    const mapped = mapCommand(parse(body), '/ship');
    expect(mapped.kind).toBe('command');
    if (mapped.kind !== 'command') return;
    expect(mapped.event).toMatchObject({
      text: 'acme/shop add a /healthz endpoint for @1310000000000000202',
      userId: 'discord:1310000000000000201',
      channelId: 'discord:1310000000000000100',
      groups: ['discord:role:1310000000000000301'],
    });
  });
  it('maps the other sub-commands, and reply to a follow-up for the run', () => {
    const text = (sub: string, options: Record<string, string | boolean> = {}) => {
      const mapped = mapCommand(
        parse(slashCommand(server, DISCORD_APP_ID, alice, { channelId: '1310000000000000100' }, sub, options).body),
        '/ship',
      );
      return mapped.kind === 'command' ? mapped.event.text : mapped.kind;
    };
    expect(text('status')).toBe('status');
    expect(text('status', { run: 'sg-12345678' })).toBe('status sg-12345678');
    expect(text('cancel', { run: 'sg-12345678' })).toBe('cancel sg-12345678');
    expect(text('retry', { run: 'sg-12345678' })).toBe('retry sg-12345678');
    expect(text('audit', { run: 'sg-12345678' })).toBe('audit sg-12345678');
    expect(text('clear', { all: true })).toBe('clear all');
    expect(text('help')).toBe('help');
    expect(text('run', { task: 'fix the typo' })).toBe('fix the typo');
    const reply = mapCommand(
      parse(
        slashCommand(server, DISCORD_APP_ID, alice, { channelId: '1310000000000000100' }, 'reply', {
          run: 'sg-12345678',
          text: 'also add a test',
        }).body,
      ),
      '/ship',
    );
    expect(reply).toMatchObject({
      kind: 'mention',
      event: { runId: 'sg-12345678', text: 'also add a test', userId: 'discord:1310000000000000201' },
    });
  });
  it('maps a click on a thread reply to the run’s channel and `<thread>/<message>`, and a reason modal to the same click with its reason', () => {
    const where = { channelId: '1310000000000000100', threadId: '1310000000000000500' };
    const click = mapAction(
      parse(buttonClick(server, DISCORD_APP_ID, alice, where, '1310000000000000600', 'reject|sg-12345678|f|n').body),
    );
    expect(click).toMatchObject({
      actionId: 'shipgate.reject',
      value: 'sg-12345678|f|n',
      channelId: 'discord:1310000000000000100',
      message: '1310000000000000500/1310000000000000600',
      groups: ['discord:role:1310000000000000301'],
    });
    const submitted = mapAction(
      parse(
        modalSubmit(
          server,
          DISCORD_APP_ID,
          alice,
          where,
          '1310000000000000600',
          'r:reject|sg-12345678|f|n',
          ' not now ',
        ).body,
      ),
    );
    expect(submitted).toMatchObject({ actionId: 'shipgate.reject', value: 'sg-12345678|f|n', reason: 'not now' });
  });
  it('counts a vouched role as membership in authorisation', async () => {
    const directory = createDiscordPrincipals();
    const groups = {
      isGroup: (id: string) => directory.isGroup(id),
      members: (id: string) => directory.groupMembers(id),
    };
    expect(await isPrincipal('discord:1', ['discord:role:1310000000000000301'], groups)).toBe(false);
    expect(
      await isPrincipal(
        'discord:1',
        ['discord:role:1310000000000000301'],
        withVouchedGroups(groups, 'discord:1', ['discord:role:1310000000000000301']),
      ),
    ).toBe(true);
    expect(directory.owns('discord:role:1310000000000000301', 'principal')).toBe(true);
    expect(directory.owns('discord:role:1310000000000000301', 'channel')).toBe(false);
    expect(directory.owns('U0123', 'principal')).toBe(false);
  });
});

describe('both chats at once', () => {
  it('routes each call to the chat that owns the channel; ids are checked against both', async () => {
    const calls: string[] = [];
    const fake = (name: string, owns: RegExp): ChatAdapter => {
      const port: ChatPort = {
        postMessage: async () => (calls.push(`${name}.post`), { ref: '1' }),
        updateMessage: async () => void calls.push(`${name}.update`),
        postEphemeral: async () => void calls.push(`${name}.ephemeral`),
        findMessageByKey: async () => undefined,
        uploadFile: async () => ({ ref: 'f' }),
        permalink: async () => name,
        principals: {
          platform: name,
          describe: { principal: `${name} user`, channel: `${name} channel` },
          owns: (id) => owns.test(id),
          isGroup: () => false,
          groupMembers: async () => [],
        },
      };
      return {
        port,
        routes: [{ method: 'POST', path: `/${name}`, listener: () => undefined }],
        start: async () => void calls.push(`${name}.start`),
        stop: async () => undefined,
      };
    };
    const both = composeChats([fake('slack', /^[CU]/), fake('discord', /^discord:/)]);
    await both.start({ onCommand: async () => ({}), onAction: async () => ({}) });
    await both.port.postMessage({ channel: 'discord:1310000000000000100', view: { text: '', blocks: [] }, key: 'k' });
    await both.port.updateMessage({ channel: 'CSHOP', ref: '1', view: { text: '', blocks: [] } });
    expect(await both.port.permalink({ channel: 'discord:1', ref: '1' })).toBe('discord');
    expect(calls).toEqual(['slack.start', 'discord.start', 'discord.post', 'slack.update']);
    expect(both.routes.map((r) => r.path)).toEqual(['/slack', '/discord']);
    expect(both.port.principals.describe.principal).toBe('slack user, or discord user');
  });
});

describe('Discord configuration and registration', () => {
  const base = { SHIPGATE_AUDIT_KEY: 'k'.repeat(40), LOG_LEVEL: 'silent' };
  const policy = { readFile: () => 'repos:\n  acme/docs: {}\n' };
  it('needs all three credentials, and names the missing one', () => {
    expect(() => loadConfig({ ...base, DISCORD_BOT_TOKEN: 't' }, policy)).toThrow(/DISCORD_PUBLIC_KEY.*required/s);
    const config = loadConfig(
      {
        ...base,
        DISCORD_BOT_TOKEN: 't',
        DISCORD_PUBLIC_KEY: keys.publicKeyHex,
        DISCORD_APPLICATION_ID: DISCORD_APP_ID,
      },
      policy,
    );
    expect(config.chat).toEqual({ kind: 'discord' });
    expect(config.discord?.apiUrl).toBe('https://discord.com/api/v10');
    expect(() =>
      loadConfig(
        { ...base, DISCORD_BOT_TOKEN: 't', DISCORD_PUBLIC_KEY: 'nothex', DISCORD_APPLICATION_ID: DISCORD_APP_ID },
        policy,
      ),
    ).toThrow(/DISCORD_PUBLIC_KEY/);
  });

  it('npm run discord:register PUTs /ship with its sub-commands to the guild', async () => {
    const server = await startDiscordServer({ token: DISCORD_TOKEN, applicationId: DISCORD_APP_ID });
    const dir = mkdtempSync(join(tmpdir(), 'shipgate-discord-'));
    const policyFile = join(dir, 'shipgate.yaml');
    writeFileSync(policyFile, 'repos:\n  acme/docs: {}\n');
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    let printed = '';
    stdout.on('data', (chunk: Buffer) => (printed += chunk.toString()));
    let errors = '';
    stderr.on('data', (chunk: Buffer) => (errors += chunk.toString()));
    const env = {
      ...base,
      DISCORD_BOT_TOKEN: DISCORD_TOKEN,
      DISCORD_PUBLIC_KEY: keys.publicKeyHex,
      DISCORD_APPLICATION_ID: DISCORD_APP_ID,
      DISCORD_API_URL: server.apiUrl,
      DISCORD_GUILD_ID: server.guildId,
      SHIPGATE_CONFIG: policyFile,
    };
    const code = await register(env, { stdout, stderr });
    expect(errors).toBe('');
    expect(code).toBe(0);
    expect(printed).toMatch(/registered \/ship \(\d+\) in server/);
    const registered = server.commands.get(server.guildId);
    expect(registered?.[0]?.name).toBe('ship');
    expect(registered?.[0]?.options?.map((o) => o.name)).toEqual([
      'run',
      'status',
      'cancel',
      'retry',
      'audit',
      'reply',
      'clear',
      'help',
    ]);
    expect(server.unexpected).toEqual([]);
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });
});
