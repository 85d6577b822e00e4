import { afterEach, describe, expect, it } from 'vitest';
import type { GateOutcome } from '../../src/domain/run.js';
import type { GateContext, GateStep } from '../../workers/gates/gate-step.js';
import { SIGNING_SECRET, startTestBot, type TestBot } from '../helpers/bot.js';
import { eventually } from '../helpers/eventually.js';
import { sendSlashCommand } from '../helpers/slack-requests.js';
import type { SlackServer } from '../helpers/slack-server.js';

/**
 * The run state machine and the chat outbox, driven through gate steps that
 * stand in for the real gates (issues 3 and 4 plug real ones into the same slots).
 */

const OPEN_POLICY = `
repos:
  acme/docs: {}
`;

let bot: TestBot | undefined;
afterEach(async () => {
  expect(bot?.slack.unexpected ?? []).toEqual([]);
  await bot?.stop();
  bot = undefined;
});

function step(decide: (context: GateContext) => Promise<GateOutcome> | GateOutcome): GateStep & { calls: number } {
  const s = {
    calls: 0,
    async run(context: GateContext) {
      s.calls++;
      return decide(context);
    },
  };
  return s;
}

async function request(b: TestBot, text = 'acme/docs fix the typo'): Promise<string> {
  const result = await sendSlashCommand(b.eventsUrl, SIGNING_SECRET, { text, user_id: 'UALICE', channel_id: 'CDOCS' });
  const id = /sg-[a-z0-9]{8}/.exec(result.body)?.[0];
  if (id === undefined) throw new Error(`no run id in ${result.body}`);
  return id;
}

function replies(slack: SlackServer) {
  return slack.messages('CDOCS').filter((m) => m.thread_ts !== undefined && m.thread_ts !== m.ts);
}

