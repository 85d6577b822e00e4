import type { KnownBlock } from '@slack/types';
import { describe, expect, it } from 'vitest';
import { PIPELINE_POLICY } from '../helpers/policies.js';
import { applyOutcome, finishRun, markNotConfigured, newRun, startGate, type Run } from '../../src/domain/run.js';
import { toBlockKit } from '../../src/adapters/slack/block-kit.js';
import { escapeMrkdwn, flattenMrkdwn, toMrkdwn } from '../../src/adapters/slack/mrkdwn.js';
import {
  renderCard,
  renderGateReply,
  renderHelp,
  renderRunEnded,
  renderRunStatus,
  renderStatusList,
} from '../../src/render/card.js';
import { text as textSpan, type MessageView, type RichText } from '../../src/render/view.js';

/**
 * The neutral views of src/render/card.ts as Slack shows them: mrkdwn with
 * every piece of user text escaped, Block Kit within Slack's limits.
 */

const policy = PIPELINE_POLICY;

const t0 = new Date('2025-01-01T00:00:00Z');

function run(overrides: Partial<Run> = {}, repo = 'acme/shop', task = 'Fix the flaky login test'): Run {
  const base = newRun(policy, {
    id: 'sg-test0001',
    repo,
    task,
    requester: { userId: 'U0REQ' },
    channel: 'C1',
    now: t0,
  });
  return { ...base, ...overrides };
}

/** Everything a person reads on the message, as Slack mrkdwn: section and context text, fields, header. */
function allText(view: MessageView): string {
  return view.blocks
    .map((block) => {
      switch (block.type) {
        case 'header':
          return block.text;
        case 'section':
        case 'context':
          return toMrkdwn(block.text);
        case 'fields':
          return block.fields.map(toMrkdwn).join('\n');
        case 'actions':
          return block.buttons.map((b) => b.label).join(' ');
        case 'divider':
          return '';
      }
    })
    .join('\n');
}

function buttons(view: MessageView) {
  return view.blocks.flatMap((block) => (block.type === 'actions' ? block.buttons : []));
}

function gateLine(view: MessageView, gate: string): string {
  const line = allText(view)
    .split('\n')
    .find((l) => l.includes(`*${gate}*`));
  expect(line, `no line for gate ${gate}`).toBeDefined();
  return line ?? '';
}

