import type { Policy } from '../config/policy.js';

/**
 * The run (SPEC §1): one change request moving through gates in order. This
 * module is pure: it builds gate lists from policy and computes state
 * transitions; persistence and side effects live elsewhere.
 */

export type GateState = 'pending' | 'running' | 'passed' | 'failed' | 'skipped';

/**
 * The gate kinds of SPEC §1; stage gates are named `stage:<name>`. `argocd` ends an Argo-only
 * pipeline (no Kargo section): its applications healthy at the merge commit.
 */
export type GateKind = 'agent' | 'pr' | 'ci' | 'merge' | 'freight' | 'stage' | 'approval' | 'argocd';

export interface Gate {
  /** `agent`, `pr`, `ci`, `merge`, `freight`, `approval`, `stage:<name>` or `argocd`. */
  name: string;
  kind: GateKind;
  state: GateState;
  /** One line a person can read: why it passed, failed or is waiting. */
  summary?: string | undefined;
  /** True when this shipgate build has no step for the gate yet: it can never be reported as passed. */
  notConfigured?: boolean | undefined;
  startedAt?: string | undefined;
  endedAt?: string | undefined;
}

export const ACTIVE_RUN_STATES = ['queued', 'running', 'waiting', 'cancelling'] as const;
export const TERMINAL_RUN_STATES = ['done', 'failed', 'cancelled', 'rejected', 'expired'] as const;
export type ActiveRunState = (typeof ACTIVE_RUN_STATES)[number];
export type TerminalRunState = (typeof TERMINAL_RUN_STATES)[number];
export type RunState = ActiveRunState | TerminalRunState;

export interface Usage {
  inputTokens: number;
  outputTokens: number;
  cacheReadTokens: number;
  cacheWriteTokens: number;
  costUsd: number;
}

export interface RunLinks {
  pr?: string | undefined;
  ci?: string | undefined;
  argocd?: string | undefined;
  kargo?: string | undefined;
}

/** What the agent gate produced, and what later gates hand back to its next iteration. */
export interface AgentArtifacts {
  branch?: string | undefined;
  /** The commit the latest iteration produced and pushed. */
  commitSha?: string | undefined;
  /** The commit of the previous iteration, once a new one is under way. */
  previousCommitSha?: string | undefined;
  /** The agent's own summary of its change (model text: shown quoted and neutralised). */
  summary?: string | undefined;
  diffStat?: string | undefined;
  checks?: Array<{ name: string; passed: boolean }> | undefined;
  /** Model turns used so far (budgets.maxAgentTurns counts these across iterations). */
  turns?: number | undefined;
  /** What the agent must address in its next iteration (a CI failure report); cleared when it commits. */
  feedback?: string | undefined;
  /** Findings about tests being deleted, skipped or loosened by the agent's change. */
  testWarnings?: string[] | undefined;
}

export interface PrArtifacts {
  number?: number | undefined;
}

export interface CiArtifacts {
  /** CI verdicts that sent the run back to the agent, and their fingerprints (a repeat stops the loop). */
  iterations?: number | undefined;
  fingerprints?: string[] | undefined;
}

export interface MergeArtifacts {
  commitSha?: string | undefined;
  /** The forge waits for a Merge click by someone other than the requester (local mode): the card shows the button. */
  awaitingClick?: boolean | undefined;
}

/**
 * A revision the run's Freight stands for (SPEC §5): a commit of the repository at `repoURL`, or,
 * with `chart`, that Helm chart's version. Argo CD applications are checked against these when the
 * Promotion does not say what it synced them to.
 */
export interface DeployRevision {
  repoURL: string;
  revision: string;
  chart?: string | undefined;
}

export interface FreightArtifacts {
  /** The Freight's name (Kargo's content hash) and its alias, as the thread names it. */
  name?: string | undefined;
  alias?: string | undefined;
  /** What matched the merge commit: the commit's repository, or the image `repo:tag`. */
  matchedBy?: string | undefined;
  revisions?: DeployRevision[] | undefined;
}

