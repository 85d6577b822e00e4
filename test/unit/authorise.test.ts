import { describe, expect, it } from 'vitest';
import { parsePolicy } from '../../src/config/config.js';
import {
  activeRunLimitReason,
  approversFor,
  authoriseCancel,
  authoriseRunRequest,
  authoriseView,
  unknownRunReason,
  visibleRuns,
  type Decision,
} from '../../src/domain/authorise.js';
import type { Groups } from '../../src/domain/principals.js';
import { plainText } from '../../src/render/view.js';

/**
 * SPEC §1, §2 and §6: who may request a run, who may cancel one and who may see one, with user
 * groups (S…) resolved through the chat; the answers for a run over an active-run limit.
 */

const POLICY = parsePolicy(
  `
repos:
  acme/shop:
    channels: [CSHOP, CRELEASE]
    requesters: [UALICE, SDEVS]
    pipeline: shop
  acme/docs: {}
  acme/infra:
    requesters: [SPLATFORM]
pipelines:
  shop:
    stages:
      - name: staging
        kargoStage: staging
      - name: prod
        kargoStage: prod
        approval: { approvers: [UAPPROVER, SRELEASE] }
`,
  'test',
);

const GROUPS: Record<string, string[]> = {
  SDEVS: ['UBOB', 'UCAROL'],
  SRELEASE: ['URELMGR'],
  SPLATFORM: [],
};

/** A group lookup (S… ids are groups, as the Slack adapter says) that records which groups it was asked about. */
function groups(): { lookup: Groups; asked: string[] } {
  const asked: string[] = [];
  return {
    asked,
    lookup: {
      isGroup: (id) => id.startsWith('S'),
      members: async (groupId) => {
        asked.push(groupId);
        return GROUPS[groupId] ?? [];
      },
    },
  };
}

/** The reason as plain text (the chat adapters add their markup: Slack shows `#CSHOP` as a channel link). */
function reason(decision: Decision): string {
  if (decision.allowed) throw new Error('expected a refusal, got allowed');
  return plainText(decision.reason);
}

describe('authoriseRunRequest', () => {
  it('allows a listed requester in a listed channel without looking up any group', async () => {
    const g = groups();
    expect(
      await authoriseRunRequest(POLICY, { repo: 'acme/shop', channelId: 'CSHOP', userId: 'UALICE' }, g.lookup),
    ).toEqual({ allowed: true });
    expect(g.asked).toEqual([]);
  });

  it('allows a member of a listed user group', async () => {
    const g = groups();
    expect(
      await authoriseRunRequest(POLICY, { repo: 'acme/shop', channelId: 'CRELEASE', userId: 'UCAROL' }, g.lookup),
    ).toEqual({ allowed: true });
    expect(g.asked).toEqual(['SDEVS']);
  });

  it('allows anyone anywhere on a repository without channels or requesters', async () => {
    expect(
      await authoriseRunRequest(
        POLICY,
        { repo: 'acme/docs', channelId: 'CRANDOM', userId: 'UANYONE' },
        groups().lookup,
      ),
    ).toEqual({ allowed: true });
  });

  it('refuses an unlisted repository, listing the allowed ones and where to add it', async () => {
    const text = reason(
      await authoriseRunRequest(POLICY, { repo: 'acme/secret', channelId: 'CSHOP', userId: 'UALICE' }, groups().lookup),
    );
    expect(text).toContain('acme/secret is not a repository shipgate may change');
    expect(text).toContain('acme/docs, acme/infra, acme/shop');
    expect(text).toContain('`repos` in shipgate.yaml');
  });

  it('refuses a request from the wrong channel, naming the channels to ask in', async () => {
    const text = reason(
      await authoriseRunRequest(POLICY, { repo: 'acme/shop', channelId: 'CRANDOM', userId: 'UALICE' }, groups().lookup),
    );
    expect(text).toContain('can only be requested in #CSHOP, #CRELEASE');
  });

  it('checks the channel before the requester, so an allowed person in the wrong channel learns where to go', async () => {
    const text = reason(
      await authoriseRunRequest(
        POLICY,
        { repo: 'acme/shop', channelId: 'CRANDOM', userId: 'UMALLORY' },
        groups().lookup,
      ),
    );
    expect(text).toContain('#CSHOP');
  });

  it('refuses someone neither listed nor in a listed group, saying how to get added', async () => {
    const text = reason(
      await authoriseRunRequest(POLICY, { repo: 'acme/shop', channelId: 'CSHOP', userId: 'UMALLORY' }, groups().lookup),
    );
    expect(text).toContain('not allowed to request runs on acme/shop');
    expect(text).toContain('user group');
    expect(text).toContain('`requesters` in shipgate.yaml');
  });

  it('refuses everyone when the only listed group is empty', async () => {
    expect(
      reason(
        await authoriseRunRequest(
          POLICY,
          { repo: 'acme/infra', channelId: 'CSHOP', userId: 'UALICE' },
          groups().lookup,
        ),
      ),
    ).toContain('not allowed to request runs on acme/infra');
  });

  it('fails closed when the group lookup fails', async () => {
    const failing: Groups = {
      isGroup: (id) => id.startsWith('S'),
      members: async () => {
        throw new Error('usergroups.users.list: ratelimited');
      },
    };
    await expect(
      authoriseRunRequest(POLICY, { repo: 'acme/shop', channelId: 'CSHOP', userId: 'UBOB' }, failing),
    ).rejects.toThrow('ratelimited');
  });
});

