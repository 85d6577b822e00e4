import { join } from 'node:path';
import { runAgent, type AgentToolbox, type AgentConversation } from '../../src/agent/agent-loop.js';
import { createCheckRunner, runCheckToolFor, runCheckTool, type CheckResult } from '../../src/agent/check-runner.js';
import { EDITOR_TOOL, runEditorCommand } from '../../src/agent/editor-tool.js';
import { checksFailedMessage, openingMessage, SYSTEM_PROMPT } from '../../src/agent/prompt.js';
import { createProtectedPaths } from '../../src/agent/protected-paths.js';
import { createRepoFiles } from '../../src/agent/repo-files.js';
import { runSearch, SEARCH_TOOL } from '../../src/agent/search-tool.js';
import type { Policy } from '../../src/config/policy.js';
import type { Run } from '../../src/domain/run.js';
import { RefusedError } from '../../src/errors.js';
import { branchName, type Git } from '../../src/git/git.js';
import { detectTestWeakening } from '../../src/ci/test-weakening.js';
import { constants } from 'node:fs';
import { lstat, open } from 'node:fs/promises';
import type { GitHubPort } from '../../src/ports/github.js';
import type { FollowUps } from '../../src/store/follow-ups.js';
import type { ModelPort } from '../../src/ports/model.js';
import type { SandboxPort } from '../../src/ports/sandbox.js';
import { quotedForCommit } from '../../src/security/model-text.js';
import type { GateContext, GateStep } from '../gate-step.js';

export interface AgentStepDeps {
  policy: Policy;
  /** Base name of the policy file: protected in every repository (the agent never edits its own gates). */
  policyFileName: string;
  github: GitHubPort;
  git: Git;
  model: ModelPort;
  modelId: string;
  /** Where per-run workspaces live (`<workRoot>/<run id>`). */
  workRoot: string;
  clock: () => Date;
  checkTimeoutMs?: number;
  checkOutputCapBytes?: number;
  /** Rounds of "checks failed, fix them" before the gate fails (bounded by the budgets as well). */
  maxCheckRounds?: number;
  /** Instructions from the run's thread; without it follow-ups are not read. */
  followUps?: FollowUps | undefined;
  /** Where checks run: repository code never runs outside it. */
  sandbox: SandboxPort;
  /** Removes secrets from check output before the model, chat or logs see it. */
  scrub?: ((text: string) => string) | undefined;
}

export function workspaceDir(workRoot: string, runId: string): string {
  return join(workRoot, runId);
}

function formatFailures(results: readonly CheckResult[]): string {
  return results
    .map((r) => `${r.name} ${r.timedOut ? 'timed out' : `exited with ${r.exitCode ?? r.signal ?? 'a signal'}`}\n${r.output.split('\n').slice(-15).join('\n')}`)
    .join('\n\n');
}

/**
 * The `agent` gate (SPEC §1, §4): Claude edits a fresh branch through narrow
 * tools; then the bot itself runs every configured check, refuses an empty
 * diff or one that touches a protected path, commits as the bot and pushes
 * the run branch. Every step is idempotent so a crash anywhere resumes.
 */
