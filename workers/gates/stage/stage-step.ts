import { createHash } from 'node:crypto';
import { z } from 'zod';
import { argoApplicationSchema, destinationNamespaceOf, evaluateArgoHealth, type ArgoHealthOutcome } from './argocd-health.js';
import { argocdAppUrl, kargoStageUrl, linkSuffix, pipelineFor, type DeployUiBases } from './deploy-links.js';
import { renderDeployFailure, type DeployFailure } from './deploy-report.js';
import { desiredRevisionsFor, promotionAppNames, promotionDesiredRevisions } from './desired-revisions.js';
import { fixForwardOrFail } from './fix-forward.js';
import { checkGoldenSignals, renderGoldenSignalFailure, type GoldenSignalBreach } from './golden-signals.js';
import { evaluatePromotion, kargoPromotionSchema } from './kargo-promotion.js';
import { ensurePromotion, promotionStillExists, PromotionBusyError, PromotionNotYetAllowedError, RUN_LABEL, STAGE_LABEL } from './promotion-once.js';
import { analysisRunSchema, evaluateVerification, kargoFreightStatusSchema, kargoStageSchema, summariseAnalysisRun } from './verification.js';
import type { PipelinePolicy, Policy, StagePolicy } from '../../../src/config/policy.js';
import { patchArtifacts, runDeadlineMs, type DeployObjectRef, type GateOutcome, type RedDeployGate, type Run, type StageProgress } from '../../../src/domain/run.js';
import { ExternalOutageError, RefusedError } from '../../../src/errors.js';
import { KubernetesRequestError, type KubernetesPort } from '../../../src/ports/kubernetes.js';
import type { MetricsQueryPort } from '../../../src/ports/metrics-query.js';
import type { ApprovalStore } from '../../../src/store/approval-store.js';
import type { Claims } from '../../../src/store/claims.js';
import type { PromotionQueue, QueuePlace } from '../../../src/store/promotion-queue.js';
import { countedApprovers } from '../../../src/domain/approval.js';
import type { RunIndex } from '../../../src/store/run-index.js';
import type { GateContext, GateStep } from '../gate-step.js';
import { pollDelay } from '../poll-delay.js';

export interface StageStepDeps {
  policy: Policy;
  kubernetes: Pick<KubernetesPort, 'list' | 'get' | 'findPromotions' | 'createPromotion'>;
  index: Pick<RunIndex, 'link'>;
  /** Exclusive claims across workers, around the look-then-create of a bot Promotion. */
  claims: Claims;
  /**
   * The per-stage promotion queues (issue 10): where the bot promotes, runs create their Promotions
   * into one Kargo Stage one at a time, in order of arrival.
   */
  promotionQueue: Pick<PromotionQueue, 'join' | 'leave'>;
  ui: DeployUiBases;
  clock: () => Date;
  /** Prometheus (PROMETHEUS_URL), for stages that list golden signals; config refuses such a stage without it. */
  metrics?: MetricsQueryPort | undefined;
  /** How long golden signals may have no data after the stage verified before the gate gives up (default 10 min). */
  goldenSignalsNoDataMs?: number | undefined;
  /**
   * The approval requests: a stage behind an approval is promoted only with an approved request for
   * this very Freight and stage (checked here again, in the code path that creates the Promotion).
   */
  approvals?: Pick<ApprovalStore, 'get'> | undefined;
  /** A link to the run's thread, for the production Promotion's annotations. */
  threadLink?: ((run: Run) => Promise<string | undefined>) | undefined;
  /** Fallback re-check while no informer event woke the run. */
  firstPollMs?: number | undefined;
  maxPollMs?: number | undefined;
}

const promotionRefSchema = z.object({
  metadata: z.object({
    name: z.string(),
    creationTimestamp: z.string().optional(),
    labels: z.record(z.string(), z.string()).optional(),
  }),
  spec: z.object({ stage: z.string(), freight: z.string().optional() }),
  status: z.object({ finishedAt: z.string().optional() }).optional(),
});

const freightStatusOf = z.object({ status: kargoFreightStatusSchema.optional() });

/**
 * How long past the run's deadline (budgets.maxRunMinutes) its place in a promotion queue holds,
 * should its end never be recorded there: the run processor ends a run at its deadline, so a place
 * outliving it by this much belongs to a run nobody is looking after any more.
 */
const QUEUE_LEASE_MARGIN_MS = 30 * 60_000;

