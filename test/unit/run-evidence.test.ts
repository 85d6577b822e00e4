import { describe, expect, it } from 'vitest';
import { AUDIT_CHAIN_ALG } from '../../src/audit/audit-key.js';
import type { AuditEvent, AuditEventType, AuditVerifyResult } from '../../src/audit/audit-log.js';
import { readRunEvidence } from '../../src/audit/run-evidence.js';
import { renderAuditSummary, renderUnreadableEvidence } from '../../src/render/audit-summary.js';
import { plainText, type MessageView } from '../../src/render/view.js';

/**
 * The `/ship audit` chain of custody (src/audit/run-evidence.ts) and its summary
 * (src/render/audit-summary.ts): every link read through the evidence schemas, gaps named, never
 * skipped, and "verifies" said only of a chain verify() walked.
 */

const RUN = 'sg-evidence';
const COMMIT = 'c'.repeat(40);
const MERGE = 'm'.repeat(40);
const FREIGHT = 'f0123456789abcdef';
const GATES = ['agent', 'pr', 'ci', 'merge', 'freight', 'stage:qa', 'approval', 'stage:prod'];

type Draft = [type: AuditEventType, actor: string, data: Record<string, unknown>];

function events(drafts: readonly Draft[], runId = RUN): AuditEvent[] {
  return drafts.map(([type, actor, data], index) => ({
    seq: index + 1,
    at: new Date(Date.UTC(2026, 0, 1, 10, index)).toISOString(),
    runId,
    type,
    actor,
    data,
    alg: AUDIT_CHAIN_ALG,
    keyId: '0123456789abcdef',
    prevHash: '0'.repeat(64),
    hash: '1'.repeat(64),
  }));
}

const requested = (gates = GATES): Draft => ['run.requested', 'UALICE', { repo: 'acme/shop', task: 'add a /healthz endpoint', channel: 'CSHOP', gates, at: '2026-01-01T10:00:00.000Z' }];
const commit: Draft = ['commit.created', 'agent', { commit: COMMIT, branch: 'shipgate/sg-evidence-healthz', files: 2 }];
const pr: Draft = ['pr.opened', 'shipgate', { number: 7, url: 'https://github.example/acme/shop/pull/7', head: 'shipgate/sg-evidence-healthz', commit: COMMIT }];
const ci: Draft = ['ci.verdict', 'shipgate', { commit: COMMIT, pr: 7, verdict: 'passed', summary: '3/3' }];
const merged: Draft = ['pr.merged', 'shipgate', { pr: 7, mergeCommit: MERGE, head: 'shipgate/sg-evidence-healthz' }];
const freight: Draft = ['freight.found', 'shipgate', { freight: FREIGHT, commit: MERGE, alias: 'lucky-fox' }];
const qa: Draft = ['stage.verdict', 'shipgate', { stage: 'qa', freight: FREIGHT, promotion: 'qa-promo', verdict: 'passed' }];
const request: Draft = [
  'approval.requested',
  'shipgate',
  { stage: 'prod', freight: FREIGHT, nonce: 'n1', requester: 'UALICE', approvers: ['UAPPROVER', 'SOPS'], minApprovals: 1, allowSelfApproval: false, requestedAt: '2026-01-01T10:08:00.000Z', expiresAt: '2026-01-02T10:08:00.000Z' },
];
const refused: Draft = ['approval.refused', 'UALICE', { action: 'approve', freight: FREIGHT, nonce: 'n1', reason: 'self-approval', message: 'not your own', at: '2026-01-01T10:09:00.000Z' }];
const approved: Draft = [
  'approval.approved',
  'UAPPROVER',
  { stage: 'prod', freight: FREIGHT, nonce: 'n1', userId: 'UAPPROVER', userName: 'Ada', via: 'UAPPROVER', at: '2026-01-01T10:10:00.000Z', count: 1, of: 1, complete: true },
];
const promotion: Draft = ['promotion.created', 'shipgate', { stage: 'prod', kargoStage: 'prod', freight: FREIGHT, promotion: 'prod-promo', approvers: ['UAPPROVER'] }];
const prod: Draft = ['stage.verdict', 'shipgate', { stage: 'prod', freight: FREIGHT, promotion: 'prod-promo', verdict: 'passed' }];
const done: Draft = ['run.done', 'shipgate', { outcome: 'every gate passed' }];
const FULL: Draft[] = [requested(), ['run.queued', 'shipgate', {}], commit, pr, ci, merged, freight, qa, request, refused, approved, promotion, prod, done];

