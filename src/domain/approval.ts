import { joinRich, principal, rich, type RichText } from '../render/view.js';

/**
 * The production approval of one run (SPEC §1 gate 7, §6), as pure decisions: who may click what
 * on one approval request, and what a sequence of accepted clicks amounts to. The store
 * (`src/store/approval-store.ts`) applies the same rules atomically in Redis; `approvalState` is the
 * reference the store's outcomes can be checked against, so it folds clicks exactly as the store's
 * script does (first decision wins, nothing counts after it).
 *
 * Times are ISO-8601 strings, as everywhere in a run; comparisons are on their instants.
 */

/** One approval request: what the buttons in the thread are bound to. */
export interface ApprovalRequest {
  runId: string;
  /** The Freight the approvers are shown and the Promotion will carry: approvals are bound to it. */
  freight: string;
  /** Random per request: a button from an earlier request of the same run (or a forged payload) does not match. */
  nonce: string;
  /** The stage behind the approval (its name in the policy). */
  stage: string;
  /** The run's requester (a chat user id). */
  requester: string;
  /** The stage's `approval.approvers`: user ids and group ids, as the policy lists them. */
  approvers: readonly string[];
  minApprovals: number;
  allowSelfApproval: boolean;
  requestedAt: string;
  expiresAt: string;
}

/** The stage's `approval` settings as the policy parses them (`approvalSchema`). */
export interface ApprovalSettings {
  approvers: readonly string[];
  minApprovals: number;
  allowSelfApproval: boolean;
  /** Milliseconds. */
  expiresAfter: number;
}

/**
 * The request for a run's Freight from the stage's settings. `expiresAfter` runs from
 * `requestedAt` (SPEC §6: the moment the request is posted); the nonce is the caller's, since
 * randomness is I/O.
 */
export function approvalRequestFor(input: {
  runId: string;
  freight: string;
  nonce: string;
  stage: string;
  requester: string;
  settings: ApprovalSettings;
  requestedAt: string;
}): ApprovalRequest {
  const { settings } = input;
  return {
    runId: input.runId,
    freight: input.freight,
    nonce: input.nonce,
    stage: input.stage,
    requester: input.requester,
    approvers: [...settings.approvers],
    minApprovals: settings.minApprovals,
    allowSelfApproval: settings.allowSelfApproval,
    requestedAt: input.requestedAt,
    expiresAt: new Date(Date.parse(input.requestedAt) + settings.expiresAfter).toISOString(),
  };
}

export type ApprovalStatus = 'pending' | 'approved' | 'rejected' | 'expired';

/** One counted Approve. */
export interface Approval {
  userId: string;
  /** The name the chat gave with the click, for people reading the evidence (the id is what counts). */
  userName?: string | undefined;
  freight: string;
  at: string;
  /** The approver entry that authorised the click when it was judged: the user's own id, or the group they were in. */
  via?: string | undefined;
}

/** The Reject that ended the request: by an approver, or by the requester withdrawing the run (SPEC §6). */
export interface Rejection {
  userId: string;
  userName?: string | undefined;
  freight: string;
  at: string;
  by: 'approver' | 'requester';
  reason?: string | undefined;
}

/** A request with what has happened to it so far (what the store holds). */
export interface ApprovalRecord {
  request: ApprovalRequest;
  status: ApprovalStatus;
  /** Counted approvals, in the order they were counted. */
  approvals: readonly Approval[];
  rejection?: Rejection | undefined;
  /** When the status left `pending` (for `expired`: the request's `expiresAt`). */
  decidedAt?: string | undefined;
  /** When the request was posted in the thread: its deadline runs from then (SPEC §6). */
  postedAt?: string | undefined;
}

/** A request nobody has clicked yet. */
export function pendingRecord(request: ApprovalRequest): ApprovalRecord {
  return { request, status: 'pending', approvals: [] };
}

/** A button press as the chat delivered it (the Freight and nonce are the ones bound to the button). */
export interface Click {
  userId: string;
  userName?: string | undefined;
  action: 'approve' | 'reject';
  freight: string;
  nonce: string;
  at: string;
  /** With a Reject: the reason given in the modal, if any. */
  reason?: string | undefined;
}

/** A click `judgeClick` accepted: what the store's `decide` applies. */
export type AcceptedClick =
  | { action: 'approve'; userId: string; userName?: string | undefined; freight: string; nonce: string; at: string; via: string }
  | { action: 'reject'; userId: string; userName?: string | undefined; freight: string; nonce: string; at: string; by: 'approver' | 'requester'; reason?: string | undefined };

export type RefusalReason =
  | 'self-approval'
  | 'not-approver'
  | 'expired'
  | 'wrong-freight'
  | 'stale-request'
  | 'already-decided'
  | 'already-approved';

export type Judgement =
  | { accepted: true; click: AcceptedClick }
  | { accepted: false; reason: RefusalReason; message: RichText };

/** Who is in a group, or `undefined` when the id is not a group (or its members are unknown). */
export type Membership = (groupId: string) => readonly string[] | undefined;

/** Whether `userId` is one of `approvers`, directly or through a listed group. */
export function isApprover(userId: string, approvers: readonly string[], membership: Membership): boolean {
  return approvers.some((id) => id === userId || (membership(id)?.includes(userId) ?? false));
}

const at = (iso: string) => Date.parse(iso);

/** Whether the request is past its deadline at `when`: the deadline itself is already too late. */
export function isExpired(request: ApprovalRequest, when: string): boolean {
  return at(when) >= at(request.expiresAt);
}

function listApprovers(request: ApprovalRequest): RichText {
  return joinRich(
    request.approvers.map((id) => [principal(id)]),
    ', ',
  );
}

