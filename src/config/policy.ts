import { z } from 'zod';

/**
 * The policy file (`shipgate.yaml`, SPEC §3). Key names here are part of the
 * product contract: renaming one breaks every adopter's file.
 */

const repoName = z
  .string()
  .regex(/^[A-Za-z0-9_.-]+\/[A-Za-z0-9_.-]+$/, 'must be "owner/name"');

/**
 * User, group and channel ids are the chat's own (Slack `U…`/`S…`/`C…`, Discord
 * `discord:<snowflake>`): opaque here. Which ids are valid is the configured
 * chat adapters' to say, checked at start-up (src/domain/principals.ts).
 */
const principalId = z.string().regex(/^\S+$/, 'must be a user or group id of your chat, without spaces');

const channelId = z.string().regex(/^\S+$/, 'must be a channel id of your chat, without spaces');

const checkName = z
  .string()
  .regex(/^[a-z0-9][a-z0-9_-]*$/, 'check names are lower-case words (a-z, 0-9, - and _)');

/** "24h", "90m", "30s", "2d" → milliseconds. */
export const durationSchema = z
  .string()
  .regex(/^\d+(s|m|h|d)$/, 'must be a duration like 30m, 24h or 2d')
  .transform((value) => {
    const amount = Number(value.slice(0, -1));
    const unit = value.slice(-1);
    const factor = unit === 's' ? 1_000 : unit === 'm' ? 60_000 : unit === 'h' ? 3_600_000 : 86_400_000;
    return amount * factor;
  });

const repoPolicySchema = z
  .object({
    channels: z.array(channelId).optional(),
    requesters: z.array(principalId).optional(),
    checks: z.record(checkName, z.string().min(1)).default({}),
    protectedPaths: z.array(z.string().min(1)).default([]),
    /** Check names CI must pass when branch protection cannot be read (no protection, or no permission). */
    requiredChecks: z.array(z.string().min(1)).optional(),
    pipeline: z.string().min(1).optional(),
    /**
     * Local mode (SPEC §8): a git repository on disk (bare, or with its default branch not checked
     * out), relative to this file; the local forge serves it instead of GitHub.
     */
    path: z.string().min(1).optional(),
    /** With `path`: create the repository with shipgate's sample app on first start when nothing is there. */
    sample: z.boolean().optional(),
    /** With `path`: CI, run in the sandbox on a clean checkout of each pushed commit (default: the `checks`). */
    ci: z.record(checkName, z.string().min(1)).optional(),
    /** With `path`: `requireApproval` needs a Merge click by someone other than the requester; otherwise green CI fast-forwards. */
    merge: z.object({ requireApproval: z.boolean().default(false) }).strict().optional(),
  })
  .strict()
  .superRefine((repo, ctx) => {
    if (repo.path !== undefined) return;
    for (const key of ['sample', 'ci', 'merge'] as const)
      if (repo[key] !== undefined)
        ctx.addIssue({ code: 'custom', path: [key], message: `applies only to a local repository: add path: (a git repository on disk) or remove ${key}` });
  });

const approvalSchema = z
  .object({
    approvers: z.array(principalId).min(1, 'name at least one approver'),
    minApprovals: z.number().int().min(1).default(1),
    allowSelfApproval: z.boolean().default(false),
    expiresAfter: durationSchema.default(86_400_000),
  })
  .strict();

/** An image tag pattern: must name the commit, or any tag would match every run. */
const tagPattern = z
  .string()
  .min(1)
  .refine((pattern) => /\{sha(:\d+)?\}/.test(pattern), 'must contain {sha} or {sha:N}, e.g. "sha-{sha:7}"')
  .refine(
    (pattern) => [...pattern.matchAll(/\{sha:(\d+)\}/g)].every((m) => Number(m[1]) >= 7 && Number(m[1]) <= 40),
    '{sha:N} needs 7 ≤ N ≤ 40',
  );

