import type { Config } from '../config/config.js';
import { localRepos } from '../config/policy.js';
import type { SandboxPort } from '../ports/sandbox.js';
import { watchTargetsFor } from '../../workers/gates/stage/watch-targets.js';
import { configuredNeeds } from './build-gates.js';
import { GITHUB_CREDENTIALS, NEEDS } from './gate-table.js';

/**
 * What this shipgate has and lacks, said once at start-up (a log line, and a block in the console):
 * each outside system with what configures it, or the variable that would. The words for a missing
 * system are the gate table's (NEEDS), the same the run card shows at a gate that waits for it.
 */

export type SetupPart = 'chat' | 'forge' | 'model' | 'cluster' | 'sandbox';

export interface SetupLine {
  part: SetupPart;
  /** `missing`: runs wait at the gates that need it; `unused`: nothing in the policy needs it. */
  state: 'configured' | 'missing' | 'unused';
  detail: string;
}

export type SetupSummary = readonly SetupLine[];

export interface SetupFacts {
  config: Pick<Config, 'chat' | 'discord' | 'github' | 'anthropic' | 'policy' | 'kubeconfig' | 'kubernetesService'>;
  /** Whether a cluster configuration was found (build-kubernetes.ts); undefined when none was looked for. */
  cluster: boolean | undefined;
  sandbox: Pick<SandboxPort, 'kind' | 'isolated'>;
  /** Where the red-deploy diagnosis' kubernetes-mcp-server is, or why there is none (with a cluster only). */
  diagnosisServer?: { found: true; path: string } | { found: false; reason: string } | undefined;
}

function chatLine(config: SetupFacts['config']): SetupLine {
  const line = primaryChatLine(config);
  const { discord } = config;
  if (discord === undefined) return line;
  const gateway = discord.gateway ? ', with the Gateway for thread mentions (DISCORD_GATEWAY=1)' : ' (thread mentions off: DISCORD_GATEWAY=1 turns them on)';
  // Slack and Discord at once: the Slack line names Discord too, so the summary tells the whole truth.
  const both = config.chat.kind === 'discord' ? '' : '; and Discord interactions at POST /discord/interactions';
  return { ...line, detail: `${line.detail}${both}${gateway}` };
}

function primaryChatLine({ chat }: SetupFacts['config']): SetupLine {
  switch (chat.kind) {
    case 'console':
      return { part: 'chat', state: 'configured', detail: 'console, this terminal (set SLACK_BOT_TOKEN for Slack)' };
    case 'slack-http':
      return {
        part: 'chat',
        state: 'configured',
        detail: 'Slack over HTTP at POST /slack/events (SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET)',
      };
    case 'slack-socket':
      return { part: 'chat', state: 'configured', detail: 'Slack in Socket Mode (SLACK_BOT_TOKEN, SLACK_APP_TOKEN)' };
    case 'discord':
      return {
        part: 'chat',
        state: 'configured',
        detail: 'Discord interactions at POST /discord/interactions (DISCORD_PUBLIC_KEY, DISCORD_BOT_TOKEN, DISCORD_APPLICATION_ID)',
      };
  }
}

function forgeLine(config: SetupFacts['config']): SetupLine {
  const { github } = config;
  const local = Object.keys(localRepos(config.policy));
  const localPart = local.length === 0 ? '' : `local forge for ${local.join(', ')} (path: in the policy)`;
  const join = (githubPart: string) => [githubPart, localPart].filter((part) => part !== '').join('; ');
  if (github.app !== undefined)
    return { part: 'forge', state: 'configured', detail: join(`GitHub App ${github.app.appId} at ${github.apiUrl} (GITHUB_APP_ID, GITHUB_APP_PRIVATE_KEY)`) };
  if (github.token !== undefined) return { part: 'forge', state: 'configured', detail: join(`GitHub at ${github.apiUrl} (GITHUB_TOKEN)`) };
  if (local.length > 0) {
    const remote = Object.keys(config.policy.repos).filter((repo) => !local.includes(repo));
    const note = remote.length === 0 ? '' : `; ${remote.join(', ')} need ${GITHUB_CREDENTIALS}`;
    return { part: 'forge', state: 'configured', detail: `${localPart}${note}` };
  }
  return { part: 'forge', state: 'missing', detail: `set ${NEEDS.forge}: until then runs wait at the agent gate` };
}

