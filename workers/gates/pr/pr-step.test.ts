import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { parsePolicy } from '../../../src/config/config.js';
import { newRun, type Run } from '../../../src/domain/run.js';
import { createLogger } from '../../../src/log.js';
import type { GitHubPort, PullRequestRef } from '../../../src/ports/github.js';
import type { GateAuditType, GateContext } from '../gate-step.js';
import { createPrStep } from './pr-step.js';

/**
 * The `pr` gate step on its own (issue 8: every gate step against in-memory ports and a hand-built
 * context): it opens the pull request once, adopts one an earlier attempt opened, and records its
 * evidence under a key that makes a rerun a no-op.
 */

const policy = parsePolicy('repos:\n  acme/shop: {}\n', 'test');

function pushedRun(): Run {
  const run = newRun(policy, { id: 'sg-prstep01', repo: 'acme/shop', task: 'add a /healthz endpoint', requester: { userId: 'UALICE' }, channel: 'CSHOP', now: new Date('2026-12-01T10:00:00Z') });
  return { ...run, chat: { channel: 'CSHOP', card: '1700000000.000100' }, artifacts: { agent: { branch: 'shipgate/sg-prstep01-add-a-healthz-endpoint', commitSha: 'a'.repeat(40), summary: 'Added it. Fixes #1 @org/team' } } };
}

function fakeGitHub(existing?: PullRequestRef) {
  const created: Array<{ title: string; body: string; head: string; base: string }> = [];
  let open = existing;
  const github: GitHubPort = {
    getRepository: async () => ({ cloneUrl: 'file:///nowhere.git', defaultBranch: 'main', htmlUrl: 'https://github.test/acme/shop' }),
    findOpenPullRequest: async () => open,
    createPullRequest: async (input) => {
      created.push(input);
      const pr: PullRequestRef = { number: 7, url: 'https://github.test/acme/shop/pull/7', headSha: 'a'.repeat(40), state: 'open', merged: false };
      open = pr;
      return pr;
    },
    pushCredentials: async () => {
      throw new Error('the pr step never pushes');
    },
  };
  return { github, created };
}

function context(run: Run) {
  const audits: Array<{ type: GateAuditType; data: Record<string, unknown>; discriminator: string }> = [];
  let stored = run;
  const gate = run.gates.find((g) => g.name === 'pr');
  if (gate === undefined) throw new Error('no pr gate');
  const ctx: GateContext = {
    run,
    gate,
    signal: new AbortController().signal,
    log: createLogger({ level: 'silent', destination: new PassThrough() }),
    record: async (change) => {
      stored = { ...stored, ...change(stored) };
      return stored;
    },
    reply: async () => undefined,
    audit: async (type, data, discriminator) => {
      audits.push({ type, data, discriminator });
    },
  };
  return { ctx, audits, stored: () => stored };
}

describe('pr gate step', () => {
  it('opens the pull request with a neutralised summary, links it and audits pr.opened once per PR', async () => {
    const { github, created } = fakeGitHub();
    const step = createPrStep({ github, chat: { permalink: async () => 'https://chat.test/thread' }, scrub: (text) => text });
    const { ctx, audits, stored } = context(pushedRun());

    const outcome = await step.run(ctx);
    expect(outcome.kind).toBe('passed');
    expect(created).toHaveLength(1);
    expect(created[0]).toMatchObject({ head: 'shipgate/sg-prstep01-add-a-healthz-endpoint', base: 'main', title: 'add a /healthz endpoint' });
    expect(created[0]?.body).toContain('https://chat.test/thread');
    expect(created[0]?.body).not.toMatch(/Fixes #1|@org\/team/);
    expect(stored().links.pr).toBe('https://github.test/acme/shop/pull/7');
    expect(stored().artifacts.pr?.number).toBe(7);
    expect(audits).toEqual([{ type: 'pr.opened', data: expect.objectContaining({ number: 7, commit: 'a'.repeat(40) }) as unknown, discriminator: '7' }]);

    // A rerun (after a crash) adopts the open PR instead of opening a second one, under the same audit key.
    const again = context(pushedRun());
    await step.run(again.ctx);
    expect(created).toHaveLength(1);
    expect(again.audits.map((a) => a.discriminator)).toEqual(['7']);
  });

  it('fails for good when the agent gate recorded no pushed branch', async () => {
    const { github } = fakeGitHub();
    const run = { ...pushedRun(), artifacts: {} };
    const outcome = createPrStep({ github, chat: { permalink: async () => undefined }, scrub: (text) => text }).run(context(run).ctx);
    await expect(outcome).rejects.toThrow(/no pushed branch/);
  });
});
