import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { parsePolicy } from '../../../src/config/config.js';
import { newRun, type Run } from '../../../src/domain/run.js';
import { createLogger } from '../../../src/log.js';
import type { PullRequestState } from '../../../src/ports/github.js';
import type { GateContext } from '../gate-step.js';
import { createMergeStep } from './merge-step.js';

/** The `merge` gate step against an in-memory GitHub and a hand-built context: it only ever watches. */

const policy = parsePolicy('repos:\n  acme/shop: {}\n', 'test');

function setUp(pr: Partial<PullRequestState>) {
  const state: PullRequestState = { number: 9, url: 'https://github.test/acme/shop/pull/9', headSha: 'b'.repeat(40), state: 'open', merged: false, mergeCommitSha: null, base: 'main', ...pr };
  const run: Run = { ...newRun(policy, { id: 'sg-merge001', repo: 'acme/shop', task: 't', requester: { userId: 'UALICE' }, channel: 'CSHOP', now: new Date('2026-12-01T10:00:00Z') }), artifacts: { pr: { number: 9 } } };
  let stored = run;
  const ctx: GateContext = {
    run,
    gate: { ...run.gates.find((g) => g.name === 'merge')!, startedAt: '2026-12-01T10:00:00Z' },
    signal: new AbortController().signal,
    log: createLogger({ level: 'silent', destination: new PassThrough() }),
    record: async (change) => (stored = { ...stored, ...change(stored) }),
    reply: async () => undefined,
    audit: async () => undefined,
  };
  const step = createMergeStep({ github: { getPullRequest: async () => state }, clock: () => new Date('2026-12-01T10:01:00Z') });
  return { step, ctx, stored: () => stored };
}

describe('merge gate step', () => {
  it('passes once GitHub merged the PR and records the merge commit', async () => {
    const { step, ctx, stored } = setUp({ merged: true, state: 'closed', mergeCommitSha: 'f'.repeat(40) });
    expect(await step.run(ctx)).toMatchObject({ kind: 'passed', summary: expect.stringContaining('f'.repeat(12)) as unknown });
    expect(stored().artifacts.merge?.commitSha).toBe('f'.repeat(40));
  });

  it('waits, with a poll delay, while the PR is open', async () => {
    const { step, ctx } = setUp({});
    const outcome = await step.run(ctx);
    expect(outcome.kind).toBe('pending');
    expect(outcome.kind === 'pending' ? outcome.recheckAfterMs : 0).toBeGreaterThan(0);
  });

  it('fails when the PR was closed without merging', async () => {
    const { step, ctx } = setUp({ state: 'closed' });
    expect(await step.run(ctx)).toMatchObject({ kind: 'failed' });
  });

  it('fails, saying why, when the forge says the PR can never merge as it stands', async () => {
    const { step, ctx } = setUp({ state: 'open', cannotMerge: 'main moved on to 0123456789ab since the branch was cut' });
    const outcome = await step.run(ctx);
    expect(outcome.kind).toBe('failed');
    expect(outcome.summary).toContain('main moved on to 0123456789ab');
  });
});