/** What the card shows of a run waiting in a promotion queue. */
export function queuedLine(stage: string, place: QueuePlace): string {
  return `queued for promotion into ${stage}: position ${place.position} of ${place.size} (behind ${place.head})`;
}


/**
 * A `stage:<name>` gate (SPEC §1 gate 6, §5): this run's Freight in one Kargo Stage, decided in order —
 *
 * 1. the Promotion of this Freight into the Stage (Kargo's auto-promotion, or created once by the bot
 *    where the stage says `promote: bot`) reached `Succeeded`;
 * 2. every listed Argo CD Application is healthy at the promoted revision by SPEC §5's rule;
 * 3. verification of this Freight in this Stage is `Successful`.
 *
 * Everything is read from the shared informers' caches; informer events wake the run (wake-keys.ts),
 * polling is the fallback. A red result (Promotion Failed/Errored/Aborted, an application Degraded or
 * Missing or a failed sync, verification Failed/Error) is one report; the run then fixes forward
 * within budgets.maxDeployIterations (a new branch and pull request of the same run), or fails.
 */
export function createStageStep(deps: StageStepDeps): GateStep {
  const firstPoll = deps.firstPollMs ?? 10_000;
  const maxPoll = deps.maxPollMs ?? 2 * 60_000;

  return {
    async run(context) {
      const { run, gate } = context;
      const stageName = gate.name.slice('stage:'.length);
      const pipeline = pipelineFor(deps.policy, run.repo);
      const stage = pipeline?.stages.find((s) => s.name === stageName);
      const kargo = pipeline?.kargo;
      if (pipeline === undefined || kargo === undefined || stage === undefined) throw new RefusedError(`${run.repo}'s pipeline has no Kargo stage ${stageName}`);
      const freight = run.artifacts.freight?.name;
      if (freight === undefined) throw new RefusedError('the freight gate recorded no Freight');
      const recheckAfterMs = pollDelay(gate.startedAt, deps.clock(), firstPoll, maxPoll);
      const evaluation = new StageEvaluation(deps, context, { ...pipeline, kargo }, stage, freight, recheckAfterMs);
      try {
        return await evaluation.decide();
      } catch (error) {
        // Prometheus or the API server out of reach (a live call: the Promotion look-up or create, a
        // query) is a wait within the run's time limit, not the end of the run: the queue's few
        // retries would spend minutes, and a deploy gate can wait for hours.
        const outage = outageOf(error);
        if (outage === undefined) throw error;
        context.log.warn({ err: error }, 'deploy gate: an outside system is out of reach; looking again later');
        return { kind: 'pending', summary: `${stageName}: ${outage}; looking again`, recheckAfterMs };
      }
    },
  };
}

type Decided = { done: true; outcome: GateOutcome } | { done: false; line: string };

/**
 * One look at one stage for one run: the Promotion, whether a newer Freight superseded this one, the
 * applications, verification and golden signals, in order; the first that is not yet green decides.
 */
class StageEvaluation {
  private readonly namespace: string;
  private readonly argocdNamespace: string;
  private readonly stageName: string;
  /** The Promotion this look chose, once known: the diagnosis of a red gate is pointed at it. */
  private promotionName: string | undefined;
  /** The AnalysisRun of a failed verification, when the bot watches its namespace. */
  private analysisRunName: string | undefined;

  constructor(
    private readonly deps: StageStepDeps,
    private readonly context: GateContext,
    private readonly pipeline: PipelinePolicy & { kargo: NonNullable<PipelinePolicy['kargo']> },
    private readonly stage: StagePolicy,
    private readonly freight: string,
    private readonly recheckAfterMs: number,
  ) {
    this.namespace = pipeline.kargo.project;
    this.argocdNamespace = pipeline.argocdNamespace;
    this.stageName = stage.name;
  }

  private get run(): Run {
    return this.context.run;
  }

  private pending(summary: string): GateOutcome {
    return { kind: 'pending', summary: `${this.stage.name}: ${summary}`, recheckAfterMs: this.recheckAfterMs };
  }

  async decide(): Promise<GateOutcome> {
    const outcome = await this.look();
    // The Stage is this run's until its gate has a result (verified or red), not only until its
    // Promotion ends: the next run's Promotion would otherwise replace this Freight mid-verification.
    if (outcome.kind !== 'pending' && this.stage.promote === 'bot') await this.leaveQueue();
    return outcome;
  }

