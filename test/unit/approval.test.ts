import { describe, expect, it } from 'vitest';
import {
  approvalRequestFor,
  approvalState,
  judgeClick,
  pendingRecord,
  type AcceptedClick,
  type ApprovalRecord,
  type ApprovalRequest,
  type Click,
  type Membership,
} from '../../src/domain/approval.js';
import { plainText } from '../../src/render/view.js';

/**
 * SPEC §6, the approval decision as pure functions: who may approve or reject (users and user
 * groups), distinct people up to minApprovals, never the requester unless allowSelfApproval,
 * bound to one Freight, refused from the deadline on, and nothing counted after the decision.
 */

const GROUPS: Record<string, readonly string[]> = { SRELEASE: ['UCAROL', 'UDAVE', 'UREQ'] };
const membership: Membership = (id) => GROUPS[id];

const request: ApprovalRequest = approvalRequestFor({
  runId: 'r1',
  freight: 'f-abc',
  nonce: 'n1',
  stage: 'prod',
  requester: 'UREQ',
  settings: { approvers: ['UALICE', 'UBOB', 'SRELEASE'], minApprovals: 1, allowSelfApproval: false, expiresAfter: 3_600_000 },
  requestedAt: '2025-01-01T10:00:00.000Z',
});

const click = (userId: string, action: Click['action'] = 'approve', extra: Partial<Click> = {}): Click => ({
  userId,
  action,
  freight: 'f-abc',
  nonce: 'n1',
  at: '2025-01-01T10:30:00.000Z',
  ...extra,
});

function refusal(record: ApprovalRecord, c: Click): { reason: string; message: string } {
  const judged = judgeClick(record, c, membership);
  if (judged.accepted) throw new Error(`expected a refusal, got ${JSON.stringify(judged.click)}`);
  return { reason: judged.reason, message: plainText(judged.message) };
}

function accepted(record: ApprovalRecord, c: Click): AcceptedClick {
  const judged = judgeClick(record, c, membership);
  if (!judged.accepted) throw new Error(`expected acceptance, got ${judged.reason}: ${plainText(judged.message)}`);
  return judged.click;
}

describe('approvalRequestFor', () => {
  it('runs expiresAfter from the moment of the request and copies the stage settings', () => {
    expect(request.expiresAt).toBe('2025-01-01T11:00:00.000Z');
    expect(request).toMatchObject({ minApprovals: 1, allowSelfApproval: false, approvers: ['UALICE', 'UBOB', 'SRELEASE'], stage: 'prod' });
  });
});

describe('judgeClick', () => {
  const fresh = pendingRecord(request);

  it('accepts an Approve from a listed user and from a member of a listed group', () => {
    expect(accepted(fresh, click('UALICE'))).toEqual({ action: 'approve', userId: 'UALICE', freight: 'f-abc', nonce: 'n1', at: '2025-01-01T10:30:00.000Z', via: 'UALICE' });
    // A group member is authorised through the group, which the click records.
    expect(accepted(fresh, click('UCAROL'))).toMatchObject({ action: 'approve', via: 'SRELEASE' });
  });

  it('refuses the requester’s own Approve, even as a group member, and says who can approve', () => {
    const refused = refusal(fresh, click('UREQ'));
    expect(refused.reason).toBe('self-approval');
    expect(refused.message).toContain('You requested this run');
    expect(refused.message).toContain('UALICE');
  });

  it('with allowSelfApproval, accepts the requester who is an approver, but not one who is not', () => {
    const selfAllowed = pendingRecord({ ...request, allowSelfApproval: true });
    expect(accepted(selfAllowed, click('UREQ')).action).toBe('approve');
    const outsiderRequester = pendingRecord({ ...request, allowSelfApproval: true, requester: 'UERIN' });
    expect(refusal(outsiderRequester, click('UERIN')).reason).toBe('not-approver');
  });

  it('refuses an outsider and lists the approvers, groups included', () => {
    const refused = refusal(fresh, click('UMALLORY'));
    expect(refused.reason).toBe('not-approver');
    expect(refused.message).toMatch(/not an approver.*Approvers: .*UALICE.*UBOB.*SRELEASE/);
  });

  it('refuses a click bound to another Freight, and one from an earlier request of the run', () => {
    const other = refusal(fresh, click('UALICE', 'approve', { freight: 'f-old' }));
    expect(other.reason).toBe('wrong-freight');
    expect(other.message).toContain('This approval is for another Freight');
    expect(refusal(fresh, click('UALICE', 'approve', { nonce: 'n0' })).reason).toBe('stale-request');
  });

  it('refuses at the deadline itself, not a millisecond before', () => {
    expect(accepted(fresh, click('UALICE', 'approve', { at: '2025-01-01T10:59:59.999Z' })).action).toBe('approve');
    const late = refusal(fresh, click('UALICE', 'approve', { at: '2025-01-01T11:00:00.000Z' }));
    expect(late.reason).toBe('expired');
    expect(late.message).toContain('This approval expired at 2025-01-01T11:00:00.000Z');
    expect(refusal(fresh, click('UREQ', 'reject', { at: '2025-01-01T11:00:00.000Z' })).reason).toBe('expired');
    expect(refusal({ ...fresh, status: 'expired', decidedAt: request.expiresAt }, click('UALICE')).reason).toBe('expired');
  });

  it('refuses any click once decided, and answers a second Approve by the same person as already approved, decided or not', () => {
    const approved: ApprovalRecord = { ...fresh, status: 'approved', decidedAt: '2025-01-01T10:20:00.000Z', approvals: [{ userId: 'UBOB', freight: 'f-abc', at: '2025-01-01T10:20:00.000Z' }] };
    expect(refusal(approved, click('UALICE')).reason).toBe('already-decided');
    expect(refusal(approved, click('UALICE', 'reject')).message).toContain('already decided (approved');
    const counting: ApprovalRecord = { request: { ...request, minApprovals: 2 }, status: 'pending', approvals: [{ userId: 'UBOB', freight: 'f-abc', at: '2025-01-01T10:20:00.000Z' }] };
    const again = refusal(counting, click('UBOB'));
    expect(again.reason).toBe('already-approved');
    expect(again.message).toContain('You already approved');
    // The approver who decided it, clicking again (a retried delivery): told so, not refused as too late.
    const winnerAgain = refusal(approved, click('UBOB'));
    expect(winnerAgain.reason).toBe('already-approved');
    expect(winnerAgain.message).toContain('Your approval was already counted');
    expect(refusal({ ...approved, status: 'expired' }, click('UBOB')).reason).toBe('already-approved');
  });

  it('accepts a Reject from an approver and from the requester withdrawing, with the reason; refuses an outsider’s', () => {
    expect(accepted(fresh, click('UDAVE', 'reject', { reason: 'not during the freeze' }))).toMatchObject({ action: 'reject', by: 'approver', reason: 'not during the freeze' });
    expect(accepted(fresh, click('UREQ', 'reject'))).toMatchObject({ action: 'reject', by: 'requester' });
    expect(refusal(fresh, click('UMALLORY', 'reject')).reason).toBe('not-approver');
  });
});

