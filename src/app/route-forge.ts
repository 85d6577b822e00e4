import type { LocalForge } from '../adapters/local-forge/local-forge.js';
import { RefusedError } from '../errors.js';
import type { GitHubCiPort, GitHubPort } from '../ports/github.js';
import { GITHUB_CREDENTIALS } from './gate-table.js';

type Forge = GitHubPort & GitHubCiPort;

/**
 * One forge for the gates, routed per repository: those with a local `path:` go to the local
 * forge (SPEC §8), every other to GitHub. A GitHub repository on a shipgate without GitHub
 * credentials is refused with the variable to set (the run ends with it, not at an opaque error).
 */
export function routeForge(local: LocalForge | undefined, github: (() => Forge) | undefined): Forge {
  const pick = (owner: string, repo: string): Forge => {
    if (local?.serves(`${owner}/${repo}`) === true) return local;
    if (github === undefined)
      throw new RefusedError(
        `${owner}/${repo} is a GitHub repository and this shipgate has no GitHub credentials: set ${GITHUB_CREDENTIALS}, or give it a local path: in the policy`,
      );
    return github();
  };
  // Every call passes its options (the step's signal) on to the forge that serves the repository.
  return {
    getRepository: (owner, repo, options) => pick(owner, repo).getRepository(owner, repo, options),
    findOpenPullRequest: (owner, repo, branch, options) => pick(owner, repo).findOpenPullRequest(owner, repo, branch, options),
    createPullRequest: (input, options) => pick(input.owner, input.repo).createPullRequest(input, options),
    pushCredentials: (owner, repo, options) => pick(owner, repo).pushCredentials(owner, repo, options),
    ciSnapshot: (owner, repo, sha, options) => pick(owner, repo).ciSnapshot(owner, repo, sha, options),
    requiredChecks: (owner, repo, branch, options) => pick(owner, repo).requiredChecks(owner, repo, branch, options),
    checkRunAnnotations: (owner, repo, id, options) => pick(owner, repo).checkRunAnnotations(owner, repo, id, options),
    actionsJobLogTail: (owner, repo, id, maxBytes, options) => pick(owner, repo).actionsJobLogTail(owner, repo, id, maxBytes, options),
    getPullRequest: (owner, repo, number, options) => pick(owner, repo).getPullRequest(owner, repo, number, options),
  };
}
