import { PassThrough } from 'node:stream';
import { Redis } from 'ioredis';
import { createApprovalActions } from '../../commands/approval-actions.js';
import { createAuditLog, type AuditEvent, type AuditLog } from '../../src/audit/audit-log.js';
import { parsePolicy } from '../../src/config/config.js';
import type { Policy } from '../../src/config/policy.js';
import { countedApprovers, type ApprovalRecord, type ApprovalSettings, type Membership } from '../../src/domain/approval.js';
import { newRun, type GateOutcome, type Run } from '../../src/domain/run.js';
import { branchName } from '../../src/git/branch-names.js';
import { createLogger } from '../../src/log.js';
import type { ActionEvent, CommandReply } from '../../src/ports/chat.js';
import { APPROVE_ACTION_ID, REJECT_ACTION_ID } from '../../src/render/approval.js';
import { createApprovalStore, type ApprovalStore } from '../../src/store/approval-store.js';
import { createPokes } from '../../src/store/pokes.js';
import { createSharedGroups } from '../../src/store/shared-groups.js';
import { createApprovalStep } from '../../workers/gates/approval/approval-step.js';
import type { GateAuditType } from '../../workers/gates/gate-step.js';
import { TEST_AUDIT_KEY_BYTES } from './audit-key.js';
import { testPrefix } from './ids.js';

/**
 * One run waiting at its production approval, wired as the web and worker roles wire it but with
 * the chat and the queues faked: the REAL click handler (commands/approval-actions.ts) over the
 * real approval store, the real audit log and the Redis-shared group membership; the real approval
 * gate step for the gate's looks; what the chat processor does when it posts the request (the
 * deadline starts, `approval.requested` is recorded); and what the production stage step does
 * before it creates a Promotion (only with the store's approved request for that Freight and
 * stage, as `approvalEvidence` in workers/gates/stage/stage-step.ts). The clock is the test's.
 *
 * The audit log also gets the run's earlier chain of custody (request, commit, PR, green CI, merge,
 * Freight, dev verified), as the earlier gates write it, so the trust-invariant checker can judge
 * the whole log.
 */

export const RUN_ID = 'sg-appr0042';
export const REQUESTER = 'UREQ';
const REPO = 'acme/shop';
const TASK = 'add a healthz endpoint';
const HEAD = 'ab12'.repeat(10);
const MERGE = 'cd34'.repeat(10);
const PR = 7;
const GATE_STARTED = '2026-01-01T00:00:00.000Z';

export interface ApprovalWorldOptions {
  redisUrl: string;
  name: string;
  settings: ApprovalSettings;
  /** Group id → members, as the chat answers. */
  groups?: Readonly<Record<string, readonly string[]>>;
  /** Where the test clock starts (ms). */
  startMs?: number;
}

export interface ClickInput {
  user: string;
  userName?: string | undefined;
  action: 'approve' | 'reject';
  /** Defaults: the current request's Freight and nonce. */
  freight?: string | undefined;
  nonce?: string | undefined;
  /** The raw button value instead (a forged or unreadable one). */
  value?: string | undefined;
  reason?: string | undefined;
  deliveryId: string;
}

export type ApprovalWorld = Awaited<ReturnType<typeof createApprovalWorld>>;

/** The policy of one repository whose pipeline is dev, then prod behind `settings`. */
export function approvalPolicy(settings: ApprovalSettings): Policy {
  if (settings.expiresAfter % 1_000 !== 0) throw new Error('expiresAfter must be whole seconds');
  return parsePolicy(
    `
repos:
  ${REPO}: { pipeline: shop }
pipelines:
  shop:
    kargo: { project: shop, warehouse: shop }
    stages:
      - { name: dev, kargoStage: dev }
      - name: prod
        kargoStage: prod
        approval:
          approvers: ${JSON.stringify(settings.approvers)}
          minApprovals: ${settings.minApprovals}
          allowSelfApproval: ${settings.allowSelfApproval}
          expiresAfter: ${settings.expiresAfter / 1_000}s
`,
    'approval world',
  );
}

