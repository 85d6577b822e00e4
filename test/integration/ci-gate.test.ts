import { createHmac } from 'node:crypto';
import { z } from 'zod';
import { afterEach, describe, expect, it } from 'vitest';
import type { ModelRequest } from '../helpers/anthropic-server.js';
import type { AnnotationSetup, CheckRunSetup } from '../helpers/github-server.js';
import { SIGNING_SECRET } from '../helpers/bot.js';
import { eventually } from '../helpers/eventually.js';
import { sendSignedRequest, sendSlashCommand } from '../helpers/slack-requests.js';
import { gitIn, GITHUB_TOKEN, startWorld, WEBHOOK_SECRET, type World } from '../helpers/world.js';

/**
 * Issue 4, "done when": CI is the verdict. The real Octokit polls a local
 * GitHub REST server (with ETags) for check runs of the pushed commit; a red
 * CI goes back to the scripted model; the merge gate waits for GitHub.
 */

const POLICY = `
repos:
  acme/shop:
    checks: { test: test -f src/health.js }
budgets: { maxAgentTurns: 20, maxCiIterations: 3, maxTokensPerRun: 2000000, maxCostUsdPerRun: 10, maxRunMinutes: 60 }
`;
const FILES = { 'src/server.js': 'module.exports = {};\n', 'test/health.test.js': "expect(health()).toBe('ok');\n" };

let world: World | undefined;
afterEach(async () => {
  const problems = (await world?.stop()) ?? [];
  world = undefined;
  expect(problems).toEqual([]);
});

const create = (id: string, text: string) => ({
  content: [{ type: 'tool_use' as const, id, name: 'str_replace_based_edit_tool', input: { command: 'create', path: '/repo/src/health.js', file_text: text } }],
});
const done = (text: string) => ({ content: [{ type: 'text' as const, text }] });

function firstUserText(request: ModelRequest): string {
  const first = request.params.messages[0];
  if (first === undefined) return '';
  return typeof first.content === 'string' ? first.content : first.content.map((b) => ('text' in b && typeof b.text === 'string' ? b.text : '')).join('\n');
}

async function start(name: string, tuning: { firstPollMs?: number } = { firstPollMs: 100 }): Promise<World> {
  world = await startWorld({ name, policy: POLICY, files: FILES, tuning });
  return world;
}

async function runOf(w: World, runId: string) {
  const run = await w.bot.app.store.get(runId);
  if (run === undefined) throw new Error(`no run ${runId}`);
  return run;
}

/** Waits for the run's pushed commit (a new one when `other` is given) and returns its sha. */
async function pushedCommit(w: World, runId: string, other?: string): Promise<string> {
  let seen = '';
  try {
    return await eventually(async () => {
      const run = await runOf(w, runId);
      const sha = run.artifacts.agent?.commitSha;
      seen = `${run.state} ${run.gates.map((g) => `${g.name}:${g.state}${g.summary === undefined ? '' : `(${g.summary.slice(0, 80)})`}`).join(' ')} sha=${sha ?? '-'} activity=${run.activity ?? '-'}`;
      return run.gates.find((g) => g.name === 'ci')?.state === 'running' && sha !== undefined && sha !== other ? sha : undefined;
      // Generous: on a loaded 2-core machine a stalled BullMQ job is recovered after ~20 s, and that is still a pass.
    }, 'a pushed commit under CI', 45_000);
  } catch (error) {
    // Say where the run was, so a slow or stuck run can be told apart.
    // Which model requests were made, each by its first user message: tells a script step consumed twice apart from a slow run.
    const requests = w.model.requests.map((r) => JSON.stringify(r.params?.messages.at(-1)?.content ?? '').slice(0, 80));
    throw new Error(`${error instanceof Error ? error.message : String(error)}; the run was: ${seen}; model requests (${requests.length}): ${JSON.stringify(requests)}`, { cause: error });
  }
}

/**
 * Fails a check run with its annotations (and job log) already in place, as GitHub reports them: a
 * poll between two fake updates must never see the failure without its details, which would give the
 * fix loop another failure fingerprint than the one the test means.
 */
function failCheck(w: World, sha: string, setup: CheckRunSetup, annotations: AnnotationSetup[], jobLog?: string): number {
  const [running] = w.github.setCheckRuns('acme/shop', sha, [{ name: setup.name, status: 'in_progress', app: setup.app }]);
  const id = running?.id ?? 0;
  w.github.setAnnotations(id, annotations);
  if (jobLog !== undefined) w.github.setJobLog(id, jobLog);
  w.github.setCheckRuns('acme/shop', sha, [{ ...setup, id }]);
  return id;
}

