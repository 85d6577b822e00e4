import { describe, expect, it } from 'vitest';
import { MAX_TASK_LENGTH, parseCommand, type ParsedCommand } from '../../src/domain/command.js';
import { plainText } from '../../src/render/view.js';

/** SPEC §2: the text after `/ship`, in a channel with or without a default repository. */

const NO_DEFAULT = { command: '/ship' };
const WITH_DEFAULT = { command: '/ship', channelDefaultRepo: 'acme/docs' };

function errorMessage(parsed: ParsedCommand): string {
  if (parsed.kind !== 'error') throw new Error(`expected an error, got ${JSON.stringify(parsed)}`);
  return plainText(parsed.message);
}

describe('parseCommand: starting a run', () => {
  it('takes owner/repo then the task', () => {
    expect(parseCommand('acme/shop add a /healthz endpoint', NO_DEFAULT)).toEqual({
      kind: 'run',
      repo: 'acme/shop',
      task: 'add a /healthz endpoint',
      repoFromChannelDefault: false,
    });
  });

  it('accepts the characters GitHub allows in names (dots, dashes, underscores)', () => {
    expect(parseCommand('my-org.io/web_app.v2 bump deps', NO_DEFAULT)).toMatchObject({
      kind: 'run',
      repo: 'my-org.io/web_app.v2',
      task: 'bump deps',
    });
  });

  it('trims surrounding whitespace and collapses runs of whitespace in the task', () => {
    expect(parseCommand('  acme/shop   fix\n the   footer  ', NO_DEFAULT)).toMatchObject({
      kind: 'run',
      repo: 'acme/shop',
      task: 'fix the footer',
    });
  });

  it('an explicit repository wins over the channel default', () => {
    expect(parseCommand('acme/shop fix the footer', WITH_DEFAULT)).toEqual({
      kind: 'run',
      repo: 'acme/shop',
      task: 'fix the footer',
      repoFromChannelDefault: false,
    });
  });

  it('uses the channel default repository when the text does not start with one', () => {
    expect(parseCommand('fix the footer', WITH_DEFAULT)).toEqual({
      kind: 'run',
      repo: 'acme/docs',
      task: 'fix the footer',
      repoFromChannelDefault: true,
    });
  });

  it('asks for the repository where the channel has no default', () => {
    const message = errorMessage(parseCommand('fix the footer', NO_DEFAULT));
    expect(message).toContain('Name the repository first');
    expect(message).toContain('fix the footer');
    expect(message).toContain('/ship help');
  });

  it('asks what to change when only a repository is given', () => {
    const message = errorMessage(parseCommand('acme/shop', NO_DEFAULT));
    expect(message).toContain('Say what to change in acme/shop');
    expect(errorMessage(parseCommand('acme/shop   ', WITH_DEFAULT))).toContain('Say what to change in acme/shop');
  });

  it('asks for something to do when the text is empty', () => {
    expect(errorMessage(parseCommand('   ', NO_DEFAULT))).toContain('Tell me what to do');
    expect(errorMessage(parseCommand('', WITH_DEFAULT))).toContain('Tell me what to do');
  });

  it.each(['acme/shop!', 'acme/sh$p', 'acme/@shop'])(
    'rejects the malformed repository %j, saying to use owner/name',
    (repo) => {
      const message = errorMessage(parseCommand(`${repo} fix it`, NO_DEFAULT));
      expect(message).toContain('not a valid repository name');
      expect(message).toContain('owner/name');
    },
  );

  it('rejects a task longer than the limit, saying how long it was', () => {
    const longTask = 'x'.repeat(MAX_TASK_LENGTH + 1);
    const message = errorMessage(parseCommand(`acme/shop ${longTask}`, NO_DEFAULT));
    expect(message).toContain(String(MAX_TASK_LENGTH + 1));
    expect(message).toContain(`under ${MAX_TASK_LENGTH}`);
    expect(errorMessage(parseCommand(longTask, WITH_DEFAULT))).toContain(`under ${MAX_TASK_LENGTH}`);
    expect(parseCommand(`acme/shop ${'x'.repeat(MAX_TASK_LENGTH)}`, NO_DEFAULT)).toMatchObject({ kind: 'run' });
  });

  it('uses the configured command name in its hints', () => {
    const message = errorMessage(parseCommand('fix the footer', { command: '/deploy' }));
    expect(message).toContain('/deploy help');
    expect(message).not.toContain('/ship');
  });
});