  private async look(): Promise<GateOutcome> {
    const { index } = this.deps;
    const runId = this.run.id;
    await index.link({ kind: 'kube', object: 'Stage', namespace: this.namespace, name: this.stage.kargoStage }, runId);
    await index.link({ kind: 'kube', object: 'Freight', namespace: this.namespace, name: this.freight }, runId);
    for (const app of this.stage.argocdApps)
      await index.link({ kind: 'kube', object: 'Application', namespace: this.argocdNamespace, name: app }, runId);

    const promotion = await this.promotion();
    if (promotion.done) return promotion.outcome;
    const superseded = await this.superseded(promotion.finishedAt);
    if (superseded !== undefined) return superseded;
    const apps = await this.applications(promotion.raw);
    if (apps.done) return apps.outcome;
    const verification = await this.verification(promotion.finishedAt);
    if (verification.done) return verification.outcome;
    const signals = await this.goldenSignals(promotion.finishedAt);
    if (signals.done) return signals.outcome;

    await this.context.audit('stage.verdict', { stage: this.stageName, freight: this.freight, promotion: promotion.name, verdict: 'passed' }, this.freight);
    await this.context.record(() => ({ activity: undefined }));
    const links = [
      linkSuffix(kargoStageUrl(this.deps.ui, this.namespace, this.stage.kargoStage)),
      ...this.stage.argocdApps.map((app) => linkSuffix(argocdAppUrl(this.deps.ui, this.argocdNamespace, app))),
    ].filter((link) => link !== '');
    return {
      kind: 'passed',
      summary: [`${this.stageName}: ${promotion.line}`, apps.line, verification.line, signals.line, ...links.map((link) => link.slice(3))].filter((l) => l !== '').join('\n'),
    };
  }

