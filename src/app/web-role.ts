import { createApprovalActions } from '../../commands/approval-actions.js';
import { createFollowUpHandler } from '../../commands/follow-up.js';
import { createMergeAction } from '../../commands/merge-action.js';
import { createRunActions } from '../../commands/run-actions.js';
import { createShipCommand } from '../../commands/ship-command.js';
import type { Policy } from '../config/policy.js';
import type { MergeClickPort } from '../ports/github.js';
import { groupsOf } from '../domain/principals.js';
import { githubWebhookRoute } from '../http/github-webhooks.js';
import type { Logger } from '../log.js';
import type { Redis } from '../redis.js';
import type { Metrics } from '../metrics.js';
import type { ChatHandlers, CommandReply } from '../ports/chat.js';
import type { HttpRoute } from '../ports/http.js';
import type { Cancellation } from '../queue/cancellation.js';
import { mapRichText } from '../render/view.js';
import type { Scrub } from '../security/scrubber.js';
import { createSharedGroups } from '../store/shared-groups.js';
import type { ChatAdapter } from './build-chat.js';
import type { Stores } from './build-stores.js';
import { wakeRunsOnGitHubEvent } from './wake-runs.js';

/** How long a group's members are trusted without a `subteam_members_changed` (Slack sends one on every change). */
const GROUP_CACHE_SECONDS = 300;

export interface WebRoleDeps {
  policy: Policy;
  /** Shared caches (group membership) live here. */
  redis: Redis;
  prefix: string;
  stores: Stores;
  chat: ChatAdapter;
  cancellation: Cancellation;
  /** GITHUB_WEBHOOK_SECRET: without it no webhook route is served (CI and merge poll). */
  githubWebhookSecret: string | undefined;
  clock: () => Date;
  log: Logger;
  metrics: Metrics;
  scrub: Scrub;
  /** The local forge's Merge clicks, when a repository merges on one (local mode). */
  mergeClicks?: MergeClickPort | undefined;
}

export interface WebRole {
  /** What the web role serves besides health, readiness and metrics: what its adapters declare. */
  routes: readonly HttpRoute[];
  /** Starts taking chat input (call once the HTTP server listens). */
  start(): Promise<void>;
}

/** Ephemeral answers (run status, the audit trail) quote gate summaries: scrubbed like every other chat write. */
export function scrubbedReplies<E>(
  handle: (event: E) => Promise<CommandReply>,
  scrub: Scrub,
): (event: E) => Promise<CommandReply> {
  return async (event) => {
    const reply = await handle(event);
    return reply.ephemeral === undefined ? reply : { ...reply, ephemeral: mapRichText(reply.ephemeral, scrub) };
  };
}

/** The web role (SPEC §8): chat input (commands, buttons, thread mentions) and the HTTP routes of the adapters. */
export function createWebRole(deps: WebRoleDeps): WebRole {
  const { policy, stores, chat, cancellation, clock, log, metrics, scrub } = deps;
  const { store, audit, queues, followUps, index, pokes, approvals } = stores;
  // Membership in Redis, so every web replica judges a click by the same list (SPEC §6).
  const groups = createSharedGroups({ redis: deps.redis, prefix: deps.prefix, source: groupsOf([chat.port.principals]), ttlSeconds: GROUP_CACHE_SECONDS });
  const handlers: ChatHandlers = {
    onCommand: scrubbedReplies(
      createShipCommand({ policy, store, audit, queues, cancellation, groups, clock, log, metrics }),
      scrub,
    ),
    onAction: scrubbedReplies(
      createRunActions({
        policy,
        store,
        audit,
        queues,
        cancellation,
        groups,
        clock,
        log,
        approvalClicks: createApprovalActions({ store, approvals, audit, queues, pokes, groups, clock, log }),
        mergeClicks: deps.mergeClicks === undefined ? undefined : createMergeAction({ policy, store, audit, queues, pokes, groups, forge: deps.mergeClicks, log }),
      }),
      scrub,
    ),
    onGroupChanged: (groupId) => groups.refresh(groupId),
    onMention: scrubbedReplies(
      createFollowUpHandler({ store, audit, queues, followUps, index, command: policy.command, log }),
      scrub,
    ),
  };
  const routes: HttpRoute[] = [...chat.routes];
  if (deps.githubWebhookSecret !== undefined) {
    routes.push(
      githubWebhookRoute({
        secret: deps.githubWebhookSecret,
        log,
        onEvent: wakeRunsOnGitHubEvent({ index, store, pokes, queues, log }),
      }),
    );
  }
  return {
    routes,
    start: () => chat.start(handlers),
  };
}
