import { z } from 'zod';
import { afterEach, describe, expect, it } from 'vitest';
import { READ_TOOL_NAMES } from '../../src/adapters/kubernetes-mcp/read-allow-list.js';
import { toolResultsOf, type ModelRequest } from '../helpers/anthropic-server.js';
import { SIGNING_SECRET } from '../helpers/bot.js';
import { ARGOCD_URL, auditEvents, KARGO_URL, mergeChange, runOf, startDeployWorld, threadReplies, until, type DeployWorld } from '../helpers/deploy-world.js';
import { eventually } from '../helpers/eventually.js';
import type { GitOpsController, GitOpsStage, StageScript } from '../helpers/gitops-controller.js';
import type { KubernetesServer } from '../helpers/kubernetes-server.js';
import { startPrometheusServer, type PrometheusServer } from '../helpers/prometheus-server.js';
import { sendSlashCommand } from '../helpers/slack-requests.js';
import type { World } from '../helpers/world.js';

/**
 * Issue 9, end to end through Slack: after the merge, Kargo and Argo CD decide. The real client-node
 * informers watch the local Kubernetes API server (objects validated against the real CRDs) while a
 * scripted Kargo/Argo CD controller produces Freight, auto-promotes and syncs; the deploy gates follow
 * through informer events (the fallback poll is set far beyond the tests' waits, so only events can
 * move a run in time).
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
      - { name: staging, kargoStage: staging, argocdApps: [shop-staging] }
budgets: { maxAgentTurns: 20, maxCiIterations: 3, maxDeployIterations: 1, maxTokensPerRun: 2000000, maxCostUsdPerRun: 10, maxRunMinutes: 60 }
`;
const MERGE_SHA = 'f00dfacef00dfacef00dfacef00dfacef00dface';
const FIX_MERGE_SHA = 'c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00';

let deployWorld: DeployWorld | undefined;
let prometheus: PrometheusServer | undefined;
afterEach(async () => {
  const problems = (await deployWorld?.stop()) ?? [];
  deployWorld = undefined;
  const unexpected = prometheus?.unexpected ?? [];
  await prometheus?.close();
  prometheus = undefined;
  expect(problems).toEqual([]);
  expect(unexpected).toEqual([]);
});

const create = (id: string, text: string) => ({
  content: [{ type: 'tool_use' as const, id, name: 'str_replace_based_edit_tool', input: { command: 'create', path: '/repo/src/health.js', file_text: text } }],
});
const done = (text: string) => ({ content: [{ type: 'text' as const, text }] });

function systemText(request: ModelRequest): string {
  const system = request.params.system;
  if (system === undefined) return '';
  return typeof system === 'string' ? system : system.map((block) => (typeof block.text === 'string' ? block.text : '')).join('\n');
}

const toolNames = (request: ModelRequest): string[] => (request.params.tools ?? []).map((tool) => tool.name);
const READ_TOOLS = new Set([...READ_TOOL_NAMES, 'deploy_status', 'golden_signal']);

/** A scripted diagnosis that reads nothing and concludes at once (for tests about other things). */
const quickDiagnosis = (request: ModelRequest) => {
  if (!systemText(request).includes('diagnosis agent')) throw new Error('expected the diagnosis conversation first');
  return done('Looked at: nothing. Found: the report says it all.');
};

function firstUserText(request: ModelRequest): string {
  const first = request.params.messages[0];
  if (first === undefined) return '';
  return typeof first.content === 'string' ? first.content : first.content.map((b) => ('text' in b && typeof b.text === 'string' ? b.text : '')).join('\n');
}

async function start(
  name: string,
  scripts: Record<string, StageScript> = {},
  policy = POLICY,
  env: Record<string, string> = {},
  stages?: GitOpsStage[],
): Promise<{ w: World; k8s: KubernetesServer; gitops: GitOpsController }> {
  const d = await startDeployWorld({ name, policy, scripts, env, ...(stages === undefined ? {} : { stages }) });
  deployWorld = d;
  return d;
}