/** What a stage gate recorded about this run's Freight in one stage. */
export interface StageProgress {
  /** The Promotion that brings (or brought) the Freight into the stage. */
  promotion?: string | undefined;
  /** When that Promotion finished: verification must be newer than this. */
  promotedAt?: string | undefined;
  /** When the golden signals were first queried without data: the wait for data is bounded from here. */
  signalsSince?: string | undefined;
}

/** The deploy objects a run follows, by the kinds the bot's informers hold (Kargo, Argo CD, Argo Rollouts). */
export type DeployObjectKind = 'Freight' | 'Stage' | 'Promotion' | 'Application' | 'AnalysisRun';

export interface DeployObjectRef {
  kind: DeployObjectKind;
  namespace: string;
  name: string;
}

/**
 * What the red deploy gate that sent the run back left for the agent's diagnosis (SPEC §4, issue
 * 11): where to look, and once made, the diagnosis itself (made once per fix forward).
 */
export interface RedDeployGate {
  /** The fix forward this red gate started (DeployArtifacts.iterations once it was sent back). */
  fix: number;
  /** The policy's stage name (`argocd` for an Argo-only pipeline). */
  stage: string;
  /** The destination namespace of the stage's Argo CD applications; undefined when none says. */
  namespace?: string | undefined;
  /** The objects the run followed there, for `deploy_status`. */
  objects: DeployObjectRef[];
  /** The agent's diagnosis, stored before it is posted: a restarted step posts it, never makes another. */
  diagnosis?: RedGateDiagnosis | undefined;
}

export interface RedGateDiagnosis {
  /** The model's account (scrubbed, capped). */
  text: string;
  /** The bot's own list of the read-only calls it made. */
  looked: string[];
  /** Why the cluster tools were missing, when they were. */
  clusterUnavailable?: string | undefined;
}

export interface DeployArtifacts {
  /** Fixes forward after red deploy gates so far (budgets.maxDeployIterations). */
  iterations?: number | undefined;
  /** Fingerprints of the red deploy results that were sent back: the same failure twice stops the loop. */
  fingerprints?: string[] | undefined;
  /** Per stage name (the policy's, not Kargo's). */
  stages?: Record<string, StageProgress> | undefined;
  /** The run's branches that were merged before a fix forward: a new branch must never be one of them. */
  mergedBranches?: string[] | undefined;
  /** The last red gate that sent the run back to fix forward. */
  redGate?: RedDeployGate | undefined;
}

/**
 * What each gate recorded, one namespace per gate (issue 8): a gate writes its own and reads what it
 * needs of the earlier ones, so a new gate adds a namespace instead of growing one shared bag.
 */
export interface RunArtifacts {
  agent?: AgentArtifacts | undefined;
  pr?: PrArtifacts | undefined;
  ci?: CiArtifacts | undefined;
  merge?: MergeArtifacts | undefined;
  freight?: FreightArtifacts | undefined;
  deploy?: DeployArtifacts | undefined;
}

const ARTIFACT_NAMESPACES = ['agent', 'pr', 'ci', 'merge', 'freight', 'deploy'] as const satisfies ReadonlyArray<keyof RunArtifacts>;

/** `artifacts` with `patch` merged into one gate's namespace. */
export function patchArtifacts<K extends keyof RunArtifacts>(artifacts: RunArtifacts, key: K, patch: NonNullable<RunArtifacts[K]>): RunArtifacts {
  return { ...artifacts, [key]: { ...artifacts[key], ...patch } };
}

/** Both sets of artifacts, merged namespace by namespace (`extra` wins). */
export function mergeArtifacts(artifacts: RunArtifacts, extra: RunArtifacts | undefined): RunArtifacts {
  if (extra === undefined) return artifacts;
  let merged = artifacts;
  for (const key of ARTIFACT_NAMESPACES) {
    const patch = extra[key];
    if (patch !== undefined) merged = patchArtifacts(merged, key, patch);
  }
  return merged;
}