function refuse(reason: RefusalReason, message: RichText): Judgement {
  return { accepted: false, reason, message };
}

/**
 * Judges one click on `record` (SPEC §6). Checked in this order, so the answer names the first
 * thing that makes the click moot: a button of another Freight or another request; an Approve by
 * someone whose approval is already recorded; a request already decided; the deadline; then who is clicking. A Reject is accepted from an approver or from
 * the requester (withdrawing the run); an Approve only from an approver, and from the requester only
 * with `allowSelfApproval`. Advisory for the answer the clicker gets: the store re-checks the
 * decided, expired, duplicate and self-approval rules in the same atomic step that counts the click.
 */
export function judgeClick(record: ApprovalRecord, click: Click, membership: Membership): Judgement {
  const { request } = record;
  if (click.freight !== request.freight)
    return refuse('wrong-freight', rich`This approval is for another Freight: the run now waits on ${request.freight}, and approvals never carry over from one Freight to another. Use the latest approval request in the thread.`);
  if (click.nonce !== request.nonce)
    return refuse('stale-request', rich`This button belongs to an earlier approval request of this run. Use the latest approval request in the thread.`);
  // Someone whose approval is already recorded is told so, whatever was decided since: a double
  // click or a retried delivery is not a refusal (and is not audited as one).
  if (click.action === 'approve' && record.approvals.some((approval) => approval.userId === click.userId))
    return refuse(
      'already-approved',
      record.status === 'pending'
        ? rich`You already approved this run; it needs ${request.minApprovals} distinct approvers (${countedApprovers(request, record.approvals).length} so far).`
        : rich`Your approval was already counted; run ${request.runId}'s approval is ${record.status}${record.decidedAt === undefined ? '' : ` since ${record.decidedAt}`}.`,
    );
  if (record.status === 'expired' || (record.status === 'pending' && isExpired(request, click.at)))
    return refuse('expired', rich`This approval expired at ${request.expiresAt}: nothing can be approved or rejected on it any more.`);
  if (record.status !== 'pending')
    return refuse('already-decided', rich`This approval was already decided (${record.status}${record.decidedAt === undefined ? '' : ` at ${record.decidedAt}`}).`);

  const approver = isApprover(click.userId, request.approvers, membership);
  const isRequester = click.userId === request.requester;
  const base = { userId: click.userId, userName: click.userName, freight: click.freight, nonce: click.nonce, at: click.at };

  if (click.action === 'reject') {
    if (approver && (!isRequester || request.allowSelfApproval))
      return { accepted: true, click: { ...base, action: 'reject', by: 'approver', reason: click.reason } };
    if (isRequester) return { accepted: true, click: { ...base, action: 'reject', by: 'requester', reason: click.reason } };
    return refuse('not-approver', rich`You are not an approver of this run (nor its requester), so you cannot reject it. Approvers: ${listApprovers(request)}.`);
  }

  if (isRequester && !request.allowSelfApproval)
    return refuse('self-approval', rich`You requested this run, so you cannot approve it: someone else must (approvers: ${listApprovers(request)}). You can still withdraw it with Reject.`);
  if (!approver)
    return refuse('not-approver', rich`You are not an approver of this run. Approvers: ${listApprovers(request)}.`);
  const via = request.approvers.find((id) => id === click.userId || (membership(id)?.includes(click.userId) ?? false)) ?? click.userId;
  return { accepted: true, click: { ...base, action: 'approve', via } };
}

/** Distinct people whose approvals count for the request: its Freight only, the requester only with `allowSelfApproval`. */
export function countedApprovers(request: ApprovalRequest, approvals: readonly Approval[]): string[] {
  const people: string[] = [];
  for (const approval of approvals) {
    if (approval.freight !== request.freight) continue;
    if (approval.userId === request.requester && !request.allowSelfApproval) continue;
    if (!people.includes(approval.userId)) people.push(approval.userId);
  }
  return people;
}

export type ApprovalState =
  | { kind: 'pending'; approvers: readonly string[]; count: number; of: number }
  | { kind: 'approved'; approvers: readonly string[]; at: string }
  | { kind: 'rejected'; rejection: Rejection }
  | { kind: 'expired'; approvers: readonly string[]; at: string };

/**
 * What accepted clicks, in the order they were applied, amount to: the first Reject, or the
 * Approve that brings distinct counted approvers to `minApprovals`, or the first click at or after
 * the deadline (and, with `now`, the deadline having passed) decides, and nothing after the decision
 * counts. Clicks for another Freight or request never count, nor the requester's Approve without
 * `allowSelfApproval`.
 */
export function approvalState(request: ApprovalRequest, clicks: readonly AcceptedClick[], now?: string): ApprovalState {
  const approvals: Approval[] = [];
  for (const click of clicks) {
    if (click.freight !== request.freight || click.nonce !== request.nonce) continue;
    if (isExpired(request, click.at)) return { kind: 'expired', approvers: countedApprovers(request, approvals), at: request.expiresAt };
    if (click.action === 'reject') {
      const { nonce: _nonce, action: _action, ...rejection } = click;
      return { kind: 'rejected', rejection };
    }
    approvals.push({ userId: click.userId, userName: click.userName, freight: click.freight, at: click.at });
    const people = countedApprovers(request, approvals);
    if (people.length >= request.minApprovals) return { kind: 'approved', approvers: people, at: click.at };
  }
  const people = countedApprovers(request, approvals);
  if (now !== undefined && isExpired(request, now)) return { kind: 'expired', approvers: people, at: request.expiresAt };
  return { kind: 'pending', approvers: people, count: people.length, of: request.minApprovals };
}