  /** Step 1: the Promotion of this Freight into the Stage, Succeeded. */
  private async promotion(): Promise<{ done: true; outcome: GateOutcome } | { done: false; line: string; raw: unknown; name: string; finishedAt: string | undefined }> {
    const { kubernetes } = this.deps;
    const target = { kind: 'Promotion' as const, namespace: this.namespace };
    const cached = kubernetes.list(target);
    if (cached === undefined) return { done: true, outcome: this.pending(`waiting for the first list of Promotions in ${this.namespace}`) };
    const progress: StageProgress = this.run.artifacts.deploy?.stages?.[this.stageName] ?? {};
    const candidates = cached
      .map((raw) => ({ raw, ref: promotionRefSchema.safeParse(raw) }))
      .flatMap(({ raw, ref }) => (ref.success ? [{ raw, ref: ref.data }] : []))
      .filter(({ ref }) => ref.spec.stage === this.stage.kargoStage && ref.spec.freight === this.freight)
      // Where the bot promotes, only its own Promotion for this run and stage counts: a person's, or
      // another run's, of the same Freight must not pass this run's gate (nor stand in for its create).
      .filter(({ ref }) => this.stage.promote !== 'bot' || (ref.metadata.labels?.[RUN_LABEL] === this.run.id && ref.metadata.labels[STAGE_LABEL] === this.stageName))
      // The newest first: a Promotion a person started again after a failure is the one that counts now.
      .sort((a, b) => (b.ref.metadata.creationTimestamp ?? '').localeCompare(a.ref.metadata.creationTimestamp ?? ''));
    // The bot's recorded Promotion is the one; never another in its place. Kargo's auto-promotion: the newest.
    const chosen =
      this.stage.promote === 'bot' && progress.promotion !== undefined
        ? candidates.find((c) => c.ref.metadata.name === progress.promotion)
        : candidates[0];

    if (chosen === undefined) {
      if (this.stage.promote === 'bot') {
        if (progress.promotion !== undefined) {
          // Recorded but not cached: the informer is behind (a moment after the create), or someone
          // deleted it. Ask the API server; a deleted Promotion is not re-created behind anyone's back.
          const live = await promotionStillExists(kubernetes, this.namespace, this.run.id, this.stageName, progress.promotion);
          if (live) return { done: true, outcome: this.pending(`Promotion ${progress.promotion} was created; waiting for the informer to see it`) };
          await this.context.audit('stage.verdict', { stage: this.stageName, freight: this.freight, promotion: progress.promotion, verdict: 'failed', kind: 'promotion-deleted' }, this.freight);
          return { done: true, outcome: { kind: 'failed', summary: `${this.stageName}: Promotion ${progress.promotion} was deleted before it finished; the run ends here (start a new run to promote again)` } };
        }
        // The Stage gives the Promotion its steps: not listed yet is not "not found" (a refusal for good).
        if (kubernetes.list({ kind: 'Stage', namespace: this.namespace }) === undefined)
          return { done: true, outcome: this.pending(`waiting for the first list of Stages in ${this.namespace}`) };
        // One run at a time creates its Promotion into the Stage: the others wait their turn.
        const place = await this.joinQueue();
        if (place.position > 1) {
          const line = queuedLine(this.stageName, place);
          await this.context.record(() => ({ activity: line }));
          return { done: true, outcome: this.pending(line) };
        }
        try {
          const created = await this.createPromotion();
          const line = `Promotion ${created} of Freight ${this.freightLabel()} created; waiting for Kargo to run it`;
          await this.context.record(() => ({ activity: line }));
          return { done: true, outcome: this.pending(line) };
        } catch (error) {
          // Kargo decides when Freight may enter a Stage (upstream verification, soak time): that is a wait, not a refusal.
          if (error instanceof PromotionNotYetAllowedError || error instanceof PromotionBusyError) return { done: true, outcome: this.pending(error.message) };
          throw error;
        }
      }
      await this.context.record(() => ({ activity: `waiting for Kargo to promote ${this.freightLabel()} into ${this.stage.kargoStage}` }));
      return { done: true, outcome: this.pending(`waiting for Kargo to promote Freight ${this.freightLabel()} into Stage ${this.stage.kargoStage}`) };
    }

    const name = chosen.ref.metadata.name;
    this.promotionName = name;
    const finishedAt = chosen.ref.status?.finishedAt;
    if (progress.promotion !== name) {
      // The bot's own Promotion, not recorded yet: the worker that created it died before recording
      // it, maybe before its audit event too (keyed by the Promotion, once: a no-op when it was written).
      if (this.stage.promote === 'bot') await this.auditPromotion(name, true, await this.approvedBy());
      await this.deps.index.link({ kind: 'kube', object: 'Promotion', namespace: this.namespace, name }, this.run.id);
      await this.recordProgress({ promotion: name });
    }
    const parsed = kargoPromotionSchema.safeParse(chosen.raw);
    if (!parsed.success) return { done: true, outcome: this.pending(`Promotion ${name} is not readable yet`) };
    const outcome = evaluatePromotion(parsed.data);
    if (outcome.state === 'pending') {
      await this.context.record(() => ({ activity: outcome.summary }));
      return { done: true, outcome: this.pending(outcome.summary) };
    }
    if (outcome.state === 'failed') return { done: true, outcome: await this.redDeploy({ kind: 'promotion', stage: this.stageName, outcome }) };
    if (finishedAt !== undefined && progress.promotedAt !== finishedAt) await this.recordProgress({ promotion: name, promotedAt: finishedAt });
    return { done: false, line: outcome.summary, raw: chosen.raw, name, finishedAt };
  }

  private get queueKey(): { namespace: string; kargoStage: string } {
    return { namespace: this.namespace, kargoStage: this.stage.kargoStage };
  }

  /** This run's place in the Stage's promotion queue, taken on first arrival and kept after; the lease outlives the run's deadline. */
  private async joinQueue(): Promise<QueuePlace> {
    const now = this.deps.clock().getTime();
    const leaseUntil = Math.max(runDeadlineMs(this.run, this.deps.policy.budgets.maxRunMinutes, now), now) + QUEUE_LEASE_MARGIN_MS;
    const place = await this.deps.promotionQueue.join(this.queueKey, this.run.id, leaseUntil);
    if (place.position > 1) this.context.log.debug({ position: place.position, size: place.size, head: place.head }, 'deploy gate: queued for promotion');
    return place;
  }

  private async leaveQueue(): Promise<void> {
    await this.deps.promotionQueue.leave(this.queueKey, this.run.id);
  }