describe('renderCard', () => {
  it('says on every card when checks run unsandboxed (policy sandbox: none), and never otherwise', () => {
    expect(allText(renderCard(run(), { unsandboxedChecks: true }))).toMatch(/Checks run unsandboxed/);
    expect(allText(renderCard(run({ state: 'done' }), { unsandboxedChecks: true }))).toMatch(/Checks run unsandboxed/);
    expect(allText(renderCard(run()))).not.toMatch(/unsandboxed/i);
  });

  it("a queued run's card names the repo, the requester and every gate, and offers Cancel", () => {
    const card = renderCard(run());
    const text = allText(card);
    expect(text).toContain('acme/shop');
    expect(text).toContain('<@U0REQ>');
    expect(text).toContain('queued');
    expect(text).toContain('> Fix the flaky login test');
    for (const gate of ['agent', 'pr', 'ci', 'merge', 'freight', 'stage:dev', 'approval', 'stage:prod']) {
      expect(gateLine(card, gate)).toMatch(/⚪|⏳/);
    }
    // In order, as the run will go through them.
    const order = ['agent', 'pr', 'ci', 'merge', 'freight', 'stage:dev', 'approval', 'stage:prod'].map((g) =>
      text.indexOf(`*${g}*`),
    );
    expect([...order].sort((a, b) => a - b)).toEqual(order);
    expect(buttons(card)).toEqual([
      { actionId: 'shipgate.cancel', label: 'Cancel', value: 'sg-test0001', style: 'danger' },
    ]);
    expect(card.text).toContain('acme/shop');
  });

  it('shows gate progress with emoji and summaries', () => {
    let r = startGate(run(), 'agent', t0);
    r = applyOutcome(r, 'agent', { kind: 'passed', summary: 'lint, test pass; 3 files changed' }, t0);
    r = applyOutcome(r, 'pr', { kind: 'passed', summary: 'PR #12 open' }, t0);
    r = startGate(r, 'ci', t0);
    const card = renderCard(r);
    expect(gateLine(card, 'agent')).toBe('✅ *agent* — lint, test pass; 3 files changed');
    expect(gateLine(card, 'ci')).toContain('🔄');
    expect(allText(card)).toMatch(/running · at \*ci\*/);
  });

  it('a not-configured gate reads "not configured" and never looks passed', () => {
    const r = markNotConfigured(run({}, 'acme/lib'), 'merge', 'not built yet');
    const line = gateLine(renderCard(r), 'merge');
    expect(line).toContain('not configured');
    expect(line).not.toContain('✅');
    // Even a contradictory record (passed but flagged) must not render green.
    const contradictory: Run = {
      ...r,
      gates: r.gates.map((g) => (g.name === 'merge' ? { ...g, state: 'passed' } : g)),
    };
    expect(gateLine(renderCard(contradictory), 'merge')).not.toContain('✅');
  });

  it('links and usage appear once there is something to show', () => {
    const bare = allText(renderCard(run()));
    expect(bare).not.toContain('tokens');
    const r = run({
      links: { pr: 'https://github.com/acme/shop/pull/12', ci: 'https://github.com/acme/shop/actions/runs/1?a=1&b=2' },
      usage: { inputTokens: 10_000, outputTokens: 2_300, cacheReadTokens: 0, cacheWriteTokens: 0, costUsd: 0.42 },
    });
    const text = allText(renderCard(r));
    expect(text).toContain('<https://github.com/acme/shop/pull/12|Pull request>');
    expect(text).toContain('<https://github.com/acme/shop/actions/runs/1?a=1&amp;b=2|CI>');
    expect(text).toContain('12.3k tokens');
    expect(text).toContain('$0.42');
  });

  it('a terminal run has no Cancel button and states its outcome', () => {
    const failed = applyOutcome(run(), 'agent', { kind: 'failed', summary: 'npm test failed' }, t0);
    const card = renderCard(failed);
    expect(buttons(card)).toEqual([]);
    expect(allText(card)).toContain('failed — agent failed: npm test failed');
    for (const state of ['done', 'cancelled', 'rejected', 'expired'] as const) {
      expect(buttons(renderCard(finishRun(run(), state, 'x', t0)))).toEqual([]);
    }
  });

  it('a cancelling card says who asked and offers no button', () => {
    const card = renderCard(run({ state: 'cancelling', cancel: { by: 'U0BOB', at: t0.toISOString() } }));
    expect(allText(card)).toContain('cancel requested by <@U0BOB>, stopping…');
    expect(buttons(card)).toEqual([]);
  });

  it('escapes a task that tries to ping the channel or smuggle a link', () => {
    const task = 'please <!channel> look at <https://evil.example|x> & <@U0ADMIN>';
    const card = renderCard(run({}, 'acme/shop', task));
    const text = `${allText(card)}\n${escapeMrkdwn(card.text)}`;
    expect(text).not.toContain('<!channel>');
    expect(text).not.toContain('<https://evil');
    expect(text).not.toContain('<@U0ADMIN>');
    expect(text).toContain('&lt;!channel&gt;');
    expect(text).toContain('&lt;https://evil.example|x&gt; &amp; &lt;@U0ADMIN&gt;');
    // And the same in status text and gate summaries.
    expect(toMrkdwn(renderStatusList([{ run: run({}, 'acme/shop', task) }]))).not.toContain('<!channel>');
    const r = applyOutcome(run(), 'agent', { kind: 'failed', summary: 'see <!here> <https://evil|x>' }, t0);
    const reply = renderGateReply(r, 'agent');
    expect(`${allText(reply)}\n${escapeMrkdwn(reply.text)}`).not.toMatch(/<!here>|<https:\/\/evil/);
  });

  it('keeps a huge task readable on the card', () => {
    const card = renderCard(run({}, 'acme/shop', 'x'.repeat(10_000)));
    const quoted = card.blocks.map((b) => (b.type === 'section' ? toMrkdwn(b.text) : '')).find((t) => t.startsWith('> '));
    expect(quoted?.length ?? 0).toBeLessThan(600);
    expect(card.text.length).toBeLessThan(300);
  });
});

