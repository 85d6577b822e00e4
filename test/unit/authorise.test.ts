import { describe, expect, it } from 'vitest';
import { parsePolicy } from '../../src/config/config.js';
import {
  approversFor,
  authoriseCancel,
  authoriseRunRequest,
  type Decision,
  type GroupMembers,
} from '../../src/domain/authorise.js';

/** SPEC §2 and §6: who may request a run and who may cancel one, with user groups (S…) resolved through the chat. */

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

/** A group lookup that records which groups it was asked about. */
function groups(): { lookup: GroupMembers; asked: string[] } {
  const asked: string[] = [];
  return {
    asked,
    lookup: async (groupId) => {
      asked.push(groupId);
      return GROUPS[groupId] ?? [];
    },
  };
}

function reason(decision: Decision): string {
  if (decision.allowed) throw new Error('expected a refusal, got allowed');
  return decision.reason;
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
    expect(text).toContain('can only be requested in <#CSHOP>, <#CRELEASE>');
  });

  it('checks the channel before the requester, so an allowed person in the wrong channel learns where to go', async () => {
    const text = reason(
      await authoriseRunRequest(
        POLICY,
        { repo: 'acme/shop', channelId: 'CRANDOM', userId: 'UMALLORY' },
        groups().lookup,
      ),
    );
    expect(text).toContain('<#CSHOP>');
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
    const failing: GroupMembers = async () => {
      throw new Error('usergroups.users.list: ratelimited');
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
    expect(text).toContain('Only the requester (<@UALICE>) or an approver of acme/shop can cancel this run');
  });

  it('lets only the requester cancel on a repository without approvers', async () => {
    const docsRun = { repo: 'acme/docs', requesterId: 'UCAROL' };
    expect(await authoriseCancel(POLICY, docsRun, 'UCAROL', groups().lookup)).toEqual({ allowed: true });
    expect(reason(await authoriseCancel(POLICY, docsRun, 'UAPPROVER', groups().lookup))).toContain(
      'Only the requester (<@UCAROL>)',
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