const VERIFIED: AuditVerifyResult = { ok: true, count: 40, head: { seq: 40, hash: '1'.repeat(64) } };
const TAMPERED: AuditVerifyResult = { ok: false, count: 3, broken: { seq: 4, runId: RUN, type: 'run.requested', reason: 'hash does not match the content', problem: 'tampered' } };

function shown(view: MessageView): string {
  return [view.text, ...view.blocks.map((block) => (block.type === 'section' || block.type === 'context' ? plainText(block.text) : block.type === 'header' ? block.text : ''))].join('\n');
}

describe('readRunEvidence', () => {
  it('reads the whole chain of a promoted run, with nothing missing', () => {
    const evidence = readRunEvidence(RUN, events(FULL));
    expect(evidence.missing).toEqual([]);
    expect(evidence.unreadable).toEqual([]);
    expect(evidence.requester).toMatchObject({ userId: 'UALICE', repo: 'acme/shop', task: 'add a /healthz endpoint' });
    expect(evidence.commits.map((c) => c.sha)).toEqual([COMMIT]);
    expect(evidence.pullRequests).toMatchObject([{ number: 7, url: 'https://github.example/acme/shop/pull/7' }]);
    expect(evidence.ci).toMatchObject({ commit: COMMIT, verdict: 'passed' });
    expect(evidence.merge).toMatchObject({ pr: 7, mergeCommit: MERGE });
    expect(evidence.freight).toMatchObject({ name: FREIGHT, alias: 'lucky-fox', commit: MERGE });
    expect(evidence.stages.map((s) => [s.stage, s.verdict])).toEqual([
      ['qa', 'passed'],
      ['prod', 'passed'],
    ]);
    expect(evidence.approvals).toMatchObject([{ userId: 'UAPPROVER', userName: 'Ada', at: '2026-01-01T10:10:00.000Z', freight: FREIGHT }]);
    expect(evidence.refusals).toBe(1);
    expect(evidence.promotions).toMatchObject([{ stage: 'prod', promotion: 'prod-promo', approvers: ['UAPPROVER'] }]);
    expect(evidence.end).toMatchObject({ state: 'done', outcome: 'every gate passed' });
  });

  it('names each gap in chain order instead of skipping it', () => {
    // No merge, and everything after it absent: the run stopped (or the log lost them).
    const evidence = readRunEvidence(RUN, events([requested(), commit, pr, ci]));
    expect(evidence.missing).toEqual(['merge', 'Freight', 'qa verified', 'approval request', 'Promotion to prod', 'prod verified']);
    const noRequest = readRunEvidence(RUN, events([commit, merged]));
    expect(noRequest.missing).toEqual(['requester', 'pull request', 'CI']);
  });

  it('does not ask a run without Kargo for Freight, stages or approvals', () => {
    const evidence = readRunEvidence(RUN, events([requested(['agent', 'pr', 'ci', 'merge']), commit, pr, ci, merged, done]));
    expect(evidence.missing).toEqual([]);
    expect(evidence.expects).toEqual({ freight: false, approval: false });
    expect(evidence.stages).toEqual([]);
  });

  it('counts evidence whose data does not parse as missing, and says which events', () => {
    const broken: Draft = ['pr.merged', 'shipgate', { pr: '7', mergeCommit: MERGE }];
    const evidence = readRunEvidence(RUN, events([requested(['agent', 'pr', 'ci', 'merge']), commit, pr, ci, broken]));
    expect(evidence.merge).toBeUndefined();
    expect(evidence.missing).toEqual(['merge']);
    expect(evidence.unreadable).toEqual([{ seq: 5, type: 'pr.merged' }]);
  });

  it('takes the latest CI verdict, keeps every commit, and ignores other runs’ events', () => {
    const second: Draft = ['commit.created', 'agent', { commit: 'd'.repeat(40), branch: 'shipgate/sg-evidence-healthz' }];
    const red: Draft = ['ci.verdict', 'shipgate', { commit: COMMIT, verdict: 'failed' }];
    const green: Draft = ['ci.verdict', 'shipgate', { commit: 'd'.repeat(40), verdict: 'passed' }];
    const mine = events([requested(), commit, pr, red, second, green]);
    const theirs = events([merged], 'sg-other').map((event) => ({ ...event, seq: 100 }));
    const evidence = readRunEvidence(RUN, [...theirs, ...mine]);
    expect(evidence.commits).toHaveLength(2);
    expect(evidence.ci).toMatchObject({ commit: 'd'.repeat(40), verdict: 'passed' });
    expect(evidence.ciVerdicts).toBe(2);
    expect(evidence.merge).toBeUndefined();
  });

  it('ends the chain at a rejection: no approval or Promotion is then missing', () => {
    const rejected: Draft = ['approval.rejected', 'UAPPROVER', { stage: 'prod', freight: FREIGHT, nonce: 'n1', userId: 'UAPPROVER', by: 'approver', reason: 'not on a Friday', at: '2026-01-01T10:11:00.000Z' }];
    const evidence = readRunEvidence(RUN, events([requested(), commit, pr, ci, merged, freight, qa, request, rejected, ['run.rejected', 'shipgate', { outcome: 'rejected' }]]));
    expect(evidence.missing).toEqual([]);
    expect(evidence.rejection).toMatchObject({ userId: 'UAPPROVER', reason: 'not on a Friday' });
    expect(evidence.end?.state).toBe('rejected');
  });
});