describe('thread replies', () => {
  it('a gate reply says passed or failed with the summary', () => {
    const passed = applyOutcome(run(), 'agent', { kind: 'passed', summary: '3 files changed' }, t0);
    expect(allText(renderGateReply(passed, 'agent'))).toMatch(/✅ \*agent\* passed[\s\S]*3 files changed/);
    const failed = applyOutcome(
      passed,
      'pr',
      { kind: 'failed', summary: 'lint: 2 errors\nsrc/a.ts:3 missing semicolon' },
      t0,
    );
    const reply = renderGateReply(failed, 'pr');
    expect(allText(reply)).toMatch(/❌ \*pr\* failed/);
    expect(allText(reply)).toContain('lint: 2 errors\nsrc/a.ts:3 missing semicolon');
    expect(reply.text).toContain('pr failed');
    const skipped = applyOutcome(passed, 'pr', { kind: 'skipped', summary: 'no PR needed' }, t0);
    expect(allText(renderGateReply(skipped, 'pr'))).toMatch(/⏭️ \*pr\* skipped/);
  });

  it('the run-ended reply says how it ended and, when cancelled, by whom and that work stopped', () => {
    const failed = applyOutcome(run(), 'ci', { kind: 'failed', summary: 'build red' }, t0);
    const failedText = allText(renderRunEnded(failed));
    expect(failedText).toContain('failed: ci failed: build red');
    expect(failedText).toContain('/ship retry sg-test0001');

    const cancelled = finishRun(
      run({ cancel: { by: 'U0BOB', at: t0.toISOString() } }),
      'cancelled',
      'cancelled on request',
      t0,
    );
    const cancelledText = allText(renderRunEnded(cancelled));
    expect(cancelledText).toContain('cancelled by <@U0BOB>');
    expect(cancelledText).toMatch(/work has stopped/i);

    expect(allText(renderRunEnded(finishRun(run(), 'done', 'every gate passed', t0)))).toContain(
      'is done: every gate passed',
    );
    expect(allText(renderRunEnded(finishRun(run(), 'rejected', 'rejected by <@U0999>', t0)))).toContain('rejected');
  });
});

describe('help and status', () => {
  it('help lists every subcommand under the configured command name', () => {
    const help = toMrkdwn(renderHelp('/deploybot'));
    for (const usage of [
      'status [run-id]',
      'cancel &lt;run-id&gt;',
      'retry &lt;run-id&gt;',
      'audit &lt;run-id&gt;',
      'help',
    ]) {
      expect(help).toContain(`/deploybot ${usage}`);
    }
    expect(help).toContain('/deploybot &lt;owner/repo&gt; &lt;task…&gt;');
    expect(flattenMrkdwn(help)).toContain('/deploybot <owner/repo> <task…>');
    expect(help).not.toContain('/ship');
  });

  it('the status list shows each run, its state, current gate and queue position', () => {
    const queued = run({ id: 'sg-queued01' });
    const running = startGate(run({ id: 'sg-running1' }, 'acme/lib', 'bump deps'), 'agent', t0);
    const list = toMrkdwn(renderStatusList([{ run: queued, queuePosition: 2 }, { run: running }]));
    expect(list).toContain('sg-queued01');
    expect(list).toContain('position 2 in queue');
    expect(list).toMatch(/sg-running1.*acme\/lib.*running · at \*agent\*.*bump deps/);
    expect(toMrkdwn(renderStatusList([]))).toMatch(/no active runs/i);
  });

  it('one run in detail includes its gates and queue position', () => {
    const detail = toMrkdwn(renderRunStatus(run(), 1));
    expect(detail).toContain('position 1 in queue');
    expect(detail).toContain('*stage:prod*');
    expect(detail).toContain('<@U0REQ>');
  });
});

