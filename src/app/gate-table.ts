import type { GateStep } from '../../workers/gates/gate-step.js';
import { createAgentStep } from '../../workers/gates/agent/agent-step.js';
import { createApprovalStep } from '../../workers/gates/approval/approval-step.js';
import { createCiStep } from '../../workers/gates/ci/ci-step.js';
import { createFreightStep } from '../../workers/gates/freight/freight-step.js';
import type { DeployUiBases } from '../../workers/gates/stage/deploy-links.js';
import { createArgocdStep } from '../../workers/gates/stage/argocd-step.js';
import { createStageStep } from '../../workers/gates/stage/stage-step.js';
import { createMergeStep } from '../../workers/gates/merge/merge-step.js';
import { createPrStep } from '../../workers/gates/pr/pr-step.js';
import type { DiagnosisOpener } from '../agent/diagnosis-tools.js';
import type { AuditLog } from '../audit/audit-log.js';
import type { Policy } from '../config/policy.js';
import type { GateKind } from '../domain/run.js';
import type { Git } from '../git/git.js';
import type { ChatPort } from '../ports/chat.js';
import type { GitHubCiPort, GitHubPort } from '../ports/github.js';
import type { KubernetesPort } from '../ports/kubernetes.js';
import type { MetricsQueryPort } from '../ports/metrics-query.js';
import type { ModelPort } from '../ports/model.js';
import type { SandboxPort } from '../ports/sandbox.js';
import type { Scrub } from '../security/scrubber.js';
import type { AgentConversations } from '../store/agent-conversation-store.js';
import type { FollowUps } from '../store/follow-ups.js';
import type { Claims } from '../store/claims.js';
import type { PromotionQueue } from '../store/promotion-queue.js';
import type { ApprovalStore } from '../store/approval-store.js';
import type { Queues } from '../queue/queues.js';
import type { RunIndex } from '../store/run-index.js';
import type { TtlCache } from '../store/ttl-cache.js';

/**
 * The outside systems a gate can need, and what an operator sets to provide each: the words of a
 * gate's "not configured" reason.
 */
export const GITHUB_CREDENTIALS = 'GITHUB_TOKEN or a GitHub App (GITHUB_APP_ID, GITHUB_APP_PRIVATE_KEY)';
export const NEEDS = {
  forge: `${GITHUB_CREDENTIALS}, or a repository with a local path: in the policy`,
  model: 'ANTHROPIC_API_KEY (or ANTHROPIC_BASE_URL)',
  kubernetes: 'a cluster to watch (KUBECONFIG, ~/.kube/config, or running in a pod)',
} as const;
export type Need = keyof typeof NEEDS;

/** The reason of a gate this shipgate has no step for at all. */
export const NOT_BUILT = 'not built yet';

/** What gate steps are built from. */
export interface GateDeps {
  policy: Policy;
  /** Base name of the policy file (the agent never edits its own gates). */
  policyFileName: string;
  modelId: string;
  git: Git;
  sandbox: SandboxPort;
  chat: ChatPort;
  clock: () => Date;
  scrub: Scrub;
  followUps: FollowUps;
  /** Where the agent gate keeps its conversation after every turn (a restarted step continues it). */
  conversations: AgentConversations;
  index: RunIndex;
  claims: Claims;
  /** The per-stage promotion queues: where the bot promotes, one run at a time creates its Promotion into a Stage. */
  promotionQueue: PromotionQueue;
  /** The approval requests (the approval gate opens them; the production stage promotes only what they approved). */
  approvals: ApprovalStore;
  /** The approval gate re-writes the decision's evidence from the store when a click handler died before writing it. */
  audit: Pick<AuditLog, 'append'>;
  /** The approval gate has the chat outbox post and update its request. */
  queues: Pick<Queues, 'approvalMessage'>;
  requiredChecksCache: TtlCache;
  workRoot: string;
  tuning: { checkTimeoutMs?: number | undefined; firstPollMs?: number | undefined; deployPollMs?: number | undefined };
  /** The Kargo and Argo CD UIs, for links in deploy gate replies. */
  deployUi: DeployUiBases;
  /**
   * The outside systems, built on first use and shared by every gate. A gate reaches only those
   * its `needs` list (the others throw), and is built only once all of them are configured.
   */
  /** GitHub, or the local forge for repositories with a local `path:` (routed per repository). */
  forge: () => GitHubPort & GitHubCiPort;
  model: () => ModelPort;
  /** The shared informers' caches and the Promotion create (built by the composition root, started by the worker role). */
  kubernetes: () => KubernetesPort;
  /** Prometheus, when PROMETHEUS_URL is set (stages with golden signals; loadConfig refuses them without it). */
  metricsQuery: () => MetricsQueryPort | undefined;
  /** The diagnosis of a red deploy gate before its fix forward (issue 11). */
  diagnosis: () => DiagnosisOpener;
}

