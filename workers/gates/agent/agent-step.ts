import {
  runAgent,
  type AgentBudget,
  type AgentConversation,
  type AgentSpend,
  type ToolCallRecord,
} from '../../../src/agent/agent-loop.js';
import { describeCalls, diagnose } from '../../../src/agent/diagnose.js';
import type { DiagnosisOpener, OpenedDiagnosis } from '../../../src/agent/diagnosis-tools.js';
import { createCheckProvider, createCheckRunner } from '../../../src/agent/check-runner.js';
import { createEditorProvider } from '../../../src/agent/editor-tool.js';
import { iterationOpening, SYSTEM_PROMPT } from '../../../src/agent/prompt.js';
import { createRepoFiles } from '../../../src/agent/repo-files.js';
import { createSearchProvider } from '../../../src/agent/search-tool.js';
import {
  createToolbox,
  providersFor,
  type AgentIteration,
  type ToolProviderRegistration,
} from '../../../src/agent/toolbox.js';
import type { Policy } from '../../../src/config/policy.js';
import { patchArtifacts, type GateOutcome, type RedDeployGate, type Run } from '../../../src/domain/run.js';
import { RefusedError } from '../../../src/errors.js';
import type { Git } from '../../../src/git/git.js';
import type { GitHubPort } from '../../../src/ports/github.js';
import type { ModelPort } from '../../../src/ports/model.js';
import type { SandboxPort } from '../../../src/ports/sandbox.js';
import type { AgentConversations } from '../../../src/store/agent-conversation-store.js';
import type { FollowUps } from '../../../src/store/follow-ups.js';
import type { GateContext, GateStep } from '../gate-step.js';
import { runCheckRounds, type CheckRoundsProgress } from './check-rounds.js';
import { commitChange, commitMessage, commitTrailers, diffStatText, reviewChange } from './commit.js';
import { createDiagnosisCheckpoint, createIterationCheckpoint } from './conversation-checkpoint.js';
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
  /**
   * The read-only look at the running system after a red deploy gate (SPEC §4, issue 11): a fix
   * forward starts with a diagnosis (posted in the thread, put in the fix prompt), and every
   * iteration of that fix, follow-ups included, keeps the diagnosis tools. Without it a fix forward
   * gets the gate's report only.
   */
  diagnosis?: DiagnosisOpener | undefined;
  /**
   * Where the conversation is kept after every turn (issue 14): a step restarted after a crash
   * continues it, with the files it had changed, instead of paying for its turns again. Without it a
   * restarted step begins the iteration again.
   */
  conversations?: AgentConversations | undefined;
  /** Largest conversation record kept (default MAX_CHECKPOINT_BYTES); past it a restart begins the iteration again. */
  conversationMaxBytes?: number | undefined;
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
      try {
        const outcome = await runStep(context);
        // The iteration is over (pushed, or refused for good): its conversation is never resumed.
        await deps.conversations?.clear(context.run.id);
        return outcome;
      } catch (error) {
        // A gate that failed for good ends the iteration too; any other error (an outage, a shutdown's
        // abort) is retried, and the retry continues the stored conversation.
        if (error instanceof RefusedError) await deps.conversations?.clear(context.run.id);
        throw error;
      }
    },
  };

  async function runStep(context: GateContext): Promise<GateOutcome> {
    const { run, signal, log, record } = context;
    const [owner, repo] = run.repo.split('/');
    const repoPolicy = deps.policy.repos[run.repo];
    if (owner === undefined || repo === undefined || repoPolicy === undefined)
      throw new RefusedError(`${run.repo} is not configured`);

    const workspace = await prepareAgentWorkspace(deps, run, repoPolicy, owner, repo, signal);
    const { dir, credentials, pushTarget, prepared } = workspace;
    const latest = await record((r) => ({
      artifacts: patchArtifacts(r.artifacts, 'agent', { branch: workspace.branch }),
      activity: prepared.resumed ? 'resumed the workspace' : 'cloned the repository',
    }));
    log.info({ branch: workspace.branch, source: prepared.source }, 'workspace ready');

    // A crash after the commit was recorded: only the push may be missing.
    const recorded = latest.artifacts.agent?.commitSha;
    if (recorded !== undefined && prepared.head === recorded) {
      await deps.git.push({ dir, ...pushTarget, credentials, sha: recorded });
      return { kind: 'passed', summary: passSummary(latest) };
    }

    const redGate = latest.artifacts.deploy?.redGate;
    const opened =
      redGate === undefined || deps.diagnosis === undefined
        ? undefined
        : await deps.diagnosis.open(run, redGate, signal, log);
    try {
      return await iterate(
        context,
        workspace,
        latest,
        opened === undefined || redGate === undefined ? undefined : { opened, redGate },
      );
    } finally {
      // The cluster session (a server process, a kubeconfig on disk) never outlives the step.
      await opened?.close();
    }
  }

  async function iterate(
    context: GateContext,
    workspace: Awaited<ReturnType<typeof prepareAgentWorkspace>>,
    recordedRun: Run,
    diagnosis: { opened: OpenedDiagnosis; redGate: RedDeployGate } | undefined,
  ): Promise<GateOutcome> {
    const { run, signal, log, record, audit } = context;
    const repoPolicy = deps.policy.repos[run.repo];
    if (repoPolicy === undefined) throw new RefusedError(`${run.repo} is not configured`);
    const { dir, base, protectedPaths, credentials, pushTarget } = workspace;
    let latest = recordedRun;
    const files = createRepoFiles({ root: dir, protectedPaths });
    const fixLabel = fixPrefix(latest);
    const checks = createCheckRunner({
      root: dir,
      checks: repoPolicy.checks,
      timeoutMs: deps.checkTimeoutMs ?? 10 * 60_000,
      outputCapBytes: deps.checkOutputCapBytes ?? 64 * 1024,
      sandbox: deps.sandbox,
      scrub: deps.scrub,
    });
    const iteration: AgentIteration = {
      number: (latest.artifacts.ci?.iterations ?? 0) + 1,
      feedback: latest.artifacts.agent?.feedback,
    };
    const toolbox = createToolbox(
      providersFor(
        [
          { provider: createEditorProvider(files) },
          { provider: createSearchProvider(files) },
          { provider: createCheckProvider(checks) },
          ...(diagnosis === undefined ? [] : [{ provider: diagnosis.opened.provider }]),
          ...(deps.toolProviders ?? []),
        ],
        iteration,
      ),
    );
    const budget = {
      maxTurns: deps.policy.budgets.maxAgentTurns,
      maxTokens: deps.policy.budgets.maxTokensPerRun,
      maxCostUsd: deps.policy.budgets.maxCostUsdPerRun,
      deadline: new Date(Date.parse(run.createdAt) + deps.policy.budgets.maxRunMinutes * 60_000),
    };
    // The run record holds what the run spent, earlier workers' turns included: a restart resets no budget.
    let spend: AgentSpend = { turns: latest.artifacts.agent?.turns ?? 0, usage: latest.usage };
    const onSpend = async (next: AgentSpend, activity: string): Promise<void> => {
      latest = await record((r) => ({
        usage: next.usage,
        activity,
        artifacts: patchArtifacts(r.artifacts, 'agent', { turns: next.turns }),
      }));
    };
    const diagnosisTools = new Set(diagnosis?.opened.provider.tools.map((tool) => tool.name) ?? []);
    // Every read of the running system is evidence (SPEC §7): which tool, with what, and how it went.
    const auditRead =
      (phase: 'diagnosis' | 'fix') =>
      async (call: ToolCallRecord): Promise<void> => {
        if (diagnosis === undefined || !diagnosisTools.has(call.tool)) return;
        await audit(
          'diagnosis.tool_call',
          {
            fix: diagnosis.redGate.fix,
            stage: diagnosis.redGate.stage,
            phase,
            tool: call.tool,
            input: scrub(JSON.stringify(call.input ?? null)).slice(0, 500),
            isError: call.isError,
            resultBytes: call.resultBytes,
          },
          `fix${diagnosis.redGate.fix}.${call.id}`,
        );
      };

    if (diagnosis !== undefined) {
      latest = await diagnoseOnce(context, latest, diagnosis, budget, { onSpend, onToolCall: auditRead('diagnosis') });
      spend = { turns: latest.artifacts.agent?.turns ?? spend.turns, usage: latest.usage };
    }

    // Keyed by the iteration and the commit it started from: another iteration's, or one on another
    // base (a re-clone after the default branch moved), is never resumed.
    const checkpoint =
      deps.conversations === undefined
        ? undefined
        : createIterationCheckpoint({
            store: deps.conversations,
            git: deps.git,
            files,
            dir,
            runId: run.id,
            key: { phase: 'agent', iteration: `${fixLabel}${iteration.number}`, head: workspace.prepared.head },
            maxBytes: deps.conversationMaxBytes,
            clock: deps.clock,
            log,
          });
    // Later iterations: what CI said, the diagnosis of a red deploy, and what the requester asked for in the thread.
    const pending = (await deps.followUps?.pending(run.id)) ?? [];
    // The stored record lowers none of what the run knows (its spend field by field, the thread's
    // follow-ups): a record from Redis saying nothing was spent does not reset the budgets.
    const resumed = await checkpoint?.resume({ spend, budget, maxCheckRounds, pendingFollowUps: pending });
    if (resumed !== undefined) spend = resumed.spend;
    const followUps = resumed?.progress.followUps ?? pending;
    const conversation: AgentConversation = {
      system: SYSTEM_PROMPT,
      messages: resumed?.messages ?? [{ role: 'user', content: iterationOpening(latest, checks.names, followUps) }],
    };
    let progress: CheckRoundsProgress = resumed?.progress ?? { round: 1, followUps };
    const loopDeps = {
      model: deps.model,
      modelId: deps.modelId,
      tools: toolbox,
      clock: deps.clock,
      log,
      onSpend,
      onToolCall: auditRead('fix'),
      onTurn:
        checkpoint === undefined
          ? undefined
          : async (conv: AgentConversation, next: AgentSpend) => checkpoint.save(conv, next, progress),
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
          onProgress: (next) => {
            progress = next;
          },
        },
        conversation,
        followUps,
        progress.round,
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
          checks:
            rounds === undefined
              ? 'not reached'
              : rounds.kind === 'failed'
                ? 'failing'
                : rounds.results.map((c) => c.name),
        },
        // A fix forward starts its own count of iterations on its own branch: its key says which fix.
        `${fixLabel}${iteration.number}.${latest.artifacts.agent?.previousCommitSha ?? 'start'}`,
      );
    }
    if (rounds.kind === 'failed') return rounds;
    const { summary, results } = rounds;

    const review = await reviewChange(deps.git, {
      dir,
      base,
      protectedPaths,
      previousCommitSha: latest.artifacts.agent?.previousCommitSha,
      summary,
    });
    if (review.kind === 'failed') return review;
    // A fix that deletes, skips or loosens tests is pushed only with a visible flag in the thread.
    const testWarnings = await testWarningsOf(deps.git, dir, base, review.changed);
    const stat = await deps.git.diffStat(dir, base);

    const commit = await commitChange(deps.git, {
      dir,
      base,
      protectedPaths,
      message: commitMessage(run.task, summary, scrub),
      trailers: commitTrailers(run),
    });
    if (commit.kind === 'failed') return commit;
    await audit(
      'commit.created',
      {
        commit: commit.sha,
        branch: workspace.branch,
        files: stat.files.length,
        insertions: stat.insertions,
        deletions: stat.deletions,
        testWarnings: testWarnings.length,
      },
      commit.sha,
      { once: true },
    );
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
  }

  /**
   * The diagnosis of the red gate that started this fix forward, made once: stored in the run before
   * it is posted and audited (both keyed by the fix), so a step that runs again after a crash posts
   * the stored one and never pays for a second.
   */
  async function diagnoseOnce(
    context: GateContext,
    current: Run,
    diagnosis: { opened: OpenedDiagnosis; redGate: RedDeployGate },
    budget: AgentBudget,
    hooks: {
      onSpend: (spend: AgentSpend, activity: string) => Promise<void>;
      onToolCall: (call: ToolCallRecord) => Promise<void>;
    },
  ): Promise<Run> {
    const { signal, log, record, audit } = context;
    const { redGate, opened } = diagnosis;
    let latest = current;
    let made = latest.artifacts.deploy?.redGate?.diagnosis;
    const checkpoint =
      deps.conversations === undefined
        ? undefined
        : createDiagnosisCheckpoint({
            store: deps.conversations,
            runId: context.run.id,
            fix: redGate.fix,
            maxBytes: deps.conversationMaxBytes,
            clock: deps.clock,
            log,
          });
    if (made === undefined) {
      await record(() => ({ activity: `diagnosing the red ${redGate.stage} gate` }));
      const spent = { turns: latest.artifacts.agent?.turns ?? 0, usage: latest.usage };
      // The diagnosis' own turn cap counts from where it began, never from later than the run is now.
      const resumed = await checkpoint?.resume({ turns: spent.turns });
      const turnsAtStart = resumed?.turnsAtStart ?? spent.turns;
      const outcome = await diagnose(
        {
          model: deps.model,
          modelId: deps.modelId,
          clock: deps.clock,
          log: log.child({ phase: 'diagnosis' }),
          scrub,
          ...hooks,
          onTurn:
            checkpoint === undefined
              ? undefined
              : async (conversation, next) => checkpoint.save(conversation, next, turnsAtStart),
        },
        opened.provider,
        {
          stage: redGate.stage,
          namespace: redGate.namespace,
          clusterUnavailable: opened.clusterUnavailable,
          feedback: latest.artifacts.agent?.feedback ?? '',
        },
        budget,
        spent,
        signal,
        resumed,
      );
      made = {
        text: outcome.text,
        looked: describeCalls(outcome.calls).map(scrub),
        ...(opened.clusterUnavailable === undefined ? {} : { clusterUnavailable: opened.clusterUnavailable }),
      };
      const stored = made;
      latest = await record((r) => {
        const red = r.artifacts.deploy?.redGate;
        return red === undefined
          ? {}
          : {
              activity: 'fixing forward',
              artifacts: patchArtifacts(r.artifacts, 'deploy', { redGate: { ...red, diagnosis: stored } }),
            };
      });
      // Stored in the run now: the conversation that made it is never resumed.
      await checkpoint?.clear();
      log.info(
        { stage: redGate.stage, reads: outcome.calls.length, turns: outcome.spend.turns },
        'red deploy gate diagnosed',
      );
    }
    await audit(
      'diagnosis.made',
      {
        fix: redGate.fix,
        stage: redGate.stage,
        namespace: redGate.namespace ?? null,
        reads: made.looked.length,
        clusterUnavailable: made.clusterUnavailable ?? null,
        diagnosis: made.text,
      },
      `fix${redGate.fix}`,
      { once: true },
    );
    await context.reply(`diagnosis.fix${redGate.fix}`, {
      type: 'diagnosis',
      stage: redGate.stage,
      fix: redGate.fix,
      text: made.text,
      looked: made.looked,
      clusterUnavailable: made.clusterUnavailable,
    });
    return latest;
  }
}

/** `fix<N>.` for the iterations of the N-th fix forward; nothing before the first (keys as they were). */
function fixPrefix(run: Run): string {
  const fixes = run.artifacts.deploy?.iterations ?? 0;
  return fixes === 0 ? '' : `fix${fixes}.`;
}