  private async createPromotion(): Promise<string> {
    const approval = await this.approvalEvidence();
    const stageObject = this.deps.kubernetes.get({ kind: 'Stage', namespace: this.namespace }, this.stage.kargoStage);
    if (stageObject === undefined) throw new RefusedError(`Kargo Stage ${this.namespace}/${this.stage.kargoStage} was not found`);
    const { name, created } = await ensurePromotion(this.deps.kubernetes, this.deps.claims, {
      namespace: this.namespace,
      kargoStage: this.stage.kargoStage,
      freight: this.freight,
      runId: this.run.id,
      stage: this.stageName,
      stageObject,
      annotations: {
        'shipgate.io/requested-by': this.run.requester.userId,
        'shipgate.io/repository': this.run.repo,
        ...(this.run.links.pr === undefined ? {} : { 'shipgate.io/pull-request': this.run.links.pr }),
        // Kargo records only the bot's service account as the creator: who decided is on the object itself.
        ...(approval === undefined ? {} : approval.annotations),
      },
    });
    // Evidence before the record: a crash in between leaves the event, and the next look's record.
    await this.auditPromotion(name, !created, approval?.approvers);
    await this.deps.index.link({ kind: 'kube', object: 'Promotion', namespace: this.namespace, name }, this.run.id);
    await this.recordProgress({ promotion: name });
    return name;
  }

  /** Keyed by the Promotion: one event per Promotion, whichever look created or found it. */
  private async auditPromotion(name: string, found: boolean, approvers?: readonly string[]): Promise<void> {
    await this.context.audit(
      'promotion.created',
      { stage: this.stageName, kargoStage: this.stage.kargoStage, freight: this.freight, promotion: name, found, ...(approvers === undefined ? {} : { approvers }) },
      name,
      { once: true },
    );
  }

  /**
   * The approvers an adopted Promotion carries, for its audit event: the same list the create path
   * records, so the evidence does not depend on where a worker died (undefined without an approval).
   */
  private async approvedBy(): Promise<string[] | undefined> {
    if (this.stage.approval === undefined) return undefined;
    const record = await this.deps.approvals?.get(this.run.id);
    if (record === undefined || record.status !== 'approved' || record.request.freight !== this.freight || record.request.stage !== this.stageName) return undefined;
    return countedApprovers(record.request, record.approvals);
  }

  /**
   * For a stage behind an approval: the approved request for this Freight and stage, as the
   * Promotion's annotations and the approvers' ids; a refusal without one. The approval gate passes
   * only when approved, but the guarantee lives here, where the Promotion is made (SPEC §6).
   */
  private async approvalEvidence(): Promise<{ annotations: Record<string, string>; approvers: string[] } | undefined> {
    if (this.stage.approval === undefined) return undefined;
    const record = await this.deps.approvals?.get(this.run.id);
    if (record === undefined || record.status !== 'approved' || record.request.freight !== this.freight || record.request.stage !== this.stageName)
      throw new RefusedError(`${this.stageName} is behind an approval, and this run has no approval for Freight ${this.freight} there: not promoting`);
    const counted = countedApprovers(record.request, record.approvals);
    const approvals = record.approvals.filter((a) => counted.includes(a.userId));
    const thread = await this.deps.threadLink?.(this.run);
    return {
      approvers: counted,
      annotations: {
        'shipgate.io/approved-by': approvals.map((a) => (a.userName === undefined ? a.userId : `${a.userId} (${a.userName})`)).join(', '),
        'shipgate.io/approved-at': record.decidedAt ?? '',
        'shipgate.io/approval-freight': record.request.freight,
        ...(thread === undefined ? {} : { 'shipgate.io/thread': thread }),
      },
    };
  }

  /**
   * A newer Freight took the stage after this one's Promotion succeeded (a later merge, promoted
   * before this run looked again): the applications now run the newer revision, so this run's can
   * never be seen there. Kargo verifies a Freight only once the Stage is healthy with it; if Kargo
   * verified this Freight in the stage after this promotion, the run passes, saying it was
   * superseded and on whose word. Otherwise nothing can ever confirm this Freight here: the gate
   * fails plainly (no fix forward: the change is not what went wrong).
   */
  private async superseded(promotedAt: string | undefined): Promise<GateOutcome | undefined> {
    const stage = kargoStageSchema.safeParse(this.deps.kubernetes.get({ kind: 'Stage', namespace: this.namespace }, this.stage.kargoStage));
    const history = stage.success ? (stage.data.status?.freightHistory ?? []) : [];
    const holds = (entry: (typeof history)[number] | undefined): boolean => Object.values(entry?.items ?? {}).some((item) => item.name === this.freight);
    const current = history[0];
    if (current === undefined || holds(current) || !history.slice(1).some(holds)) return undefined;
    const newer = Object.values(current.items ?? {}).map((item) => item.name).join(', ') || 'another Freight';
    const status = freightStatusOf.safeParse(this.deps.kubernetes.get({ kind: 'Freight', namespace: this.namespace }, this.freight));
    const verifiedAt = status.success ? status.data.status?.verifiedIn?.[this.stage.kargoStage]?.verifiedAt : undefined;
    const verified = verifiedAt !== undefined && (promotedAt === undefined || Date.parse(verifiedAt) >= Date.parse(promotedAt));
    await this.context.audit('stage.verdict', { stage: this.stageName, freight: this.freight, supersededBy: newer, verdict: verified ? 'passed' : 'failed', kind: 'superseded' }, this.freight);
    return verified
      ? { kind: 'passed', summary: `${this.stageName}: Kargo verified Freight ${this.freightLabel()} in ${this.stage.kargoStage} at ${verifiedAt}; the stage has since moved on to Freight ${newer}, so its applications were not checked at this run's revision by shipgate` }
      : { kind: 'failed', summary: `${this.stageName}: Freight ${newer} replaced Freight ${this.freightLabel()} in ${this.stage.kargoStage} before it was verified there, so this run's revision can no longer be confirmed in the stage; the run ends here (the newer Freight's run decides for it)` };
  }