describe('authoriseCancel', () => {
  const run = { repo: 'acme/shop', requesterId: 'UALICE' };

  it('lets the requester cancel', async () => {
    expect(await authoriseCancel(POLICY, run, 'UALICE', groups().lookup)).toEqual({ allowed: true });
  });

  it('lets an approver of the repository cancel, directly or through a user group', async () => {
    expect(await authoriseCancel(POLICY, run, 'UAPPROVER', groups().lookup)).toEqual({ allowed: true });
    expect(await authoriseCancel(POLICY, run, 'URELMGR', groups().lookup)).toEqual({ allowed: true });
  });

  it('does not let another requester of the same repository cancel', async () => {
    const text = reason(await authoriseCancel(POLICY, run, 'UBOB', groups().lookup));
    expect(text).toContain('Only the requester (@UALICE) or an approver of acme/shop can cancel this run');
  });

  it('lets only the requester cancel on a repository without approvers', async () => {
    const docsRun = { repo: 'acme/docs', requesterId: 'UCAROL' };
    expect(await authoriseCancel(POLICY, docsRun, 'UCAROL', groups().lookup)).toEqual({ allowed: true });
    expect(reason(await authoriseCancel(POLICY, docsRun, 'UAPPROVER', groups().lookup))).toContain(
      'Only the requester (@UCAROL)',
    );
  });
});

describe('approversFor', () => {
  it('collects approvers of every stage with an approval, and none for a repository without a pipeline', () => {
    expect(approversFor(POLICY, 'acme/shop')).toEqual(['UAPPROVER', 'SRELEASE']);
    expect(approversFor(POLICY, 'acme/docs')).toEqual([]);
    expect(approversFor(POLICY, 'acme/unknown')).toEqual([]);
  });
});

describe('authoriseView', () => {
  const shopRun = { repo: 'acme/shop', requesterId: 'UALICE', channelId: 'CSHOP' };
  const elsewhere = (userId: string) => ({ userId, channelId: 'CRANDOM' });

  it('shows a run to its requester in any channel, without looking up any group', async () => {
    const g = groups();
    expect(await authoriseView(POLICY, shopRun, elsewhere('UALICE'), g.lookup)).toEqual({ allowed: true });
    expect(g.asked).toEqual([]);
  });

  it('shows a run to anyone asking in the run’s own channel, without looking up any group', async () => {
    const g = groups();
    expect(await authoriseView(POLICY, shopRun, { userId: 'UMALLORY', channelId: 'CSHOP' }, g.lookup)).toEqual({ allowed: true });
    expect(g.asked).toEqual([]);
  });

  it('shows a run to the repository’s requesters, listed directly or through a user group', async () => {
    const other = { ...shopRun, requesterId: 'UBOB' };
    expect(await authoriseView(POLICY, other, elsewhere('UALICE'), groups().lookup)).toEqual({ allowed: true });
    expect(await authoriseView(POLICY, shopRun, elsewhere('UCAROL'), groups().lookup)).toEqual({ allowed: true });
  });

  it('shows a run to the approvers named in the repository’s pipeline, listed directly or through a user group', async () => {
    expect(await authoriseView(POLICY, shopRun, elsewhere('UAPPROVER'), groups().lookup)).toEqual({ allowed: true });
    expect(await authoriseView(POLICY, shopRun, elsewhere('URELMGR'), groups().lookup)).toEqual({ allowed: true });
  });

  it('hides a run from anyone else in another channel', async () => {
    expect(reason(await authoriseView(POLICY, shopRun, elsewhere('UMALLORY'), groups().lookup))).toContain('not the requester');
  });

  it('does not count an approver of another repository, nor a requester of another repository', async () => {
    const infraRun = { repo: 'acme/infra', requesterId: 'UDAVE', channelId: 'CINFRA' };
    expect(reason(await authoriseView(POLICY, infraRun, elsewhere('UAPPROVER'), groups().lookup))).toContain('acme/infra');
    expect(reason(await authoriseView(POLICY, infraRun, elsewhere('UALICE'), groups().lookup))).toContain('acme/infra');
  });

  it('on a repository without requesters or approvers, shows a run only to its requester and in its channel', async () => {
    const docsRun = { repo: 'acme/docs', requesterId: 'UCAROL', channelId: 'CDOCS' };
    expect(await authoriseView(POLICY, docsRun, elsewhere('UCAROL'), groups().lookup)).toEqual({ allowed: true });
    expect(await authoriseView(POLICY, docsRun, { userId: 'UANYONE', channelId: 'CDOCS' }, groups().lookup)).toEqual({ allowed: true });
    expect(reason(await authoriseView(POLICY, docsRun, elsewhere('UANYONE'), groups().lookup))).toContain('not the requester');
  });

  it('fails closed when a group lookup it needs fails', async () => {
    const failing: Groups = {
      isGroup: (id) => id.startsWith('S'),
      members: async () => {
        throw new Error('usergroups.users.list: ratelimited');
      },
    };
    await expect(authoriseView(POLICY, shopRun, elsewhere('UMALLORY'), failing)).rejects.toThrow('ratelimited');
    // The requester and the run's channel need no lookup, so they still see the run.
    expect(await authoriseView(POLICY, shopRun, elsewhere('UALICE'), failing)).toEqual({ allowed: true });
  });
});

