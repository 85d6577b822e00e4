import { describe, expect, it } from 'vitest';
import { describeSetup, setupText } from '../../src/app/setup-summary.js';
import { loadConfig } from '../../src/config/config.js';

/** The start-up summary (issue 12): each outside system with what configures it, or what would. */

const PIPELINE_POLICY = `
repos:
  acme/shop: { pipeline: shop }
pipelines:
  shop:
    kargo: { project: shop, warehouse: shop }
    stages: [{ name: dev, kargoStage: dev, argocdApps: [shop-dev] }]
`;
const config = (env: Record<string, string>, policy: string) =>
  loadConfig(env, { readFile: () => policy, cwd: '/srv/shipgate' });
const sandbox = { kind: 'bubblewrap', isolated: true };

describe('the start-up summary', () => {
  it('names the missing variables, and with a cluster says whether the red-deploy diagnosis can read it', () => {
    const bare = describeSetup({ config: config({}, 'repos:\n  acme/shop: {}\n'), cluster: true, sandbox });
    expect(bare.find((l) => l.part === 'forge')).toMatchObject({
      state: 'missing',
      detail: expect.stringContaining('GITHUB_TOKEN') as unknown,
    });
    expect(bare.find((l) => l.part === 'model')).toMatchObject({
      state: 'missing',
      detail: expect.stringContaining('ANTHROPIC_API_KEY') as unknown,
    });
    expect(bare.find((l) => l.part === 'cluster')).toMatchObject({ state: 'unused' });

    const withServer = describeSetup({
      config: config({ KUBECONFIG: '/etc/kube/config' }, PIPELINE_POLICY),
      cluster: true,
      sandbox,
      diagnosisServer: { found: true, path: '/x/kubernetes-mcp-server-linux-amd64' },
    });
    expect(withServer.find((l) => l.part === 'cluster')?.detail).toBe(
      'KUBECONFIG /etc/kube/config; red-deploy diagnosis reads the stage namespace through kubernetes-mcp-server (read-only)',
    );
    const without = describeSetup({
      config: config({ KUBECONFIG: '/etc/kube/config' }, PIPELINE_POLICY),
      cluster: true,
      sandbox,
      diagnosisServer: { found: false, reason: 'kubernetes-mcp-server ships no binary for aix/ppc64' },
    });
    expect(setupText(without, undefined)).toContain(
      'red-deploy diagnosis without cluster reads: kubernetes-mcp-server ships no binary for aix/ppc64',
    );
  });

  it('names both chats when Slack and Discord are configured, and whether Discord thread mentions are on', () => {
    const discord = {
      DISCORD_PUBLIC_KEY: 'a'.repeat(64),
      DISCORD_BOT_TOKEN: 'discord-bot-token',
      DISCORD_APPLICATION_ID: '123456789012345678',
      SHIPGATE_AUDIT_KEY: 'k'.repeat(64),
    };
    const policy = 'repos:\n  acme/shop: {}\n';
    const alone = describeSetup({ config: config(discord, policy), cluster: false, sandbox });
    expect(alone.find((l) => l.part === 'chat')?.detail).toContain('thread mentions off: DISCORD_GATEWAY=1 turns them on');
    const both = describeSetup({
      config: config({ ...discord, DISCORD_GATEWAY: '1', SLACK_BOT_TOKEN: 'xoxb-test', SLACK_SIGNING_SECRET: 'signing-secret' }, policy),
      cluster: false,
      sandbox,
    });
    const line = both.find((l) => l.part === 'chat')?.detail ?? '';
    expect(line).toContain('Slack over HTTP');
    expect(line).toContain('and Discord interactions at POST /discord/interactions, with the Gateway for thread mentions (DISCORD_GATEWAY=1)');
  });
});