  /** Step 2: each Argo CD Application healthy at the promoted revision. */
  private async applications(promotion: unknown): Promise<Decided> {
    const target = { kind: 'Application' as const, namespace: this.argocdNamespace };
    // The stage's listed apps, and every app in Argo CD's namespace the Promotion's argocd-update step
    // synced: an app Kargo touched is checked even where the policy forgot to list it.
    const apps = [...new Set([...this.stage.argocdApps, ...promotionAppNames(promotion, this.argocdNamespace)])];
    if (apps.length === 0) return { done: false, line: '' };
    if (this.deps.kubernetes.list(target) === undefined)
      return { done: true, outcome: this.pending(`waiting for the first list of Applications in ${this.argocdNamespace}`) };
    const waiting: string[] = [];
    const healthy: string[] = [];
    for (const name of apps) {
      // The listed apps were linked by decide(); the ones only the Promotion names are linked here.
      if (!this.stage.argocdApps.includes(name))
        await this.deps.index.link({ kind: 'kube', object: 'Application', namespace: this.argocdNamespace, name }, this.run.id);
      const raw = this.deps.kubernetes.get(target, name);
      if (raw === undefined) {
        waiting.push(`Application ${this.argocdNamespace}/${name} not found`);
        continue;
      }
      const parsed = argoApplicationSchema.safeParse(raw);
      if (!parsed.success) {
        waiting.push(`Application ${this.argocdNamespace}/${name} is not readable as an Argo CD Application`);
        continue;
      }
      const application = parsed.data;
      const desired = desiredRevisionsFor({
        application,
        promoted: promotionDesiredRevisions(promotion, { name, namespace: this.argocdNamespace }, this.argocdNamespace),
        freight: this.run.artifacts.freight?.revisions ?? [],
      });
      const outcome: ArgoHealthOutcome = evaluateArgoHealth({ application, desired });
      if (outcome.state === 'failed') {
        if (outcome.code === 'no-desired-source') {
          // Not the change's fault but the pipeline's wiring: a fix forward could not help.
          await this.context.audit('stage.verdict', { stage: this.stageName, freight: this.freight, app: name, verdict: 'failed', kind: 'no-desired-source' }, this.freight);
          return { done: true, outcome: { kind: 'failed', summary: `${this.stageName}: ${outcome.summary}. Check that the Promotion's argocd-update step names this application, or that it tracks the repository the Freight carries.` } };
        }
        return { done: true, outcome: await this.redDeploy({ kind: 'application', stage: this.stageName, outcome }) };
      }
      if (outcome.state === 'progressing') waiting.push(outcome.summary);
      else healthy.push(outcome.summary);
    }
    // The card links to the stage's (first) application while the run is there.
    const appLink = argocdAppUrl(this.deps.ui, this.argocdNamespace, this.stage.argocdApps[0] ?? '');
    if (appLink !== undefined) await this.context.record((r) => ({ links: { ...r.links, argocd: appLink } }));
    if (waiting.length > 0) return { done: true, outcome: this.pending(waiting.join('; ')) };
    return { done: false, line: healthy.join('\n') };
  }