function modelLine(config: SetupFacts['config']): SetupLine {
  const { anthropic } = config;
  if (!configuredNeeds(config).has('model'))
    return { part: 'model', state: 'missing', detail: `set ${NEEDS.model}: until then runs wait at the agent gate` };
  const via = anthropic.baseUrl === undefined ? 'ANTHROPIC_API_KEY' : `ANTHROPIC_BASE_URL ${anthropic.baseUrl}`;
  return { part: 'model', state: 'configured', detail: `${anthropic.model} (SHIPGATE_MODEL) via ${via}` };
}

function clusterLine(facts: SetupFacts): SetupLine {
  const { config, cluster } = facts;
  if (watchTargetsFor(config.policy).length === 0)
    return {
      part: 'cluster',
      state: 'unused',
      detail: 'no pipeline in the policy needs one (pipelines:), so runs end at merge',
    };
  if (cluster === undefined)
    return { part: 'cluster', state: 'unused', detail: 'the worker role watches it (SHIPGATE_ROLE=web here)' };
  if (cluster) {
    const source =
      config.kubeconfig !== undefined
        ? `KUBECONFIG ${config.kubeconfig}`
        : config.kubernetesService !== undefined
          ? 'in-cluster, or ~/.kube/config'
          : '~/.kube/config';
    const server = facts.diagnosisServer;
    const diagnosis =
      server === undefined
        ? ''
        : server.found
          ? '; red-deploy diagnosis reads the stage namespace through kubernetes-mcp-server (read-only)'
          : `; red-deploy diagnosis without cluster reads: ${server.reason}`;
    return { part: 'cluster', state: 'configured', detail: `${source}${diagnosis}` };
  }
  return {
    part: 'cluster',
    state: 'missing',
    detail: `set ${NEEDS.kubernetes}: until then runs wait at the first deploy gate`,
  };
}

function sandboxLine({ sandbox }: SetupFacts): SetupLine {
  return sandbox.isolated
    ? { part: 'sandbox', state: 'configured', detail: `${sandbox.kind} (policy sandbox:)` }
    : {
        part: 'sandbox',
        state: 'configured',
        detail: `${sandbox.kind}: checks run UNSANDBOXED (policy sandbox: none)`,
      };
}

export function describeSetup(facts: SetupFacts): SetupSummary {
  return [
    chatLine(facts.config),
    forgeLine(facts.config),
    modelLine(facts.config),
    clusterLine(facts),
    sandboxLine(facts),
  ];
}

/** The log line's fields: `{ forge: 'missing: set GITHUB_TOKEN …', … }`. */
export function setupFields(summary: SetupSummary): Record<SetupPart, string> {
  const fields: Record<SetupPart, string> = { chat: '', forge: '', model: '', cluster: '', sandbox: '' };
  for (const line of summary)
    fields[line.part] =
      `${line.state === 'configured' ? 'configured' : line.state === 'missing' ? 'not configured' : 'not needed'}: ${line.detail}`;
  return fields;
}

const MARK: Record<SetupLine['state'], string> = { configured: 'ok', missing: '--', unused: '  ' };

/** The same, as a block for a person at the console. */
export function setupText(summary: SetupSummary, envFile: string | undefined): string {
  const lines = summary.map(
    (line) =>
      `  ${MARK[line.state]} ${line.part.padEnd(8)} ${line.state === 'configured' ? '' : line.state === 'missing' ? 'not configured: ' : 'not needed: '}${line.detail}`,
  );
  const env = envFile === undefined ? 'no .env file read (the environment only)' : `read ${envFile}`;
  return `shipgate setup (${env}):\n${lines.join('\n')}`;
}