describe('Block Kit', () => {
  function textsOf(blocks: KnownBlock[]) {
    const out: { header: string[]; section: string[]; field: string[]; context: string[]; button: string[] } = {
      header: [],
      section: [],
      field: [],
      context: [],
      button: [],
    };
    for (const block of blocks) {
      if (block.type === 'header') out.header.push(block.text.text);
      if (block.type === 'section') {
        if (block.text !== undefined) out.section.push(block.text.text);
        for (const field of block.fields ?? []) out.field.push(field.text);
      }
      if (block.type === 'context') for (const el of block.elements) if ('text' in el) out.context.push(el.text);
      if (block.type === 'actions')
        for (const el of block.elements) if (el.type === 'button') out.button.push(el.text.text);
    }
    return out;
  }

  it('maps a card to Slack blocks with the Cancel button wired to the run', () => {
    const blocks = toBlockKit(renderCard(run()));
    expect(blocks[0]).toEqual({
      type: 'header',
      text: { type: 'plain_text', text: 'shipgate run sg-test0001 · acme/shop', emoji: true },
    });
    const actions = blocks.find((b) => b.type === 'actions');
    expect(actions).toEqual({
      type: 'actions',
      elements: [
        {
          type: 'button',
          action_id: 'shipgate.cancel',
          value: 'sg-test0001',
          style: 'danger',
          text: { type: 'plain_text', text: 'Cancel', emoji: true },
        },
      ],
    });
  });

  it('respects Slack limits for huge content instead of getting the message rejected', () => {
    const huge = '<&>'.repeat(5000);
    const view: MessageView = {
      text: 'huge',
      blocks: [
        { type: 'header', text: 'h'.repeat(500) },
        { type: 'section', text: [textSpan(huge)] },
        { type: 'fields', fields: Array.from({ length: 14 }, (): RichText => [textSpan('f'.repeat(5000))]) },
        { type: 'context', text: [textSpan('c'.repeat(5000))] },
        ...Array.from({ length: 80 }, (): { type: 'divider' } => ({ type: 'divider' })),
        { type: 'actions', buttons: [{ actionId: 'shipgate.cancel', label: 'L'.repeat(200), value: 'sg-1' }] },
      ],
    };
    const blocks = toBlockKit(view);
    const texts = textsOf(blocks);
    expect(blocks.length).toBeLessThanOrEqual(50);
    expect(texts.header.every((t) => t.length <= 150)).toBe(true);
    expect(texts.section.every((t) => t.length <= 3000)).toBe(true);
    expect(texts.field.every((t) => t.length <= 2000)).toBe(true);
    expect(texts.context.every((t) => t.length <= 3000)).toBe(true);
    expect(texts.button.every((t) => t.length <= 75)).toBe(true);
    for (const block of blocks)
      if (block.type === 'section' && block.fields) expect(block.fields.length).toBeLessThanOrEqual(10);
    // Truncation is visible and never leaves half an entity behind.
    expect(texts.header[0]).toMatch(/…$/);
    expect(texts.section[0]).toMatch(/(&amp;|&lt;|&gt;)…$/);
    // The button survives the block cap: it is what a person acts on.
    expect(blocks.at(-1)?.type).toBe('actions');
  });

  it('keeps a huge task and summary within limits through the real renderers', () => {
    const task = 'word '.repeat(3000);
    const r = applyOutcome(
      run({}, 'acme/shop', task),
      'agent',
      { kind: 'failed', summary: 'failure line\n'.repeat(2000) },
      t0,
    );
    for (const view of [renderCard(r), renderGateReply(r, 'agent'), renderRunEnded(r)]) {
      const blocks = toBlockKit(view);
      const texts = textsOf(blocks);
      expect(blocks.length).toBeLessThanOrEqual(50);
      expect([...texts.section, ...texts.context].every((t) => t.length <= 3000)).toBe(true);
      expect(texts.header.every((t) => t.length <= 150)).toBe(true);
    }
  });
});

