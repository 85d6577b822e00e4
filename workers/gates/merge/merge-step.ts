import { patchArtifacts } from '../../../src/domain/run.js';
import { RefusedError } from '../../../src/errors.js';
import type { GitHubCiPort } from '../../../src/ports/github.js';
import type { GateStep } from '../gate-step.js';
import { pollDelay } from '../poll-delay.js';

export interface MergeStepDeps {
  github: Pick<GitHubCiPort, 'getPullRequest'>;
  firstPollMs?: number;
  maxPollMs?: number;
  clock: () => Date;
}

/**
 * The `merge` gate (SPEC §1): the pull request is merged by the repository's
 * own rules (reviews, branch protection, auto-merge). The bot only watches;
 * it never merges, so it can never merge past a rule.
 */
export function createMergeStep(deps: MergeStepDeps): GateStep {
  const firstPoll = deps.firstPollMs ?? 15_000;
  const maxPoll = deps.maxPollMs ?? 5 * 60_000;
  return {
    async run({ run, gate, record, audit, signal }) {
      const [owner, repo] = run.repo.split('/');
      const number = run.artifacts.pr?.number;
      if (owner === undefined || repo === undefined || number === undefined) throw new RefusedError('no pull request to watch');
      const pr = await deps.github.getPullRequest(owner, repo, number, { signal });
      if (pr.merged) {
        const sha = pr.mergeCommitSha ?? 'unknown';
        // The chain of custody's merge link (src/audit/evidence.ts): which commit the pipeline will deploy.
        if (pr.mergeCommitSha !== null)
          await audit('pr.merged', { pr: number, mergeCommit: pr.mergeCommitSha, head: run.artifacts.agent?.branch ?? null }, pr.mergeCommitSha, { once: true });
        await record((r) => ({ artifacts: patchArtifacts(r.artifacts, 'merge', { commitSha: pr.mergeCommitSha ?? undefined, awaitingClick: undefined }), activity: undefined }));
        return { kind: 'passed', summary: `pull request #${number} merged as ${sha.slice(0, 12)}` };
      }
      if (pr.state === 'closed') {
        return { kind: 'failed', summary: `pull request #${number} was closed without merging; the run ends here` };
      }
      if (pr.cannotMerge !== undefined) {
        return { kind: 'failed', summary: `pull request #${number} cannot be merged: ${pr.cannotMerge}; ask again to work from the current ${pr.base}` };
      }
      if (pr.awaitingMergeClick === true) {
        // The card shows a Merge button while this is recorded (render/card.ts); the click only records who, the forge merges.
        await record((r) => ({ artifacts: patchArtifacts(r.artifacts, 'merge', { awaitingClick: true }), activity: `CI is green; waiting for a Merge click on #${number}` }));
        return {
          kind: 'pending',
          summary: `CI is green; #${number} waits for a Merge click by someone other than the requester (merge.requireApproval)`,
          recheckAfterMs: pollDelay(gate.startedAt, deps.clock(), firstPoll, maxPoll),
        };
      }
      const waiting = `waiting for #${number} to be merged under the repository's rules (reviews, branch protection)`;
      await record(() => ({ activity: `waiting for #${number} to be merged` }));
      return { kind: 'pending', summary: waiting, recheckAfterMs: pollDelay(gate.startedAt, deps.clock(), firstPoll, maxPoll) };
    },
  };
}
