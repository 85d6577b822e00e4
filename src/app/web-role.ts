import { createFollowUpHandler } from '../../commands/follow-up.js';
import { createRunActions } from '../../commands/run-actions.js';
import { createShipCommand } from '../../commands/ship-command.js';
import type { Policy } from '../config/policy.js';
import { cachedGroups } from '../domain/group-cache.js';
import { groupsOf } from '../domain/principals.js';
import { githubWebhookRoute } from '../http/github-webhooks.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { ChatHandlers, CommandReply } from '../ports/chat.js';
import type { HttpRoute } from '../ports/http.js';
import type { Cancellation } from '../queue/cancellation.js';
import { mapRichText } from '../render/view.js';
import type { Scrub } from '../security/scrubber.js';
import type { ChatAdapter } from './build-chat.js';
import type { Stores } from './build-stores.js';
import { wakeRunsOnGitHubEvent } from './wake-runs.js';

export interface WebRoleDeps {
  policy: Policy;
  stores: Stores;
  chat: ChatAdapter;
  cancellation: Cancellation;
  /** GITHUB_WEBHOOK_SECRET: without it no webhook route is served (CI and merge poll). */
  githubWebhookSecret: string | undefined;
  clock: () => Date;
  log: Logger;
  metrics: Metrics;
  scrub: Scrub;
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
  const { store, audit, queues, followUps, index, pokes } = stores;
  const groups = cachedGroups(groupsOf([chat.port.principals]), { ttlMs: 60_000, now: () => clock().getTime() });
  const handlers: ChatHandlers = {
    onCommand: scrubbedReplies(
      createShipCommand({ policy, store, audit, queues, cancellation, groups, clock, log, metrics }),
      scrub,
    ),
    onAction: scrubbedReplies(
      createRunActions({ policy, store, audit, queues, cancellation, groups, clock, log }),
      scrub,
    ),
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
