import { afterEach, describe, expect, it } from 'vitest';
import { SIGNING_SECRET } from '../helpers/bot.js';
import { auditEvents, runOf, threadReplies, until } from '../helpers/deploy-world.js';
import { eventually } from '../helpers/eventually.js';
import { sendSlashCommand } from '../helpers/slack-requests.js';
import { startWorld, type World } from '../helpers/world.js';

/**
 * An outside system out of reach (issue 12): GitHub answers 502 to the repository look-up the agent
 * gate starts with, more often than the client's own retries cover. The run's job fails and BullMQ
 * tries it again; the thread says "retrying (n of m): <reason>" meanwhile, and the run goes on once
 * GitHub answers again.
 */

let world: World | undefined;
afterEach(async () => {
  const problems = (await world?.stop()) ?? [];
  world = undefined;
  expect(problems).toEqual([]);
});

const POLICY = 'repos:\n  acme/shop:\n    checks: {}\n';

describe('an outage while a gate runs', { timeout: 90_000 }, () => {
  it('is a "retrying (n of m)" reply in the thread, and the run goes on when the system is back', async () => {
    world = await startWorld({ name: 'outage-retry', policy: POLICY, files: { 'src/server.js': 'module.exports = {};\n' } });
    const w = world;
    for (let i = 0; i < 5; i += 1) w.github.failNext('GET', '/repos/acme/shop', { status: 502, body: { message: 'Server Error' } });
    w.model.script(
      { content: [{ type: 'tool_use', id: 't1', name: 'str_replace_based_edit_tool', input: { command: 'create', path: '/repo/src/health.js', file_text: 'module.exports = 1;\n' } }] },
      { content: [{ type: 'text', text: 'Added src/health.js.' }] },
    );
    const runId = await w.ship('acme/shop add a health module');
    const retry = await eventually(async () => {
      const posted = threadReplies(w, 'agent retrying (');
      return posted.length > 0 ? posted[0] : undefined;
    }, 'the retrying reply', 30_000);
    expect(retry).toMatch(/^agent retrying \(2 of 8\): github/);
    await until(w, runId, 'the pull request opened after the outage', (run) => run.artifacts.pr?.number, 60_000);
    const run = await runOf(w, runId);
    expect(run.state).not.toBe('failed');
    // One reply per attempt, never two for the same one.
    const attempts = threadReplies(w, 'agent retrying (').map((reply) => /\((\d+) of 8\)/.exec(reply)?.[1]);
    expect(new Set(attempts).size).toBe(attempts.length);
  });

  it('is interrupted at once by a cancel: the run ends cancelled without waiting out the client\'s retries', async () => {
    // plugin-retry would wait 1² × 10 minutes before its second attempt: far past this test's timeout.
    world = await startWorld({ name: 'outage-cancel', policy: POLICY, files: { 'src/server.js': 'module.exports = {};\n' }, tuning: { githubRetryAfterBaseMs: 600_000 } });
    const w = world;
    for (let i = 0; i < 5; i += 1) w.github.failNext('GET', '/repos/acme/shop', { status: 502, body: { message: 'Server Error' } });
    const runId = await w.ship('acme/shop add a health module');
    await eventually(async () => w.github.requestsTo({ method: 'GET', path: '/repos/acme/shop' }).some((r) => r.status === 502), 'the first 502', 30_000);
    const ack = await sendSlashCommand(w.bot.eventsUrl, SIGNING_SECRET, { text: `cancel ${runId}`, user_id: 'UALICE', channel_id: 'CSHOP' });
    expect(ack.body).toContain('once its work has stopped');

    await until(w, runId, 'the run cancelled', (run) => run.state === 'cancelled', 30_000);
    const events = (await auditEvents(w, runId)).map((event) => event.type);
    expect(events).toContain('run.cancelled');
    expect(events).not.toContain('run.failed');
    // Not an outage: no "retrying" reply, and no second request for the cancelled call.
    expect(threadReplies(w, 'agent retrying (')).toEqual([]);
    expect(w.github.requestsTo({ method: 'GET', path: '/repos/acme/shop' })).toHaveLength(1);
    expect(w.model.requests).toHaveLength(0);
  });
});