/**
 * A fix forward after a red deploy gate (SPEC §1): the merged change stays merged, and the agent
 * starts a new branch from the default branch as it is now, so everything the old branch's pull
 * request, CI, merge and Freight recorded is dropped; the agent's turns (a run-wide budget) and the
 * deploy loop's bookkeeping stay.
 */
export function fixForwardArtifacts(artifacts: RunArtifacts, feedback: string, deploy: DeployArtifacts): RunArtifacts {
  return {
    agent: { turns: artifacts.agent?.turns, feedback },
    deploy: {
      ...artifacts.deploy,
      ...deploy,
      stages: undefined,
      mergedBranches: [...(artifacts.deploy?.mergedBranches ?? []), ...(artifacts.agent?.branch === undefined ? [] : [artifacts.agent.branch])],
    },
  };
}

export interface Run {
  id: string;
  repo: string;
  task: string;
  requester: { userId: string; name?: string | undefined };
  /**
   * Where the run's card lives, as references the chat adapter gave (opaque here): the channel the
   * run was requested in, and the card's message once it is posted (its thread holds the replies).
   */
  chat: { channel: string; card?: string | undefined };
  state: RunState;
  gates: Gate[];
  /** Why the run ended, for terminal states. */
  outcome?: string | undefined;
  cancel?: { by: string; at: string } | undefined;
  usage: Usage;
  links: RunLinks;
  artifacts: RunArtifacts;
  /** What the run is doing right now, for the card (e.g. "str_replace /repo/src/app.ts"). */
  activity?: string | undefined;
  /** Sequence of the run's queue jobs: the current one is `<run id>.<jobSeq>` (see queue/queues.ts). */
  jobSeq: number;
  createdAt: string;
  updatedAt: string;
  /** Incremented on every stored change; used for optimistic concurrency and card coalescing. */
  version: number;
}

export function isTerminal(state: RunState): state is TerminalRunState {
  return (TERMINAL_RUN_STATES as readonly string[]).includes(state);
}

/**
 * The gates a run on `repo` goes through, derived from policy: the four Git
 * gates always; Kargo's freight, each stage and the approval before the stage
 * that asks for one when the repository's pipeline has a Kargo section; without
 * one, `argocd` when the pipeline lists Argo CD applications.
 */
export function gatesFor(policy: Policy, repo: string): Gate[] {
  const names: Array<{ name: string; kind: GateKind }> = [
    { name: 'agent', kind: 'agent' },
    { name: 'pr', kind: 'pr' },
    { name: 'ci', kind: 'ci' },
    { name: 'merge', kind: 'merge' },
  ];
  const pipelineName = policy.repos[repo]?.pipeline;
  const pipeline = pipelineName === undefined ? undefined : policy.pipelines[pipelineName];
  if (pipeline?.kargo !== undefined) {
    names.push({ name: 'freight', kind: 'freight' });
    for (const stage of pipeline.stages) {
      if (stage.approval !== undefined) names.push({ name: 'approval', kind: 'approval' });
      names.push({ name: `stage:${stage.name}`, kind: 'stage' });
    }
  } else if ((pipeline?.argocdApps ?? []).length > 0) {
    names.push({ name: 'argocd', kind: 'argocd' });
  }
  return names.map(({ name, kind }) => ({ name, kind, state: 'pending' }));
}

export const EMPTY_USAGE: Usage = {
  inputTokens: 0,
  outputTokens: 0,
  cacheReadTokens: 0,
  cacheWriteTokens: 0,
  costUsd: 0,
};

export interface NewRunInput {
  id: string;
  repo: string;
  task: string;
  requester: { userId: string; name?: string | undefined };
  channel: string;
  now: Date;
}

