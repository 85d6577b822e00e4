import { describe, expect, it } from 'vitest';
import { consoleText, toText } from '../../src/adapters/console/console-text.js';
import { applyOutcome, newRun, type Run } from '../../src/domain/run.js';
import { renderCard, renderGateReply, renderHelp, renderRunStatus } from '../../src/render/card.js';
import { PIPELINE_POLICY } from '../helpers/policies.js';

/** The console chat's plain-text rendering of the neutral view (a terminal chat for local use). */

const t0 = new Date('2025-01-01T00:00:00Z');

function run(overrides: Partial<Run> = {}, task = 'Fix the flaky login test'): Run {
  const base = newRun(PIPELINE_POLICY, { id: 'sg-test0001', repo: 'acme/shop', task, requester: { userId: 'U0REQ' }, channel: 'C1', now: t0 });
  return { ...base, ...overrides };
}

describe('plain text for the console', () => {
  it('shows the card without markup and the cancel button as a command', () => {
    const r = run({ links: { pr: 'https://github.com/acme/shop/pull/12' } }, 'fix a < b & c');
    const text = toText(renderCard(r));
    expect(text).toContain('shipgate run sg-test0001 · acme/shop\n===');
    expect(text).toContain('[Cancel] type: click cancel sg-test0001');
    expect(text).toContain('@U0REQ');
    expect(text).not.toContain('<@');
    expect(text).toContain('> fix a < b & c');
    expect(text).toContain('Pull request (https://github.com/acme/shop/pull/12)');
    expect(text).toContain('Repository: acme/shop');
    expect(text).not.toContain('*');
    expect(text).not.toContain('&amp;');
  });

  it('shows user text exactly as typed: no entities, no markup stripped or added', () => {
    const task = 'rename *old_name* to `new_name` & keep <b> tags, ping <!here>';
    const text = toText(renderCard(run({}, task)));
    expect(text).toContain(`> ${task}`);
    const failed = applyOutcome(run(), 'agent', { kind: 'failed', summary: 'lint: a && b\n  src/x.ts:1 <oops>' }, t0);
    expect(toText(renderGateReply(failed, 'agent'))).toContain('lint: a && b\n  src/x.ts:1 <oops>');
  });

  it('renders ephemeral rich text: code keeps its backticks, quotes and mentions read plainly', () => {
    const help = consoleText(renderHelp('/deploybot'));
    expect(help).toContain('• `/deploybot <owner/repo> <task…>` — start a run on a repository');
    expect(help.split('\n')[0]).toBe('shipgate — an AI agent proposes changes; your pipeline decides.');
    const status = consoleText(renderRunStatus(run(), 1));
    expect(status).toMatch(/^`sg-test0001` · acme\/shop · ⏳ queued · position 1 in queue$/m);
    expect(status).toContain('\n> Fix the flaky login test\nRequested by @U0REQ\n');
  });

  it('renders a message without blocks from its plain fallback text', () => {
    expect(toText({ text: 'hi <there> & *you*', blocks: [] })).toBe('hi <there> & *you*');
  });
});
