import { failureFingerprint, renderFailureForAgent, renderFailureForThread, scrubFailureDetails, type FailureDetail } from './failure-report.js';
import { evaluateCi } from './verdict.js';
import type { Policy } from '../../../src/config/policy.js';
import { RefusedError } from '../../../src/errors.js';
import { LOG_TAIL_APPS, type GitHubCiPort, type GitHubPort } from '../../../src/ports/github.js';
import type { Scrub } from '../../../src/security/scrubber.js';
import type { FollowUps } from '../../../src/store/follow-ups.js';
import type { RunIndex } from '../../../src/store/run-index.js';
import type { TtlCache } from '../../../src/store/ttl-cache.js';
import type { GateStep } from '../gate-step.js';
import { pollDelay } from '../poll-delay.js';

export interface CiStepDeps {
  policy: Policy;
  github: GitHubPort & GitHubCiPort;
  index: RunIndex;
  /**
   * Required checks per repository and branch. Branch protection answers 404 without an ETag when a
   * branch is unprotected, so reading it on every poll would cost a rate-limited request each time.
   */
  requiredChecksCache?: TtlCache | undefined;
  /** Instructions that reached the thread after the agent last read them send the run back first. */
  followUps?: FollowUps | undefined;
  /** First re-check delay; doubles per unchanged poll up to `maxPollMs`. Webhooks wake the run sooner. */
  firstPollMs?: number;
  maxPollMs?: number;
  clock: () => Date;
  /** Command name, for the "retry" hint. */
  command?: string;
  /** Secret scrubbing of what CI reported (log tails, annotations, summaries) before it goes to the agent and the thread. */
  scrub: Scrub;
}

const LOG_TAIL_BYTES = 16 * 1024;
const MAX_DETAILED_FAILURES = 5;

/**
 * The `ci` gate (SPEC §1, §5): CI is the verdict for the PR head. Green
 * passes; red goes back to the agent with the failure details while the loop
 * stays honest (at most maxCiIterations CI runs, stop when the same failure
 * repeats); infrastructure failures are offered as a re-run instead.
 */
