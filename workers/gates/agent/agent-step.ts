import { runAgent, type AgentConversation, type AgentSpend } from '../../../src/agent/agent-loop.js';
import { createCheckProvider, createCheckRunner } from '../../../src/agent/check-runner.js';
import { createEditorProvider } from '../../../src/agent/editor-tool.js';
import { iterationOpening, SYSTEM_PROMPT } from '../../../src/agent/prompt.js';
import { createRepoFiles } from '../../../src/agent/repo-files.js';
import { createSearchProvider } from '../../../src/agent/search-tool.js';
import { createToolbox, providersFor, type AgentIteration, type ToolProviderRegistration } from '../../../src/agent/toolbox.js';
import type { Policy } from '../../../src/config/policy.js';
import { patchArtifacts, type Run } from '../../../src/domain/run.js';
import { RefusedError } from '../../../src/errors.js';
import type { Git } from '../../../src/git/git.js';
import type { GitHubPort } from '../../../src/ports/github.js';
import type { ModelPort } from '../../../src/ports/model.js';
import type { SandboxPort } from '../../../src/ports/sandbox.js';
import type { FollowUps } from '../../../src/store/follow-ups.js';
import type { GateContext, GateStep } from '../gate-step.js';
import { runCheckRounds } from './check-rounds.js';
import { commitChange, commitMessage, commitTrailers, diffStatText, reviewChange } from './commit.js';
import { passSummary } from './pass-summary.js';
import { testWarningsOf } from './test-warnings.js';
import { prepareAgentWorkspace } from './workspace.js';

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
  scrub: (text: string) => string;
  /**
   * Tool providers beyond the workspace's own editor, search and checks (e.g. read-only diagnosis),
   * each offered in every iteration or only where its `offeredIn` says so.
   */
  toolProviders?: readonly ToolProviderRegistration[] | undefined;
}

/**
 * The `agent` gate (SPEC §1, §4): Claude edits a fresh branch through narrow
 * tools; then the bot itself runs every configured check, refuses an empty
 * diff or one that touches a protected path, commits as the bot and pushes
 * the run branch. Every step is idempotent so a crash anywhere resumes.
 */
