import { z } from 'zod';
import type { CheckAnnotation, GitHubCiPort } from '../../ports/github.js';
import type { GitHubRestContext } from './context.js';

/** A check run's annotations (file, line, message): the heart of a failure report. */

const annotationSchema = z.object({
  path: z.string(),
  start_line: z.number().int(),
  end_line: z.number().int(),
  // Nullable in GitHub's own schema, though every app sets them.
  annotation_level: z.string().nullable().optional(),
  message: z.string().nullable().optional(),
  title: z.string().nullable().optional(),
});

export function createCheckAnnotations(ctx: GitHubRestContext): Pick<GitHubCiPort, 'checkRunAnnotations'> {
  const { call, clientFor } = ctx;
  const { conditionalGet } = ctx.reads;
  return {
    async checkRunAnnotations(owner, repo, checkRunId, options): Promise<CheckAnnotation[]> {
      const signal = options?.signal;
      return call(`reading annotations of check run ${checkRunId} in ${owner}/${repo}`, async () => {
        const client = await clientFor(owner, repo);
        // The first 50 are plenty for a failure summary; a run with thousands is summarised by its count.
        const url = client.request.endpoint('GET /repos/{owner}/{repo}/check-runs/{check_run_id}/annotations', {
          owner,
          repo,
          check_run_id: checkRunId,
          per_page: 50,
        }).url;
        const { data } = await conditionalGet(client, url, signal);
        return z
          .array(annotationSchema)
          .parse(data)
          .map((a) => ({
            path: a.path,
            startLine: a.start_line,
            endLine: a.end_line,
            level: a.annotation_level ?? 'notice',
            message: a.message ?? '',
            title: a.title ?? null,
          }));
      }, signal);
    },

  };
}