/** The task's first line, at most 72 characters: the commit subject and the pull request title. */
export function taskTitle(task: string): string {
  const line = task.split('\n')[0]?.trim() || 'shipgate change';
  return line.length <= 72 ? line : `${line.slice(0, 71)}…`;
}

export function newRun(policy: Policy, input: NewRunInput): Run {
  const at = input.now.toISOString();
  return {
    id: input.id,
    repo: input.repo,
    task: input.task,
    requester: input.requester,
    chat: { channel: input.channel },
    state: 'queued',
    gates: gatesFor(policy, input.repo),
    usage: { ...EMPTY_USAGE },
    links: {},
    artifacts: {},
    jobSeq: 0,
    createdAt: at,
    updatedAt: at,
    version: 0,
  };
}

/** The first gate that has not passed or been skipped: the one the run is at. */
export function currentGate(run: Run): Gate | undefined {
  return run.gates.find((gate) => gate.state !== 'passed' && gate.state !== 'skipped');
}

/** A gate step's verdict (SPEC §1: each gate ends passed, failed or skipped, or is still pending). */
export type GateOutcome =
  | { kind: 'passed'; summary: string }
  /**
   * `end`: the gate's verdict ends the run in that state instead of `failed` (the approval gate: a
   * Reject ends it `rejected`, a deadline without enough approvals `expired`).
   */
  | { kind: 'failed'; summary: string; end?: 'rejected' | 'expired' | undefined }
  | { kind: 'skipped'; summary: string }
  /** Not decided yet: look again after `recheckAfterMs` without holding a worker. */
  | { kind: 'pending'; summary: string; recheckAfterMs: number }
  /**
   * The gate failed in a way an earlier gate can fix (red CI goes back to the agent): the run
   * rewinds to `gate` with `feedback` for it, and this gate's verdict is kept as its summary.
   */
  | {
      kind: 'retry-from';
      gate: string;
      summary: string;
      feedback: string;
      artifacts?: RunArtifacts | undefined;
      /**
       * `new-branch`: a fix forward after a red deploy gate; the change was merged, so the agent starts
       * over on a new branch (fixForwardArtifacts) instead of adding a commit to the merged one.
       */
      restart?: 'new-branch' | undefined;
    };

function replaceGate(run: Run, name: string, change: (gate: Gate) => Gate): Gate[] {
  return run.gates.map((gate) => (gate.name === name ? change(gate) : gate));
}

/** Marks the gate running (idempotent) and the run running. */
export function startGate(run: Run, name: string, now: Date): Run {
  return {
    ...run,
    state: 'running',
    gates: replaceGate(run, name, (gate) =>
      gate.state === 'running' ? gate : { ...gate, state: 'running', startedAt: gate.startedAt ?? now.toISOString() },
    ),
  };
}

/**
 * Sends the run back to `gate`: it and every later gate up to the current one
 * become pending again (their last summaries stay visible until re-decided).
 */
export function rewindTo(run: Run, gate: string, feedback: string | undefined): Run {
  const start = run.gates.findIndex((g) => g.name === gate);
  if (start < 0) return run;
  const agent = patchArtifacts(run.artifacts, 'agent', {
    feedback,
    previousCommitSha: run.artifacts.agent?.commitSha ?? run.artifacts.agent?.previousCommitSha,
    commitSha: undefined,
  });
  return {
    ...run,
    state: 'running',
    // A Merge button shown for the old commit must go with it (the new commit needs its own click).
    artifacts: agent.merge?.awaitingClick === undefined ? agent : patchArtifacts(agent, 'merge', { awaitingClick: undefined }),
    gates: run.gates.map((g, index) =>
      index >= start && (g.state !== 'pending' || g.notConfigured === true)
        ? { name: g.name, kind: g.kind, state: 'pending', summary: g.summary }
        : g,
    ),
  };
}