export interface GateFactory {
  /** Until every one of these is configured the gate is "not configured", and its reason names what is missing. */
  needs: readonly Need[];
  /** Absent: this shipgate has no step for the gate yet. */
  build?: (deps: GateDeps) => GateStep;
}

export type GateTable = Readonly<Record<GateKind, GateFactory>>;

/** What every deploy gate step is built from: the policy, the cluster's caches, the run index, UI links, the clock and the fallback poll. */
function deployStepDeps(deps: GateDeps) {
  return {
    policy: deps.policy,
    kubernetes: deps.kubernetes(),
    index: deps.index,
    ui: deps.deployUi,
    clock: deps.clock,
    firstPollMs: deps.tuning.deployPollMs,
  };
}

/**
 * Gate kind → its step (SPEC §1). A new gate is one row here; the composition root builds the rows
 * whose needs are met, and a run waits at any other gate as "not configured" (the run processor marks
 * it) for the reason `notConfiguredReason` gives. The four shipped gates only make sense together (pr,
 * ci and merge act on the agent's change), so they all need both GitHub and the model, as before; the
 * deploy gates need a cluster to watch.
 */
export const GATE_TABLE: GateTable = {
  agent: {
    needs: ['forge', 'model'],
    build: (deps) =>
      createAgentStep({
        policy: deps.policy,
        policyFileName: deps.policyFileName,
        github: deps.forge(),
        git: deps.git,
        model: deps.model(),
        modelId: deps.modelId,
        workRoot: deps.workRoot,
        clock: deps.clock,
        checkTimeoutMs: deps.tuning.checkTimeoutMs,
        followUps: deps.followUps,
        conversations: deps.conversations,
        sandbox: deps.sandbox,
        scrub: deps.scrub,
        diagnosis: deps.diagnosis(),
      }),
  },
  pr: {
    needs: ['forge', 'model'],
    build: (deps) => createPrStep({ github: deps.forge(), chat: deps.chat, scrub: deps.scrub }),
  },
  ci: {
    needs: ['forge', 'model'],
    build: (deps) =>
      createCiStep({
        policy: deps.policy,
        github: deps.forge(),
        index: deps.index,
        clock: deps.clock,
        firstPollMs: deps.tuning.firstPollMs,
        requiredChecksCache: deps.requiredChecksCache,
        followUps: deps.followUps,
        scrub: deps.scrub,
      }),
  },
  merge: {
    needs: ['forge', 'model'],
    build: (deps) =>
      createMergeStep({ github: deps.forge(), clock: deps.clock, firstPollMs: deps.tuning.firstPollMs }),
  },
  freight: {
    needs: ['kubernetes'],
    build: (deps) =>
      createFreightStep(deployStepDeps(deps)),
  },
  stage: {
    needs: ['kubernetes'],
    build: (deps) =>
      createStageStep({
        ...deployStepDeps(deps),
        metrics: deps.metricsQuery(),
        claims: deps.claims,
        promotionQueue: deps.promotionQueue,
        approvals: deps.approvals,
        threadLink: async (run) => (run.chat.card === undefined ? undefined : deps.chat.permalink({ channel: run.chat.channel, ref: run.chat.card }).catch(() => undefined)),
      }),
  },
  approval: {
    needs: [],
    build: (deps) => createApprovalStep({ policy: deps.policy, approvals: deps.approvals, audit: deps.audit, queues: deps.queues, clock: deps.clock }),
  },
  argocd: {
    needs: ['kubernetes'],
    build: (deps) =>
      createArgocdStep(deployStepDeps(deps)),
  },
};

/** Why the gate cannot run in this shipgate, or undefined when it can. */
export function notConfiguredReason(factory: GateFactory, configured: ReadonlySet<Need>): string | undefined {
  if (factory.build === undefined) return NOT_BUILT;
  const missing = factory.needs.filter((need) => !configured.has(need));
  return missing.length === 0 ? undefined : `needs ${missing.map((need) => NEEDS[need]).join(', and ')}`;
}
