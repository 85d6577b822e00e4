import { describe, expect, it } from 'vitest';
import { applyOutcome, newRun, type Run } from '../../src/domain/run.js';
import { formatUsage, renderCard, renderGateReply, renderRunEnded } from '../../src/render/card.js';
import { concat, plainText, rich, type BlockView, type Inline, type MessageView } from '../../src/render/view.js';
import { PIPELINE_POLICY } from '../helpers/policies.js';
import { queuedLine } from '../../workers/gates/stage/stage-step.js';

/**
 * The chat-neutral views (src/render/view.ts): what the card and replies say,
 * as spans any chat adapter renders. How Slack and the console show them is
 * tested in slack-render.test.ts and console-render.test.ts.
 */

const t0 = new Date('2025-01-01T00:00:00Z');

function run(overrides: Partial<Run> = {}, task = 'Fix the flaky login test'): Run {
  const base = newRun(PIPELINE_POLICY, { id: 'sg-test0001', repo: 'acme/shop', task, requester: { userId: 'U0REQ' }, channel: 'C1', now: t0 });
  return { ...base, ...overrides };
}

function spans(view: MessageView): Inline[] {
  return view.blocks.flatMap((block: BlockView) => {
    switch (block.type) {
      case 'section':
      case 'context':
        return [...block.text];
      case 'fields':
        return block.fields.flat();
      default:
        return [];
    }
  });
}

describe('the neutral view', () => {
  it('carries user text as literal spans, never as markup of any chat', () => {
    const task = 'please <!channel> look at <https://evil.example|x> & <@U0ADMIN> *now*';
    const card = renderCard(run({}, task));
    expect(spans(card)).toContainEqual({ kind: 'quote', text: task });
    // No span turns user text into a link or mention: the only mention is the requester.
    expect(spans(card).filter((span) => span.kind === 'mention')).toEqual([{ kind: 'mention', principal: 'U0REQ' }]);
    expect(spans(card).filter((span) => span.kind === 'link')).toEqual([]);
    expect(card.text).toContain(task.slice(0, 60));
  });

  it('names gates in bold, people by principal id and links only http(s) URLs', () => {
    const r = run({ links: { pr: 'https://github.com/acme/shop/pull/12', ci: 'javascript:alert(1)' }, cancel: { by: 'U0BOB', at: t0.toISOString() }, state: 'cancelling' });
    const all = spans(renderCard(r));
    for (const gate of ['agent', 'pr', 'ci', 'merge']) expect(all).toContainEqual({ kind: 'bold', text: gate });
    expect(all).toContainEqual({ kind: 'mention', principal: 'U0BOB' });
    expect(all).toContainEqual({ kind: 'link', url: 'https://github.com/acme/shop/pull/12', label: 'Pull request' });
    expect(all.some((span) => span.kind === 'link' && span.url.startsWith('javascript'))).toBe(false);
  });

  it('has plain fallback texts', () => {
    const failed = applyOutcome(run(), 'agent', { kind: 'failed', summary: 'npm test <failed>' }, t0);
    expect(renderGateReply(failed, 'agent').text).toBe('agent failed: npm test <failed>');
    expect(renderRunEnded({ ...failed, state: 'failed' }).text).toBe('❌ Run `sg-test0001` on acme/shop failed: agent failed: npm test <failed>');
  });

  it('builds rich text from templates: interpolated strings stay literal text, spans stay spans', () => {
    const value = rich`a ${'<b>'} ${concat({ kind: 'code', text: 'c' }, ' d')} ${3}`;
    expect(value).toEqual([
      { kind: 'text', text: 'a <b> ' },
      { kind: 'code', text: 'c' },
      { kind: 'text', text: ' d 3' },
    ]);
    expect(plainText(value)).toBe('a <b> `c` d 3');
  });
});

describe('the card of a run waiting in a promotion queue (issue 10)', () => {
  function queued(state: Run['state']): Run {
    const base = run();
    const activity = queuedLine('prod', { position: 2, size: 3, head: 'sg-head0001' });
    const gates = base.gates.map((gate): Run['gates'][number] =>
      gate.name === 'stage:prod'
        ? { ...gate, state: 'running', startedAt: t0.toISOString(), summary: `prod: ${activity}` }
        : { ...gate, state: 'passed', summary: `${gate.name} passed` },
    );
    return { ...base, state, gates, activity };
  }

  it('shows the position, the queue length and whom it waits behind under "Now:"', () => {
    const card = renderCard(queued('waiting'));
    const lines = card.blocks.flatMap((block) => (block.type === 'context' ? [plainText(block.text)] : []));
    expect(lines).toContain('Now: queued for promotion into prod: position 2 of 3 (behind sg-head0001)');
    // The gate itself says so too, and the state line names the gate.
    const sections = card.blocks.flatMap((block) => (block.type === 'section' ? [plainText(block.text)] : []));
    expect(sections.join('\n')).toContain('waiting · at stage:prod');
    expect(sections.join('\n')).toContain('stage:prod — prod: queued for promotion into prod: position 2 of 3 (behind sg-head0001)');
  });

  it('says nothing of a queue once the run ended', () => {
    const card = renderCard({ ...queued('cancelled'), outcome: 'cancelled on request' });
    expect(card.blocks.some((block) => block.type === 'context' && plainText(block.text).startsWith('Now:'))).toBe(false);
  });
});

describe('formatUsage', () => {
  it('formats tokens compactly with the cost', () => {
    expect(
      formatUsage({ inputTokens: 0, outputTokens: 0, cacheReadTokens: 0, cacheWriteTokens: 0, costUsd: 0 }),
    ).toBeUndefined();
    expect(
      formatUsage({
        inputTokens: 1_500_000,
        outputTokens: 999,
        cacheReadTokens: 999_960,
        cacheWriteTokens: 0,
        costUsd: 3.456,
      }),
    ).toBe('2.5M tokens (in 1.5M · out 999 · cache read 1M · cache write 0) · $3.46');
  });
});