  /** Step 3: verification of this Freight in this Stage Successful. */
  private async verification(promotedAt: string | undefined): Promise<Decided> {
    const stageRaw = this.deps.kubernetes.get({ kind: 'Stage', namespace: this.namespace }, this.stage.kargoStage);
    if (stageRaw === undefined) return { done: true, outcome: this.pending(`Kargo Stage ${this.namespace}/${this.stage.kargoStage} not found (yet)`) };
    const stage = kargoStageSchema.safeParse(stageRaw);
    if (!stage.success) return { done: true, outcome: this.pending(`Kargo Stage ${this.stage.kargoStage} is not readable yet`) };
    const freightRaw = this.deps.kubernetes.get({ kind: 'Freight', namespace: this.namespace }, this.freight);
    const freightStatus = freightStatusOf.safeParse(freightRaw);
    const outcome = evaluateVerification({
      stage: stage.data,
      stageName: this.stage.kargoStage,
      freightName: this.freight,
      freightStatus: freightStatus.success ? freightStatus.data.status : undefined,
      ...(promotedAt === undefined ? {} : { promotedAt }),
    });
    if (outcome.state === 'pending') {
      await this.context.record(() => ({ activity: outcome.summary }));
      return { done: true, outcome: this.pending(outcome.summary) };
    }
    if (outcome.state === 'failed') {
      const ref = outcome.analysisRun;
      // Only the project's namespace is watched (Kargo runs verification there); elsewhere the report goes without the details.
      const watched = ref !== null && (ref.namespace ?? this.namespace) === this.namespace;
      const raw = watched ? this.deps.kubernetes.get({ kind: 'AnalysisRun', namespace: this.namespace }, ref.name) : undefined;
      const analysis = raw === undefined ? null : analysisRunSchema.safeParse(raw);
      if (watched) this.analysisRunName = ref.name;
      return {
        done: true,
        outcome: await this.redDeploy({ kind: 'verification', stage: this.stageName, outcome, analysis: analysis?.success ? summariseAnalysisRun(analysis.data) : null }),
      };
    }
    return { done: false, line: outcome.summary };
  }

  private freightLabel(): string {
    const alias = this.run.artifacts.freight?.alias;
    return alias === undefined ? this.freight : `${alias} (${this.freight.slice(0, 12)})`;
  }

  private async recordProgress(progress: StageProgress): Promise<void> {
    await this.context.record((r) =>
      ({ artifacts: patchArtifacts(r.artifacts, 'deploy', { stages: { ...r.artifacts.deploy?.stages, [this.stageName]: { ...r.artifacts.deploy?.stages?.[this.stageName], ...progress } } }) }),
    );
  }

  /**
   * Step 4, where the stage lists them: the golden signals within their thresholds. No data at all
   * (a service nobody calls yet) waits, for a bounded time from the first look; then the gate fails
   * without a fix forward, since no code change makes traffic appear.
   */
  private async goldenSignals(promotedAt: string | undefined): Promise<Decided> {
    const signals = this.stage.goldenSignals;
    if (signals === undefined) return { done: false, line: '' };
    const port = this.deps.metrics;
    if (port === undefined) throw new RefusedError(`stage ${this.stageName} lists goldenSignals, but PROMETHEUS_URL is not set`);
    // The soak: the new release must have served for a while before its signals say anything about it.
    const soakUntil = signals.soak === undefined || promotedAt === undefined ? undefined : Date.parse(promotedAt) + signals.soak;
    if (soakUntil !== undefined && this.deps.clock().getTime() < soakUntil) {
      const until = new Date(soakUntil).toISOString();
      await this.context.record(() => ({ activity: `golden signals after the soak, from ${until}` }));
      return { done: true, outcome: { kind: 'pending', summary: `${this.stageName}: golden signals are read after the soak, from ${until}`, recheckAfterMs: Math.min(this.recheckAfterMs, soakUntil - this.deps.clock().getTime()) } };
    }
    const outcome = await checkGoldenSignals({ port, signals, signal: this.context.signal });
    if (outcome.state === 'passed') return { done: false, line: outcome.summary };
    if (outcome.state === 'failed') return { done: true, outcome: await this.redSignals(outcome.breaches) };
    const progress = this.run.artifacts.deploy?.stages?.[this.stageName] ?? {};
    const since = progress.signalsSince ?? this.deps.clock().toISOString();
    if (progress.signalsSince === undefined) await this.recordProgress({ signalsSince: since });
    const limit = this.deps.goldenSignalsNoDataMs ?? 10 * 60_000;
    if (this.deps.clock().getTime() - Date.parse(since) > limit) {
      await this.context.audit('stage.verdict', { stage: this.stageName, freight: this.freight, verdict: 'failed', kind: 'golden-signals-no-data' }, this.freight);
      return { done: true, outcome: { kind: 'failed', summary: `${this.stageName}: ${outcome.summary}, for more than ${Math.round(limit / 60_000)} minutes after the stage verified; the run ends here` } };
    }
    await this.context.record(() => ({ activity: outcome.summary }));
    return { done: true, outcome: this.pending(outcome.summary) };
  }