function ciReplies(w: World): string[] {
  return w.bot.slack
    .messages('CSHOP')
    .filter((m) => m.thread_ts !== undefined && m.thread_ts !== m.ts && (m.text ?? '').startsWith('ci '))
    .map((m) => m.text ?? '');
}

describe('the CI gate and the fix loop', { timeout: 120_000 }, () => {
  it('red CI with an annotation goes back to the agent, a second commit lands on the same branch, green CI passes, the merge is recorded', async () => {
    const w = await start('fix-loop');
    w.model.script(
      create('c1', "module.exports = () => 'healthy';\n"),
      done('Added src/health.js.'),
      (request) => {
        if (!firstUserText(request).includes("expected 'healthy' to be 'ok'")) throw new Error(`annotation missing from: ${firstUserText(request)}`);
        return create('c2', "module.exports = () => 'ok';\n");
      },
      done('Return ok, as the test expects.'),
    );
    const runId = await w.ship('acme/shop add a health module');
    const first = await pushedCommit(w, runId);

    w.github.setCheckRuns('acme/shop', first, [{ name: 'test', status: 'in_progress' }]);
    await eventually(async () => (await runOf(w, runId)).gates.find((g) => g.name === 'ci')?.summary?.includes('0/1'), 'CI in progress on the card');
    failCheck(
      w,
      first,
      { name: 'test', conclusion: 'failure', output: { title: '1 test failed', summary: 'health' }, app: { slug: 'github-actions' } },
      [{ path: 'test/health.test.js', start_line: 1, message: "expected 'healthy' to be 'ok'", annotation_level: 'failure' }],
      'Run npm test\nFAIL test/health.test.js\n  expected healthy to be ok\n',
    );

    const second = await pushedCommit(w, runId, first);
    const run = await runOf(w, runId);
    const branch = run.artifacts.agent?.branch ?? '';
    expect(gitIn(w.bare, 'rev-list', '--count', `main..${branch}`)).toBe('2');
    expect(gitIn(w.bare, 'rev-parse', `${branch}~1`)).toBe(first);
    expect(w.github.pulls('acme/shop')).toHaveLength(1);

    w.github.setCheckRuns('acme/shop', second, [{ name: 'test', conclusion: 'success' }]);
    await eventually(async () => (await runOf(w, runId)).gates.find((g) => g.name === 'ci')?.state === 'passed', 'CI passed');
    const prNumber = run.artifacts.pr?.number ?? 0;
    w.github.mergePull('acme/shop', prNumber, 'f00dfacef00dfacef00dfacef00dfacef00dface');
    await eventually(async () => (await runOf(w, runId)).state === 'done', 'run done after the merge', 20_000);
    expect((await runOf(w, runId)).artifacts.merge?.commitSha).toBe('f00dfacef00dfacef00dfacef00dfacef00dface');

    await new Promise((r) => setTimeout(r, 300));
    // One reply per CI verdict (failed, then passed), not one per poll; the failure names what failed.
    const verdicts = ciReplies(w);
    expect(verdicts).toHaveLength(2);
    expect(verdicts[0]).toMatch(/test/);
    expect(verdicts[1]).toMatch(/passed/);
    await w.bot.slack.waitFor((s) => s.messages('CSHOP').some((m) => (m.text ?? '').startsWith('merge ') && /merged/.test(m.text ?? '')), 5_000, 'merged reply');

    // The evidence (SPEC §7): one pr.opened for the one PR, one ci.verdict per verdicted commit.
    const events = (await w.bot.app.audit.exportRun(runId)).trim().split('\n').map((line) => z.object({ type: z.string(), data: z.record(z.string(), z.unknown()) }).parse(JSON.parse(line)));
    expect(events.filter((e) => e.type === 'pr.opened').map((e) => e.data.number)).toEqual([prNumber]);
    expect(events.filter((e) => e.type === 'commit.created').map((e) => e.data.commit)).toEqual([first, second]);
    expect(events.filter((e) => e.type === 'agent.iteration').map((e) => [e.data.iteration, e.data.onCommit])).toEqual([
      [1, null],
      [2, first],
    ]);
    expect(events.filter((e) => e.type === 'ci.verdict').map((e) => [e.data.commit, e.data.verdict])).toEqual([
      [first, 'failed'],
      [second, 'passed'],
    ]);
  });

  it('secrets printed by CI (log tail, annotation, check summary) reach neither the thread, the model, the audit trail nor the stored run', async () => {
    const w = await start('ci-secrets');
    // Configured secrets (not token-shaped: only the configured-value scrub knows them) and a token shape.
    const awsKey = ['AKIA', 'IOSFODNN7', 'EXAMPLE'].join('');
    const secrets = [WEBHOOK_SECRET, SIGNING_SECRET, GITHUB_TOKEN, awsKey];
    w.model.script(
      create('c1', "module.exports = () => 'healthy';\n"),
      done('Added src/health.js.'),
      (request) => {
        // The failure did come back, with the secrets cut out of it.
        if (!firstUserText(request).includes('[REDACTED]')) throw new Error(`no redacted CI report in: ${firstUserText(request)}`);
        return create('c2', "module.exports = () => 'ok';\n");
      },
      done('Return ok.'),
    );
    const runId = await w.ship('acme/shop add a health module');
    const first = await pushedCommit(w, runId);
    failCheck(
      w,
      first,
      { name: 'test', conclusion: 'failure', output: { title: '1 test failed', summary: `env: GITHUB_WEBHOOK_SECRET=${WEBHOOK_SECRET}` }, app: { slug: 'github-actions' } },
      [{ path: 'test/health.test.js', start_line: 1, message: `request failed with token ${GITHUB_TOKEN}`, annotation_level: 'failure' }],
      ['Run npm test', `+ echo ${WEBHOOK_SECRET}`, WEBHOOK_SECRET, `curl -H "X-Signing: ${SIGNING_SECRET}"`, `aws configure set aws_access_key_id ${awsKey}`, 'FAIL test/health.test.js', ''].join('\n'),
    );
    await pushedCommit(w, runId, first);
    await w.bot.slack.waitFor((s) => s.messages('CSHOP').some((m) => (m.text ?? '').startsWith('ci ')), 5_000, 'the CI failure reply');

    const slack = JSON.stringify(w.bot.slack.calls);
    const model = JSON.stringify(w.model.requests.map((r) => r.body));
    const audit = await w.bot.app.audit.exportRun(runId);
    const stored = JSON.stringify(await runOf(w, runId));
    for (const secret of secrets) {
      expect(slack).not.toContain(secret);
      expect(model).not.toContain(secret);
      expect(audit).not.toContain(secret);
      expect(stored).not.toContain(secret);
    }
    // Scrubbed, not dropped: the report still says what failed.
    expect(model).toContain('request failed with token [REDACTED]');
    expect(audit).toContain('[REDACTED]');
  });

  it('stops early when the same failure repeats, before maxCiIterations', async () => {
    const w = await start('repeat');
    w.model.script(create('c1', "module.exports = 'a';\n"), done('first try'), create('c2', "module.exports = 'b';\n"), done('second try'));
    const runId = await w.ship('acme/shop add a health module');
    const annotate = (sha: string) => failCheck(w, sha, { name: 'test', conclusion: 'failure' }, [{ path: 'test/health.test.js', start_line: 3, message: 'health is not a function' }]);
    const first = await pushedCommit(w, runId);
    annotate(first);
    const second = await pushedCommit(w, runId, first);
    annotate(second);
    await eventually(async () => (await runOf(w, runId)).state === 'failed', 'run failed', 45_000).catch(async (error: unknown) => {
      const run = await runOf(w, runId);
      throw new Error(`${String(error)}; run: ${run.state} ${JSON.stringify(run.gates.map((g) => [g.name, g.state, g.summary?.slice(0, 200)]))} ci=${JSON.stringify(run.artifacts.ci)} first=${first} second=${second} now=${run.artifacts.agent?.commitSha ?? '-'}`);
    });
    expect((await runOf(w, runId)).outcome).toMatch(/same failure/);
    expect((await runOf(w, runId)).artifacts.ci?.iterations).toBe(1);
  });

  it('does not spend an agent iteration on a cancelled or timed-out check: it offers a re-run', async () => {
    const w = await start('infra');
    w.model.script(create('c1', "module.exports = () => 'ok';\n"), done('done'));
    const runId = await w.ship('acme/shop add a health module');
    const sha = await pushedCommit(w, runId);
    w.github.setCheckRuns('acme/shop', sha, [{ name: 'test', conclusion: 'timed_out' }, { name: 'lint', conclusion: 'cancelled' }]);
    await eventually(async () => (await runOf(w, runId)).state === 'failed', 'run failed', 45_000);
    expect((await runOf(w, runId)).outcome).toMatch(/infrastructure problem.*retry/s);
    expect(w.model.requests).toHaveLength(2);

    // The jobs are re-run and go green; `/ship retry` resumes at ci, and that attempt's verdict is
    // evidence of its own (same commit, another attempt), not swallowed as a duplicate of the first.
    w.github.setCheckRuns('acme/shop', sha, [{ name: 'test', conclusion: 'success' }, { name: 'lint', conclusion: 'success' }]);
    await sendSlashCommand(w.bot.eventsUrl, SIGNING_SECRET, { text: `retry ${runId}`, user_id: 'UALICE', channel_id: 'CSHOP' });
    await eventually(async () => (await runOf(w, runId)).gates.find((g) => g.name === 'ci')?.state === 'passed', 'CI passed after the retry', 20_000);
    const verdicts = (await w.bot.app.audit.exportRun(runId)).split('\n').filter((line) => line.includes('"ci.verdict"'));
    expect(verdicts).toHaveLength(2);
    expect(verdicts[0]).toMatch(/"verdict":"incomplete"/);
    expect(verdicts[1]).toMatch(/"verdict":"passed"/);
  });

  it('flags in the thread a fix that deletes a test instead of fixing the code', async () => {
    const w = await start('weakening');
    const remove = { content: [{ type: 'tool_use' as const, id: 'd1', name: 'str_replace_based_edit_tool', input: { command: 'create', path: '/repo/test/health.test.js', file_text: '// removed\n' } }] };
    w.model.script(create('c1', "module.exports = () => 'healthy';\n"), done('first try'), remove, done('Made the test pass.'));
    const runId = await w.ship('acme/shop add a health module');
    const first = await pushedCommit(w, runId);
    failCheck(w, first, { name: 'test', conclusion: 'failure' }, [{ path: 'test/health.test.js', start_line: 1, message: "expected 'healthy' to be 'ok'" }]);
    await pushedCommit(w, runId, first);
    expect((await runOf(w, runId)).artifacts.agent?.testWarnings?.join(' ')).toMatch(/assert/i);
    await w.bot.slack.waitFor(
      (s) => s.messages('CSHOP').some((m) => (m.text ?? '').startsWith('agent ') && JSON.stringify(m.blocks ?? []).includes('FLAGGED')),
      5_000,
      'flagged agent reply',
    );
  });

  it('a closed pull request ends the run with a clear message', async () => {
    const w = await start('closed');
    w.model.script(create('c1', "module.exports = () => 'ok';\n"), done('done'));
    const runId = await w.ship('acme/shop add a health module');
    const sha = await pushedCommit(w, runId);
    w.github.setCheckRuns('acme/shop', sha, [{ name: 'test', conclusion: 'success' }]);
    await eventually(async () => (await runOf(w, runId)).gates.find((g) => g.name === 'merge')?.state === 'running', 'waiting for the merge');
    w.github.closePull('acme/shop', (await runOf(w, runId)).artifacts.pr?.number ?? 0);
    await eventually(async () => (await runOf(w, runId)).state === 'failed', 'run ended', 20_000);
    expect((await runOf(w, runId)).outcome).toMatch(/closed without merging/);
  });

  it('costs at most N + 3 rate-limited GitHub requests for N CI state changes; the rest are 304s', async () => {
    const w = await start('etags', { firstPollMs: 50 });
    w.model.script(create('c1', "module.exports = () => 'ok';\n"), done('done'));
    const runId = await w.ship('acme/shop add a health module');
    const sha = await pushedCommit(w, runId);
    // Per watched commit: its check runs, its statuses and its pull request. (Required checks are read
    // per repository and cached, so they are not a cost of each commit.)
    const perCommit = { method: 'GET', path: new RegExp(`/commits/${sha}/(check-runs|statuses)|/pulls/\\d+$`) };
    const before = w.github.countStatuses(perCommit);
    const polls = () => w.github.requestsTo({ method: 'GET', path: /\/commits\/[0-9a-f]+\/check-runs/ }).length;
    // Three state changes, each left long enough for several unchanged polls.
    const states: CheckRunSetup[][] = [
      [{ name: 'test', status: 'queued' }],
      [{ name: 'test', status: 'in_progress' }],
      [{ name: 'test', conclusion: 'success' }],
    ];
    for (const state of states.slice(0, 2)) {
      w.github.setCheckRuns('acme/shop', sha, state);
      const seen = polls();
      await eventually(async () => polls() >= seen + 4, 'several polls of one state', 15_000);
    }
    w.github.setCheckRuns('acme/shop', sha, states[2] ?? []);
    await eventually(async () => (await runOf(w, runId)).gates.find((g) => g.name === 'ci')?.state === 'passed', 'CI passed', 15_000);
    const after = w.github.countStatuses(perCommit);
    const spent = (after: Record<number, number>) => Object.entries(after).filter(([status]) => status !== '304').reduce((sum, [, n]) => sum + n, 0);
    const counted = spent(after) - spent(before);
    const notModified = (after[304] ?? 0) - (before[304] ?? 0);
    // N = 4 states of the commit's checks: none yet, queued, in progress, success.
    expect(counted).toBeLessThanOrEqual(4 + 3);
    expect(notModified).toBeGreaterThan(counted);
    // The cached required checks cost nothing per poll: protection and rules were read once.
    expect(w.github.requestsTo({ path: /protection\/required_status_checks/ }).length).toBe(1);
  });

  it('a signed webhook triggers evaluation without waiting for the next poll; a badly signed one gets 401', async () => {
    const w = await start('webhook', { firstPollMs: 60_000 });
    w.model.script(create('c1', "module.exports = () => 'ok';\n"), done('done'));
    const runId = await w.ship('acme/shop add a health module');
    const sha = await pushedCommit(w, runId);
    w.github.setCheckRuns('acme/shop', sha, [{ name: 'test', conclusion: 'success' }]);
    const body = JSON.stringify({ action: 'completed', check_run: { head_sha: sha, name: 'test', status: 'completed', conclusion: 'success' }, repository: { full_name: 'acme/shop' } });
    const send = (secret: string) =>
      fetch(`${w.bot.baseUrl}/github/webhooks`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'x-github-event': 'check_run',
          'x-github-delivery': `d-${Date.now()}`,
          'x-hub-signature-256': `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`,
        },
        body,
      });
    expect((await send('wrong-secret')).status).toBe(401);
    const startedAt = Date.now();
    expect((await send(WEBHOOK_SECRET)).status).toBe(202);
    await eventually(async () => (await runOf(w, runId)).gates.find((g) => g.name === 'ci')?.state === 'passed', 'CI passed after the webhook', 10_000);
    // The next poll was a minute away: the webhook, not polling, moved the run.
    expect(Date.now() - startedAt).toBeLessThan(10_000);
  });

  it('a thread follow-up by the requester reaches the agent; the same text from a bot does nothing', async () => {
    const w = await start('follow-up', { firstPollMs: 60_000 });
    w.model.script(
      create('c1', "module.exports = () => 'ok';\n"),
      done('done'),
      (request) => {
        if (!firstUserText(request).includes('also export a version field')) throw new Error('follow-up missing');
        return create('c2', "module.exports = () => 'ok';\nmodule.exports.version = 1;\n");
      },
      done('Added a version field.'),
    );
    const runId = await w.ship('acme/shop add a health module');
    const first = await pushedCommit(w, runId);
    const root = (await runOf(w, runId)).chat.card ?? '';
    const mention = (user: Record<string, string>, eventId: string) =>
      sendSignedRequest(
        w.bot.eventsUrl,
        SIGNING_SECRET,
        JSON.stringify({
          type: 'event_callback',
          team_id: 'T111',
          api_app_id: 'A111',
          event_id: eventId,
          event_time: Math.floor(Date.now() / 1000),
          event: { type: 'app_mention', text: '<@U0BOT> also export a version field', channel: 'CSHOP', ts: `${Date.now() / 1000}`, thread_ts: root, ...user },
        }),
        'application/json',
      );
    expect((await mention({ user: 'UOTHERBOT', bot_id: 'B999' }, 'Ev-bot')).status).toBe(200);
    await new Promise((r) => setTimeout(r, 500));
    expect((await runOf(w, runId)).artifacts.agent?.commitSha).toBe(first);
    expect(w.model.requests).toHaveLength(2);

    expect((await mention({ user: 'UALICE' }, 'Ev-human')).status).toBe(200);
    const second = await pushedCommit(w, runId, first);
    expect(second).not.toBe(first);
    expect(w.github.pulls('acme/shop')).toHaveLength(1);
  });
});