describe('a run through its gates', () => {
  it('posts one reply per gate result, ends done, and says so in the thread and on the card', async () => {
    const pass = (gate: string) => step(() => ({ kind: 'passed', summary: `${gate} ok` }));
    const steps = { agent: pass('agent'), pr: pass('pr'), ci: pass('ci'), merge: pass('merge') };
    bot = await startTestBot({ name: 'flow', policy: OPEN_POLICY, steps, cardUpdateIntervalMs: 300 });
    const runId = await request(bot);

    await eventually(async () => (await bot?.app.store.get(runId))?.state === 'done', 'run done');
    const slack = bot.slack;
    await slack.waitFor((s) => replies(s).length >= 5, 5_000, 'four gate replies and the end');
    await new Promise((r) => setTimeout(r, 500));
    const shown = replies(slack).map((m) => `${m.text ?? ''} ${JSON.stringify(m.blocks ?? [])}`);
    for (const gate of ['agent', 'pr', 'ci', 'merge']) {
      expect(shown.filter((t) => t.includes(`${gate} ok`))).toHaveLength(1);
    }
    expect(replies(slack)).toHaveLength(5);
    expect(Object.values(steps).map((s) => s.calls)).toEqual([1, 1, 1, 1]);
    const root = slack.messages('CDOCS').find((m) => m.thread_ts === undefined || m.thread_ts === m.ts);
    await slack.waitFor(() => /done|every gate passed/i.test(JSON.stringify(root?.blocks ?? [])), 5_000, 'card shows done');
    const audit = await bot.app.audit.eventsForRun(runId);
    expect(audit.filter((e) => e.type === 'gate.passed')).toHaveLength(4);
    expect(audit.map((e) => e.type)).toContain('run.done');
  });

  it('coalesces card updates: a burst of changes gives at most one update per interval', async () => {
    const interval = 1_000;
    // Each check is "pending" a few times, quickly: many state changes in a short time.
    let polls = 0;
    const steps = {
      agent: step(() => (++polls < 8 ? { kind: 'pending', summary: `poll ${polls}`, recheckAfterMs: 20 } : { kind: 'passed', summary: 'ok' })),
      pr: step(() => ({ kind: 'failed', summary: 'branch protection refused the push' })),
    };
    bot = await startTestBot({ name: 'coalesce', policy: OPEN_POLICY, steps, cardUpdateIntervalMs: interval });
    const runId = await request(bot);
    await eventually(async () => (await bot?.app.store.get(runId))?.state === 'failed', 'run failed');
    const root = bot.slack.messages('CDOCS')[0];
    // The final state reaches the card.
    await bot.slack.waitFor(() => /branch protection refused/.test(JSON.stringify(root?.blocks ?? [])), 5_000, 'final card');
    const writes = bot.slack.calls.filter((c) => c.method === 'chat.update' && c.body.ts === root?.ts);
    const run = await bot.app.store.get(runId);
    expect(run?.version ?? 0).toBeGreaterThan(writes.length + 3);
    // Root post plus updates: consecutive writes to the card are at least `interval` apart (small clock slack).
    const times = [bot.slack.callsOf('chat.postMessage')[0]?.at ?? 0, ...writes.map((c) => c.at)];
    for (let i = 1; i < times.length; i++) expect((times[i] ?? 0) - (times[i - 1] ?? 0)).toBeGreaterThanOrEqual(interval - 50);
  });

  it('a failed gate fails the run with the reason; retry resumes from that gate', async () => {
    let prAttempts = 0;
    const steps = {
      agent: step(() => ({ kind: 'passed', summary: 'diff ready' })),
      pr: step(() => (++prAttempts === 1 ? { kind: 'failed', summary: 'no permission to push' } : { kind: 'passed', summary: 'PR #7 opened' })),
    };
    bot = await startTestBot({ name: 'retry', policy: OPEN_POLICY, steps, cardUpdateIntervalMs: 200 });
    const runId = await request(bot);
    await eventually(async () => (await bot?.app.store.get(runId))?.state === 'failed', 'run failed');
    expect((await bot.app.store.get(runId))?.outcome).toBe('pr failed: no permission to push');
    expect((await bot.app.store.listActive()).map((r) => r.id)).not.toContain(runId);

    const retry = await sendSlashCommand(bot.eventsUrl, SIGNING_SECRET, { text: `retry ${runId}`, user_id: 'UALICE', channel_id: 'CDOCS' });
    expect(retry.body).toContain('from gate pr');
    // The run resumes at pr (agent is not re-run) and waits at the next gate, which has no step.
    await eventually(async () => (await bot?.app.store.get(runId))?.gates.find((g) => g.name === 'ci')?.notConfigured, 'ci reached');
    expect(steps.agent.calls).toBe(1);
    expect(steps.pr.calls).toBe(2);
    // Active again: listed by /ship status and counted against the active-run limits.
    expect((await bot.app.store.listActive()).map((r) => r.id)).toContain(runId);
  });

  it('retries a step that throws (an outage) and goes on from the same gate', async () => {
    let calls = 0;
    const steps = {
      agent: step(() => {
        calls++;
        if (calls === 1) throw new Error('github: 502 Bad Gateway');
        return { kind: 'passed', summary: 'ok after a retry' };
      }),
    };
    bot = await startTestBot({ name: 'outage', policy: OPEN_POLICY, steps });
    const runId = await request(bot);
    await eventually(async () => (await bot?.app.store.get(runId))?.gates[0]?.state === 'passed', 'agent passed after retry', 15_000);
    expect(calls).toBe(2);
  });

  it('cancel during a running step aborts it and confirms once it stopped', async () => {
    let aborted = false;
    const steps = {
      agent: step(
        ({ signal }) =>
          new Promise<GateOutcome>((resolve) => {
            signal.addEventListener('abort', () => {
              aborted = true;
              resolve({ kind: 'pending', summary: 'interrupted', recheckAfterMs: 60_000 });
            });
          }),
      ),
    };
    bot = await startTestBot({ name: 'abort', policy: OPEN_POLICY, steps, cardUpdateIntervalMs: 200 });
    const runId = await request(bot);
    await eventually(async () => (await bot?.app.store.get(runId))?.gates[0]?.state === 'running', 'agent running');
    const ack = await sendSlashCommand(bot.eventsUrl, SIGNING_SECRET, { text: `cancel ${runId}`, user_id: 'UALICE', channel_id: 'CDOCS' });
    expect(ack.body).toContain('once its work has stopped');
    await eventually(async () => (await bot?.app.store.get(runId))?.state === 'cancelled', 'cancelled');
    expect(aborted).toBe(true);
    await bot.slack.waitFor((s) => replies(s).some((m) => /cancel/i.test(m.text ?? '')), 5_000, 'confirmation');
  });
});
