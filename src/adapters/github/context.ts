import type { Logger } from '../../log.js';
import type { Scrub } from '../../security/scrubber.js';
import type { Client } from './clients.js';
import type { ConditionalReads } from './conditional-get.js';
import type { PortCall } from './port-errors.js';

/** What every concern of the REST adapter shares (built once per adapter by createGitHubRest). */
export interface GitHubRestContext {
  clientFor: (owner: string, repo: string) => Promise<Client>;
  call: PortCall;
  reads: ConditionalReads;
  /** The counting, timing-out fetch, for requests sent by hand (log downloads). */
  fetch: typeof fetch;
  log: Logger;
  /** For what the adapter writes to GitHub (pull request titles and bodies). */
  scrub: Scrub;
}