export function createAgentStep(deps: AgentStepDeps): GateStep {
  const maxCheckRounds = deps.maxCheckRounds ?? 3;

  return {
    async run(context: GateContext) {
      const { run, signal, log, record } = context;
      const scrub = deps.scrub ?? ((text: string) => text);
      const [owner, repo] = run.repo.split('/');
      const repoPolicy = deps.policy.repos[run.repo];
      if (owner === undefined || repo === undefined || repoPolicy === undefined) throw new RefusedError(`${run.repo} is not configured`);

      const info = await deps.github.getRepository(owner, repo);
      const branch = run.artifacts.branch ?? branchName(run.id, run.task);
      const dir = workspaceDir(deps.workRoot, run.id);
      const credentials = await deps.github.pushCredentials(owner, repo);
      const prepared = await deps.git.prepareWorkspace({ dir, cloneUrl: info.cloneUrl, defaultBranch: info.defaultBranch, branch, credentials });
      let latest = await record((r) => ({ artifacts: { ...r.artifacts, branch }, activity: prepared.resumed ? 'resumed the workspace' : 'cloned the repository' }));
      log.info({ branch, source: prepared.source }, 'workspace ready');

      // Diffs are taken from where the run branch forked, not from today's default branch: after a
      // re-clone origin/<default> may have moved on, and upstream changes are not the agent's.
      const base = await deps.git.mergeBase(dir, `origin/${info.defaultBranch}`, 'HEAD');
      // Submodule directories too: git would not commit a file written into one, so the checks would see
      // something the push does not have.
      const submodules = await deps.git.submodulePaths(dir, 'HEAD');
      const protectedPaths = createProtectedPaths([...repoPolicy.protectedPaths, deps.policyFileName, ...submodules]);
      const pushTarget = { branch, defaultBranch: info.defaultBranch, runId: run.id, remoteUrl: info.cloneUrl };

      // A crash after the commit was recorded: only the push may be missing.
      if (latest.artifacts.commitSha !== undefined && prepared.head === latest.artifacts.commitSha) {
        await deps.git.push({ dir, ...pushTarget, credentials, sha: latest.artifacts.commitSha });
        return { kind: 'passed', summary: passSummary(latest) };
      }

      const files = createRepoFiles({ root: dir, protectedPaths });
      const checks = createCheckRunner({
        root: dir,
        checks: repoPolicy.checks,
        timeoutMs: deps.checkTimeoutMs ?? 10 * 60_000,
        outputCapBytes: deps.checkOutputCapBytes ?? 64 * 1024,
        sandbox: deps.sandbox,
        scrub: deps.scrub,
      });
      const toolbox: AgentToolbox = {
        definitions: [EDITOR_TOOL, SEARCH_TOOL, runCheckToolFor(checks.names)],
        async execute(name, input, toolSignal) {
          if (name === EDITOR_TOOL.name) return runEditorCommand(files, input);
          if (name === SEARCH_TOOL.name) return runSearch(files, input);
          if (name === 'run_check') return runCheckTool(checks, input, toolSignal);
          return { content: `There is no tool named "${name}". Use only the tools you were given.`, isError: true };
        },
      };
      // Later iterations: what CI said, and what the requester asked for in the thread.
      let followUps = (await deps.followUps?.pending(run.id)) ?? [];
      const opening = [openingMessage(run, checks.names)];
      if (latest.artifacts.previousCommitSha !== undefined) {
        opening.push('', 'Your earlier change is already committed on this branch and its pull request is open. Build on it; do not start over.');
      }
      if (latest.artifacts.feedback !== undefined) opening.push('', latest.artifacts.feedback);
      if (followUps.length > 0) opening.push('', followUpMessage(followUps));
      const conversation: AgentConversation = {
        system: SYSTEM_PROMPT,
        messages: [{ role: 'user', content: opening.join('\n') }],
      };
      const budget = {
        maxTurns: deps.policy.budgets.maxAgentTurns,
        maxTokens: deps.policy.budgets.maxTokensPerRun,
        maxCostUsd: deps.policy.budgets.maxCostUsdPerRun,
        deadline: new Date(Date.parse(run.createdAt) + deps.policy.budgets.maxRunMinutes * 60_000),
      };
      let spend = { turns: latest.artifacts.agentTurns ?? 0, usage: latest.usage };
      const loopDeps = {
        model: deps.model,
        modelId: deps.modelId,
        tools: toolbox,
        clock: deps.clock,
        log,
        onSpend: async (next: typeof spend, activity: string) => {
          latest = await record((r) => ({ usage: next.usage, activity, artifacts: { ...r.artifacts, agentTurns: next.turns } }));
        },
      };

      let summary = '';
      let results: CheckResult[] = [];
      for (let round = 1; ; round++) {
        const outcome = await runAgent(loopDeps, conversation, budget, spend, signal);
        spend = outcome.spend;
        summary = outcome.finalText;
        // Instructions that arrived while the agent worked are handled before anything is committed.
        const arrived = ((await deps.followUps?.pending(run.id)) ?? []).slice(followUps.length);
        if (arrived.length > 0) {
          followUps = [...followUps, ...arrived];
          conversation.messages.push({ role: 'user', content: followUpMessage(arrived) });
          round--;
          continue;
        }
        // The model's claim that checks pass is not evidence: run them all ourselves.
        await record(() => ({ activity: 'running the repository checks' }));
        results = [];
        for (const name of checks.names) results.push(await checks.run(name, signal));
        const failed = results.filter((r) => r.exitCode !== 0 || r.timedOut);
        if (failed.length === 0) break;
        log.info({ round, failed: failed.map((f) => f.name) }, 'checks failed after the agent finished');
        if (round >= maxCheckRounds) {
          return { kind: 'failed', summary: `checks still failing after ${round} rounds:\n${formatFailures(failed)}` };
        }
        conversation.messages.push({ role: 'user', content: checksFailedMessage(failed) });
      }

      const changed = await deps.git.changedFiles(dir, base);
      if (changed.length === 0) {
        return { kind: 'failed', summary: `the agent finished without changing anything${summary === '' ? '' : `. It said: ${summary.slice(0, 500)}`}` };
      }
      const forbidden = changed.filter((path) => protectedPaths.isProtected(path));
      if (forbidden.length > 0) {
        // The editor refuses these writes and checks only ever see a copy; this is the belt to those braces.
        return { kind: 'failed', summary: `refused: the change touches protected paths: ${forbidden.join(', ')}` };
      }
      const previous = latest.artifacts.previousCommitSha;
      if (previous !== undefined && (await deps.git.changedFiles(dir, previous)).length === 0) {
        return { kind: 'failed', summary: `the agent made no further change in this iteration${summary === '' ? '' : `. It said: ${summary.slice(0, 500)}`}` };
      }
      // A fix that deletes, skips or loosens tests is pushed only with a visible flag in the thread.
      const testWarnings = detectTestWeakening(
        await Promise.all(
          changed.map(async (path) => {
            const before = await deps.git.readFileAt(dir, base, path);
            const after = await readTreeText(dir, path);
            const status = before === undefined ? 'added' : after === undefined ? 'deleted' : 'modified';
            return { path, status, before, after } as const;
          }),
        ),
      );
      const stat = await deps.git.diffStat(dir, base);
      const diffStat = [
        ...stat.files.map((f) => `${f.path} | ${f.binary ? 'binary' : `+${f.insertions} -${f.deletions}`}`),
        `${stat.files.length} file(s) changed, +${stat.insertions} -${stat.deletions}`,
      ].join('\n');

      const committed = await deps.git.commitAll({
        dir,
        // The model's words are quoted and neutralised (no mentions, closing keywords or trailer lines):
        // the bot's trailers below are the only ones the commit has.
        message: summary.trim() === '' ? firstLine(run.task) : `${firstLine(run.task)}\n\nThe agent's summary (model output, quoted):\n\n${quotedForCommit(scrub(summary))}`,
        // A display name comes from chat: no angle brackets, so it cannot pose as another id.
        trailers: { 'Shipgate-Run': run.id, 'Requested-by': `${(run.requester.name ?? run.requester.userId).replace(/[<>]/g, '')} <${run.requester.userId}>` },
      });
      // What goes out is the commit, not the working tree: check the commit itself, in the bot's own git
      // directory (no replace objects), so what was verified is exactly what is pushed.
      const inCommit = await deps.git.committedFiles(dir, base, committed.sha);
      const sneaked = inCommit.filter((path) => protectedPaths.isProtected(path));
      if (sneaked.length > 0) return { kind: 'failed', summary: `refused: the commit touches protected paths: ${sneaked.join(', ')}` };
      const commit = committed;
      latest = await record((r) => ({
        activity: 'pushing the branch',
        artifacts: {
          ...r.artifacts,
          commitSha: commit.sha,
          summary,
          diffStat,
          checks: results.map((c) => ({ name: c.name, passed: true })),
          feedback: undefined,
          testWarnings: testWarnings.length > 0 ? testWarnings : undefined,
        },
      }));
      await deps.git.push({ dir, ...pushTarget, credentials, sha: commit.sha });
      await deps.followUps?.acknowledge(run.id, followUps.length);
      log.info({ sha: commit.sha, files: stat.files.length }, 'change committed and pushed');
      return { kind: 'passed', summary: passSummary(latest) };
    },
  };
}

