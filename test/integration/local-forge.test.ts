import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { MERGE_ACTION_ID } from '../../src/render/card.js';
import { SIGNING_SECRET } from '../helpers/bot.js';
import { sendBlockAction } from '../helpers/slack-requests.js';
import type { ModelRequest } from '../helpers/anthropic-server.js';
import { runOf, threadReplies, until } from '../helpers/deploy-world.js';
import { eventually } from '../helpers/eventually.js';
import { gitIn, startWorld, type World } from '../helpers/world.js';

/**
 * Local mode end to end (SPEC §8, issue 12): a repository given by `path:` is served by the local
 * forge, with the world's GitHub server watching that nobody calls it. The sample repository is made
 * on first start; the agent's branch is pushed into it; the pull request is a review record in the
 * thread; CI is the repository's `ci:` commands run in the real sandbox on the pushed commit; red CI
 * goes back to the agent; green CI fast-forwards the default branch.
 */

let world: World | undefined;
let dir: string | undefined;
afterEach(async () => {
  const problems = (await world?.stop()) ?? [];
  world = undefined;
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
  expect(problems).toEqual([]);
});

const edit = (id: string, path: string, oldText: string, newText: string) => ({
  content: [
    {
      type: 'tool_use' as const,
      id,
      name: 'str_replace_based_edit_tool',
      input: { command: 'str_replace', path, old_str: oldText, new_str: newText },
    },
  ],
});
const done = (text: string) => ({ content: [{ type: 'text' as const, text }] });

function firstUserText(request: ModelRequest): string {
  const first = request.params.messages[0];
  if (first === undefined) return '';
  return typeof first.content === 'string'
    ? first.content
    : first.content.map((b) => ('text' in b && typeof b.text === 'string' ? b.text : '')).join('\n');
}

function policyFor(repoPath: string, extra = ''): string {
  return `
repos:
  demo/shop:
    path: ${repoPath}
    sample: true
    checks: { test: node --test }
    ci:
      test: node --test
      no-todo: "! grep -rn TODO src"
${extra}
budgets: { maxAgentTurns: 20, maxCiIterations: 3, maxTokensPerRun: 2000000, maxCostUsdPerRun: 10, maxRunMinutes: 60 }
`;
}

const HEALTH_ROUTE = "  '/healthz': () => ({ status: 200, body: { ok: true } }), // TODO: report the version\n";