/** Applies a step's outcome; a failed gate fails the run, the last passed gate completes it. */
export function applyOutcome(run: Run, name: string, outcome: GateOutcome, now: Date): Run {
  const at = now.toISOString();
  if (outcome.kind === 'retry-from') {
    // The loop's bookkeeping (iterations, fingerprints) lands in the same update as the rewind.
    const decided = {
      ...run,
      artifacts: mergeArtifacts(run.artifacts, outcome.artifacts),
      gates: replaceGate(run, name, (gate) => ({ ...gate, summary: outcome.summary })),
    };
    const rewound = rewindTo(decided, outcome.gate, outcome.feedback);
    if (outcome.restart !== 'new-branch') return rewound;
    return { ...rewound, artifacts: fixForwardArtifacts(decided.artifacts, outcome.feedback, decided.artifacts.deploy ?? {}) };
  }
  if (outcome.kind === 'pending') {
    return {
      ...run,
      state: 'waiting',
      gates: replaceGate(run, name, (gate) => ({ ...gate, state: 'running', summary: outcome.summary })),
    };
  }
  const gates = replaceGate(run, name, (gate) => ({
    ...gate,
    state: outcome.kind,
    summary: outcome.summary,
    notConfigured: undefined,
    endedAt: at,
  }));
  if (outcome.kind === 'failed') {
    if (outcome.end !== undefined) return { ...run, gates, state: outcome.end, outcome: `${name}: ${outcome.summary}` };
    return { ...run, gates, state: 'failed', outcome: `${name} failed: ${outcome.summary}` };
  }
  const next = { ...run, gates };
  return currentGate(next) === undefined ? completeRun(next) : next;
}

/**
 * A gate this build cannot evaluate yet: it stays pending, marked as not
 * configured, and the run waits there (a later build resumes it with retry).
 */
export function markNotConfigured(run: Run, name: string, reason: string): Run {
  return {
    ...run,
    state: 'waiting',
    gates: replaceGate(run, name, (gate) => ({
      ...gate,
      state: 'pending',
      notConfigured: true,
      summary: `not configured: ${reason}`,
    })),
  };
}

export function finishRun(run: Run, state: TerminalRunState, outcome: string, now: Date): Run {
  const at = now.toISOString();
  return {
    ...run,
    state,
    outcome,
    gates: run.gates.map((gate) =>
      gate.state === 'running' ? { ...gate, state: state === 'failed' ? 'failed' : 'pending', endedAt: at } : gate,
    ),
  };
}

/** Cancelling or ended: nothing may start new work on the run, and no gate result may land. */
export function isStopping(run: Pick<Run, 'state'>): boolean {
  return run.state === 'cancelling' || isTerminal(run.state);
}

/** The run's next BullMQ job: job ids are `<run id>.<jobSeq>`, so a bump makes the next job new and a redelivery a no-op. */
export function withNextJob(run: Run): Run {
  return { ...run, jobSeq: run.jobSeq + 1 };
}

/** Every gate passed. */
export function completeRun(run: Run): Run {
  return { ...run, state: 'done', outcome: 'every gate passed' };
}

/** The work of a cancelling run really stopped: it ends `cancelled`; undefined unless it was cancelling. */
export function finishCancellation(run: Run, now: Date): Run | undefined {
  return run.state === 'cancelling' ? finishRun(run, 'cancelled', 'cancelled on request', now) : undefined;
}

/** The run cannot go on (budget, retries used up): it ends `failed` with `reason`; undefined once it has ended. */
export function forceFail(run: Run, reason: string, now: Date): Run | undefined {
  return isTerminal(run.state) ? undefined : finishRun(run, 'failed', reason, now);
}

/**
 * When the run passes `budgets.maxRunMinutes`: its creation plus the limit, plus the time it spent
 * waiting for people at an approval gate. The budget bounds the automation (agent, CI, deploys), not
 * how long approvers take: that has its own deadline (`expiresAfter`), and counting it here would end
 * a run approved after four hours before its production stage could start.
 */
