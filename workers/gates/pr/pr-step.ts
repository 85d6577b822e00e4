import { patchArtifacts, taskTitle, type Run } from '../../../src/domain/run.js';
import { RefusedError } from '../../../src/errors.js';
import type { ChatPort } from '../../../src/ports/chat.js';
import type { GitHubPort } from '../../../src/ports/github.js';
import { fencedForMarkdown } from '../../../src/security/model-text.js';
import type { Scrub } from '../../../src/security/scrubber.js';
import type { GateStep } from '../gate-step.js';

export interface PrStepDeps {
  github: GitHubPort;
  chat: Pick<ChatPort, 'permalink'>;
  /** Secret scrubbing of the title and body (the adapter scrubs what it writes as well). */
  scrub: Scrub;
}


/**
 * The PR body: the task, the agent's summary, the checks the bot ran, and the way back to the thread.
 * The summary is model text (SPEC §4): fenced, with mentions, closing keywords and trailers neutralised,
 * so it cannot notify anyone, close an issue on merge or imitate the bot's own sections.
 */
export function pullRequestBody(run: Run, threadUrl: string | undefined): string {
  const agent = run.artifacts.agent ?? {};
  const checks = agent.checks ?? [];
  const lines = [
    `Requested by a shipgate run (\`${run.id}\`) in chat${threadUrl === undefined ? '' : `: ${threadUrl}`}.`,
    '',
    '### Task',
    '',
    ...run.task.split('\n').map((line) => `> ${line}`),
    '',
    '### What the agent says it changed',
    '',
    agent.summary?.trim() ? fencedForMarkdown(agent.summary) : '_(no summary)_',
    '',
    '### Checks run by shipgate before pushing',
    '',
    ...(checks.length === 0 ? ['_(the repository configures no checks)_'] : checks.map((c) => `- ${c.passed ? '✅' : '❌'} \`${c.name}\``)),
  ];
  // File names are the model's choice too: the same fence (a name with backticks cannot close it).
  if (agent.diffStat !== undefined) lines.push('', '### Diffstat', '', fencedForMarkdown(agent.diffStat));
  lines.push('', '---', 'This pull request goes through the same review, CI and deployment gates as any other. The bot cannot merge it past them.');
  return lines.join('\n');
}

/**
 * The `pr` gate (SPEC §1): the run's branch was pushed by the agent gate; this
 * opens its pull request, or adopts the one an earlier attempt opened.
 */
export function createPrStep(deps: PrStepDeps): GateStep {
  const { scrub } = deps;
  return {
    async run({ run, record, log, audit, signal }) {
      const [owner, repo] = run.repo.split('/');
      const { branch, commitSha } = run.artifacts.agent ?? {};
      if (owner === undefined || repo === undefined) throw new RefusedError(`bad repository name ${run.repo}`);
      if (branch === undefined || commitSha === undefined) throw new RefusedError('the agent gate recorded no pushed branch');
      const info = await deps.github.getRepository(owner, repo, { signal });
      let pr = await deps.github.findOpenPullRequest(owner, repo, branch, { signal });
      if (pr === undefined) {
        const threadUrl = run.chat.card === undefined ? undefined : await deps.chat.permalink({ channel: run.chat.channel, ref: run.chat.card }).catch(() => undefined);
        pr = await deps.github.createPullRequest({
          owner,
          repo,
          head: branch,
          base: info.defaultBranch,
          title: scrub(taskTitle(run.task)),
          body: scrub(pullRequestBody(run, threadUrl)),
          // No signal here, on purpose: a create cut off by a cancel may still land on the forge,
          // and then the run would end without the PR recorded or audited. It finishes, is
          // recorded, and the cancel is honoured after it.
        });
        log.info({ pr: pr.number }, 'pull request opened');
      } else {
        log.info({ pr: pr.number }, 'pull request already open; adopted');
      }
      const opened = pr;
      await audit('pr.opened', { number: opened.number, url: opened.url, head: branch, commit: commitSha }, String(opened.number), { once: true });
      await record((latest) => ({ links: { ...latest.links, pr: opened.url }, artifacts: patchArtifacts(latest.artifacts, 'pr', { number: opened.number }), activity: undefined }));
      const review = opened.review === undefined ? '' : `\n${opened.review}`;
      return { kind: 'passed', summary: `pull request #${opened.number} is open: ${opened.url}${review}` };
    },
  };
}