describe('local mode: the local forge', { timeout: 120_000 }, () => {
  it('agent → pull request record → local CI red → fix → green → fast-forward merge → done, without GitHub', async () => {
    dir = mkdtempSync(join(tmpdir(), 'shipgate-local-forge-'));
    const repoPath = join(dir, 'repos', 'shop.git');
    world = await startWorld({
      name: 'local-forge',
      policy: policyFor(repoPath),
      files: { 'unused.txt': 'the world seeds a GitHub repository this test never uses\n' },
    });
    const w = world;
    w.model.script(
      edit('e1', '/repo/src/app.js', "  '/products':", `${HEALTH_ROUTE}  '/products':`),
      done('Added GET /healthz.'),
      (request) => {
        const text = firstUserText(request);
        if (!text.includes('no-todo')) throw new Error(`the CI failure is missing from: ${text}`);
        return edit('e2', '/repo/src/app.js', ' // TODO: report the version', '');
      },
      done('Removed the TODO.'),
    );
    const runId = await w.ship('demo/shop add a /healthz endpoint');

    // The first commit is pushed to the local repository and its pull request is a review record.
    const first = await until(w, runId, 'the first commit pushed', (run) =>
      run.gates.find((g) => g.name === 'agent')?.state === 'passed' ? run.artifacts.agent?.commitSha : undefined,
    );
    expect(gitIn(repoPath, 'rev-parse', `refs/heads/${(await runOf(w, runId)).artifacts.agent?.branch ?? ''}`)).toBe(
      first,
    );
    const pr = await eventually(
      async () => {
        const posted = threadReplies(w, 'pr passed');
        return posted.length > 0 ? posted[0] : undefined;
      },
      'the pr reply',
      30_000,
    );
    expect(pr).toContain('local pull request #1 (open for review)');
    expect(pr).toContain('src/app.js');

    // Local CI fails on the TODO, the agent fixes it on the same branch, CI passes, the branch is fast-forwarded.
    await until(w, runId, 'the run done', (run) => run.state === 'done', 90_000);
    const run = await runOf(w, runId);
    const fixed = run.artifacts.agent?.commitSha ?? '';
    expect(fixed).not.toBe(first);
    expect(run.artifacts.merge?.commitSha).toBe(fixed);
    expect(gitIn(repoPath, 'rev-parse', 'refs/heads/main')).toBe(fixed);
    expect(gitIn(repoPath, 'show', 'main:src/app.js')).toContain("'/healthz'");
    expect(gitIn(repoPath, 'show', 'main:src/app.js')).not.toContain('TODO');
    const ciReplies = threadReplies(w, 'ci ');
    expect(ciReplies.some((reply) => reply.includes('no-todo'))).toBe(true);
    expect(w.github.requests).toEqual([]);
  });

  it('merge: { requireApproval: true }: green CI shows a Merge button the requester may not press; another user merges', async () => {
    dir = mkdtempSync(join(tmpdir(), 'shipgate-local-forge-'));
    const repoPath = join(dir, 'repos', 'shop.git');
    const policy = policyFor(repoPath).replace(
      '    sample: true\n',
      '    sample: true\n    merge: { requireApproval: true }\n',
    );
    world = await startWorld({
      name: 'local-forge-merge',
      policy,
      files: { 'unused.txt': 'the world seeds a GitHub repository this test never uses\n' },
    });
    const w = world;
    w.model.script(
      edit(
        'e1',
        '/repo/src/app.js',
        "  '/products':",
        "  '/healthz': () => ({ status: 200, body: { ok: true } }),\n  '/products':",
      ),
      done('Added GET /healthz.'),
    );
    const runId = await w.ship('demo/shop add a /healthz endpoint');
    await until(w, runId, 'waiting for the Merge click', (run) => run.artifacts.merge?.awaitingClick === true, 60_000);
    const before = gitIn(repoPath, 'rev-parse', 'refs/heads/main');

    const card = await eventually(async () => {
      const cardTs = (await runOf(w, runId)).chat.card;
      const root = w.bot.slack.messages('CSHOP').find((m) => m.ts === cardTs);
      const button = z.object({ action_id: z.literal(MERGE_ACTION_ID), value: z.literal(runId) });
      const elements = (root?.blocks ?? []).flatMap(
        (block) => z.object({ elements: z.array(z.unknown()) }).safeParse(block).data?.elements ?? [],
      );
      return elements.some((element) => button.safeParse(element).success) ? root : undefined;
    }, 'the card with its Merge button');
    const click = async (userId: string) => {
      const result = await sendBlockAction(w.bot.eventsUrl, SIGNING_SECRET, {
        user_id: userId,
        user_name: userId.toLowerCase(),
        channel_id: 'CSHOP',
        message_ts: card.ts,
        action_id: MERGE_ACTION_ID,
        value: runId,
      });
      expect(result.status).toBe(200);
    };

    // The requester's own click is refused, to them alone, and audited; nothing merges.
    await click('UALICE');
    const refusal = await eventually(
      async () =>
        w.bot.slack.ephemerals.find((e) => e.user === 'UALICE' && (e.text ?? '').includes('someone else must merge')),
      'the refusal',
    );
    expect(refusal).toBeDefined();
    expect(gitIn(repoPath, 'rev-parse', 'refs/heads/main')).toBe(before);
    expect((await runOf(w, runId)).state).not.toBe('done');

    // Another person's click merges (fast-forward) and the run ends done.
    await click('UBOB');
    await until(w, runId, 'the run done', (run) => run.state === 'done', 30_000);
    const run = await runOf(w, runId);
    expect(gitIn(repoPath, 'rev-parse', 'refs/heads/main')).toBe(run.artifacts.agent?.commitSha);
    const events = (await w.bot.app.audit.exportRun(runId))
      .trim()
      .split('\n')
      .map((line) => z.object({ type: z.string(), actor: z.string() }).parse(JSON.parse(line)));
    expect(events.filter((e) => e.type === 'action.refused').map((e) => e.actor)).toEqual(['UALICE']);
    expect(events.filter((e) => e.type === 'merge.approved').map((e) => e.actor)).toEqual(['UBOB']);
    expect(w.github.requests).toEqual([]);
  });

  it('a Merge click approves the commit the run showed: a branch moved since is refused, and nothing merges', async () => {
    dir = mkdtempSync(join(tmpdir(), 'shipgate-local-forge-'));
    const repoPath = join(dir, 'repos', 'shop.git');
    const policy = policyFor(repoPath).replace('    sample: true\n', '    sample: true\n    merge: { requireApproval: true }\n');
    world = await startWorld({ name: 'local-forge-moved', policy, files: { 'unused.txt': 'the world seeds a GitHub repository this test never uses\n' } });
    const w = world;
    w.model.script(edit('e1', '/repo/src/app.js', "  '/products':", "  '/healthz': () => ({ status: 200, body: { ok: true } }),\n  '/products':"), done('Added GET /healthz.'));
    const runId = await w.ship('demo/shop add a /healthz endpoint');
    await until(w, runId, 'waiting for the Merge click', (run) => run.artifacts.merge?.awaitingClick === true, 60_000);
    const run = await runOf(w, runId);
    const branch = run.artifacts.agent?.branch ?? '';
    const before = gitIn(repoPath, 'rev-parse', 'refs/heads/main');

    // Someone moves the run branch past what the card showed (as a later push would).
    const tree = gitIn(repoPath, 'rev-parse', `refs/heads/${branch}^{tree}`);
    const sneaked = gitIn(repoPath, '-c', 'user.name=x', '-c', 'user.email=x@example.com', 'commit-tree', tree, '-p', `refs/heads/${branch}`, '-m', 'sneaked in');
    gitIn(repoPath, 'update-ref', `refs/heads/${branch}`, sneaked);

    const result = await sendBlockAction(w.bot.eventsUrl, SIGNING_SECRET, { user_id: 'UBOB', user_name: 'bob', channel_id: 'CSHOP', message_ts: run.chat.card ?? '', action_id: MERGE_ACTION_ID, value: runId });
    expect(result.status).toBe(200);
    await eventually(async () => w.bot.slack.ephemerals.find((e) => e.user === 'UBOB' && (e.text ?? '').includes('moved on')), 'the refusal');
    expect(gitIn(repoPath, 'rev-parse', 'refs/heads/main')).toBe(before);
    const events = (await w.bot.app.audit.exportRun(runId)).trim().split('\n').map((line) => z.object({ type: z.string() }).parse(JSON.parse(line)));
    expect(events.filter((e) => e.type === 'merge.approved')).toEqual([]);
  });
});