describe('the deploy gates', { timeout: 150_000 }, () => {
  it('auto-promoted dev and staging pass: the Freight, each stage and verification are replied once, with Kargo and Argo CD links', async () => {
    const { w, k8s, gitops } = await start('deploy-pass');
    w.model.script(create('c1', "module.exports = () => 'ok';\n"), done('Added src/health.js.'));
    const runId = await w.ship('acme/shop add a health module');
    await mergeChange(w, runId, MERGE_SHA);

    const freight = gitops.produceFreight(MERGE_SHA, { alias: 'mellow-otter' });
    await until(w, runId, 'the run done', (run) => run.state === 'done');
    const run = await runOf(w, runId);
    expect(run.artifacts.freight).toMatchObject({ name: freight, alias: 'mellow-otter' });
    expect(run.gates.map((g) => `${g.name}:${g.state}`)).toEqual(['agent:passed', 'pr:passed', 'ci:passed', 'merge:passed', 'freight:passed', 'stage:dev:passed', 'stage:staging:passed']);
    expect(run.links.kargo).toBe(`${KARGO_URL}/project/shop`);
    // Each stage recorded the Promotion Kargo auto-created (named by Kargo, found by stage and Freight).
    for (const stage of ['dev', 'staging']) {
      const promotions = gitops.promotionsFor(stage).map((p) => z.object({ metadata: z.object({ name: z.string() }) }).parse(p).metadata.name);
      expect(promotions).toHaveLength(1);
      expect(run.artifacts.deploy?.stages?.[stage]?.promotion).toBe(promotions[0]);
    }

    await w.bot.slack.waitFor((s) => s.messages('CSHOP').some((m) => (m.text ?? '').startsWith('stage:staging ')), 5_000, 'the staging reply');
    const [freightReply, ...rest] = threadReplies(w, 'freight ');
    expect(rest).toEqual([]);
    expect(freightReply).toContain('mellow-otter');
    expect(freightReply).toContain(`${KARGO_URL}/project/shop/freight/${freight}`);
    const dev = threadReplies(w, 'stage:dev ');
    expect(dev).toHaveLength(1);
    expect(dev[0]).toContain('Succeeded');
    expect(dev[0]).toContain(gitops.gitopsCommit('dev', freight).slice(0, 12));
    expect(dev[0]).toContain(`${ARGOCD_URL}/applications/argocd/shop-dev`);
    const staging = threadReplies(w, 'stage:staging ');
    expect(staging).toHaveLength(1);
    expect(staging[0]).toContain('verification Successful');

    // One shared informer per kind: one LIST and one WATCH each, however many looks the gates took.
    for (const kind of ['Freight', 'Stage', 'Promotion', 'Application', 'AnalysisRun']) {
      expect(k8s.count('list', kind), kind).toBe(1);
      expect(k8s.count('watch', kind), kind).toBe(1);
    }
    expect(k8s.count('create', 'Promotion')).toBe(0);
    const types = (await auditEvents(w, runId)).map((e) => e.type);
    expect(types.filter((t) => t === 'freight.found')).toHaveLength(1);
    expect(types.filter((t) => t === 'stage.verdict')).toHaveLength(2);
  });

  for (const [name, script, expected] of [
    ['a Healthy app still at the old revision', { app: 'old-revision' }, /is at .*, not /],
    ['a sync operation that keeps running', { app: 'operation-running' }, /operation|Running/],
    ['a ComparisonError', { app: 'comparison-error' }, /ComparisonError/],
  ] as const) {
    it(`${name} never passes the stage gate`, async () => {
      const { w, gitops } = await start(`deploy-wait-${script.app}`, { dev: script });
      w.model.script(create('c1', "module.exports = () => 'ok';\n"), done('Added src/health.js.'));
      const runId = await w.ship('acme/shop add a health module');
      await mergeChange(w, runId, MERGE_SHA);
      gitops.produceFreight(MERGE_SHA);
      await gitops.settled();
      const summary = await until(w, runId, 'stage:dev waiting with the reason', (run) => {
        const gate = run.gates.find((g) => g.name === 'stage:dev');
        return gate?.state === 'running' && expected.test(gate.summary ?? '') ? gate.summary : undefined;
      });
      expect(summary).toMatch(expected);
      // Settled, and still not passed after more looks: nothing reports done that Argo CD would not call done.
      await new Promise((r) => setTimeout(r, 1_000));
      const run = await runOf(w, runId);
      expect(run.state).toBe('waiting');
      expect(run.gates.find((g) => g.name === 'stage:dev')?.state).toBe('running');
      expect(threadReplies(w, 'stage:dev ')).toEqual([]);
    });
  }

  it('a Degraded app is one red reply with its unhealthy resource, the agent fixes forward on a new branch and PR, and the fix passes every gate again', async () => {
    const { w, gitops, k8s } = await start('deploy-fix-forward', { dev: { app: 'degraded' } });
    // The failing workload in the stage's namespace (the Application's destination), as a cluster has it.
    k8s.put({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'shop-web-7c9f', namespace: 'shop-dev', labels: { app: 'shop' } },
      spec: { containers: [{ name: 'app', image: 'ghcr.io/acme/shop:f00dfac' }] },
      status: { phase: 'Running', containerStatuses: [{ name: 'app', restartCount: 3, ready: false, state: { waiting: { reason: 'CrashLoopBackOff' } } }] },
    });
    k8s.setPodLog('shop-dev', 'shop-web-7c9f', 'listening on :8080\nError: Cannot find module ./health-check\n');
    const diagnosisAnswer = 'Looked at: pod shop-web-7c9f logs. Found: "Error: Cannot find module ./health-check". Likely cause: a missing require path. Fix: correct the path.';
    w.model.script(
      create('c1', "module.exports = () => 'ok';\n"),
      done('Added src/health.js.'),
      // The diagnosis comes first: only read tools, the report in its prompt; it reads the pod's log.
      (request) => {
        if (!systemText(request).includes('diagnosis agent')) throw new Error('the fix started before the diagnosis');
        const offered = toolNames(request);
        const unexpected = offered.filter((name) => !READ_TOOLS.has(name));
        if (unexpected.length > 0 || !offered.includes('pods_log') || !offered.includes('deploy_status')) throw new Error(`diagnosis tools: ${offered.join(', ')}`);
        if (!firstUserText(request).includes('exceeded its progress deadline')) throw new Error('the report is missing from the diagnosis prompt');
        return { content: [{ type: 'tool_use' as const, id: 'd1', name: 'pods_log', input: { name: 'shop-web-7c9f' } }] };
      },
      (request) => {
        const [log] = toolResultsOf(request);
        if (log === undefined || log.is_error || !log.content.includes('Cannot find module ./health-check') || !log.content.includes('<cluster_data>'))
          throw new Error(`the pod log did not arrive framed: ${JSON.stringify(log)}`);
        return { content: [{ type: 'tool_use' as const, id: 'd2', name: 'deploy_status', input: { kind: 'Application' } }] };
      },
      (request) => {
        const [status] = toolResultsOf(request);
        if (status === undefined || status.is_error || !status.content.includes('Degraded')) throw new Error(`deploy_status: ${JSON.stringify(status)}`);
        return done(diagnosisAnswer);
      },
      // The fix: the report and the diagnosis in its prompt, the diagnosis tools still at hand.
      (request) => {
        const text = firstUserText(request);
        if (!text.includes('exceeded its progress deadline')) throw new Error(`the deploy failure is missing from: ${text}`);
        if (!text.includes('<diagnosis>') || !text.includes('Cannot find module ./health-check')) throw new Error(`the diagnosis is missing from: ${text}`);
        if (!toolNames(request).includes('pods_log') || !toolNames(request).includes('str_replace_based_edit_tool')) throw new Error('the fix lacks its tools');
        return create('c2', "module.exports = () => 'ok'; // fixed\n");
      },
      done('Fixed the deployment.'),
    );
    const runId = await w.ship('acme/shop add a health module');
    await mergeChange(w, runId, MERGE_SHA);
    // The merged change's commit, read now: once the fix forward starts, the agent's record is the fix's.
    const firstCommit = (await runOf(w, runId)).artifacts.agent?.commitSha;
    const firstBranch = (await runOf(w, runId)).artifacts.agent?.branch;
    gitops.produceFreight(MERGE_SHA);

    // Red: sent back to the agent, which works on a new branch; the old PR stays merged.
    const fixBranch = await until(w, runId, 'a fix-forward branch', (run) => {
      const branch = run.artifacts.agent?.branch;
      return run.artifacts.deploy?.iterations === 1 && branch !== undefined && branch !== firstBranch ? branch : undefined;
    });
    expect(fixBranch).toMatch(/-fix-1-/);
    // The chat outbox posts the red reply on its own schedule, which may come after the fix has begun.
    const red = await eventually(async () => {
      const posted = threadReplies(w, 'stage:dev ');
      return posted.length > 0 ? posted : undefined;
    }, 'the red stage:dev reply');
    expect(red).toHaveLength(1);
    expect(red[0]).toContain('Degraded');
    expect(red[0]).toContain('exceeded its progress deadline');
    expect(red[0]).toContain('fix forward');
    // The diagnosis is one reply, after the red gate's and before the fix's own agent result.
    const diagnosis = await eventually(async () => {
      const posted = threadReplies(w, 'diagnosis of dev');
      return posted.length > 0 ? posted : undefined;
    }, 'the diagnosis reply');
    expect(diagnosis).toHaveLength(1);
    expect(diagnosis[0]).toContain('Cannot find module ./health-check');
    expect(diagnosis[0]).toContain('pods_log name=shop-web-7c9f');
    const thread = w.bot.slack.messages('CSHOP').filter((m) => m.thread_ts !== undefined && m.thread_ts !== m.ts).map((m) => m.text ?? '');
    const at = (prefix: string, from = 0): number => thread.findIndex((text, i) => i >= from && text.startsWith(prefix));
    expect(at('stage:dev ')).toBeGreaterThanOrEqual(0);
    expect(at('diagnosis of dev')).toBeGreaterThan(at('stage:dev '));

    gitops.setScript('dev', { app: 'healthy' });
    await mergeChange(w, runId, FIX_MERGE_SHA, firstCommit);
    expect(w.github.pulls('acme/shop')).toHaveLength(2);
    gitops.produceFreight(FIX_MERGE_SHA);
    await until(w, runId, 'the run done after the fix', (run) => run.state === 'done');
    const run = await runOf(w, runId);
    expect(run.artifacts.merge?.commitSha).toBe(FIX_MERGE_SHA);
    expect(run.artifacts.deploy?.iterations).toBe(1);
    const types = (await auditEvents(w, runId)).map((e) => e.type);
    expect(types.filter((t) => t === 'pr.opened')).toHaveLength(2);
    expect(types.filter((t) => t === 'gate.sent_back')).toHaveLength(1);
    // The diagnosis's reads and its conclusion are evidence; its tokens are the run's.
    const events = await auditEvents(w, runId);
    expect(events.filter((e) => e.type === 'diagnosis.tool_call').map((e) => e.data['tool'])).toEqual(['pods_log', 'deploy_status']);
    expect(events.filter((e) => e.type === 'diagnosis.made').map((e) => e.data['diagnosis'])).toEqual([diagnosisAnswer]);
    expect(run.artifacts.agent?.turns).toBe(7);
    expect(w.model.remaining()).toBe(0);
  });

  it('a failed Promotion ends the run failed once the fixes forward are used up, with the failed step in the reply', async () => {
    const { w, gitops } = await start('deploy-promotion-failed', { dev: { promotion: 'fail' } });
    w.model.script(
      create('c1', "module.exports = () => 'ok';\n"),
      done('Added src/health.js.'),
      quickDiagnosis,
      create('c2', "module.exports = () => 'ok'; // again\n"),
      done('Tried again.'),
    );
    const runId = await w.ship('acme/shop add a health module');
    await mergeChange(w, runId, MERGE_SHA);
    const firstCommit = (await runOf(w, runId)).artifacts.agent?.commitSha;
    gitops.produceFreight(MERGE_SHA);
    await until(w, runId, 'sent back once', (run) => run.artifacts.deploy?.iterations === 1);
    await mergeChange(w, runId, FIX_MERGE_SHA, firstCommit);
    gitops.produceFreight(FIX_MERGE_SHA);
    await until(w, runId, 'the run failed', (run) => run.state === 'failed');
    // The run's state is written before the outbox posts the reply, so wait for the post itself.
    const replies = await eventually(async () => {
      const posted = threadReplies(w, 'stage:dev ');
      return posted.length >= 2 ? posted : undefined;
    }, 'the second stage:dev reply');
    expect(replies).toHaveLength(2);
    expect(replies[1]).toMatch(/git-push/);
    expect(replies[1]).toMatch(/came back|maxDeployIterations/);
  });

  it('two runs into one promote: bot stage: the second waits, its card showing its position, and promotes once the first run ended', async () => {
    const policy = `
repos:
  acme/shop:
    checks: { test: test -f src/health.js }
    pipeline: shop
pipelines:
  shop:
    kargo: { project: shop, warehouse: shop }
    stages:
      - { name: dev, kargoStage: dev, argocdApps: [shop-dev], promote: bot }
budgets: { maxAgentTurns: 20, maxCiIterations: 3, maxDeployIterations: 0, maxTokensPerRun: 2000000, maxCostUsdPerRun: 10, maxRunMinutes: 60 }
`;
    // Only the bot promotes into dev, and the first run's Promotion never finishes (its sync stays Running).
    const { w, gitops } = await start('deploy-promotion-queue', {}, policy, {}, [{ name: 'dev', apps: ['shop-dev'], autoPromote: false, script: { app: 'operation-running' } }]);

    w.model.script(create('c1', "module.exports = () => 'ok';\n"), done('Added src/health.js.'));
    const first = await w.ship('acme/shop add a health module');
    await mergeChange(w, first, MERGE_SHA);
    gitops.produceFreight(MERGE_SHA);
    await until(w, first, 'the first run promoting', (run) => run.artifacts.deploy?.stages?.dev?.promotion);

    w.model.script(create('c2', "module.exports = () => 'ok'; // two\n"), done('Added src/health.js too.'));
    const second = await w.ship('acme/shop add another health module');
    await mergeChange(w, second, FIX_MERGE_SHA);
    gitops.produceFreight(FIX_MERGE_SHA);
    const queued = `queued for promotion into dev: position 2 of 2 (behind ${first})`;
    await until(w, second, 'the second run queued', (run) => run.activity === queued);
    // The card says so (the outbox updates it after the state is written: wait for the update itself).
    const card = (await runOf(w, second)).chat.card;
    await eventually(async () => w.bot.slack.messages('CSHOP').some((m) => m.ts === card && JSON.stringify(m.blocks ?? []).includes(`Now: ${queued}`)), 'the second card showing its position');
    expect(gitops.promotionsFor('dev').map((p) => JSON.stringify(p))).toEqual([expect.stringContaining(first) as unknown]);

    // The first run ends (cancelled): it leaves the queue, which wakes the second; that one creates its own Promotion.
    const ack = await sendSlashCommand(w.bot.eventsUrl, SIGNING_SECRET, { text: `cancel ${first}`, user_id: 'UALICE', channel_id: 'CSHOP' });
    expect(ack.status).toBe(200);
    await until(w, first, 'the first run cancelled', (run) => run.state === 'cancelled');
    await until(w, second, 'the second run promoting', (run) => run.artifacts.deploy?.stages?.dev?.promotion !== undefined && run.activity !== queued);
    const labels = gitops.promotionsFor('dev').map((p) => z.object({ metadata: z.object({ labels: z.record(z.string(), z.string()) }) }).parse(p).metadata.labels['shipgate.io/run']);
    expect(labels).toEqual([first, second]);
    expect((await auditEvents(w, second)).filter((e) => e.type === 'promotion.created')).toHaveLength(1);
  });

  it('a watch that expires (410) and a dropped watch mid-run lose nothing: the run still reaches done', async () => {
    // A slower controller, so that stage:dev is still running when the test looks for it and drops the
    // watches (at 20 ms a step the run once passed the whole stage between two looks).
    const d = await startDeployWorld({ name: 'deploy-watch-trouble', policy: POLICY, stepDelayMs: 300 });
    deployWorld = d;
    const { w, k8s, gitops } = d;
    w.model.script(create('c1', "module.exports = () => 'ok';\n"), done('Added src/health.js.'));
    const runId = await w.ship('acme/shop add a health module');
    await mergeChange(w, runId, MERGE_SHA);
    k8s.expireWatches();
    gitops.produceFreight(MERGE_SHA);
    await until(w, runId, 'at stage:dev', (run) => run.gates.find((g) => g.name === 'stage:dev')?.state === 'running');
    k8s.dropWatches();
    await until(w, runId, 'the run done', (run) => run.state === 'done', 60_000);
    // The informers recovered by listing again, not by polling: a handful of LISTs, not one per look.
    for (const kind of ['Freight', 'Stage', 'Promotion', 'Application']) expect(k8s.count('list', kind), kind).toBeLessThanOrEqual(4);
  });

  it('an Argo-only pipeline ends done when its application is Synced and Healthy at the merge commit, not before', async () => {
    const policy = POLICY.replace('pipeline: shop', 'pipeline: web').replace(/pipelines:[\s\S]*?budgets:/, 'pipelines:\n  web:\n    argocdApps: [shop-web]\nbudgets:');
    const { w, k8s } = await start('deploy-argo-only', {}, policy);
    const app = (revision: string, health: string, reconciled: boolean) => ({
      apiVersion: 'argoproj.io/v1alpha1',
      kind: 'Application',
      metadata: { name: 'shop-web', namespace: 'argocd' },
      spec: { project: 'default', destination: { server: 'https://kubernetes.default.svc', namespace: 'web' }, source: { repoURL: 'git@github.com:acme/shop.git', path: 'deploy', targetRevision: 'main' } },
      status: {
        sync: { status: 'Synced', revision },
        health: { status: health },
        operationState: {
          operation: { sync: { revision } },
          phase: 'Succeeded',
          startedAt: '2026-12-01T10:00:00Z',
          finishedAt: '2026-12-01T10:00:05Z',
          syncResult: { revision },
        },
        reconciledAt: reconciled ? '2026-12-01T10:00:06Z' : '2026-12-01T10:00:01Z',
      },
    });
    k8s.put(app('1'.repeat(40), 'Healthy', true));
    w.model.script(create('c1', "module.exports = () => 'ok';\n"), done('Added src/health.js.'));
    const runId = await w.ship('acme/shop add a health module');
    const sha = await until(w, runId, 'a pushed commit under CI', (run) => (run.gates.find((g) => g.name === 'ci')?.state === 'running' ? run.artifacts.agent?.commitSha : undefined));
    w.github.setCheckRuns('acme/shop', sha, [{ name: 'test', conclusion: 'success' }]);
    const prNumber = await until(w, runId, 'CI passed', (run) => (run.gates.find((g) => g.name === 'ci')?.state === 'passed' ? run.artifacts.pr?.number : undefined));
    w.github.mergePull('acme/shop', prNumber, MERGE_SHA);
    // Healthy, but at the old revision: waits.
    await until(w, runId, 'argocd waiting on the old revision', (run) => /not f00dfacef00d/.test(run.gates.find((g) => g.name === 'argocd')?.summary ?? ''));
    // At the merge commit but not reconciled since the sync: still waits.
    k8s.put(app(MERGE_SHA, 'Healthy', false));
    await until(w, runId, 'argocd waiting for the reconcile', (run) => /not reconciled/.test(run.gates.find((g) => g.name === 'argocd')?.summary ?? ''));
    k8s.put(app(MERGE_SHA, 'Healthy', true));
    await until(w, runId, 'the run done', (run) => run.state === 'done');
    const run = await runOf(w, runId);
    expect(run.gates.map((g) => g.name)).toEqual(['agent', 'pr', 'ci', 'merge', 'argocd']);
    expect(run.links.argocd).toBe(`${ARGOCD_URL}/applications/argocd/shop-web`);
  });

  const NO_FIXES = POLICY.replace('maxDeployIterations: 1', 'maxDeployIterations: 0');
  const ERROR_QUERY = 'sum(rate(http_requests_total{app="shop",code=~"5.."}[5m])) / sum(rate(http_requests_total{app="shop"}[5m]))';

  for (const [id, name, scripts, policy, expected] of [
    ['missing', 'a Missing app', { dev: { app: 'missing' } }, NO_FIXES, ['stage:dev ', /Missing/]],
    ['verification', 'a failed verification, with the AnalysisRun\'s metrics,', { staging: { verification: 'failed' } }, NO_FIXES, ['stage:staging ', /Verification Failed[\s\S]*AnalysisRun[\s\S]*Metrics:/]],
  ] as const) {
    it(`${name} is one red reply, and with fixing forward off the run ends failed`, async () => {
      const { w, gitops } = await start(`deploy-red-${id}`, scripts, policy);
      w.model.script(create('c1', "module.exports = () => 'ok';\n"), done('Added src/health.js.'));
      const runId = await w.ship('acme/shop add a health module');
      await mergeChange(w, runId, MERGE_SHA);
      gitops.produceFreight(MERGE_SHA);
      await until(w, runId, 'the run failed', (run) => run.state === 'failed');
      await w.bot.slack.waitFor((s) => s.messages('CSHOP').some((m) => (m.text ?? '').startsWith(expected[0])), 5_000, 'the red reply');
      const replies = threadReplies(w, expected[0]);
      expect(replies).toHaveLength(1);
      expect(replies[0]).toMatch(expected[1]);
      expect(replies[0]).toContain('maxDeployIterations = 0');
    });
  }

  it('a golden signal over its threshold after staging verified is a red gate with the query and its value', async () => {
    const prom = await startPrometheusServer();
    prometheus = prom;
    prom.answer(ERROR_QUERY, 0.07);
    const policy = NO_FIXES.replace(
      '- { name: staging, kargoStage: staging, argocdApps: [shop-staging] }',
      `- { name: staging, kargoStage: staging, argocdApps: [shop-staging], goldenSignals: { errorRatio: { query: ${JSON.stringify(ERROR_QUERY)}, max: 0.01 } } }`,
    );
    const { w, gitops } = await start('deploy-golden-signal', {}, policy, { PROMETHEUS_URL: prom.url });
    w.model.script(create('c1', "module.exports = () => 'ok';\n"), done('Added src/health.js.'));
    const runId = await w.ship('acme/shop add a health module');
    await mergeChange(w, runId, MERGE_SHA);
    gitops.produceFreight(MERGE_SHA);
    await until(w, runId, 'the run failed', (run) => run.state === 'failed');
    await w.bot.slack.waitFor((s) => s.messages('CSHOP').some((m) => (m.text ?? '').startsWith('stage:staging ')), 5_000, 'the red reply');
    const [reply] = threadReplies(w, 'stage:staging ');
    // The thread's markup escapes `>`; the plain text is "0.07 > max 0.01".
    expect(reply).toMatch(/errorRatio over its threshold: 0\.07 &gt; max 0\.01/);
    expect(reply).toContain('http_requests_total');
    // The breach came from Prometheus itself: the query was asked.
    expect(prom.count(ERROR_QUERY)).toBeGreaterThanOrEqual(1);
  });
});