describe('renderAuditSummary', () => {
  it('names requester, commit, PR, CI, merge, Freight, stages, approvers and Promotion, and that the chain verifies', () => {
    const view = renderAuditSummary({ evidence: readRunEvidence(RUN, events(FULL)), verification: VERIFIED, filename: `${RUN}-evidence-0123.jsonl` });
    const text = shown(view);
    expect(view.blocks[0]).toEqual({ type: 'header', text: `Evidence of ${RUN}` });
    expect(text).toContain('Requested by @UALICE on acme/shop');
    expect(text).toContain(`\`${COMMIT.slice(0, 12)}\``);
    expect(text).toContain('#7 (https://github.example/acme/shop/pull/7)');
    expect(text).toContain('CI: passed');
    expect(text).toContain(`Merge commit: \`${MERGE.slice(0, 12)}\``);
    expect(text).toContain(`Freight: \`lucky-fox (${FREIGHT})\``);
    expect(text).toContain('Stage qa: verified');
    expect(text).toContain('Approvers: @UAPPROVER (Ada) at 2026-01-01T10:10:00.000Z');
    expect(text).toContain('Refused clicks: 1');
    expect(text).toContain('Promotion: `prod-promo` into prod');
    expect(text).toContain('every link present');
    expect(text).toContain('The audit chain verifies: 40 events');
    expect(text).toContain(`${RUN}-evidence-0123.jsonl`);
    expect(text).toContain(`npm run audit-log -- export ${RUN}`);
  });

  it('shows gaps as missing and a broken chain as not verifying', () => {
    const view = renderAuditSummary({ evidence: readRunEvidence(RUN, events([requested(), commit, pr, ci])), verification: TAMPERED });
    const text = shown(view);
    expect(text).toContain('Merge commit: missing');
    expect(text).toContain('Freight: missing');
    expect(text).toContain('Stage qa: missing');
    expect(text).toContain('missing: merge, Freight, qa verified, approval request, Promotion to prod, prod verified');
    expect(text).toContain('does not verify: broken at event #4 (run.requested)');
    expect(text).not.toContain('chain verifies');
    expect(text).toContain('Run: not ended');
  });

  it('says when a run has no events yet, and when its events cannot be read back', () => {
    expect(shown(renderAuditSummary({ evidence: readRunEvidence(RUN, []), verification: VERIFIED }))).toContain('No audit events are recorded');
    const unreadable = shown(renderUnreadableEvidence(RUN, 'audit event #7 of run sg-evidence is missing from the log'));
    expect(unreadable).toContain('does not verify');
    expect(unreadable).toContain('#7');
  });

  it('keeps what people typed literal: a task cannot smuggle markup into the summary', () => {
    const hostile: Draft = ['run.requested', 'UALICE', { repo: 'acme/shop', task: '<!channel> *deploy* [x](http://evil)', gates: ['agent', 'pr', 'ci', 'merge'] }];
    const view = renderAuditSummary({ evidence: readRunEvidence(RUN, events([hostile])), verification: VERIFIED });
    const section = view.blocks[1];
    expect(section?.type).toBe('section');
    if (section?.type !== 'section') return;
    expect(section.text.filter((span) => span.kind === 'quote').map((span) => ('text' in span ? span.text : ''))).toEqual(['<!channel> *deploy* [x](http://evil)']);
  });
});
