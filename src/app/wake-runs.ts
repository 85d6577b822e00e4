import { wakeKeysFor } from '../../workers/gates/stage/wake-keys.js';
import { currentGate, isWakeable, type GateKind } from '../domain/run.js';
import type { GitHubEvent } from '../http/github-webhooks.js';
import type { Logger } from '../log.js';
import type { KubernetesChange, KubernetesPort } from '../ports/kubernetes.js';
import type { Queues } from '../queue/queues.js';
import type { Pokes } from '../store/pokes.js';
import type { RunIndex, RunIndexKey } from '../store/run-index.js';
import type { RunStore } from '../store/run-store.js';

/** The gates that follow Kargo and Argo CD objects: only runs at one of them are woken by cluster events. */
const DEPLOY_GATES: ReadonlySet<GateKind> = new Set<GateKind>(['freight', 'stage', 'argocd']);

export interface WakeRunsDeps {
  index: Pick<RunIndex, 'find'>;
  store: Pick<RunStore, 'get'>;
  pokes: Pick<Pokes, 'poke'>;
  queues: Pick<Queues, 'wakeRun'>;
  log: Logger;
}

/**
 * Makes every run linked to one of `keys` look at its gate now instead of at its next poll. The
 * caller's event decides nothing: the gate re-reads the outside system's state when it runs.
 */
async function wakeLinkedRuns(
  deps: WakeRunsDeps,
  keys: readonly RunIndexKey[],
  about: Record<string, unknown>,
  atGate: (kind: GateKind) => boolean = () => true,
): Promise<void> {
  const runIds = new Set((await Promise.all(keys.map((key) => deps.index.find(key)))).flat());
  for (const runId of runIds) {
    if (await wakeRun(deps, runId, atGate)) deps.log.debug({ runId, ...about }, 'an event woke the run');
  }
}

/**
 * Makes one run at a gate look now (false when it is not at one: queued, stopping, ended, or at a
 * gate `atGate` excludes). Also what the promotion queues call for the run that became their head.
 */
export async function wakeRun(
  deps: Pick<WakeRunsDeps, 'store' | 'pokes' | 'queues'>,
  runId: string,
  atGate: (kind: GateKind) => boolean = () => true,
): Promise<boolean> {
  const before = await deps.store.get(runId);
  if (before === undefined || !isWakeable(before)) return false;
  const gate = currentGate(before);
  if (gate === undefined || !atGate(gate.kind)) return false;
  // Poke first, then read: a gate being evaluated right now takes the poke when it ends pending
  // (the run processor stores `waiting`, then takes pokes). Read first and poke after, and a gate
  // that ended pending in between would miss both the poke and the wake, and sleep until its poll.
  await deps.pokes.poke(runId);
  const run = await deps.store.get(runId);
  if (run?.state === 'waiting') await deps.queues.wakeRun(runId, run.jobSeq);
  return true;
}

/** A GitHub event about a commit or PR a run watches (SPEC §5). */
export function wakeRunsOnGitHubEvent(deps: WakeRunsDeps): (event: GitHubEvent) => Promise<void> {
  return async (event) => {
    const keys: RunIndexKey[] = [{ kind: 'commit', repo: event.repo, sha: event.headSha }];
    if (event.kind === 'pull_request') keys.push({ kind: 'pull', repo: event.repo, number: event.number });
    await wakeLinkedRuns(deps, keys, { event: event.kind, deliveryId: event.deliveryId });
  };
}

/**
 * An informer event about a Kargo or Argo CD object a deploy gate follows (SPEC §5): the runs linked
 * to it (workers/gates/stage/wake-keys.ts) look now. Subscribed once per worker, for every informer.
 */
export function wakeRunsOnKubernetesChange(
  deps: WakeRunsDeps & { kubernetes: Pick<KubernetesPort, 'get'> },
): (change: KubernetesChange) => void {
  return (change) => {
    const object = change.type === 'deleted' ? undefined : deps.kubernetes.get(change, change.name);
    const keys = wakeKeysFor(change, object);
    if (keys.length === 0) return;
    // Informer callbacks are synchronous; a failed wake costs only latency (the gate polls as a fallback).
    // Argo CD rewrites Applications on every reconcile: only runs at a deploy gate are worth a look.
    wakeLinkedRuns(deps, keys, { kind: change.kind, namespace: change.namespace, name: change.name, type: change.type }, (kind) => DEPLOY_GATES.has(kind)).catch(
      (error: unknown) => deps.log.warn({ err: error, kind: change.kind, name: change.name }, 'waking runs on a kubernetes change failed'),
    );
  };
}