describe('Slack markup in incoming text', () => {
  it('flattens mentions, links, emphasis and entities without touching words', () => {
    expect(
      flattenMrkdwn('*bold* _it_ ~gone~ snake_case_name 2*3*4 <@U1> <!channel> <#C1|general> <https://x.io/_a_|see>'),
    ).toBe('bold it gone snake_case_name 2*3*4 @U1 @channel #general see (https://x.io/_a_)');
    expect(flattenMrkdwn('a &lt;b&gt; &amp;lt;')).toBe('a <b> &lt;');
  });
});

describe('the Slack renderer of the neutral view', () => {
  it('escapes user text in every kind of span, so nothing a person typed becomes a mention, link or quote end', () => {
    const hostile = '<!channel> <@U0ADMIN> <https://evil.example|x> & > done';
    const rendered = toMrkdwn([
      textSpan(hostile),
      { kind: 'bold', text: hostile },
      { kind: 'code', text: hostile },
      { kind: 'pre', text: hostile },
      { kind: 'quote', text: `${hostile}\nsecond line` },
      { kind: 'link', url: 'https://ok.example/a?b=1&c=<2>|3', label: hostile },
    ]);
    expect(rendered).not.toMatch(/<!channel>|<@U0ADMIN>|<https:\/\/evil/);
    expect(rendered).toContain('&lt;!channel&gt; &lt;@U0ADMIN&gt; &lt;https://evil.example|x&gt; &amp; &gt; done');
    expect(rendered).toContain(`*${escapeMrkdwn(hostile)}*`);
    expect(rendered).toContain(`\`${escapeMrkdwn(hostile)}\``);
    expect(rendered).toContain(`\`\`\`\n${escapeMrkdwn(hostile)}\n\`\`\``);
    // Each quoted line starts its own quote; a `>` typed by the user is text.
    expect(rendered).toContain(`> ${escapeMrkdwn(hostile)}\n> second line`);
    // The one link token is ours: its URL cannot end the token early, its label is escaped.
    expect(rendered).toContain(`<https://ok.example/a?b=1&amp;c=%3C2%3E%7C3|${escapeMrkdwn(hostile)}>`);
  });

  it('shows only http(s) URLs as links, Slack ids as mentions and channel links, anything else as text', () => {
    expect(toMrkdwn([{ kind: 'link', url: 'javascript:alert(1)', label: 'x' }])).toBe('x (javascript:alert(1))');
    expect(toMrkdwn([{ kind: 'mention', principal: 'U0BOB' }])).toBe('<@U0BOB>');
    expect(toMrkdwn([{ kind: 'mention', principal: 'discord:123|<!here>' }])).toBe('@discord:123|&lt;!here&gt;');
    expect(toMrkdwn([{ kind: 'channel', channel: 'CSHOP' }])).toBe('<#CSHOP>');
    expect(toMrkdwn([{ kind: 'channel', channel: '<!here>' }])).toBe('#&lt;!here&gt;');
  });

  it('escapes the plain fallback text and plain header and button labels are sent as plain_text', () => {
    const card = renderCard(run({}, 'acme/shop', 'a < b & <!here>'));
    expect(escapeMrkdwn(card.text)).toContain('a &lt; b &amp; &lt;!here&gt;');
    const blocks = toBlockKit({
      text: 'x',
      blocks: [
        { type: 'header', text: 'R&D <run>' },
        { type: 'actions', buttons: [{ actionId: 'shipgate.cancel', label: 'Stop & <go>', value: 'sg-1' }] },
      ],
    });
    expect(blocks[0]).toMatchObject({ type: 'header', text: { type: 'plain_text', text: 'R&D <run>' } });
    expect(blocks[1]).toMatchObject({ elements: [{ text: { type: 'plain_text', text: 'Stop & <go>' } }] });
  });
});