describe('visibleRuns', () => {
  const run = (id: string, repo: string, requester: string, channel: string) => ({ id, repo, requester: { userId: requester }, chat: { channel } });
  const runs = [
    run('sg-00000001', 'acme/shop', 'UALICE', 'CSHOP'),
    run('sg-00000002', 'acme/docs', 'UCAROL', 'CDOCS'),
    run('sg-00000003', 'acme/docs', 'UDAVE', 'CRANDOM'),
    run('sg-00000004', 'acme/infra', 'UDAVE', 'CINFRA'),
  ];
  const ids = (list: ReadonlyArray<{ id: string }>) => list.map((r) => r.id);

  it('keeps, in order, only the runs the viewer may see', async () => {
    expect(ids(await visibleRuns(POLICY, runs, { userId: 'UCAROL', channelId: 'CRANDOM' }, groups().lookup))).toEqual(['sg-00000001', 'sg-00000002', 'sg-00000003']);
    expect(ids(await visibleRuns(POLICY, runs, { userId: 'UMALLORY', channelId: 'CELSEWHERE' }, groups().lookup))).toEqual([]);
    expect(ids(await visibleRuns(POLICY, runs, { userId: 'UAPPROVER', channelId: 'CINFRA' }, groups().lookup))).toEqual(['sg-00000001', 'sg-00000004']);
  });
});

describe('unknownRunReason', () => {
  it('reads the same whether the run is missing or hidden, and names the status command', () => {
    expect(plainText(unknownRunReason('sg-00000000', '/deploy'))).toBe('There is no run sg-00000000 that you can see. `/deploy status` lists the active runs you can see.');
  });
});

describe('activeRunLimitReason', () => {
  it('names the requester’s active runs, the per-user limit and its policy key, and how to make room', () => {
    const text = plainText(activeRunLimitReason({ kind: 'per-user', limit: 3, activeRunIds: ['sg-00000001', 'sg-00000002', 'sg-00000003'] }, '/ship'));
    expect(text).toBe(
      'You already have 3 active runs (sg-00000001, sg-00000002, sg-00000003); the limit is 3 (policy limits.activeRunsPerUser). Cancel one with `/ship cancel <run-id>` or wait until one ends.',
    );
  });

  it('names the requester, not the asker, when someone else (an approver retrying) meets the requester’s limit, without listing their runs', () => {
    const text = plainText(
      activeRunLimitReason({ kind: 'per-user', limit: 1, activeRunIds: ['sg-00000001'], for: 'UALICE' }, '/ship'),
    );
    expect(text).toMatch(/^The requester \(.*UALICE.*\) already has 1 active run; the limit is 1 \(policy limits\.activeRunsPerUser\)\./);
    expect(text).not.toContain('sg-00000001');
    expect(text).not.toContain('You already');
  });

  it('lists at most ten run ids and says how many more there are', () => {
    const activeRunIds = Array.from({ length: 12 }, (_, i) => `sg-${String(i).padStart(8, '0')}`);
    const text = plainText(activeRunLimitReason({ kind: 'per-user', limit: 2, activeRunIds }, '/ship'));
    expect(text).toContain('You already have 12 active runs (sg-00000000,');
    expect(text).toContain('sg-00000009, and 2 more)');
    expect(text).not.toContain('sg-00000010');
    expect(text).toContain('the limit is 2');
  });

  it('gives the global count and limit, without naming anyone else’s runs', () => {
    const text = plainText(activeRunLimitReason({ kind: 'global', limit: 50, active: 50 }, '/ship'));
    expect(text).toBe('shipgate already has 50 active runs; the limit is 50 (policy limits.activeRuns). Try again once some have ended, or ask your platform team to raise the limit.');
  });
});
