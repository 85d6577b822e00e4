import { tmpdir } from 'node:os';
import type { KubeConfig } from '@kubernetes/client-node';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { z } from 'zod';
import type { Logger } from '../../log.js';
import {
  DiagnosisUnavailableError,
  type ClusterDiagnosisPort,
  type ClusterDiagnosisSession,
  type DiagnosisScope,
  type DiagnosisToolResult,
} from '../../ports/diagnosis.js';
import type { Scrub } from '../../security/scrubber.js';
import { ProcessGroupTransport } from './process-group-transport.js';
import { READ_TOOL_NAMES, capText, policeCall, readToolDefinitions, type ReadToolName } from './read-allow-list.js';
import { sweepStaleKubeconfigs, writeScopedKubeconfig } from './scoped-kubeconfig.js';
import { resolveServerBinary } from './server-binary.js';

/**
 * The cluster-diagnosis port on kubernetes-mcp-server (SPEC §4, issue 11): one server process per
 * session, started over stdio with `--read-only --disable-multi-cluster --toolsets core`, the
 * kubeconfig provider only (never the pod's own service account by auto-detection) and a
 * kubeconfig scoped to the stage's namespace; spoken to with the MCP SDK's `Client`.
 *
 * The model never talks to the server directly: the session offers the bot's definitions of the
 * tools in read-allow-list.ts that the server also lists as read-only, polices every call there,
 * and scrubs, then caps, every answer (scrubbing first, so a secret cut by the cap is still seen
 * whole). A refused, failed or timed-out call is an `isError` result; a session whose server died
 * answers every later call with an error too.
 */

export interface KubernetesMcpDiagnosisOptions {
  /** The bot's own cluster configuration (src/adapters/kubernetes/kubeconfig.ts): its current cluster and user are used. */
  kubeConfig: KubeConfig;
  /** Removes configured secrets and token shapes (src/security/scrubber.ts). */
  scrub: Scrub;
  log: Logger;
  /** Default: the platform binary of the `kubernetes-mcp-server` npm package. */
  binaryPath?: string;
  /** Where session kubeconfigs are written (default the OS temp directory). */
  workRoot?: string;
  /** Per-result cap, after scrubbing (default 16 KiB). */
  maxResultBytes?: number;
  /** Initialize plus tools/list (default 20 s). */
  startTimeoutMs?: number;
  /** One tool call (default 30 s). */
  callTimeoutMs?: number;
}

export const DEFAULT_MAX_RESULT_BYTES = 16 * 1024;
/** A server answer larger than this on one line ends the session (the transport refuses to buffer it). */
const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
const SERVER_FLAGS = [
  '--read-only',
  '--disable-multi-cluster',
  '--toolsets',
  'core',
  '--cluster-provider',
  'kubeconfig',
];

// Only the fields the bot reads from the server's answers; the rest is the server's business.
const listedToolSchema = z.looseObject({
  name: z.string(),
  annotations: z
    .looseObject({ readOnlyHint: z.boolean().optional(), destructiveHint: z.boolean().optional() })
    .optional(),
});
const listToolsSchema = z.looseObject({ tools: z.array(listedToolSchema) });
const callResultSchema = z.looseObject({
  content: z.array(z.looseObject({ type: z.string(), text: z.string().optional() })).default([]),
  isError: z.boolean().optional(),
});

function errorKind(error: unknown): string {
  return error instanceof Error ? error.name : 'unknown';
}

