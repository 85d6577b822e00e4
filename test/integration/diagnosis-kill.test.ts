import { describe, expect, it } from 'vitest';
import { startAnthropicServer, type ModelRequest } from '../helpers/anthropic-server.js';
import { eventually } from '../helpers/eventually.js';
import {
  createGateWorld,
  eventsOf,
  modelAsked,
  processScope,
  saysDone,
  seedMergedRun,
  sigkill,
} from '../helpers/kill-world.js';
import { GITHUB_TOKEN, removeRepository, seedRepository, startShopGitHub, WEBHOOK_SECRET } from '../helpers/world.js';

/**
 * Issue 14: SIGKILL mid-diagnosis. A red deploy (dev's app Degraded) sends the run back to the
 * agent, which first runs the diagnosis conversation, checkpointed per turn like the agent's. The
 * scripted model holds its answer to the diagnosis's second request; the worker is SIGKILLed while
 * it waits, and the next process continues the stored diagnosis: its first model request is the one
 * the dead worker was waiting on, no earlier diagnosis turn is sent again, the read is not repeated,
 * and the diagnosis is made and audited once before the fix begins. A real process against the fake
 * Slack, GitHub (a bare repository behind it), the scripted model, and the local Kubernetes API
 * server over TLS with the scripted Kargo/Argo CD controller (the diagnosis's kubernetes-mcp-server
 * child reads it); the run is seeded with its Git half done.
 */

const POLICY = `
repos:
  acme/shop:
    checks: { test: test -f src/health.js }
    pipeline: shop
pipelines:
  shop:
    kargo: { project: shop, warehouse: shop }
    stages:
      - { name: dev, kargoStage: dev, argocdApps: [shop-dev] }
budgets: { maxAgentTurns: 20, maxDeployIterations: 1, maxRunMinutes: 60 }
`;
const MERGE_SHA = 'f00dfacef00dfacef00dfacef00dfacef00dface';
const DIAGNOSIS =
  'Looked at: the shop-dev Application. Found: Degraded after the sync. Likely cause: the new revision. Fix: revert it.';

const scope = processScope();

function systemText(request: ModelRequest | undefined): string {
  const system = request?.params.system;
  if (system === undefined) return '';
  return typeof system === 'string' ? system : system.map((block) => block.text).join('\n');
}
const isDiagnosis = (request: ModelRequest | undefined) => systemText(request).includes('diagnosis agent');
const messagesOf = (request: ModelRequest | undefined) => JSON.stringify(request?.params.messages ?? []);
const readStatus = (id: string) => ({
  content: [{ type: 'tool_use' as const, id, name: 'deploy_status', input: { kind: 'Application' } }],
});

describe('SIGKILL mid-diagnosis', { timeout: 300_000 }, () => {
  it('the next process continues the stored diagnosis: the held request first, no earlier turn resent, one diagnosis', async () => {
    const model = await startAnthropicServer({ apiKey: 'sk-ant-scripted' });
    scope.defer(() => expect(model.unexpected).toEqual([]));
    scope.defer(() => model.close());
    // The diagnosis reads once, then its second answer is held: the kill lands while the bot waits for
    // it. The resumed request gets the conclusion; the fix's first request is held until the end.
    model.script(readStatus('d1'), { ...readStatus('d2'), delayMs: 600_000 }, saysDone(DIAGNOSIS), {
      ...saysDone('Nothing to change.'),
      delayMs: 600_000,
    });
    const bare = seedRepository({ 'src/server.js': 'module.exports = {};\n' });
    scope.defer(() => removeRepository(bare));
    const github = await startShopGitHub(bare);
    scope.defer(() => expect(github.unexpected).toEqual([]));
    scope.defer(() => github.close());

    const world = await createGateWorld(scope, {
      name: 'diagnosis-kill',
      policy: POLICY,
      stages: [{ name: 'dev', apps: ['shop-dev'] }],
      // Synced at the merge's revision, then Degraded: a red dev gate, so a fix forward and its diagnosis.
      scripts: { dev: { app: 'degraded' } },
      // TLS and the built-in kinds: the diagnosis's kubernetes-mcp-server speaks only HTTPS with a token.
      kubernetes: { tls: true, builtins: true },
      env: {
        GITHUB_API_URL: github.apiUrl,
        GITHUB_TOKEN,
        GITHUB_WEBHOOK_SECRET: WEBHOOK_SECRET,
        ANTHROPIC_BASE_URL: model.baseUrl,
        ANTHROPIC_API_KEY: 'sk-ant-scripted',
      },
      roles: 'one',
    });
    const redis = scope.redis();
    const { runId } = await seedMergedRun(world, 'sg-diagkil0', MERGE_SHA, 1);
    await world.start();

    // The dev gate goes red, the run goes back to the agent, the diagnosis reads, and waits on its second answer.
    await modelAsked(model, 2, 'the held second diagnosis request', 120_000);
    const stored = `${world.prefix}:agent-conversation:${runId}:diagnosis`;
    // The first turn was stored before the second request went out.
    expect(await redis.exists(stored)).toBe(1);
    await sigkill(world.process('worker'));
    expect(model.requests).toHaveLength(2);

    // No hand-back happened: the next process gets the job through the stalled check.
    await world.restart('worker');
    await modelAsked(model, 4, 'the resumed diagnosis and the fix after it', 180_000);

    const requests = model.requests.filter((request): request is ModelRequest => request.params !== undefined);
    expect(requests).toHaveLength(model.requests.length);
    const [opening, held, resumed, fix, ...rest] = requests;
    expect(rest).toEqual([]);
    expect(isDiagnosis(opening)).toBe(true);
    expect(opening?.params.messages).toHaveLength(1);
    expect(isDiagnosis(held)).toBe(true);
    // The next process's first request is the one the dead worker waited on: the opening, the read and its result.
    expect(isDiagnosis(resumed)).toBe(true);
    expect(messagesOf(resumed)).toBe(messagesOf(held));
    expect(resumed?.params.messages).toHaveLength(3);
    // Then the fix, with the diagnosis in its prompt: the diagnosis was not begun again.
    expect(isDiagnosis(fix)).toBe(false);
    expect(messagesOf(fix)).toContain('Found: Degraded after the sync');

    // Made once and audited once; the read before the kill is evidence once, not repeated after it.
    const events = await eventually(async () => {
      const all = await eventsOf(world, runId);
      return all.some((e) => e.type === 'diagnosis.made') ? all : undefined;
    }, 'the diagnosis audited');
    expect(events.filter((e) => e.type === 'diagnosis.made').map((e) => e.data['diagnosis'])).toEqual([DIAGNOSIS]);
    expect(events.filter((e) => e.type === 'diagnosis.tool_call').map((e) => e.data['tool'])).toEqual([
      'deploy_status',
    ]);
    // Made: nothing of the diagnosis is left to resume.
    expect(await redis.exists(stored)).toBe(0);
  });
});