  private async redDeploy(failure: DeployFailure): Promise<GateOutcome> {
    return this.red(failure.kind, renderDeployFailure(failure), deployFingerprint(failure), failure.kind === 'application' ? failure.outcome.app : undefined);
  }

  /**
   * Where the agent's diagnosis of this red gate looks (SPEC §4): the destination namespace of the
   * failing application, else of the first of the stage's applications that names one, and the
   * Kargo and Argo CD objects this run followed in the stage.
   */
  private diagnosisTarget(failedApp: string | undefined): Omit<RedDeployGate, 'fix' | 'diagnosis'> {
    const apps = [...new Set([...(failedApp === undefined ? [] : [failedApp]), ...this.stage.argocdApps])];
    const target = { kind: 'Application' as const, namespace: this.argocdNamespace };
    const namespace = apps.map((app) => destinationNamespaceOf(this.deps.kubernetes.get(target, app))).find((ns) => ns !== undefined);
    const objects: DeployObjectRef[] = [
      { kind: 'Stage', namespace: this.namespace, name: this.stage.kargoStage },
      { kind: 'Freight', namespace: this.namespace, name: this.freight },
      ...(this.promotionName === undefined ? [] : [{ kind: 'Promotion' as const, namespace: this.namespace, name: this.promotionName }]),
      ...(this.analysisRunName === undefined ? [] : [{ kind: 'AnalysisRun' as const, namespace: this.namespace, name: this.analysisRunName }]),
      ...apps.map((app) => ({ kind: 'Application' as const, namespace: this.argocdNamespace, name: app })),
    ];
    return { stage: this.stageName, ...(namespace === undefined ? {} : { namespace }), objects };
  }

  private async redSignals(breaches: readonly GoldenSignalBreach[]): Promise<GateOutcome> {
    const fingerprint = createHash('sha256')
      .update(JSON.stringify(['golden-signals', this.stageName, breaches.map((b) => b.signal).sort()]))
      .digest('hex')
      .slice(0, 16);
    return this.red('golden-signals', renderGoldenSignalFailure(this.stageName, breaches), fingerprint);
  }

  /** A red deploy gate: one report, then a fix forward within budgets.maxDeployIterations, or the end. */
  private async red(kind: DeployFailure['kind'] | 'golden-signals', lines: readonly string[], fingerprint: string, failedApp?: string): Promise<GateOutcome> {
    await this.context.audit('stage.verdict', { stage: this.stageName, freight: this.freight, verdict: 'failed', kind, fingerprint }, this.freight);
    return fixForwardOrFail({ run: this.run, budgets: this.deps.policy.budgets, report: lines, fingerprint, target: this.diagnosisTarget(failedApp) });
  }
}

/**
 * What makes two red results "the same failure" (the loop stops on a repeat): the kind, the stage and
 * what failed — the step, the unhealthy resources, the verification phase — not names that change per
 * attempt (the Promotion's or the AnalysisRun's) or timestamps.
 */
export function deployFingerprint(failure: DeployFailure): string {
  const parts: unknown[] = [failure.kind, failure.stage];
  switch (failure.kind) {
    case 'promotion':
      parts.push(failure.outcome.phase, failure.outcome.failedStep?.name ?? null, failure.outcome.failedStep?.uses ?? null);
      break;
    case 'application':
      parts.push(failure.outcome.app, failure.outcome.code, failure.outcome.unhealthyResources.map((r) => `${r.kind}/${r.namespace ?? ''}/${r.name}:${r.health}`).sort());
      break;
    case 'verification':
      parts.push(failure.outcome.phase, failure.analysis?.metrics.filter((m) => m.phase !== 'Successful').map((m) => `${m.name}:${m.phase}`).sort() ?? null);
      break;
  }
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex').slice(0, 16);
}

/** What an outage says, when `error` is one: an ExternalOutageError, or an API answer that retrying can change (5xx, 429). */
function outageOf(error: unknown): string | undefined {
  if (error instanceof ExternalOutageError) return error.message;
  if (error instanceof KubernetesRequestError && (error.statusCode === undefined || error.statusCode >= 500 || error.statusCode === 429))
    return `kubernetes: ${error.message}`;
  return undefined;
}