export async function createApprovalWorld(options: ApprovalWorldOptions) {
  const prefix = testPrefix(options.name);
  const redis = new Redis(options.redisUrl);
  let now = options.startMs ?? Date.parse('2026-03-02T09:00:00.000Z');
  const clock = () => new Date(now);
  const groups = options.groups ?? {};
  const membership: Membership = (id) => groups[id];
  const policy = approvalPolicy(options.settings);
  const log = createLogger({ level: 'silent', destination: new PassThrough() });

  const audit: AuditLog = createAuditLog({ redis, prefix, clock, key: TEST_AUDIT_KEY_BYTES });
  const approvals: ApprovalStore = createApprovalStore({ redis, prefix });
  const sharedGroups = createSharedGroups({
    redis,
    prefix,
    source: { isGroup: (id) => groups[id] !== undefined, members: async (id) => groups[id] ?? [] },
    ttlSeconds: 600,
  });

  const base = newRun(policy, { id: RUN_ID, repo: REPO, task: TASK, requester: { userId: REQUESTER }, channel: 'CSHOP', now: clock() });
  let run: Run = {
    ...base,
    state: 'waiting',
    jobSeq: 3,
    gates: base.gates.map((gate) => (gate.name === 'approval' || gate.name === 'stage:prod' ? gate : { ...gate, state: 'passed' })),
    links: { pr: `https://github.test/${REPO}/pull/${PR}` },
    artifacts: { agent: { commitSha: HEAD }, pr: { number: PR }, merge: { commitSha: MERGE }, freight: { name: 'f-1' } },
  };

  const wakes: { runId: string; jobSeq: number }[] = [];
  const messages: { runId: string; nonce: string; stamp: string }[] = [];
  const queues = {
    wakeRun: async (runId: string, jobSeq: number) => {
      wakes.push({ runId, jobSeq });
    },
    approvalMessage: async (runId: string, nonce: string, stamp: string) => {
      messages.push({ runId, nonce, stamp });
    },
  };

  const handler = createApprovalActions({
    store: { get: async (id) => (id === run.id ? run : undefined) },
    approvals,
    audit,
    queues,
    pokes: createPokes({ redis, prefix }),
    groups: sharedGroups,
    clock,
    log,
  });

  let nonces = 0;
  const step = createApprovalStep({ policy, approvals, audit, queues, clock, newNonce: () => `n-${RUN_ID}-${++nonces}` });

  const bot = (type: AuditEvent['type'], gate: string, data: Record<string, unknown>, key: string) =>
    audit.append({ type, actor: 'shipgate', runId: run.id, data: { gate, ...data }, key: `${run.id}.${key}` });

  /** What the gates before the approval wrote, for the first Freight. */
  async function prelude(): Promise<void> {
    const branch = branchName(run.id, TASK);
    await audit.append({ type: 'run.requested', actor: REQUESTER, runId: run.id, data: { repo: REPO, task: TASK, at: clock().toISOString() }, key: `${run.id}.requested` });
    await audit.append({ type: 'run.queued', actor: 'shipgate', runId: run.id, data: {}, key: `${run.id}.queued` });
    await bot('commit.created', 'agent', { commit: HEAD, branch, files: 1 }, 'commit');
    await bot('pr.opened', 'pr', { number: PR, head: branch, commit: HEAD }, 'pr');
    await bot('ci.verdict', 'ci', { commit: HEAD, pr: PR, verdict: 'passed' }, 'ci');
    await bot('pr.merged', 'merge', { pr: PR, mergeCommit: MERGE, head: branch }, 'merged');
    await foundFreight('f-1');
  }

  /** The freight gate finding a Freight of the merge commit, and dev verifying it. */
  async function foundFreight(freight: string): Promise<void> {
    await bot('freight.found', 'freight', { freight, commit: MERGE }, `freight.${freight}`);
    await bot('stage.verdict', 'stage:dev', { stage: 'dev', freight, verdict: 'passed' }, `dev.${freight}`);
  }

  /** A look of the real approval gate step, auditing as the run processor does. */
  async function look(): Promise<GateOutcome> {
    const gate = run.gates.find((g) => g.name === 'approval');
    if (gate === undefined) throw new Error('no approval gate');
    return step.run({
      run,
      gate: { ...gate, state: 'running', startedAt: GATE_STARTED },
      signal: new AbortController().signal,
      log,
      record: async (change) => (run = { ...run, ...change(run) }),
      reply: async () => undefined,
      audit: async (type: GateAuditType, data, discriminator, opts) => {
        const scope = opts?.once === true ? 'once' : GATE_STARTED;
        await audit.append({ type, actor: 'shipgate', runId: run.id, data: { gate: 'approval', ...data }, key: `${run.id}.approval.${scope}.${type}.${discriminator}` });
      },
    });
  }

  /**
   * What the chat processor does with an approval job once it has posted the message: the deadline
   * starts now (once per request) and `approval.requested` is recorded with the request as posted.
   */
  async function post(): Promise<void> {
    const record = await approvals.get(run.id);
    if (record === undefined || record.postedAt !== undefined) return;
    await approvals.markPosted(run.id, record.request.nonce, clock().toISOString());
    const latest = (await approvals.get(run.id)) ?? record;
    const { request } = latest;
    await audit.append({
      type: 'approval.requested',
      actor: 'shipgate',
      runId: run.id,
      data: {
        stage: request.stage,
        freight: request.freight,
        nonce: request.nonce,
        mergeCommit: MERGE,
        requester: request.requester,
        approvers: request.approvers,
        minApprovals: request.minApprovals,
        allowSelfApproval: request.allowSelfApproval,
        requestedAt: latest.postedAt ?? request.requestedAt,
        expiresAt: request.expiresAt,
        message: `CSHOP/${request.nonce}`,
      },
      key: `${run.id}.approval.${request.nonce}.requested`,
    });
  }

  /** The run's approval gate opens its request and the chat posts it. */
  async function openAndPost(): Promise<GateOutcome> {
    const outcome = await look();
    await post();
    return outcome;
  }

  /** The run gets another Freight (the freight gate found a newer one): the next look supersedes the request. */
  async function newFreight(freight: string): Promise<void> {
    await foundFreight(freight);
    run = { ...run, artifacts: { ...run.artifacts, freight: { name: freight } } };
  }

  async function current(): Promise<ApprovalRecord> {
    const record = await approvals.get(run.id);
    if (record === undefined) throw new Error('no approval request');
    return record;
  }

  /** One delivery of a click on a button of the current request (or of the one given). */
  async function click(input: ClickInput): Promise<CommandReply> {
    let value = input.value;
    if (value === undefined) {
      const record = await approvals.get(run.id);
      value = `${run.id}|${input.freight ?? record?.request.freight ?? ''}|${input.nonce ?? record?.request.nonce ?? ''}`;
    }
    const event: ActionEvent = {
      actionId: input.action === 'approve' ? APPROVE_ACTION_ID : REJECT_ACTION_ID,
      value,
      userId: input.user,
      ...(input.userName === undefined ? {} : { userName: input.userName }),
      ...(input.reason === undefined ? {} : { reason: input.reason }),
      channelId: 'CSHOP',
      deliveryId: input.deliveryId,
    };
    return handler(event);
  }

  /**
   * The production stage step's rule before it creates its Promotion: only with the store's
   * approved request for this Freight and stage (stage-step.ts `approvalEvidence`), then one
   * `promotion.created`, keyed by the Promotion as the step keys it. Returns whether it promoted.
   */
  async function promote(): Promise<boolean> {
    const freight = run.artifacts.freight?.name ?? '';
    const record = await approvals.get(run.id);
    if (record === undefined || record.status !== 'approved' || record.request.freight !== freight || record.request.stage !== 'prod') return false;
    const counted = countedApprovers(record.request, record.approvals);
    const name = `prod-${run.id}-${freight}`;
    await audit.append({
      type: 'promotion.created',
      actor: 'shipgate',
      runId: run.id,
      data: { gate: 'stage:prod', stage: 'prod', kargoStage: 'prod', freight, promotion: name, found: false, approvers: counted },
      key: `${run.id}.stage:prod.once.promotion.created.${name}`,
    });
    return true;
  }

  return {
    prefix,
    redis,
    audit,
    approvals,
    policy,
    membership,
    wakes,
    messages,
    handler,
    prelude,
    look,
    post,
    openAndPost,
    newFreight,
    current,
    click,
    promote,
    run: () => run,
    now: () => now,
    advance: (ms: number) => {
      now += ms;
    },
    setNow: (ms: number) => {
      now = ms;
    },
    events: () => audit.eventsForRun(run.id),
    async close(): Promise<void> {
      await audit.close();
      await redis.quit();
    },
  };
}
