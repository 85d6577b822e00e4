import { describe, expect, it } from 'vitest';
import { parsePolicy } from '../../src/config/config.js';
import { approvalRequestFor, pendingRecord, type ApprovalRecord } from '../../src/domain/approval.js';
import { newRun, type Gate, type Run } from '../../src/domain/run.js';
import {
  APPROVE_ACTION_ID,
  approvalButtonValue,
  parseApprovalButtonValue,
  REJECT_ACTION_ID,
  renderApprovalRequest,
  renderSupersededApproval,
} from '../../src/render/approval.js';
import { plainText, type BlockView, type ButtonView, type Inline, type MessageView } from '../../src/render/view.js';

/**
 * The approval message (SPEC §2, §6) as the pure renderer builds it from the run and its approval
 * record: everything an approver decides on, who asked, how many approvals and until when, and the
 * two buttons bound to run, Freight and request; once decided, who decided and when, and no
 * buttons; once replaced by another Freight's request, no buttons either.
 */

const policy = parsePolicy(
  `
repos:
  acme/shop: { pipeline: shop }
pipelines:
  shop:
    kargo: { project: shop, warehouse: shop }
    stages:
      - { name: dev, kargoStage: dev }
      - { name: staging, kargoStage: staging }
      - name: prod
        kargoStage: prod
        approval: { approvers: [UANN, SREL], minApprovals: 2, expiresAfter: 4h }
`,
  'test',
);

const T0 = '2026-12-01T10:00:00.000Z';
const MERGE = '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b';
const HEAD = '2c26b46b68ffc68ff99b453c1d30413413422d70';

function passed(gate: Gate): Gate {
  const summaries: Record<string, string> = {
    'stage:dev': 'dev: Freight wonky-wombat healthy in 2 apps, error rate 0.1% over 10m',
    'stage:staging': 'staging: Kargo verified Freight wonky-wombat (AnalysisRun smoke passed)',
  };
  return gate.name === 'approval' || gate.name === 'stage:prod' ? gate : { ...gate, state: 'passed', summary: summaries[gate.name] ?? `${gate.name} ok` };
}

const run: Run = (() => {
  const base = newRun(policy, { id: 'sg-render01', repo: 'acme/shop', task: 'Add a /healthz endpoint that reports the build sha', requester: { userId: 'UREQ' }, channel: 'CSHOP', now: new Date(T0) });
  return {
    ...base,
    state: 'waiting',
    gates: base.gates.map(passed),
    links: { pr: 'https://github.com/acme/shop/pull/42' },
    artifacts: {
      agent: { commitSha: HEAD, diffStat: '3 files changed, 40 insertions(+), 2 deletions(-)' },
      pr: { number: 42 },
      merge: { commitSha: MERGE },
      freight: { name: '666209fd9755a1e48bec6b27f5f447747410dd9e', alias: 'wonky-wombat' },
    },
  };
})();

const request = approvalRequestFor({
  runId: run.id,
  freight: '666209fd9755a1e48bec6b27f5f447747410dd9e',
  nonce: 'a1b2c3d4',
  stage: 'prod',
  requester: 'UREQ',
  settings: { approvers: ['UANN', 'SREL'], minApprovals: 2, allowSelfApproval: false, expiresAfter: 4 * 3_600_000 },
  requestedAt: '2026-12-01T10:30:00.000Z',
});

function sections(view: MessageView): Inline[][] {
  return view.blocks.flatMap((block: BlockView) => (block.type === 'section' || block.type === 'context' ? [[...block.text]] : []));
}

const textOf = (view: MessageView): string => sections(view).map((spans) => plainText(spans)).join('\n');
const buttons = (view: MessageView): ButtonView[] => view.blocks.flatMap((block) => (block.type === 'actions' ? block.buttons : []));