export function createCiStep(deps: CiStepDeps): GateStep {
  const firstPoll = deps.firstPollMs ?? 5_000;
  const maxPoll = deps.maxPollMs ?? 60_000;
  const command = deps.command ?? deps.policy.command;
  const { scrub } = deps;

  async function requiredChecks(owner: string, repo: string, branch: string, signal: AbortSignal): Promise<string[] | undefined> {
    const key = `required-checks:${owner}/${repo}:${branch}`;
    const cached = await deps.requiredChecksCache?.get(key);
    if (cached !== undefined) {
      const parsed: unknown = JSON.parse(cached);
      return Array.isArray(parsed) ? parsed.filter((name): name is string => typeof name === 'string') : undefined;
    }
    const fresh = await deps.github.requiredChecks(owner, repo, branch, { signal });
    await deps.requiredChecksCache?.set(key, JSON.stringify(fresh ?? null));
    return fresh;
  }

  return {
    async run({ run, gate, record, log, audit, signal }) {
      const [owner, repo] = run.repo.split('/');
      const sha = run.artifacts.agent?.commitSha;
      const prNumber = run.artifacts.pr?.number;
      if (owner === undefined || repo === undefined) throw new RefusedError(`bad repository name ${run.repo}`);
      if (sha === undefined || prNumber === undefined) throw new RefusedError('no pushed commit and pull request to watch');
      const waiting = (await deps.followUps?.pending(run.id)) ?? [];
      if (waiting.length > 0) {
        return {
          kind: 'retry-from',
          gate: 'agent',
          summary: 'the requester added instructions in the thread; the agent works on them before CI decides',
          feedback: run.artifacts.agent?.feedback ?? '',
        };
      }
      await deps.index.link({ kind: 'commit', repo: run.repo, sha }, run.id);
      await deps.index.link({ kind: 'pull', repo: run.repo, number: prNumber }, run.id);

      const pr = await deps.github.getPullRequest(owner, repo, prNumber, { signal });
      if (pr.state === 'closed' && !pr.merged) return { kind: 'failed', summary: `pull request #${prNumber} was closed without merging` };
      const snapshot = await deps.github.ciSnapshot(owner, repo, sha, { signal });
      const required = (await requiredChecks(owner, repo, pr.base, signal)) ?? deps.policy.repos[run.repo]?.requiredChecks;
      const verdict = evaluateCi({ snapshot, required });
      await record((r) => ({ links: { ...r.links, ci: `${pr.url}/checks` }, activity: `CI: ${verdict.summary}` }));

      if (verdict.state === 'pending') {
        // The summary is what the card shows (n/m checks). Webhooks wake the run at once; polling is the fallback.
        return { kind: 'pending', summary: `CI: ${verdict.summary}`, recheckAfterMs: pollDelay(gate.startedAt, deps.clock(), firstPoll, maxPoll) };
      }
      if (verdict.state === 'passed') {
        await audit('ci.verdict', { commit: sha, pr: prNumber, verdict: 'passed', summary: verdict.summary }, sha);
        return { kind: 'passed', summary: `CI passed for ${sha.slice(0, 12)}: ${verdict.summary}` };
      }
      await audit(
        'ci.verdict',
        { commit: sha, pr: prNumber, verdict: verdict.infrastructureOnly ? 'incomplete' : 'failed', failed: verdict.failed.map((f) => ({ name: f.name, conclusion: f.conclusion })) },
        sha,
      );

      const fetched: FailureDetail[] = [];
      for (const failure of verdict.failed.slice(0, MAX_DETAILED_FAILURES)) {
        const annotations = failure.checkRunId === null ? [] : await deps.github.checkRunAnnotations(owner, repo, failure.checkRunId, { signal });
        const logTail =
          failure.checkRunId !== null && failure.appSlug !== null && LOG_TAIL_APPS.has(failure.appSlug)
            ? await deps.github.actionsJobLogTail(owner, repo, failure.checkRunId, LOG_TAIL_BYTES, { signal })
            : undefined;
        fetched.push({ ...failure, annotations, logTail });
      }
      // Whole texts, before the reports cut and tail them.
      const details = scrubFailureDetails(fetched, scrub);
      const report = renderFailureForThread(details);
      const names = verdict.failed.map((f) => scrub(f.name)).join(', ');

      if (verdict.infrastructureOnly) {
        // Not the code's fault: spending an agent iteration on it would teach the agent nothing.
        return {
          kind: 'failed',
          summary: `CI did not complete (${verdict.failed.map((f) => `${scrub(f.name)}: ${f.conclusion}`).join(', ')}). This looks like an infrastructure problem, not the change: re-run the failed jobs in GitHub, then \`${command} retry ${run.id}\`.\n${report}`,
        };
      }
      const fingerprint = failureFingerprint(details);
      const seen = run.artifacts.ci?.fingerprints ?? [];
      const iterations = run.artifacts.ci?.iterations ?? 0;
      const maxRuns = deps.policy.budgets.maxCiIterations;
      if (seen.includes(fingerprint)) {
        return { kind: 'failed', summary: `CI failed again with the same failure after the agent's fix (${names}); stopping the loop.\n${report}` };
      }
      if (iterations + 1 >= maxRuns) {
        return { kind: 'failed', summary: `CI still failing after ${iterations + 1} runs (budgets.maxCiIterations = ${maxRuns}): ${names}\n${report}` };
      }
      log.info({ iteration: iterations + 1, failed: names }, 'CI failed; sending the failure back to the agent');
      return {
        kind: 'retry-from',
        gate: 'agent',
        summary: `CI failed: ${names}. Sent back to the agent (fix ${iterations + 1} of at most ${maxRuns - 1}).\n${report}`,
        feedback: renderFailureForAgent(details),
        artifacts: { ci: { iterations: iterations + 1, fingerprints: [...seen, fingerprint] } },
      };
    },
  };
}