/** Largest file the test-weakening check reads; bigger ones are not tests a person wrote. */
const MAX_COMPARED_BYTES = 1024 * 1024;

/**
 * A working-tree file's text for the test-weakening check, read without following links: the tree
 * holds what the base branch (or someone pushing to the run branch) put there, and a symlink to a
 * host file or to /dev/zero must not be read by the bot.
 */
async function readTreeText(dir: string, path: string): Promise<string | undefined> {
  const full = join(dir, path);
  const info = await lstat(full).catch(() => undefined);
  if (info === undefined || !info.isFile() || info.size > MAX_COMPARED_BYTES) return undefined;
  const handle = await open(full, constants.O_RDONLY | constants.O_NOFOLLOW).catch(() => undefined);
  if (handle === undefined) return undefined;
  try {
    return await handle.readFile('utf8');
  } finally {
    await handle.close();
  }
}

function firstLine(task: string): string {
  const line = task.split('\n')[0]?.trim() ?? 'shipgate change';
  return line.length > 72 ? `${line.slice(0, 71)}…` : line;
}

function followUpMessage(instructions: readonly string[]): string {
  return [
    'The requester added instructions in the run\'s chat thread (untrusted text, like the task):',
    ...instructions.map((text) => `<instruction>\n${text}\n</instruction>`),
  ].join('\n');
}

function passSummary(run: Run): string {
  const checks = run.artifacts.checks ?? [];
  const checkText = checks.length === 0 ? 'no checks configured' : `checks passed: ${checks.map((c) => c.name).join(', ')}`;
  const warnings = run.artifacts.testWarnings ?? [];
  return [
    warnings.length === 0 ? '' : `⚠️ FLAGGED — this change weakens tests; review it closely:\n${warnings.map((w) => `• ${w}`).join('\n')}\n`,
    `pushed ${run.artifacts.branch ?? ''} at ${run.artifacts.commitSha?.slice(0, 12) ?? ''} (${checkText})`,
    run.artifacts.summary === undefined ? '' : `\n${run.artifacts.summary.slice(0, 1_500)}`,
    run.artifacts.diffStat === undefined ? '' : `\n${run.artifacts.diffStat}`,
  ].join('');
}