export function createKubernetesMcpDiagnosis(options: KubernetesMcpDiagnosisOptions): ClusterDiagnosisPort {
  const maxResultBytes = options.maxResultBytes ?? DEFAULT_MAX_RESULT_BYTES;
  const workRoot = options.workRoot ?? tmpdir();
  const { scrub, log } = options;

  async function open(scope: DiagnosisScope, signal?: AbortSignal): Promise<ClusterDiagnosisSession> {
    signal?.throwIfAborted();
    const binary =
      options.binaryPath === undefined ? resolveServerBinary() : { found: true as const, path: options.binaryPath };
    if (!binary.found) throw new DiagnosisUnavailableError(binary.reason);
    await sweepStaleKubeconfigs(workRoot);
    const kubeconfig = await writeScopedKubeconfig(options.kubeConfig, scope.namespace, workRoot);
    const transport = new ProcessGroupTransport({
      command: binary.path,
      args: [...SERVER_FLAGS, '--kubeconfig', kubeconfig.path],
      // Nothing of the bot's environment: HOME is the session directory, so no ~/.kube of the worker is read.
      env: { HOME: kubeconfig.dir, PATH: '/usr/local/bin:/usr/bin:/bin' },
      cwd: kubeconfig.dir,
      maxMessageBytes: MAX_MESSAGE_BYTES,
    });
    // The last resort when the bot exits without closing (a crash, process.exit): SIGKILL the group, remove the file.
    const onExit = (): void => {
      transport.killNow();
      kubeconfig.removeSync();
    };
    process.once('exit', onExit);
    const client = new Client({ name: 'shipgate', version: '1' });
    let dead = false;
    transport.exited.then(
      () => {
        dead = true;
      },
      () => undefined,
    );

    let closing: Promise<void> | undefined;
    const close = (): Promise<void> =>
      (closing ??= (async () => {
        try {
          await client.close();
        } catch {
          // Closing a client whose transport already failed: the transport close below still runs.
        }
        await transport.close();
        await kubeconfig.remove();
        process.removeListener('exit', onExit);
        log.info({ namespace: scope.namespace, pid: transport.pid }, 'diagnosis session closed');
      })());

    const startTimeout = options.startTimeoutMs ?? 20_000;
    let offered: ReadToolName[];
    try {
      await client.connect(transport, { timeout: startTimeout, ...(signal === undefined ? {} : { signal }) });
      const listed = listToolsSchema.parse(
        await client.listTools(undefined, { timeout: startTimeout, ...(signal === undefined ? {} : { signal }) }),
      );
      const readOnly = new Set(
        listed.tools
          .filter((tool) => tool.annotations?.readOnlyHint === true && tool.annotations.destructiveHint !== true)
          .map((tool) => tool.name),
      );
      offered = READ_TOOL_NAMES.filter((name) => readOnly.has(name));
      const missing = READ_TOOL_NAMES.filter((name) => !readOnly.has(name));
      if (missing.length > 0)
        log.warn({ missing }, 'diagnosis: the MCP server does not offer these read tools as read-only');
    } catch (error) {
      const stderr = scrub(transport.stderrTail).trim().slice(-500);
      await close();
      if (signal?.aborted) throw signal.reason instanceof Error ? signal.reason : new Error('diagnosis start aborted');
      log.warn({ err: errorKind(error), stderr }, 'diagnosis: the MCP server did not start');
      throw new DiagnosisUnavailableError(`kubernetes-mcp-server did not start${stderr === '' ? '' : `: ${stderr}`}`, {
        cause: error,
      });
    }
    log.info({ namespace: scope.namespace, pid: transport.pid, tools: offered.length }, 'diagnosis session started');

    const definitions = readToolDefinitions(scope.namespace);
    const callTimeout = options.callTimeoutMs ?? 30_000;

    async function call(tool: string, input: unknown, callSignal: AbortSignal): Promise<DiagnosisToolResult> {
      callSignal.throwIfAborted();
      if (closing !== undefined || dead)
        return {
          text: 'Error: the cluster session has ended; no more cluster reads in this step.',
          isError: true,
          fromCluster: false,
        };
      const policed = policeCall(tool, input, scope.namespace);
      if ('refused' in policed) return { text: policed.refused, isError: true, fromCluster: false };
      if (!offered.some((name) => name === policed.tool))
        return {
          text: `Error: ${policed.tool} is not available from this cluster's server.`,
          isError: true,
          fromCluster: false,
        };
      let raw: unknown;
      try {
        raw = await client.callTool({ name: policed.tool, arguments: policed.arguments }, undefined, {
          signal: callSignal,
          timeout: callTimeout,
        });
      } catch (error) {
        if (callSignal.aborted)
          throw callSignal.reason instanceof Error ? callSignal.reason : new Error('diagnosis call aborted');
        log.warn({ tool: policed.tool, err: errorKind(error) }, 'diagnosis: tool call failed');
        const why = dead
          ? 'the cluster tool server stopped (its answer may have been too large)'
          : `the cluster did not answer (${errorKind(error)})`;
        return { text: `Error: ${why}. Try a narrower question.`, isError: true, fromCluster: false };
      }
      const parsed = callResultSchema.safeParse(raw);
      if (!parsed.success)
        return {
          text: 'Error: the cluster tool server gave an answer the bot cannot read.',
          isError: true,
          fromCluster: false,
        };
      const texts = parsed.data.content.flatMap((block) =>
        block.type === 'text' && block.text !== undefined ? [block.text] : [],
      );
      const whole = scrub(texts.join('\n'));
      if (parsed.data.isError === true)
        return { text: `Error from the cluster: ${capText(whole, 2_048, 'head')}`, isError: true, fromCluster: true };
      const body = whole.trim() === '' ? '(nothing found)' : capText(whole, maxResultBytes, policed.keep);
      return { text: body, isError: false, fromCluster: true };
    }

    return {
      namespace: scope.namespace,
      tools: offered.map((name) => definitions[name]),
      call,
      close,
    };
  }

  return { open };
}
