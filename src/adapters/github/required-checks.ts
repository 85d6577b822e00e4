import { z } from 'zod';
import type { GitHubCiPort } from '../../ports/github.js';
import type { GitHubRestContext } from './context.js';
import { isAnswer } from './port-errors.js';

/** The checks a branch requires: classic branch protection and rulesets together. */

/** Statuses that mean "this is not there for you" on the optional reads; rate limits are told apart. */
const UNREADABLE = [403, 404];

const requiredStatusChecksSchema = z.object({
  contexts: z.array(z.string()).optional(),
  checks: z.array(z.object({ context: z.string() })).optional(),
});

/** `GET /repos/{o}/{r}/rules/branches/{branch}`: every active rule for the branch, from every ruleset. */
const branchRuleSchema = z.object({
  type: z.string(),
  parameters: z.unknown().optional(),
});

const requiredStatusChecksRuleParametersSchema = z.object({
  required_status_checks: z.array(z.object({ context: z.string() })),
});

export function createRequiredChecks(ctx: GitHubRestContext): Pick<GitHubCiPort, 'requiredChecks'> {
  const { call, clientFor } = ctx;
  const { conditionalGet, allPages } = ctx.reads;

  /** A read that may legitimately be hidden: undefined for 404 (not set) and 403 (no permission). */
  async function unlessUnreadable<T>(read: () => Promise<T>): Promise<T | undefined> {
    try {
      return await read();
    } catch (error) {
      if (isAnswer(error, UNREADABLE)) return undefined;
      throw error;
    }
  }

  return {
    async requiredChecks(owner, repo, branch, options) {
      const signal = options?.signal;
      return call(`reading required checks of ${owner}/${repo} branch ${branch}`, async () => {
        const client = await clientFor(owner, repo);
        const protectionUrl = client.request.endpoint(
          'GET /repos/{owner}/{repo}/branches/{branch}/protection/required_status_checks',
          { owner, repo, branch },
        ).url;
        const rulesUrl = client.request.endpoint('GET /repos/{owner}/{repo}/rules/branches/{branch}', {
          owner,
          repo,
          branch,
          per_page: 100,
        }).url;
        // Classic protection and rulesets both apply to a branch; GitHub requires the union. 404 on
        // protection means "not protected / checks not required", 403 that the token may not read
        // it (it needs administration:read); GHES without rulesets answers 404 on the rules.
        const [protection, rules] = await Promise.all([
          unlessUnreadable(async () =>
            requiredStatusChecksSchema.parse((await conditionalGet(client, protectionUrl, signal)).data),
          ),
          unlessUnreadable(async () =>
            (await allPages(client, rulesUrl, signal)).flatMap((page) => z.array(branchRuleSchema).parse(page)),
          ),
        ]);

        const fromProtection =
          protection === undefined
            ? undefined
            : [...(protection.contexts ?? []), ...(protection.checks ?? []).map((check) => check.context)];
        const checkRules = (rules ?? []).filter((rule) => rule.type === 'required_status_checks');
        const fromRules =
          checkRules.length === 0
            ? undefined
            : checkRules.flatMap((rule) =>
                requiredStatusChecksRuleParametersSchema
                  .parse(rule.parameters)
                  .required_status_checks.map((c) => c.context),
              );
        if (fromProtection === undefined && fromRules === undefined) return undefined;
        return [...new Set([...(fromProtection ?? []), ...(fromRules ?? [])])];
      }, signal);
    },

  };
}
