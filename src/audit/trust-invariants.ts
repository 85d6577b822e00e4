import type { z } from 'zod';
import type { ApprovalPolicy, Policy, StagePolicy } from '../config/policy.js';
import type { Membership } from '../domain/approval.js';
import { isRunBranch } from '../git/branch-names.js';
import type { AuditEvent } from './audit-log.js';
import {
  approvalApprovedData,
  approvalExpiredData,
  approvalRejectedData,
  approvalRequestedData,
  ciVerdictData,
  commitCreatedData,
  freightFoundData,
  prMergedData,
  prOpenedData,
  promotionCreatedData,
  runRequestedData,
  stageVerdictData,
} from './evidence.js';

/**
 * The trust-boundary invariant checker (issue 10; SPEC §1, §6, §7): reads an audit log and names
 * every place where the chain of custody says something the product promises can never happen.
 * "The agent proposes, the pipeline decides": a production Promotion must be the end of an
 * unbroken chain — CI green for the commit that was merged, that merge, the Freight carrying it,
 * every earlier stage verified for that Freight, and enough authorised humans (never the
 * requester) approving that Freight in time — and the agent must never have pushed outside its
 * own run's branch.
 *
 * Pure: it takes events exactly as the audit log returns them (`eventsForRun`, `allEvents`), in
 * any mix of runs, and the policy the bot ran with. It judges only what the log shows: evidence
 * that does not parse counts as missing (never as present), and evidence of another run never
 * counts for this one. The policy, not what an event claims, says which stages need approval, who
 * may approve and how many must.
 */

/** Which invariant a violation breaks (the rule's comment in `checkRun` says why it matters). */
export type TrustRule =
  | 'run-requested'
  | 'own-branch'
  | 'unknown-stage'
  | 'promotion-evidence'
  | 'freight-found'
  | 'merged'
  | 'ci-green'
  | 'stages-verified'
  | 'approval-requested'
  | 'request-policy'
  | 'self-approval'
  | 'approver-authorised'
  | 'approval-expired'
  | 'approvals-count'
  | 'not-rejected'
  | 'one-promotion';

export interface TrustViolation {
  runId: string;
  rule: TrustRule;
  /** The offending event (or the Promotion that lacks the evidence). */
  seq: number;
  /** One sentence a person can act on. */
  message: string;
}

/** The fields of a stored event the checker reads; a full `AuditEvent` is one. */
export type TrustEvent = Pick<AuditEvent, 'seq' | 'runId' | 'type' | 'actor' | 'at' | 'data'>;

export interface TrustContext {
  /** The policy the bot ran with: which repository runs which pipeline, and each stage's approval. */
  policy: Pick<Policy, 'repos' | 'pipelines'>;
  /**
   * Members of a group id listed among approvers, or `undefined` when the id is not a group or its
   * members are unknown (the same contract as the approval domain's `Membership`).
   */
  membership?: Membership | undefined;
  /** A repository's default branch, when known: no commit of a run may be on it. */
  defaultBranch?: ((repo: string) => string | undefined) | undefined;
}

type Parsed<T> = { event: TrustEvent; data: T };

function parse<T>(event: TrustEvent, schema: z.ZodType<T>): T | undefined {
  const parsed = schema.safeParse(event.data);
  return parsed.success ? parsed.data : undefined;
}

/** A time as milliseconds; NaN for anything unreadable, which every comparison below treats as failing. */
const instant = (iso: string): number => Date.parse(iso);

/**
 * Every violation in `events`, ordered by run (as first seen) and then by the offending event.
 * An empty list means the log shows every Promotion was earned.
 */
export function checkTrustInvariants(events: readonly TrustEvent[], context: TrustContext): TrustViolation[] {
  const byRun = new Map<string, TrustEvent[]>();
  for (const event of events) {
    if (event.runId === null) continue;
    const list = byRun.get(event.runId) ?? [];
    list.push(event);
    byRun.set(event.runId, list);
  }
  const violations: TrustViolation[] = [];
  for (const [runId, runEvents] of byRun) {
    const sorted = [...runEvents].sort((a, b) => a.seq - b.seq);
    const found: TrustViolation[] = [];
    checkRun(runId, sorted, context, (rule, event, message) => found.push({ runId, rule, seq: event.seq, message }));
    violations.push(...found.sort((a, b) => a.seq - b.seq));
  }
  return violations;
}