export function runDeadlineMs(run: Pick<Run, 'createdAt' | 'gates'>, maxRunMinutes: number, nowMs: number): number {
  let waited = 0;
  for (const gate of run.gates) {
    if (gate.kind !== 'approval' || gate.startedAt === undefined) continue;
    const end = gate.endedAt === undefined ? nowMs : Date.parse(gate.endedAt);
    waited += Math.max(0, end - Date.parse(gate.startedAt));
  }
  return Date.parse(run.createdAt) + maxRunMinutes * 60_000 + waited;
}

/** A webhook about this run's commit or PR should make it look now: it is at a gate, not queued or stopping. */
export function isWakeable(run: Pick<Run, 'state'>): boolean {
  return run.state === 'waiting' || run.state === 'running';
}

/**
 * The run needs a live job of its own (crash recovery): queued, running or cancelling. A waiting run
 * has a delayed job for its next look, which is not to be pulled forward.
 */
export function needsLiveJob(run: Pick<Run, 'state'>): boolean {
  return run.state === 'queued' || run.state === 'running' || run.state === 'cancelling';
}

/** Cancel on request (SPEC §2): the run is `cancelling` until its work really stopped; undefined when already stopping. */
export function requestCancellation(run: Run, by: string, now: Date): Run | undefined {
  if (isStopping(run)) return undefined;
  return { ...run, state: 'cancelling', cancel: { by, at: now.toISOString() } };
}

/** `/ship retry`: a failed run resumes from its failed gate in a new job; undefined for any other state. */
export function retryRun(run: Run): Run | undefined {
  return run.state === 'failed' ? withNextJob(resetForRetry(run)) : undefined;
}

/**
 * Gates a thread instruction can send back to the agent: its change is not merged yet, so another
 * iteration on the same branch and pull request is still possible.
 */
export const FOLLOW_UP_REWINDABLE: ReadonlySet<string> = new Set(['pr', 'ci', 'merge']);

/** A follow-up past the agent gate: rewind to the agent in a new job; undefined when the run cannot take one now. */
export function rewindForFollowUp(run: Run): Run | undefined {
  const at = currentGate(run);
  if (isStopping(run) || at === undefined || !FOLLOW_UP_REWINDABLE.has(at.name)) return undefined;
  return withNextJob(rewindTo(run, 'agent', run.artifacts.agent?.feedback));
}

/** Retry: reset the failed gate (and anything after it) to pending and queue the run again. */
export function resetForRetry(run: Run): Run {
  let reset = false;
  const gates = run.gates.map((gate): Gate => {
    if (gate.state === 'failed') reset = true;
    return reset ? { name: gate.name, kind: gate.kind, state: 'pending' } : gate;
  });
  // A retried stage gate looks afresh: which Promotion counts now, and when its golden signals started.
  const resetStages = gates.filter((gate, i) => gate.kind === 'stage' && gate !== run.gates[i]).map((gate) => gate.name.slice('stage:'.length));
  const stages = run.artifacts.deploy?.stages;
  const kept = stages === undefined ? undefined : Object.fromEntries(Object.entries(stages).filter(([name]) => !resetStages.includes(name)));
  return {
    ...run,
    state: 'queued',
    outcome: undefined,
    gates,
    artifacts: stages === undefined ? run.artifacts : patchArtifacts(run.artifacts, 'deploy', { stages: kept }),
  };
}

/**
 * A run that cannot continue on this installation as configured (`/ship clear`): it waits at a gate
 * this shipgate has no step for ("not configured"), so nothing will ever move it on by itself.
 */
export function cannotContinue(run: Run): boolean {
  if (isTerminal(run.state) || run.state === 'cancelling') return false;
  return currentGate(run)?.notConfigured === true;
}