describe('the approval request', () => {
  const view = renderApprovalRequest(run, pendingRecord(request));
  const text = textOf(view);

  it('shows what the approver decides on: task, PR with diffstat, CI, merge commit, Freight and each pre-production stage’s verification', () => {
    expect(view.blocks[0]).toEqual({ type: 'header', text: 'Approval needed: prod' });
    expect(sections(view).flat()).toContainEqual({ kind: 'quote', text: 'Add a /healthz endpoint that reports the build sha' });
    expect(sections(view).flat()).toContainEqual({ kind: 'link', url: 'https://github.com/acme/shop/pull/42', label: '#42' });
    expect(text).toContain('Pull request: #42 (https://github.com/acme/shop/pull/42) (3 files changed, 40 insertions(+), 2 deletions(-))');
    expect(text).toContain(`CI: passed on \`${HEAD.slice(0, 12)}\``);
    expect(text).toContain(`Merge commit: \`${MERGE}\``);
    expect(text).toContain('Freight: `wonky-wombat (666209fd9755a1e48bec6b27f5f447747410dd9e)`');
    expect(text).toContain('dev verified: dev: Freight wonky-wombat healthy in 2 apps, error rate 0.1% over 10m');
    expect(text).toContain('staging verified: staging: Kargo verified Freight wonky-wombat (AnalysisRun smoke passed)');
    // Production is what is being approved: it has not verified anything yet.
    expect(text).not.toContain('prod verified');
  });

  it('names the requester, the approvers, how many approvals are needed and the deadline', () => {
    expect(sections(view).flat()).toContainEqual({ kind: 'mention', principal: 'UREQ' });
    expect(text).toContain('Requested by @UREQ.');
    expect(text).toContain('Needs 2 approvals from @UANN, @SREL, not the requester, before 2026-12-01T14:30:00.000Z.');
    expect(text).toContain('Approved so far (0 of 2): none yet.');
    expect(view.text).toContain('Approval needed: prod of acme/shop (sg-render01)');
  });

  it('has Approve and Reject, both bound to this run, Freight and request', () => {
    const value = 'sg-render01|666209fd9755a1e48bec6b27f5f447747410dd9e|a1b2c3d4';
    expect(buttons(view)).toEqual([
      { actionId: APPROVE_ACTION_ID, label: 'Approve', value, style: 'primary' },
      { actionId: REJECT_ACTION_ID, label: 'Reject', value, style: 'danger' },
    ]);
    expect(approvalButtonValue(pendingRecord(request))).toBe(value);
    expect(parseApprovalButtonValue(value)).toEqual({ runId: 'sg-render01', freight: '666209fd9755a1e48bec6b27f5f447747410dd9e', nonce: 'a1b2c3d4' });
    for (const forged of ['sg-render01|f', 'a|b|c|d', 'sg-render01||a1b2c3d4', '']) expect(parseApprovalButtonValue(forged)).toBeUndefined();
  });

  it('while pending, shows the approvals counted so far and leaves the buttons', () => {
    const counting: ApprovalRecord = { ...pendingRecord(request), approvals: [{ userId: 'UCAT', userName: 'Cat', freight: request.freight, at: '2026-12-01T11:00:00.000Z' }] };
    const one = renderApprovalRequest(run, counting);
    expect(textOf(one)).toContain('Approved so far (1 of 2): @UCAT (Cat).');
    expect(buttons(one)).toHaveLength(2);
  });
});

describe('after the decision', () => {
  it('approved: who approved and when, and no buttons', () => {
    const record: ApprovalRecord = {
      ...pendingRecord(request),
      status: 'approved',
      decidedAt: '2026-12-01T11:20:00.000Z',
      approvals: [
        { userId: 'UANN', userName: 'Ann', freight: request.freight, at: '2026-12-01T11:00:00.000Z' },
        { userId: 'UCAT', freight: request.freight, at: '2026-12-01T11:20:00.000Z' },
      ],
    };
    const view = renderApprovalRequest(run, record);
    expect(textOf(view)).toContain('✅ Approved by @UANN (Ann) at 2026-12-01T11:00:00.000Z, @UCAT at 2026-12-01T11:20:00.000Z.');
    expect(buttons(view)).toEqual([]);
    expect(view.blocks.some((block) => block.type === 'actions')).toBe(false);
    expect(view.text).toContain('Approval approved: prod');
  });

  it('rejected: who rejected, when, and the reason; no buttons', () => {
    const record: ApprovalRecord = {
      ...pendingRecord(request),
      status: 'rejected',
      decidedAt: '2026-12-01T11:05:00.000Z',
      rejection: { userId: 'UANN', userName: 'Ann', freight: request.freight, at: '2026-12-01T11:05:00.000Z', by: 'approver', reason: 'not during the freeze' },
    };
    const view = renderApprovalRequest(run, record);
    const text = textOf(view);
    expect(text).toContain('🚫 Rejected by @UANN (Ann) at 2026-12-01T11:05:00.000Z.');
    expect(sections(view).flat()).toContainEqual({ kind: 'quote', text: 'not during the freeze' });
    expect(buttons(view)).toEqual([]);
  });

  it('withdrawn by the requester without a reason: says so; no buttons', () => {
    const record: ApprovalRecord = {
      ...pendingRecord(request),
      status: 'rejected',
      decidedAt: '2026-12-01T11:05:00.000Z',
      rejection: { userId: 'UREQ', freight: request.freight, at: '2026-12-01T11:05:00.000Z', by: 'requester' },
    };
    const view = renderApprovalRequest(run, record);
    expect(textOf(view)).toContain('🚫 Withdrawn by the requester @UREQ at 2026-12-01T11:05:00.000Z. No reason given.');
    expect(buttons(view)).toEqual([]);
  });

  it('expired: when, with how many approvals; no buttons', () => {
    const record: ApprovalRecord = {
      ...pendingRecord(request),
      status: 'expired',
      decidedAt: request.expiresAt,
      approvals: [{ userId: 'UANN', freight: request.freight, at: '2026-12-01T11:00:00.000Z' }],
    };
    const view = renderApprovalRequest(run, record);
    expect(textOf(view)).toContain('⌛ Expired at 2026-12-01T14:30:00.000Z with 1 of 2 approvals');
    expect(buttons(view)).toEqual([]);
  });
});

describe('a superseded request', () => {
  it('has no buttons and points to the newer request', () => {
    const view = renderSupersededApproval(run);
    expect(buttons(view)).toEqual([]);
    expect(view.blocks.some((block) => block.type === 'actions')).toBe(false);
    expect(view.text).toContain('replaced by a newer one for another Freight; approvals never carry over');
  });
});