/** One line per violation, for test failures and logs. */
export function formatTrustViolations(violations: readonly TrustViolation[]): string {
  return violations.map((v) => `run ${v.runId} #${v.seq} [${v.rule}] ${v.message}`).join('\n');
}

type Report = (rule: TrustRule, event: TrustEvent, message: string) => void;

function all<T>(events: readonly TrustEvent[], type: AuditEvent['type'], schema: z.ZodType<T>): Parsed<T>[] {
  const out: Parsed<T>[] = [];
  for (const event of events) {
    if (event.type !== type) continue;
    const data = parse(event, schema);
    if (data !== undefined) out.push({ event, data });
  }
  return out;
}

/** The last item before `seq` that matches. */
function lastBefore<T>(items: readonly Parsed<T>[], seq: number, match: (data: T) => boolean): Parsed<T> | undefined {
  let last: Parsed<T> | undefined;
  for (const item of items) if (item.event.seq < seq && match(item.data)) last = item;
  return last;
}

function checkRun(runId: string, events: readonly TrustEvent[], context: TrustContext, report: Report): void {
  const { policy } = context;
  const requestedEvent = events.find((event) => event.type === 'run.requested');
  const requested = requestedEvent === undefined ? undefined : parse(requestedEvent, runRequestedData);
  /** The run's requester is the actor of its `run.requested` (written from the stored run, SPEC §7). */
  const requester = requested === undefined ? undefined : requestedEvent?.actor;
  const repo = requested?.repo;
  const repoPolicy = repo === undefined ? undefined : policy.repos[repo];
  const pipelineName = repoPolicy?.pipeline;
  const stages: readonly StagePolicy[] =
    (pipelineName === undefined ? undefined : policy.pipelines[pipelineName]?.stages) ?? [];

  const commits = all(events, 'commit.created', commitCreatedData);
  const opened = all(events, 'pr.opened', prOpenedData);
  const ciVerdicts = all(events, 'ci.verdict', ciVerdictData);
  const merges = all(events, 'pr.merged', prMergedData);
  const freights = all(events, 'freight.found', freightFoundData);
  const stageVerdicts = all(events, 'stage.verdict', stageVerdictData);
  const requests = all(events, 'approval.requested', approvalRequestedData);
  const approvals = all(events, 'approval.approved', approvalApprovedData);
  const rejections = all(events, 'approval.rejected', approvalRejectedData);
  const expiries = all(events, 'approval.expired', approvalExpiredData);

  // Rule own-branch. The agent's only way into a repository is a push of its run's own
  // `shipgate/<runId>-<slug>` branch (fix-forward branches included): a commit on any other branch
  // — another run's, the default branch, a protected one — would be a change no gate of this run
  // judged. `commit.created` is the evidence of every push; the branch the PR was opened from and
  // merged must be the run's too. An unreadable `commit.created` cannot show where it went.
  const defaultBranch = repo === undefined ? undefined : context.defaultBranch?.(repo);
  const checkBranch = (event: TrustEvent, branch: string, what: string): void => {
    if (!isRunBranch(branch, runId)) {
      report(
        'own-branch',
        event,
        `${what} is on branch ${branch}, which is not a shipgate/${runId}-… branch of this run.`,
      );
    } else if (defaultBranch !== undefined && branch.toLowerCase() === defaultBranch.toLowerCase()) {
      report('own-branch', event, `${what} is on the default branch ${branch}.`);
    }
  };
  for (const event of events) {
    if (event.type !== 'commit.created') continue;
    const data = parse(event, commitCreatedData);
    if (data === undefined)
      report('own-branch', event, 'A commit.created event does not say which commit went to which branch.');
    else checkBranch(event, data.branch, `Commit ${data.commit}`);
  }
  for (const { event, data } of opened)
    if (data.head !== undefined) checkBranch(event, data.head, `Pull request #${data.number}`);
  for (const { event, data } of merges)
    if (typeof data.head === 'string') checkBranch(event, data.head, `Merged pull request #${data.pr}`);

  const stageOf = (name: string): { stage: StagePolicy; index: number } | undefined => {
    const index = stages.findIndex((stage) => stage.name === name);
    const stage = stages[index];
    return stage === undefined ? undefined : { stage, index };
  };

  // Rule request-policy. An approval request is what the buttons are bound to; one written with
  // weaker terms than the policy (fewer approvals, self-approval, other approvers, a longer
  // window, someone else as requester) would let the approval gate count clicks the policy does
  // not allow. The checker counts by the policy anyway; this names the request that drifted.
  for (const { event, data } of requests) {
    const approval = stageOf(data.stage)?.stage.approval;
    if (approval === undefined) continue;
    const problems: string[] = [];
    if (data.minApprovals < approval.minApprovals)
      problems.push(`minApprovals ${data.minApprovals} < the policy's ${approval.minApprovals}`);
    if (data.allowSelfApproval && !approval.allowSelfApproval)
      problems.push('self-approval allowed where the policy does not');
    const extra = data.approvers.filter((id) => !approval.approvers.includes(id));
    if (extra.length > 0) problems.push(`approvers ${extra.join(', ')} are not in the policy`);
    if (!(instant(data.expiresAt) <= instant(data.requestedAt) + approval.expiresAfter))
      problems.push(`it expires at ${data.expiresAt}, later than expiresAfter from ${data.requestedAt}`);
    if (requester !== undefined && data.requester !== requester)
      problems.push(`it names ${data.requester} as requester, but the run was requested by ${requester}`);
    if (problems.length > 0)
      report(
        'request-policy',
        event,
        `The approval request for ${data.stage} (Freight ${data.freight}) is weaker than the policy: ${problems.join('; ')}.`,
      );
  }

  /** The request an approval event answers: the latest one before it with its stage, Freight and nonce. */
  const requestOf = (stage: string, freight: string, nonce: string, seq: number) =>
    lastBefore(requests, seq, (r) => r.stage === stage && r.freight === freight && r.nonce === nonce);

  const deadlineOf = (request: z.infer<typeof approvalRequestedData>, approval: ApprovalPolicy): number =>
    Math.min(instant(request.expiresAt), instant(request.requestedAt) + approval.expiresAfter);

  /**
   * Why an approval does not count (SPEC §6), or an empty list. Self-approval: separation of duties
   * is the point of the gate. Authorised: only the policy's approvers, listed directly or through a
   * listed group; when the group named as `via` cannot be resolved here, the gate's judgement is
   * taken only if `via` is itself a listed id. Expired: `expiresAfter` runs from the request, and
   * the deadline itself is already too late (as `isExpired` in the domain).
   */
  const approvalProblems = (
    data: z.infer<typeof approvalApprovedData>,
    request: z.infer<typeof approvalRequestedData>,
    approval: ApprovalPolicy,
  ): { rule: TrustRule; message: string }[] => {
    const problems: { rule: TrustRule; message: string }[] = [];
    const isRequester = data.userId === requester || data.userId === request.requester;
    if (isRequester && !approval.allowSelfApproval)
      problems.push({
        rule: 'self-approval',
        message: `${data.userId} approved their own run's ${data.stage} promotion, which the policy does not allow.`,
      });
    if (!isAuthorised(data.userId, data.via, approval.approvers, context.membership))
      problems.push({
        rule: 'approver-authorised',
        message: `${data.userId} (via ${data.via}) is not among the approvers of ${data.stage} (${approval.approvers.join(', ')}).`,
      });
    if (!(instant(data.at) < deadlineOf(request, approval)))
      problems.push({
        rule: 'approval-expired',
        message: `${data.userId}'s approval at ${data.at} came at or after the request's deadline ${request.expiresAt}.`,
      });
    return problems;
  };

  // Rules self-approval, approver-authorised, approval-expired, approval-requested (for approvals).
  // `approval.approved` means "this click counted": every one must be a click the policy allows on
  // a request that was made, whether or not the run went on to be promoted — one that should not
  // have counted is a hole in the gate even when enough other people approved.
  for (const { event, data } of approvals) {
    const approval = stageOf(data.stage)?.stage.approval;
    if (approval === undefined) continue;
    const request = requestOf(data.stage, data.freight, data.nonce, event.seq);
    if (request === undefined) {
      report(
        'approval-requested',
        event,
        `${data.userId} approved ${data.stage} for Freight ${data.freight} (nonce ${data.nonce}) with no such approval request before it.`,
      );
      continue;
    }
    for (const problem of approvalProblems(data, request.data, approval)) report(problem.rule, event, problem.message);
  }

  /** Promotions already checked per stage: name → the Freight and request they used. */
  const promoted = new Map<string, Map<string, { freight: string; nonce: string | undefined; seq: number }>>();

  for (const event of events) {
    if (event.type !== 'promotion.created') continue;
    const data = parse(event, promotionCreatedData);
    // Rule promotion-evidence. A Promotion the log cannot attribute to a stage and Freight cannot be
    // shown to have been earned.
    if (data === undefined) {
      report('promotion-evidence', event, 'A promotion.created event does not say which Freight went to which stage.');
      continue;
    }
    // Rule run-requested. Without the run's request there is no requester (for separation of
    // duties) and no repository (so no policy to say which stages need approval).
    if (requested === undefined) {
      report(
        'run-requested',
        event,
        `Promotion ${data.promotion} into ${data.stage} belongs to a run with no readable run.requested, so no policy applies to it.`,
      );
      continue;
    }
    // Rule unknown-stage. A Promotion into a stage the run's pipeline does not have bypasses the
    // pipeline's order and approvals.
    const placed = stageOf(data.stage);
    if (placed === undefined) {
      report(
        'unknown-stage',
        event,
        `Promotion ${data.promotion} went into stage ${data.stage}, which ${repo ?? '?'}'s pipeline ${pipelineName ?? '(none)'} does not have.`,
      );
      continue;
    }
    const { stage, index } = placed;
    const seen =
      promoted.get(stage.name) ?? new Map<string, { freight: string; nonce: string | undefined; seq: number }>();
    promoted.set(stage.name, seen);
    // The same Promotion recorded twice is one Promotion: judged once.
    if (seen.has(data.promotion)) continue;
    const freight = data.freight;

    // Rules freight-found and merged, for every stage. Nothing is promoted but the Freight Kargo
    // made from this run's merge commit: the Freight must have been found for a commit this run
    // merged, both before the Promotion. Otherwise the run would be deploying something that never
    // went through its review and CI.
    const found = lastBefore(freights, event.seq, (f) => f.freight === freight);
    const merge =
      found === undefined ? undefined : lastBefore(merges, event.seq, (m) => m.mergeCommit === found.data.commit);
    if (found === undefined)
      report(
        'freight-found',
        event,
        `Promotion ${data.promotion} into ${stage.name} carries Freight ${freight}, which the run never found before it.`,
      );
    else if (merge === undefined)
      report(
        'merged',
        event,
        `Promotion ${data.promotion} into ${stage.name} carries Freight ${freight} of commit ${found.data.commit}, which the run never merged before it.`,
      );

    const approval = stage.approval;
    if (approval === undefined) {
      seen.set(data.promotion, { freight, nonce: undefined, seq: event.seq });
      continue;
    }

    // Rule ci-green. CI is the first verdict that is not the agent's: the commit that was merged
    // (the PR's head when it merged: the run's last commit on the merged branch before the merge)
    // must have a passed ci.verdict before the merge, and no later verdict for it may have undone it.
    // A commit pushed after CI went green and merged without CI would be caught here.
    if (merge !== undefined) {
      const branch =
        typeof merge.data.head === 'string'
          ? merge.data.head
          : opened.find((o) => o.data.number === merge.data.pr)?.data.head;
      const head = lastBefore(commits, merge.event.seq, (c) => branch === undefined || c.branch === branch);
      if (head === undefined) {
        report(
          'ci-green',
          event,
          `Pull request #${merge.data.pr} was merged with no commit of the run before it, so no CI verdict can cover what was merged.`,
        );
      } else {
        const verdict = lastBefore(
          ciVerdicts,
          merge.event.seq,
          (v) => v.commit === head.data.commit && (v.pr === undefined || v.pr === merge.data.pr),
        );
        if (verdict?.data.verdict !== 'passed')
          report(
            'ci-green',
            event,
            `Commit ${head.data.commit}, merged in pull request #${merge.data.pr}, had ${verdict === undefined ? 'no CI verdict' : `CI ${verdict.data.verdict}`} before the merge.`,
          );
      }
    }

    // Rule stages-verified. Production sees only what every earlier stage verified: for that exact
    // Freight, each stage before this one must have a passed verdict, and its last verdict before
    // the Promotion must still be passed. A verdict for another Freight (say, before a fix forward)
    // never counts.
    for (const before of stages.slice(0, index)) {
      const verdict = lastBefore(stageVerdicts, event.seq, (v) => v.stage === before.name && v.freight === freight);
      if (verdict?.data.verdict !== 'passed')
        report(
          'stages-verified',
          event,
          `Promotion ${data.promotion} into ${stage.name} carries Freight ${freight}, which stage ${before.name} had ${verdict === undefined ? 'not verified' : 'failed'} before it.`,
        );
    }

    // Rule approval-requested. Approvals are bound to one request for one Freight (SPEC §6): the
    // Promotion must follow a request for this stage and this Freight. The latest such request is
    // the one in force.
    const request = lastBefore(requests, event.seq, (r) => r.stage === stage.name && r.freight === freight);
    if (request === undefined) {
      report(
        'approval-requested',
        event,
        `Promotion ${data.promotion} into ${stage.name} carries Freight ${freight}, for which no approval was requested before it.`,
      );
    } else {
      const nonce = request.data.nonce;
      const between = (item: Parsed<{ stage: string; freight: string; nonce: string }>): boolean =>
        item.event.seq > request.event.seq &&
        item.event.seq < event.seq &&
        item.data.nonce === nonce &&
        item.data.freight === freight;

      // Rule not-rejected. One Reject ends the run whatever approvals came before, and an expired
      // request can never be approved (SPEC §6): neither may be followed by the Promotion.
      for (const ended of [...rejections.filter(between), ...expiries.filter(between)])
        report(
          'not-rejected',
          event,
          `Promotion ${data.promotion} into ${stage.name} came after the approval request was ${ended.event.type === 'approval.rejected' ? 'rejected' : 'expired'} (event #${ended.event.seq}).`,
        );

      // Rule approvals-count. At least the policy's minApprovals distinct people, each an approval
      // that counts (see approvalProblems), for this Freight and this request, before the Promotion.
      // The request's own minApprovals never lowers the bar.
      const people = new Set<string>();
      for (const item of approvals.filter(between)) {
        if (item.data.stage === stage.name && approvalProblems(item.data, request.data, approval).length === 0)
          people.add(item.data.userId);
      }
      if (people.size < approval.minApprovals)
        report(
          'approvals-count',
          event,
          `Promotion ${data.promotion} into ${stage.name} came with ${people.size} valid approval${people.size === 1 ? '' : 's'} of Freight ${freight} (${[...people].join(', ') || 'none'}), but the policy needs ${approval.minApprovals}.`,
        );
    }

    // Rule one-promotion. Exactly one production Promotion per approved run, whatever happens
    // (double clicks, two approvers at once, retries, a worker killed mid-way; SPEC §6, §10): a
    // second Promotion into this stage of the same Freight, or on the same approval request, is a
    // duplicate. Only a fix forward after a red production gate brings a new Freight and a new
    // request, and with it one new Promotion.
    const nonce = request?.data.nonce;
    const earlier = [...seen.entries()].find(
      ([, prior]) => prior.freight === freight || (nonce !== undefined && prior.nonce === nonce),
    );
    if (earlier !== undefined)
      report(
        'one-promotion',
        event,
        `Promotion ${data.promotion} into ${stage.name} is a second one for ${earlier[1].freight === freight ? `Freight ${freight}` : `approval request ${nonce ?? ''}`}, after ${earlier[0]} (event #${earlier[1].seq}).`,
      );
    seen.set(data.promotion, { freight, nonce, seq: event.seq });
  }
}

/**
 * Whether an approver's click was allowed by the policy's `approvers`: a listed user id, a member of
 * a listed group, or — when the group named in `via` cannot be resolved here — `via` being itself
 * a listed group id (the approval gate resolved it when it counted the click).
 */
export function isAuthorised(
  userId: string,
  via: string,
  approvers: readonly string[],
  membership: Membership | undefined,
): boolean {
  if (approvers.includes(userId)) return true;
  if (approvers.some((id) => membership?.(id)?.includes(userId) ?? false)) return true;
  return via !== userId && approvers.includes(via) && membership?.(via) === undefined;
}