export function createAgentStep(deps: AgentStepDeps): GateStep {
  const maxCheckRounds = deps.maxCheckRounds ?? 3;
  const { scrub } = deps;

  return {
    async run(context: GateContext) {
      const { run, signal, log, record, audit } = context;
      const [owner, repo] = run.repo.split('/');
      const repoPolicy = deps.policy.repos[run.repo];
      if (owner === undefined || repo === undefined || repoPolicy === undefined) throw new RefusedError(`${run.repo} is not configured`);

      const workspace = await prepareAgentWorkspace(deps, run, repoPolicy, owner, repo);
      const { dir, base, protectedPaths, credentials, pushTarget, prepared } = workspace;
      let latest = await record((r) => ({ artifacts: patchArtifacts(r.artifacts, 'agent', { branch: workspace.branch }), activity: prepared.resumed ? 'resumed the workspace' : 'cloned the repository' }));
      log.info({ branch: workspace.branch, source: prepared.source }, 'workspace ready');

      // A crash after the commit was recorded: only the push may be missing.
      const recorded = latest.artifacts.agent?.commitSha;
      if (recorded !== undefined && prepared.head === recorded) {
        await deps.git.push({ dir, ...pushTarget, credentials, sha: recorded });
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
      const iteration: AgentIteration = { number: (latest.artifacts.ci?.iterations ?? 0) + 1, feedback: latest.artifacts.agent?.feedback };
      const toolbox = createToolbox(
        providersFor([{ provider: createEditorProvider(files) }, { provider: createSearchProvider(files) }, { provider: createCheckProvider(checks) }, ...(deps.toolProviders ?? [])], iteration),
      );

      // Later iterations: what CI said, and what the requester asked for in the thread.
      const followUps = (await deps.followUps?.pending(run.id)) ?? [];
      const conversation: AgentConversation = { system: SYSTEM_PROMPT, messages: [{ role: 'user', content: iterationOpening(latest, checks.names, followUps) }] };
      const budget = {
        maxTurns: deps.policy.budgets.maxAgentTurns,
        maxTokens: deps.policy.budgets.maxTokensPerRun,
        maxCostUsd: deps.policy.budgets.maxCostUsdPerRun,
        deadline: new Date(Date.parse(run.createdAt) + deps.policy.budgets.maxRunMinutes * 60_000),
      };
      let spend: AgentSpend = { turns: latest.artifacts.agent?.turns ?? 0, usage: latest.usage };
      const loopDeps = {
        model: deps.model,
        modelId: deps.modelId,
        tools: toolbox,
        clock: deps.clock,
        log,
        onSpend: async (next: AgentSpend, activity: string) => {
          latest = await record((r) => ({ usage: next.usage, activity, artifacts: patchArtifacts(r.artifacts, 'agent', { turns: next.turns }) }));
        },
      };

      let rounds: Awaited<ReturnType<typeof runCheckRounds>> | undefined;
      try {
        rounds = await runCheckRounds(
          {
            agent: async (conv) => {
              const outcome = await runAgent(loopDeps, conv, budget, spend, signal);
              spend = outcome.spend;
              return outcome.finalText;
            },
            checks,
            pendingFollowUps: async () => (await deps.followUps?.pending(run.id)) ?? [],
            onChecking: async () => {
              await record(() => ({ activity: 'running the repository checks' }));
            },
            maxCheckRounds,
            log,
            signal,
          },
          conversation,
          followUps,
        );
      } finally {
        // The iteration's evidence (SPEC §7), whatever its outcome — a budget stop or a cancel included: what
        // the agent spent and what the checks said. Keyed by the iteration and the commit it built on.
        await audit(
          'agent.iteration',
          {
            iteration: iteration.number,
            onCommit: latest.artifacts.agent?.previousCommitSha ?? null,
            // What onSpend stored after every model call: right even when the loop stopped on a budget.
            turns: latest.artifacts.agent?.turns ?? spend.turns,
            inputTokens: latest.usage.inputTokens,
            outputTokens: latest.usage.outputTokens,
            cacheReadTokens: latest.usage.cacheReadTokens,
            costUsd: latest.usage.costUsd,
            checks: rounds === undefined ? 'not reached' : rounds.kind === 'failed' ? 'failing' : rounds.results.map((c) => c.name),
          },
          // A fix forward starts its own count of iterations on its own branch: its key says which fix.
          `${fixPrefix(latest)}${iteration.number}.${latest.artifacts.agent?.previousCommitSha ?? 'start'}`,
        );
      }
      if (rounds.kind === 'failed') return rounds;
      const { summary, results } = rounds;

      const review = await reviewChange(deps.git, { dir, base, protectedPaths, previousCommitSha: latest.artifacts.agent?.previousCommitSha, summary });
      if (review.kind === 'failed') return review;
      // A fix that deletes, skips or loosens tests is pushed only with a visible flag in the thread.
      const testWarnings = await testWarningsOf(deps.git, dir, base, review.changed);
      const stat = await deps.git.diffStat(dir, base);

      const commit = await commitChange(deps.git, { dir, base, protectedPaths, message: commitMessage(run.task, summary, scrub), trailers: commitTrailers(run) });
      if (commit.kind === 'failed') return commit;
      await audit('commit.created', { commit: commit.sha, branch: workspace.branch, files: stat.files.length, insertions: stat.insertions, deletions: stat.deletions, testWarnings: testWarnings.length }, commit.sha, { once: true });
      latest = await record((r) => ({
        activity: 'pushing the branch',
        artifacts: patchArtifacts(r.artifacts, 'agent', {
          commitSha: commit.sha,
          summary,
          diffStat: diffStatText(stat),
          checks: results.map((c) => ({ name: c.name, passed: true })),
          feedback: undefined,
          testWarnings: testWarnings.length > 0 ? testWarnings : undefined,
        }),
      }));
      await deps.git.push({ dir, ...pushTarget, credentials, sha: commit.sha });
      await deps.followUps?.acknowledge(run.id, rounds.followUps.length);
      log.info({ sha: commit.sha, files: stat.files.length }, 'change committed and pushed');
      return { kind: 'passed', summary: passSummary(latest) };
    },
  };
}

/** `fix<N>.` for the iterations of the N-th fix forward; nothing before the first (keys as they were). */
function fixPrefix(run: Run): string {
  const fixes = run.artifacts.deploy?.iterations ?? 0;
  return fixes === 0 ? '' : `fix${fixes}.`;
}