describe('parseCommand: keywords', () => {
  it.each([
    ['help', { kind: 'help' }],
    ['HELP', { kind: 'help' }],
    ['status', { kind: 'status' }],
    ['  Status  ', { kind: 'status' }],
    ['status sg-1a2b3c4d', { kind: 'status', runId: 'sg-1a2b3c4d' }],
    ['cancel sg-1a2b3c4d', { kind: 'cancel', runId: 'sg-1a2b3c4d' }],
    ['retry sg-00000000', { kind: 'retry', runId: 'sg-00000000' }],
    ['audit sg-zzzzzzzz', { kind: 'audit', runId: 'sg-zzzzzzzz' }],
  ])('%j → %j, with or without a channel default', (text, expected) => {
    expect(parseCommand(text, NO_DEFAULT)).toEqual(expected);
    expect(parseCommand(text, WITH_DEFAULT)).toEqual(expected);
  });

  it.each(['cancel', 'retry', 'audit'])('%s without a run id asks for one where a task is impossible', (keyword) => {
    const message = errorMessage(parseCommand(keyword, NO_DEFAULT));
    expect(message).toContain(`/ship ${keyword}\` needs a run id like \`sg-1a2b3c4d\``);
    expect(message).toContain('/ship status');
  });

  it.each([
    'cancel 42',
    'cancel sg-123',
    'cancel SG-1A2B3C4D',
    'retry sg-1a2b3c4d5',
    'audit run-1a2b3c4d',
    'cancel sg-1a2b3c4d sg-00000000',
  ])('rejects the malformed run id in %j', (text) => {
    expect(errorMessage(parseCommand(text, NO_DEFAULT))).toContain('needs a run id like');
  });

  it('rejects an sg- id of the wrong shape even where the channel has a default repository', () => {
    expect(errorMessage(parseCommand('cancel sg-123', WITH_DEFAULT))).toContain('needs a run id like');
  });
});

describe('parseCommand: keywords that are really tasks', () => {
  it.each([
    'status page shows 500s',
    'help text on the signup form is wrong',
    'cancel button on checkout is misaligned',
    'retry logic in the payment client is too aggressive',
    'audit log page needs paging',
  ])('%j is a task in a channel with a default repository', (text) => {
    expect(parseCommand(text, WITH_DEFAULT)).toEqual({
      kind: 'run',
      repo: 'acme/docs',
      task: text,
      repoFromChannelDefault: true,
    });
  });

  it('"status page shows 500s" without a default asks for the repository instead of showing status', () => {
    expect(errorMessage(parseCommand('status page shows 500s', NO_DEFAULT))).toContain('Name the repository first');
  });

  it('keywords after an explicit repository belong to the task', () => {
    expect(parseCommand('acme/shop cancel the banner', NO_DEFAULT)).toMatchObject({
      kind: 'run',
      repo: 'acme/shop',
      task: 'cancel the banner',
    });
  });

  it('clear and clear all end the caller’s stuck runs; anything else after clear is a task or an error', () => {
    expect(parseCommand('clear', NO_DEFAULT)).toEqual({ kind: 'clear', all: false });
    expect(parseCommand('clear ALL', NO_DEFAULT)).toEqual({ kind: 'clear', all: true });
    expect(parseCommand('clear the cache', WITH_DEFAULT)).toMatchObject({ kind: 'run', task: 'clear the cache' });
  });
});