describe('approvalState', () => {
  const approve = (userId: string, at = '2025-01-01T10:30:00.000Z', freight = 'f-abc'): AcceptedClick => ({ action: 'approve', userId, freight, nonce: 'n1', at, via: userId });

  it('minApprovals 2 with a user group: pending 1 of 2, then approved by two distinct people', () => {
    const two = { ...request, minApprovals: 2 };
    expect(approvalState(two, [])).toEqual({ kind: 'pending', approvers: [], count: 0, of: 2 });
    expect(approvalState(two, [approve('UCAROL')])).toMatchObject({ kind: 'pending', count: 1, of: 2 });
    expect(approvalState(two, [approve('UCAROL'), approve('UCAROL')])).toMatchObject({ kind: 'pending', count: 1 });
    expect(approvalState(two, [approve('UCAROL'), approve('UDAVE', '2025-01-01T10:40:00.000Z')])).toEqual({ kind: 'approved', approvers: ['UCAROL', 'UDAVE'], at: '2025-01-01T10:40:00.000Z' });
  });

  it('never counts another Freight’s approvals, nor the requester’s unless allowSelfApproval', () => {
    expect(approvalState(request, [approve('UALICE', undefined, 'f-old')])).toMatchObject({ kind: 'pending', count: 0 });
    expect(approvalState(request, [approve('UREQ')])).toMatchObject({ kind: 'pending', count: 0 });
    expect(approvalState({ ...request, allowSelfApproval: true }, [approve('UREQ')])).toMatchObject({ kind: 'approved', approvers: ['UREQ'] });
  });

  it('the first decision wins: a Reject ends it whatever came before, nothing counts after', () => {
    const two = { ...request, minApprovals: 2 };
    const reject: AcceptedClick = { action: 'reject', userId: 'UREQ', freight: 'f-abc', nonce: 'n1', at: '2025-01-01T10:35:00.000Z', by: 'requester', reason: 'withdrawn' };
    expect(approvalState(two, [approve('UALICE'), reject, approve('UBOB')])).toEqual({ kind: 'rejected', rejection: { userId: 'UREQ', freight: 'f-abc', at: '2025-01-01T10:35:00.000Z', by: 'requester', reason: 'withdrawn' } });
    expect(approvalState(request, [approve('UALICE'), reject])).toMatchObject({ kind: 'approved', approvers: ['UALICE'] });
  });

  it('expires at the deadline: a click on it, or the time passing while pending', () => {
    expect(approvalState(request, [approve('UALICE', '2025-01-01T11:00:00.000Z')])).toMatchObject({ kind: 'expired', at: '2025-01-01T11:00:00.000Z' });
    expect(approvalState(request, [], '2025-01-01T10:59:59.999Z')).toMatchObject({ kind: 'pending' });
    expect(approvalState(request, [], '2025-01-01T11:00:00.000Z')).toMatchObject({ kind: 'expired' });
    expect(approvalState(request, [approve('UALICE')], '2025-01-02T00:00:00.000Z')).toMatchObject({ kind: 'approved' });
  });
});
