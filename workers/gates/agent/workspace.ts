import { join } from 'node:path';
import { createProtectedPaths, type ProtectedPaths } from '../../../src/agent/protected-paths.js';
import type { RepoPolicy } from '../../../src/config/policy.js';
import type { Run } from '../../../src/domain/run.js';
import { branchName, type Git, type GitCredentials, type PrepareWorkspaceResult } from '../../../src/git/git.js';
import type { GitHubPort } from '../../../src/ports/github.js';

export interface AgentWorkspaceDeps {
  github: Pick<GitHubPort, 'getRepository' | 'pushCredentials'>;
  git: Pick<Git, 'prepareWorkspace' | 'mergeBase' | 'submodulePaths'>;
  /** Where per-run workspaces live (`<workRoot>/<run id>`). */
  workRoot: string;
  /** Base name of the policy file: protected in every repository (the agent never edits its own gates). */
  policyFileName: string;
}

/** A run's workspace, ready for the agent: the tree, where it forked, what it may not touch, and where it goes. */
export interface AgentWorkspace {
  /** The working tree the agent edits (no `.git`: the bot's git directory is beside it). */
  dir: string;
  branch: string;
  defaultBranch: string;
  /** Where the run branch forked from the default branch: every diff of the run is taken from here. */
  base: string;
  protectedPaths: ProtectedPaths;
  /** For this repository's fetches and the push only; never stored, never given to checks. */
  credentials: GitCredentials;
  /** The push's target: the run's own branch, to the clone URL the GitHub API gave (not the workspace's config). */
  pushTarget: { branch: string; defaultBranch: string; runId: string; remoteUrl: string };
  prepared: PrepareWorkspaceResult;
}

export function workspaceDir(workRoot: string, runId: string): string {
  return join(workRoot, runId);
}

/**
 * Clones (or resumes) the run's workspace on its branch. Idempotent, like the
 * git layer under it: after a crash it picks up the tree, or the pushed branch.
 * `signal` (the step's) stops the forge calls at once.
 */
export async function prepareAgentWorkspace(
  deps: AgentWorkspaceDeps,
  run: Run,
  repoPolicy: RepoPolicy,
  owner: string,
  repo: string,
  signal?: AbortSignal,
): Promise<AgentWorkspace> {
  const info = await deps.github.getRepository(owner, repo, { signal });
  const branch = run.artifacts.agent?.branch ?? runBranch(run);
  const dir = workspaceDir(deps.workRoot, run.id);
  const credentials = await deps.github.pushCredentials(owner, repo, { signal });
  const prepared = await deps.git.prepareWorkspace({ dir, cloneUrl: info.cloneUrl, defaultBranch: info.defaultBranch, branch, credentials });
  // Diffs are taken from where the run branch forked, not from today's default branch: after a
  // re-clone origin/<default> may have moved on, and upstream changes are not the agent's.
  const base = await deps.git.mergeBase(dir, `origin/${info.defaultBranch}`, 'HEAD');
  // Submodule directories too: git would not commit a file written into one, so the checks would see
  // something the push does not have.
  const submodules = await deps.git.submodulePaths(dir, 'HEAD');
  const protectedPaths = createProtectedPaths([...repoPolicy.protectedPaths, deps.policyFileName, ...submodules]);
  return {
    dir,
    branch,
    defaultBranch: info.defaultBranch,
    base,
    protectedPaths,
    credentials,
    pushTarget: { branch, defaultBranch: info.defaultBranch, runId: run.id, remoteUrl: info.cloneUrl },
    prepared,
  };
}

/**
 * The run's branch: `shipgate/<run-id>-<task slug>`, and after a red deploy a new one for each fix
 * forward (`…-fix-N-<task slug>`), never one of the run's merged branches, whatever the task says.
 */
export function runBranch(run: Pick<Run, 'id' | 'task' | 'artifacts'>): string {
  const fixes = run.artifacts.deploy?.iterations ?? 0;
  if (fixes === 0) return branchName(run.id, run.task);
  const merged = new Set(run.artifacts.deploy?.mergedBranches ?? []);
  for (let attempt = 0; ; attempt += 1) {
    const candidate = branchName(run.id, attempt === 0 ? `fix ${fixes} ${run.task}` : `fix ${fixes} ${attempt}`);
    if (!merged.has(candidate)) return candidate;
  }
}
