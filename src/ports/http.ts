import type { RequestListener } from 'node:http';

/**
 * An HTTP endpoint an adapter needs on shipgate's one server (SPEC §3, PORT):
 * Slack's events, GitHub's webhooks, Discord's interactions. The web role
 * mounts what the configured adapters declare; no route is hard-coded there.
 */
export interface HttpRoute {
  /** The method the endpoint serves; others get 405 with an Allow header. */
  method: 'GET' | 'POST';
  /** The exact path, e.g. `/slack/events` (a query string is ignored when matching). */
  path: string;
  listener: RequestListener;
}
