import { z } from 'zod';
import type { CheckRunInfo, CiSnapshot, CommitStatusInfo, GitHubCiPort } from '../../ports/github.js';
import type { GitHubRestContext } from './context.js';

/** What CI says about a commit: its check runs and its combined commit status, every page, conditionally. */

/** A REST check run (only the fields used); the shape of `GET …/commits/{ref}/check-runs` items. */
const checkRunSchema = z.object({
  id: z.number().int(),
  name: z.string(),
  status: z.string(),
  conclusion: z.string().nullable().optional(),
  details_url: z.string().nullable().optional(),
  app: z.object({ slug: z.string().optional() }).nullable().optional(),
  output: z
    .object({
      title: z.string().nullable().optional(),
      summary: z.string().nullable().optional(),
      annotations_count: z.number().int().nonnegative().optional(),
    })
    .optional(),
  started_at: z.string().nullable().optional(),
  completed_at: z.string().nullable().optional(),
});

const checkRunsPageSchema = z.object({ total_count: z.number().optional(), check_runs: z.array(checkRunSchema) });

const commitStatusSchema = z.object({
  context: z.string(),
  state: z.enum(['pending', 'success', 'failure', 'error']),
  description: z.string().nullable().optional(),
  target_url: z.string().nullable().optional(),
  updated_at: z.string(),
});

/** `GET …/commits/{ref}/status` (only the field used): one entry per context, its latest status. */
const combinedStatusSchema = z.object({ statuses: z.array(commitStatusSchema) });

export function createCiSnapshot(ctx: GitHubRestContext): Pick<GitHubCiPort, 'ciSnapshot'> {
  const { call, clientFor } = ctx;
  const { allPages } = ctx.reads;
  return {
    async ciSnapshot(owner, repo, sha, options): Promise<CiSnapshot> {
      const signal = options?.signal;
      return call(`reading checks and statuses of ${owner}/${repo}@${sha}`, async () => {
        const client = await clientFor(owner, repo);
        const checkRunsUrl = client.request.endpoint('GET /repos/{owner}/{repo}/commits/{ref}/check-runs', {
          owner,
          repo,
          ref: sha,
          per_page: 100,
          // GitHub's default too, stated so that a re-run's superseded attempt never counts.
          filter: 'latest',
        }).url;
        // The combined status: each context's latest status once, not every status ever posted.
        const statusesUrl = client.request.endpoint('GET /repos/{owner}/{repo}/commits/{ref}/status', {
          owner,
          repo,
          ref: sha,
          per_page: 100,
        }).url;
        const [checkPages, statusPages] = await Promise.all([
          allPages(client, checkRunsUrl, signal),
          allPages(client, statusesUrl, signal),
        ]);

        // A run that moved from one page to the next between the two requests is seen once.
        const checkRuns = new Map<number, CheckRunInfo>();
        for (const page of checkPages) {
          for (const run of checkRunsPageSchema.parse(page).check_runs) {
            if (checkRuns.has(run.id)) continue;
            checkRuns.set(run.id, {
              id: run.id,
              name: run.name,
              status: run.status,
              conclusion: run.conclusion ?? null,
              detailsUrl: run.details_url ?? null,
              appSlug: run.app?.slug ?? null,
              output: {
                title: run.output?.title ?? null,
                summary: run.output?.summary ?? null,
                annotationsCount: run.output?.annotations_count ?? 0,
              },
              startedAt: run.started_at ?? null,
              completedAt: run.completed_at ?? null,
            });
          }
        }

        // Pages of the combined status split its `statuses` (latest per context); a context seen on
        // two pages (a status posted between the requests) counts once, as first seen.
        const statuses = new Map<string, CommitStatusInfo>();
        for (const page of statusPages) {
          for (const status of combinedStatusSchema.parse(page).statuses) {
            if (statuses.has(status.context)) continue;
            statuses.set(status.context, {
              context: status.context,
              state: status.state,
              description: status.description ?? null,
              targetUrl: status.target_url ?? null,
              updatedAt: status.updated_at,
            });
          }
        }
        return { checkRuns: [...checkRuns.values()], statuses: [...statuses.values()] };
      }, signal);
    },

  };
}