const goldenSignalsSchema = z
  .object({
    errorRatio: z.object({ query: z.string().min(1), max: z.number().min(0) }).strict().optional(),
    latencyP95: z.object({ query: z.string().min(1), maxSeconds: z.number().positive() }).strict().optional(),
    /**
     * How long after the Promotion finished the queries are first asked (e.g. 5m, the width of their
     * rate window): before that they would mostly measure the previous release's traffic.
     */
    soak: durationSchema.optional(),
  })
  .strict()
  .refine((signals) => signals.errorRatio !== undefined || signals.latencyP95 !== undefined, 'name errorRatio or latencyP95 (or remove goldenSignals)');

const stageSchema = z
  .object({
    // At most 63 characters: the name is a Kubernetes label value on the Promotions the bot creates.
    name: z
      .string()
      .regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/, 'stage names are lower-case words (a-z, 0-9 and -, not ending in -)')
      .max(63, 'stage names are at most 63 characters (they become Kubernetes label values)'),
    kargoStage: z.string().min(1),
    argocdApps: z.array(z.string().min(1)).default([]),
    /**
     * Who starts the Promotion into this stage: `auto` (Kargo's auto-promotion; the gate only follows
     * it) or `bot` (shipgate creates it, exactly once per run). A stage behind an approval is always the
     * bot's (the default there; `auto` is refused): Kargo must not promote past the approvers.
     */
    promote: z.enum(['auto', 'bot']).optional(),
    approval: approvalSchema.optional(),
    goldenSignals: goldenSignalsSchema.optional(),
  })
  .strict()
  .superRefine((stage, ctx) => {
    if (stage.approval !== undefined && stage.promote === 'auto')
      ctx.addIssue({ code: 'custom', path: ['promote'], message: 'a stage behind an approval is promoted by the bot once approved: remove `promote: auto` (and auto-promotion for this Stage in Kargo)' });
  })
  .transform((stage) => ({ ...stage, promote: stage.promote ?? (stage.approval === undefined ? ('auto' as const) : ('bot' as const)) }));

const pipelineSchema = z
  .object({
    kargo: z
      .object({
        project: z.string().min(1),
        warehouse: z.string().min(1),
        match: z.enum(['commit', 'image']).default('commit'),
        /**
         * With `match: image`: the tags CI gives the image it builds from a commit; `{sha}` is the full
         * SHA, `{sha:N}` its first N characters (default: the full SHA or a 7–12 character prefix).
         */
        tagPatterns: z.array(tagPattern).min(1).optional(),
        /** With `match: image`: only this image repository's tags count (e.g. ghcr.io/acme/shop). */
        imageRepoURL: z.string().min(1).optional(),
      })
      .strict()
      .optional(),
    argocdNamespace: z.string().min(1).default('argocd'),
    argocdApps: z.array(z.string().min(1)).optional(),
    stages: z.array(stageSchema).default([]),
    /**
     * The agent's read-only look at a red deploy (SPEC §4). `freePromql: true` lets the model send
     * PromQL of its own to PROMETHEUS_URL; by default it can only run the stage's goldenSignals
     * queries by name. Prometheus has no namespaces: free queries read every team's metrics.
     */
    diagnosis: z.object({ freePromql: z.boolean().default(false) }).strict().optional(),
  })
  .strict()
  .superRefine((pipeline, ctx) => {
    // One approval gate per run: the run has one approval request, and its gate is named `approval`.
    const approved = pipeline.stages.flatMap((stage, index) => (stage.approval === undefined ? [] : [index]));
    for (const index of approved.slice(1))
      ctx.addIssue({ code: 'custom', path: ['stages', index, 'approval'], message: `only one stage of a pipeline may have an approval (stage ${pipeline.stages[approved[0] ?? 0]?.name ?? ''} already has one): production is the stage behind it` });
  });

const budgetsSchema = z
  .object({
    maxAgentTurns: z.number().int().positive().default(40),
    maxCiIterations: z.number().int().positive().default(3),
    /** Fixes forward after a red deploy gate (SPEC §1): 0 turns them off, and a red deploy ends the run. */
    maxDeployIterations: z.number().int().min(0).default(1),
    maxTokensPerRun: z.number().int().positive().default(2_000_000),
    maxCostUsdPerRun: z.number().positive().default(10),
    maxRunMinutes: z.number().positive().default(240),
  })
  .strict();

