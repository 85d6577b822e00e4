import { readFileSync } from 'node:fs';
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createConsoleChat } from '../../src/adapters/console/console-chat.js';
import { createSlackPrincipals } from '../../src/adapters/slack/slack-principals.js';
import { createShipgate } from '../../src/app/create-shipgate.js';
import { ConfigError, loadConfig, parsePolicy } from '../../src/config/config.js';
import { groupsOf, policyIdProblems, type PrincipalDirectory } from '../../src/domain/principals.js';
import { createLogger } from '../../src/log.js';
import { TEST_AUDIT_KEY } from '../helpers/audit-key.js';

/**
 * SPEC §2: user, group and channel ids in the policy are the chat's own. The
 * policy schema takes them as opaque words; each chat adapter says which ids
 * it owns and which are groups, and a policy id no configured chat owns stops
 * the start-up naming the key and what it must be.
 */

const slack = createSlackPrincipals(async () => []);
const silent = createLogger({ level: 'silent', destination: new PassThrough() });

function problems(yaml: string, directories: readonly PrincipalDirectory[] = [slack]): string[] {
  return policyIdProblems(parsePolicy(yaml, 'shipgate.yaml'), directories);
}

/** A stand-in for the Discord adapter of SPEC §2 (`discord:<snowflake>`, `discord:role:<id>`). */
const discord: PrincipalDirectory = {
  platform: 'Discord',
  describe: { principal: 'a Discord user (discord:<snowflake>) or role (discord:role:<id>)', channel: 'a Discord channel (discord:<snowflake>)' },
  owns: (id) => /^discord:(role:)?\d+$/.test(id),
  isGroup: (id) => id.startsWith('discord:role:'),
  groupMembers: async () => ['discord:42'],
};

describe('policy ids, checked by the Slack adapter', () => {
  it('accepts Slack user, user-group and channel ids where each belongs', () => {
    expect(
      problems(`
channels:
  CDOCS: { defaultRepo: acme/docs }
repos:
  acme/docs: {}
  acme/shop: { channels: [C0123ABCD, G0PRIVATE], requesters: [U0123, W0456, S0789], pipeline: shop }
pipelines:
  shop:
    stages:
      - { name: prod, kargoStage: prod, approval: { approvers: [U0999, S0777] } }
`),
    ).toEqual([]);
  });

  it.each(['shipgate.example.yaml', 'shipgate.yaml'])('accepts every id in %s', (file) => {
    expect(problems(readFileSync(new URL(`../../${file}`, import.meta.url), 'utf8'))).toEqual([]);
  });

  it.each([
    ['a requester that is a user name', 'repos:\n  acme/shop: { requesters: [alice] }\n', 'repos.acme/shop.requesters.0', 'Slack user id'],
    ['a lower-case user id', 'repos:\n  acme/shop: { requesters: [u0123] }\n', 'repos.acme/shop.requesters.0', 'Slack user id'],
    ['a channel given by name', 'repos:\n  acme/shop: { channels: ["#general"] }\n', 'repos.acme/shop.channels.0', 'Slack channel id'],
    [
      'an approver that is a channel',
      'repos:\n  acme/shop: { pipeline: shop }\npipelines:\n  shop:\n    stages:\n      - { name: prod, kargoStage: prod, approval: { approvers: [C0123] } }\n',
      'pipelines.shop.stages.0.approval.approvers.0',
      'user-group id (S…)',
    ],
    ['a channel setting keyed by a user id', 'channels:\n  U0123: { defaultRepo: acme/shop }\nrepos:\n  acme/shop: {}\n', 'channels.U0123', 'Slack channel id (C…/G…/D…)'],
  ])('rejects %s, naming the key and what it must be', (_case, yaml, path, hint) => {
    const [problem, ...more] = problems(yaml);
    expect(more).toEqual([]);
    expect(problem).toContain(`${path}: must be`);
    expect(problem).toContain(hint);
  });

  it('stops the start-up in Slack mode with a ConfigError naming the file, the key and the fix', () => {
    const env = { SLACK_BOT_TOKEN: 'xoxb-not-real', SLACK_SIGNING_SECRET: 'secret', SHIPGATE_AUDIT_KEY: TEST_AUDIT_KEY, REDIS_URL: 'redis://127.0.0.1:1' };
    const config = loadConfig(env, { readFile: () => 'repos:\n  acme/shop: { requesters: [alice, U0BOB] }\n', cwd: '/srv/shipgate' });
    let thrown: unknown;
    try {
      createShipgate({ config, log: silent });
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toBeInstanceOf(ConfigError);
    const message = thrown instanceof ConfigError ? thrown.message : '';
    expect(message).toContain('/srv/shipgate/shipgate.yaml → repos.acme/shop.requesters.0: must be a Slack user id (U…/W…) or user-group id (S…); "alice" is not');
    expect(message).toContain('See shipgate.example.yaml');
    expect(message).not.toContain('U0BOB');
  });
});

describe('several chats', () => {
  it('accepts an id any configured chat owns and names every accepted shape otherwise', () => {
    const yaml = 'repos:\n  acme/shop: { requesters: [U0123, "discord:80351110224678912", "discord:role:4", bob] }\n';
    const found = problems(yaml, [slack, discord]);
    expect(found).toHaveLength(1);
    expect(found[0]).toContain('repos.acme/shop.requesters.3: must be a Slack user id (U…/W…) or user-group id (S…), or a Discord user');
  });

  it('asks the chat that owns a group for its members, and treats ids no chat calls a group as users', async () => {
    const asked: string[] = [];
    const groups = groupsOf([
      createSlackPrincipals(async (id) => {
        asked.push(id);
        return ['U0BOB'];
      }),
      discord,
    ]);
    expect(groups.isGroup('S0DEVS')).toBe(true);
    expect(groups.isGroup('discord:role:4')).toBe(true);
    expect(groups.isGroup('U0BOB')).toBe(false);
    expect(groups.isGroup('discord:42')).toBe(false);
    expect(await groups.members('S0DEVS')).toEqual(['U0BOB']);
    expect(await groups.members('discord:role:4')).toEqual(['discord:42']);
    expect(await groups.members('U0BOB')).toEqual([]);
    expect(asked).toEqual(['S0DEVS']);
  });
});

describe('the console chat', () => {
  it('takes every id a policy may name, so a policy for any chat can be tried locally; its groups are the ones it was given', async () => {
    const console = createConsoleChat({ input: new PassThrough(), output: new PassThrough(), command: '/ship', userGroups: { S0DEVS: ['ULOCAL'] } });
    const yaml = 'channels:\n  CDOCS: { defaultRepo: acme/shop }\nrepos:\n  acme/shop: { requesters: [U0123, "discord:1", S0DEVS, alice] }\n';
    expect(problems(yaml, [console.port.principals])).toEqual([]);
    expect(console.port.principals.isGroup('S0DEVS')).toBe(true);
    expect(console.port.principals.isGroup('S0OTHER')).toBe(false);
    expect(await groupsOf([console.port.principals]).members('S0DEVS')).toEqual(['ULOCAL']);
  });
});
