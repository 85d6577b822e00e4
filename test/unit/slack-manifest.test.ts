import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { z } from 'zod';

/**
 * The Slack app manifest asks for exactly the scopes the bot uses (issue 12): each Web API method
 * the Slack adapter calls and each event it handles maps to the scope it needs, and the manifest's
 * scopes and events are that set, nothing more. A new method or event in the adapter fails here
 * until this table (and the manifest) say which scope it needs.
 */

/** Web API method (as the adapter names it in `call(…)`) → the bot scope it needs; null: none. */
const METHOD_SCOPES: Record<string, string | null> = {
  'chat.postMessage': 'chat:write',
  'chat.update': 'chat:write',
  'chat.postEphemeral': 'chat:write',
  'chat.getPermalink': null,
  'views.open': null,
  // The bot's own id, so that only its own messages count when a post is looked for by its key.
  'auth.test': null,
  // conversations.history and conversations.replies, in public and private channels.
  'conversations.history': 'channels:history groups:history',
  'files.uploadV2': 'files:write',
  'usergroups.users.list': 'usergroups:read',
};

/** Events API event → its scope. */
const EVENT_SCOPES: Record<string, string> = {
  app_mention: 'app_mentions:read',
  subteam_members_changed: 'usergroups:read',
};

const manifestSchema = z.object({
  features: z.object({ slash_commands: z.array(z.object({ command: z.string(), url: z.string() })).min(1) }),
  oauth_config: z.object({ scopes: z.object({ bot: z.array(z.string()) }) }),
  settings: z.object({
    event_subscriptions: z.object({ request_url: z.string(), bot_events: z.array(z.string()) }),
    interactivity: z.object({ is_enabled: z.boolean(), request_url: z.string() }),
  }),
});

const ROOT = resolve(import.meta.dirname, '../..');
const manifest = manifestSchema.parse(parse(readFileSync(join(ROOT, 'deploy/slack-app-manifest.yaml'), 'utf8')));
const adapter = readFileSync(join(ROOT, 'src/adapters/slack/slack-chat.ts'), 'utf8');
const calledMethods = [...new Set([...adapter.matchAll(/\bcall\('([A-Za-z0-9.]+)'/g)].map((m) => m[1] ?? ''))].sort();
const handledEvents = [...new Set([...adapter.matchAll(/\bapp\.event\('([a-z_]+)'/g)].map((m) => m[1] ?? ''))].sort();

describe('the Slack app manifest', () => {
  it('knows the scope of every Web API method the adapter calls and of every event it handles', () => {
    expect(calledMethods.length).toBeGreaterThan(0);
    expect(calledMethods.filter((method) => !(method in METHOD_SCOPES))).toEqual([]);
    expect(handledEvents.filter((event) => !(event in EVENT_SCOPES))).toEqual([]);
  });

  it('asks for exactly the scopes those methods, events and the slash command need', () => {
    const needed = new Set<string>(['commands']);
    for (const method of calledMethods)
      for (const scope of (METHOD_SCOPES[method] ?? '').split(' ').filter(Boolean)) needed.add(scope);
    for (const event of handledEvents) needed.add(EVENT_SCOPES[event] ?? '');
    const asked = manifest.oauth_config.scopes.bot;
    expect(new Set(asked).size).toBe(asked.length);
    expect([...asked].sort()).toEqual([...needed].sort());
    // Names it used to ask for without a caller.
    expect(asked).not.toContain('users:read');
  });

  it('subscribes to exactly the events the adapter handles, and enables the interactivity its buttons and modal need', () => {
    expect([...manifest.settings.event_subscriptions.bot_events].sort()).toEqual(handledEvents);
    expect(adapter).toMatch(/\bapp\.action\(/);
    expect(manifest.settings.interactivity.is_enabled).toBe(true);
  });

  it('points the command, events and interactivity at the one route the web role serves', () => {
    const urls = [
      ...manifest.features.slash_commands.map((command) => command.url),
      manifest.settings.event_subscriptions.request_url,
      manifest.settings.interactivity.request_url,
    ];
    for (const url of urls) expect(new URL(url).pathname).toBe('/slack/events');
    expect(manifest.features.slash_commands.map((command) => command.command)).toEqual(['/ship']);
  });
});