const limitsSchema = z
  .object({
    /** Runs one person may have active (queued or not yet terminal) at once. */
    activeRunsPerUser: z.number().int().positive().default(3),
    /** Runs this installation may have active at once. */
    activeRuns: z.number().int().positive().default(50),
  })
  .strict();

export const policySchema = z
  .object({
    /** Name of the slash command, as registered in the Slack app. */
    command: z.string().regex(/^\/[a-z0-9_-]+$/, 'must be a slash command like /ship').default('/ship'),
    /** Per-channel settings; `defaultRepo` lets `/ship <task…>` omit the repository. */
    channels: z.record(channelId, z.object({ defaultRepo: repoName }).strict()).default({}),
    repos: z.record(repoName, repoPolicySchema).refine((repos) => Object.keys(repos).length > 0, {
      message: 'list at least one repository the bot may change',
    }),
    pipelines: z.record(z.string(), pipelineSchema).default({}),
    /**
     * Where repository code (checks, local CI) runs. `bubblewrap` (the default) isolates each check in its
     * own namespaces as an unprivileged user; `none` runs checks unsandboxed and must be written explicitly.
     */
    sandbox: z.enum(['bubblewrap', 'none']).default('bubblewrap'),
    limits: limitsSchema.default({ activeRunsPerUser: 3, activeRuns: 50 }),
    budgets: budgetsSchema.default({
      maxAgentTurns: 40,
      maxCiIterations: 3,
      maxDeployIterations: 1,
      maxTokensPerRun: 2_000_000,
      maxCostUsdPerRun: 10,
      maxRunMinutes: 240,
    }),
  })
  .strict()
  .superRefine((policy, ctx) => {
    for (const [repo, settings] of Object.entries(policy.repos)) {
      if (settings.pipeline !== undefined && !(settings.pipeline in policy.pipelines)) {
        ctx.addIssue({
          code: 'custom',
          path: ['repos', repo, 'pipeline'],
          message: `names pipeline "${settings.pipeline}", which is not defined under pipelines`,
        });
      }
    }
    for (const [channel, settings] of Object.entries(policy.channels)) {
      if (!(settings.defaultRepo in policy.repos)) {
        ctx.addIssue({
          code: 'custom',
          path: ['channels', channel, 'defaultRepo'],
          message: `names ${settings.defaultRepo}, which is not listed under repos`,
        });
      }
    }
    for (const [name, pipeline] of Object.entries(policy.pipelines)) {
      const seen = new Set<string>();
      pipeline.stages.forEach((stage, index) => {
        if (seen.has(stage.name)) {
          ctx.addIssue({
            code: 'custom',
            path: ['pipelines', name, 'stages', index, 'name'],
            message: `stage "${stage.name}" appears twice`,
          });
        }
        seen.add(stage.name);
      });
    }
  });

export type Policy = z.output<typeof policySchema>;
export type RepoPolicy = Policy['repos'][string];
/** A repository the local forge serves (SPEC §8), with its path made absolute by loadConfig. */
export type LocalRepoPolicy = RepoPolicy & { path: string };

/** The repositories of `policy` that name a local `path:`. */
export function localRepos(policy: Pick<Policy, 'repos'>): Record<string, LocalRepoPolicy> {
  const out: Record<string, LocalRepoPolicy> = {};
  for (const [name, repo] of Object.entries(policy.repos)) if (repo.path !== undefined) out[name] = { ...repo, path: repo.path };
  return out;
}
export type PipelinePolicy = Policy['pipelines'][string];
export type StagePolicy = PipelinePolicy['stages'][number];
export type ApprovalPolicy = NonNullable<StagePolicy['approval']>;
export type Budgets = Policy['budgets'];
export type Limits = Policy['limits'];
export type SandboxKind = Policy['sandbox'];
