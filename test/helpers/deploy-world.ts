import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import type { Run } from '../../src/domain/run.js';
import { eventually } from './eventually.js';
import { createShopGitOps, type GitOpsController, type GitOpsStage, type StageScript } from './gitops-controller.js';
import { startKubernetesServer, type KubernetesServer } from './kubernetes-server.js';
import type { TestChat } from './bot.js';
import { startWorld, type World } from './world.js';

/**
 * A run's whole world including the deploy half: the loopback world of `startWorld` (Slack, GitHub,
 * Anthropic, git) plus the local Kubernetes API server with the scripted Kargo and Argo CD
 * controller (over TLS, with Pods, logs and Events for the diagnosis). Shared by the deploy and
 * approval end-to-end tests.
 */

export const KARGO_URL = 'https://kargo.example.test';
export const ARGOCD_URL = 'https://argocd.example.test';
export const SHOP_FILES = { 'src/server.js': 'module.exports = {};\n' };

export interface DeployWorld {
  w: World;
  k8s: KubernetesServer;
  gitops: GitOpsController;
  /** Everything any fake saw that it did not expect; stops everything. */
  stop(): Promise<string[]>;
}

export async function startDeployWorld(options: {
  name: string;
  policy: string;
  scripts?: Record<string, StageScript>;
  stages?: GitOpsStage[];
  env?: Record<string, string>;
  /** Which chat the people use (default Slack). */
  chat?: TestChat;
  /** The scripted controller's pause between transitions (its default: 20 ms). */
  stepDelayMs?: number;
}): Promise<DeployWorld> {
  // TLS and the built-in kinds: the real kubernetes-mcp-server of a red gate's diagnosis speaks only
  // HTTPS with a bearer token, and reads Pods, their logs and Events.
  const k8s = await startKubernetesServer({ tls: true, builtins: true });
  const dir = mkdtempSync(join(tmpdir(), 'shipgate-deploy-'));
  const gitops = createShopGitOps(k8s, {
    scripts: options.scripts ?? {},
    ...(options.stages === undefined ? {} : { stages: options.stages }),
    ...(options.stepDelayMs === undefined ? {} : { stepDelayMs: options.stepDelayMs }),
  });
  gitops.install();
  gitops.start();
  const w = await startWorld({
    name: options.name,
    policy: options.policy,
    files: SHOP_FILES,
    chat: options.chat,
    env: { KUBECONFIG: k8s.writeKubeconfig(dir), KARGO_URL, ARGOCD_URL, ...options.env },
    // Far beyond every wait of the tests: a deploy gate that moves in time was woken by an informer event.
    tuning: { firstPollMs: 100, deployPollMs: 120_000 },
  });
  return {
    w,
    k8s,
    gitops,
    async stop() {
      const problems = await w.stop();
      await gitops.stop();
      const unexpected = k8s.unexpected.map((u) => `kubernetes: ${JSON.stringify(u)}`);
      await k8s.close();
      rmSync(dir, { recursive: true, force: true });
      return [...problems, ...unexpected];
    },
  };
}

export async function runOf(w: World, runId: string): Promise<Run> {
  const run = await w.bot.app.store.get(runId);
  if (run === undefined) throw new Error(`no run ${runId}`);
  return run;
}

function describeRun(run: Run): string {
  return `${run.state} ${run.gates.map((g) => `${g.name}:${g.state}${g.summary === undefined ? '' : `(${g.summary.slice(0, 100)})`}`).join(' ')}`;
}

/** Waits until `check` returns a value for the stored run; a timeout names what the run looked like. */
export async function until<T>(w: World, runId: string, what: string, check: (run: Run) => T | undefined, timeoutMs = 45_000): Promise<T> {
  let seen = '';
  try {
    return await eventually(
      async () => {
        const run = await runOf(w, runId);
        seen = describeRun(run);
        const value = check(run);
        return value === undefined || value === false ? undefined : value;
      },
      what,
      timeoutMs,
    );
  } catch (error) {
    throw new Error(`${error instanceof Error ? error.message : String(error)}; the run was: ${seen}`, { cause: error });
  }
}

/** Drives the run through agent, PR and green CI, merges it as `mergeSha` and waits at the freight gate. */
export async function mergeChange(w: World, runId: string, mergeSha: string, previousCommit?: string): Promise<void> {
  const sha = await until(w, runId, 'a pushed commit under CI', (run) =>
    run.gates.find((g) => g.name === 'ci')?.state === 'running' && run.artifacts.agent?.commitSha !== previousCommit ? run.artifacts.agent?.commitSha : undefined,
  );
  w.github.setCheckRuns('acme/shop', sha, [{ name: 'test', conclusion: 'success' }]);
  const prNumber = await until(w, runId, 'CI passed', (run) => (run.gates.find((g) => g.name === 'ci')?.state === 'passed' ? run.artifacts.pr?.number : undefined));
  w.github.mergePull('acme/shop', prNumber, mergeSha);
  await until(w, runId, 'waiting at freight', (run) => run.gates.find((g) => g.name === 'freight')?.state === 'running');
}

/** The thread replies in CSHOP whose fallback text starts with `prefix`, each as its text plus its blocks. */
export function threadReplies(w: World, prefix: string): string[] {
  return w.bot.slack
    .messages('CSHOP')
    .filter((m) => m.thread_ts !== undefined && m.thread_ts !== m.ts && (m.text ?? '').startsWith(prefix))
    .map((m) => `${m.text ?? ''}\n${JSON.stringify(m.blocks ?? [])}`);
}

const storedEvent = z.object({ type: z.string(), actor: z.string(), data: z.record(z.string(), z.unknown()) });

/** The run's audit events as exported (JSON Lines), parsed. */
export async function auditEvents(w: World, runId: string): Promise<z.infer<typeof storedEvent>[]> {
  return (await w.bot.app.audit.exportRun(runId))
    .trim()
    .split('\n')
    .map((line) => storedEvent.parse(JSON.parse(line)));
}
