import { z } from 'zod';
import type { DiagnosisToolDefinition } from '../../ports/diagnosis.js';

/**
 * Which of kubernetes-mcp-server's tools the model may call, and with what (SPEC §4, issue 11).
 * Pure: it turns the model's untrusted input into the exact arguments sent upstream, or a refusal.
 *
 * The server runs with `--read-only`, but that is its promise, not ours: the bot declares its own
 * definitions for a fixed list of read tools (so a newer server's tools, descriptions or schemas
 * never reach the model unseen), and polices every argument here:
 * - the namespace is the session's, always: the model's input has no namespace field, a
 *   `namespace` other than the session's is refused, and the one sent upstream is set here;
 * - `resources_get`/`resources_list` take only the namespaced kinds of `READABLE_KINDS`, an
 *   allow-list with neither Secrets nor anything else whose job is to hold credentials
 *   (ConfigMaps, ServiceAccounts are out too); a cluster-scoped kind would ignore the namespace;
 * - names, selectors and container names must look like Kubernetes names and selectors (the
 *   server's own patterns), so nothing path- or flag-like is forwarded;
 * - logs are asked for at most `MAX_LOG_LINES` lines from the end.
 * Unknown input fields are refused rather than dropped: the model learns what it may ask.
 */

/** A pod log is asked for at most this many lines from its end (the result is byte-capped as well). */
export const MAX_LOG_LINES = 500;
export const DEFAULT_LOG_LINES = 200;

/** `apiVersion` → kinds the model may get and list, all namespaced. */
export const READABLE_KINDS: Readonly<Record<string, readonly string[]>> = {
  v1: ['Pod', 'Service', 'Endpoints', 'Event', 'PersistentVolumeClaim', 'ReplicationController'],
  'apps/v1': ['Deployment', 'ReplicaSet', 'StatefulSet', 'DaemonSet'],
  'batch/v1': ['Job', 'CronJob'],
  'autoscaling/v2': ['HorizontalPodAutoscaler'],
  'policy/v1': ['PodDisruptionBudget'],
  'networking.k8s.io/v1': ['Ingress', 'NetworkPolicy'],
  'discovery.k8s.io/v1': ['EndpointSlice'],
  'events.k8s.io/v1': ['Event'],
  'argoproj.io/v1alpha1': ['Rollout', 'AnalysisRun'],
};

const KIND_LIST = Object.entries(READABLE_KINDS)
  .map(([apiVersion, kinds]) => `${apiVersion}: ${kinds.join(', ')}`)
  .join('; ');

/** A refusal: the call never leaves the bot, and the model is told why. */
export interface Refusal {
  refused: string;
}

/** A call as it goes upstream: the server's tool name and the arguments the bot built. */
export interface UpstreamCall {
  tool: string;
  arguments: Record<string, string | number | boolean>;
  /** Logs keep their end when capped (where the failure is); everything else its beginning. */
  keep: 'head' | 'tail';
}

// The server's own patterns for selectors (its tools/list), with a length limit of ours.
const FIELD_SELECTOR = /^[.\-A-Za-z0-9]+([=!,]{1,2}[./\-A-Za-z0-9]+)+$/;
const LABEL_SELECTOR = /^([/_.\-A-Za-z0-9=, ()!])+$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

const objectName = z
  .string({ error: 'name is required' })
  .max(253, 'name is at most 253 characters')
  .regex(DNS_SUBDOMAIN, 'name must be a Kubernetes object name (lower-case letters, digits, - and .)');
const fieldSelector = z
  .string()
  .max(256, 'fieldSelector is at most 256 characters')
  .regex(FIELD_SELECTOR, 'fieldSelector must look like key=value[,key!=value]')
  .optional();
const labelSelector = z
  .string()
  .max(256, 'labelSelector is at most 256 characters')
  .regex(LABEL_SELECTOR, 'labelSelector must look like app=web or app in (a,b)')
  .optional();
/** Accepted so a model that repeats the namespace is not refused; checked against the session's. */
const namespaceField = z.string().optional();

const inputs = {
  pods_list_in_namespace: z.strictObject({ namespace: namespaceField, labelSelector, fieldSelector }),
  pods_get: z.strictObject({ namespace: namespaceField, name: objectName }),
  pods_log: z.strictObject({
    namespace: namespaceField,
    name: objectName,
    container: z.string().max(63).regex(DNS_LABEL, 'container must be a container name').optional(),
    previous: z.boolean().optional(),
    tail: z.number().int('tail must be a whole number of lines').min(1, 'tail must be at least 1').optional(),
  }),
  events_list: z.strictObject({ namespace: namespaceField, fieldSelector }),
  resources_get: z.strictObject({
    namespace: namespaceField,
    apiVersion: z.string({ error: 'apiVersion is required' }).max(100),
    kind: z.string({ error: 'kind is required' }).max(100),
    name: objectName,
  }),
  resources_list: z.strictObject({
    namespace: namespaceField,
    apiVersion: z.string({ error: 'apiVersion is required' }).max(100),
    kind: z.string({ error: 'kind is required' }).max(100),
    labelSelector,
    fieldSelector,
  }),
} as const;

export type ReadToolName = keyof typeof inputs;

export const READ_TOOL_NAMES: readonly ReadToolName[] = [
  'pods_list_in_namespace',
  'pods_get',
  'pods_log',
  'events_list',
  'resources_get',
  'resources_list',
];

function isReadTool(name: string): name is ReadToolName {
  return Object.hasOwn(inputs, name);
}

const selectorProperties = {
  labelSelector: { type: 'string', description: "Optional label selector, e.g. 'app=web' or 'app in (web,api)'." },
  fieldSelector: {
    type: 'string',
    description: "Optional field selector, e.g. 'status.phase=Running' or 'metadata.name=web-1'.",
  },
};

/** The bot's definitions of the read tools, naming the session's namespace. */
export function readToolDefinitions(namespace: string): Record<ReadToolName, DiagnosisToolDefinition> {
  const scope = `in the namespace ${namespace} (the failing stage's; no other namespace can be read)`;
  const kindProperties = {
    apiVersion: { type: 'string', description: 'apiVersion of the kind, e.g. apps/v1 or v1.' },
    kind: {
      type: 'string',
      description: `Kind. Readable kinds: ${KIND_LIST}. Secrets, ConfigMaps and other kinds cannot be read.`,
    },
  };
  return {
    pods_list_in_namespace: {
      name: 'pods_list_in_namespace',
      description: `List the pods ${scope}, with their status.`,
      inputSchema: { type: 'object', properties: { ...selectorProperties } },
    },
    pods_get: {
      name: 'pods_get',
      description: `Get one pod ${scope}: its spec and status (container states, restarts, conditions).`,
      inputSchema: {
        type: 'object',
        properties: { name: { type: 'string', description: 'Name of the pod.' } },
        required: ['name'],
      },
    },
    pods_log: {
      name: 'pods_log',
      description:
        `Get the end of a pod's log ${scope}. At most ${MAX_LOG_LINES} lines from the end (default ${DEFAULT_LOG_LINES}), ` +
        'and the answer is capped in size, keeping its end.',
      inputSchema: {
        type: 'object',
        properties: {
          name: { type: 'string', description: 'Name of the pod.' },
          container: { type: 'string', description: 'Container name; needed when the pod has more than one.' },
          previous: {
            type: 'boolean',
            description: "The previous (crashed) container's log instead of the current one.",
          },
          tail: {
            type: 'integer',
            minimum: 1,
            maximum: MAX_LOG_LINES,
            description: `Lines from the end (default ${DEFAULT_LOG_LINES}).`,
          },
        },
        required: ['name'],
      },
    },
    events_list: {
      name: 'events_list',
      description: `List the Kubernetes events ${scope}: warnings such as BackOff, FailedScheduling, Unhealthy, OOMKilling.`,
      inputSchema: { type: 'object', properties: { fieldSelector: selectorProperties.fieldSelector } },
    },
    resources_get: {
      name: 'resources_get',
      description: `Get one object of a readable kind ${scope}.`,
      inputSchema: {
        type: 'object',
        properties: { ...kindProperties, name: { type: 'string', description: 'Name of the object.' } },
        required: ['apiVersion', 'kind', 'name'],
      },
    },
    resources_list: {
      name: 'resources_list',
      description: `List the objects of a readable kind ${scope}.`,
      inputSchema: {
        type: 'object',
        properties: { ...kindProperties, ...selectorProperties },
        required: ['apiVersion', 'kind'],
      },
    },
  };
}

function describeIssues(error: z.ZodError): string {
  return error.issues
    .map((issue) => {
      if (issue.code === 'unrecognized_keys')
        return `unknown field${issue.keys.length === 1 ? '' : 's'} ${issue.keys.join(', ')}`;
      return issue.path.length > 0 ? `${issue.path.map(String).join('.')}: ${issue.message}` : issue.message;
    })
    .join('; ');
}

function readableKind(apiVersion: string, kind: string): boolean {
  return Object.hasOwn(READABLE_KINDS, apiVersion) && (READABLE_KINDS[apiVersion] ?? []).includes(kind);
}

/**
 * The upstream call for the model's `tool` and `input` in `namespace`, or why it is refused. The
 * session's namespace is set on every call; the model's is only compared with it.
 */
export function policeCall(tool: string, input: unknown, namespace: string): UpstreamCall | Refusal {
  if (!isReadTool(tool))
    return {
      refused: `Refused: "${tool.slice(0, 60)}" is not one of the read-only cluster tools (${READ_TOOL_NAMES.join(', ')}).`,
    };
  const parsed = inputs[tool].safeParse(input ?? {});
  if (!parsed.success) return { refused: `Error: invalid input for ${tool}: ${describeIssues(parsed.error)}.` };
  const args = parsed.data;
  if (args.namespace !== undefined && args.namespace !== namespace)
    return {
      refused: `Refused: only the namespace ${namespace} (the failing stage's) can be read, not "${args.namespace.slice(0, 63)}".`,
    };
  const { namespace: _ignored, ...rest } = args;
  const kind = 'kind' in rest && typeof rest.kind === 'string' ? rest.kind : undefined;
  const apiVersion = 'apiVersion' in rest && typeof rest.apiVersion === 'string' ? rest.apiVersion : undefined;
  if (kind !== undefined && apiVersion !== undefined && !readableKind(apiVersion, kind)) {
    const secret = /secret/i.test(kind);
    return {
      refused:
        `Refused: ${apiVersion.slice(0, 60)} ${kind.slice(0, 60)} cannot be read` +
        (secret ? ': Secrets are never readable.' : '.') +
        ` Readable kinds: ${KIND_LIST}.`,
    };
  }
  const out: Record<string, string | number | boolean> = { namespace };
  for (const [key, value] of Object.entries(rest)) if (value !== undefined) out[key] = value;
  if (tool === 'pods_log')
    out['tail'] = Math.min(typeof out['tail'] === 'number' ? out['tail'] : DEFAULT_LOG_LINES, MAX_LOG_LINES);
  return { tool, arguments: out, keep: tool === 'pods_log' ? 'tail' : 'head' };
}

/**
 * `text` within `maxBytes` of UTF-8, keeping its head or its tail, cut at a line break where one is
 * near, with a note saying what was left out (so the model knows to narrow its question).
 */
export function capText(text: string, maxBytes: number, keep: 'head' | 'tail'): string {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length <= maxBytes) return text;
  let kept =
    keep === 'head'
      ? bytes.subarray(0, maxBytes).toString('utf8')
      : bytes.subarray(bytes.length - maxBytes).toString('utf8');
  // A multi-byte character cut in two decodes to U+FFFD at the cut: drop it.
  kept = keep === 'head' ? kept.replace(/\uFFFD$/u, '') : kept.replace(/^\uFFFD/u, '');
  const lineBreak = keep === 'head' ? kept.lastIndexOf('\n') : kept.indexOf('\n');
  if (lineBreak >= 0 && (keep === 'head' ? lineBreak > kept.length / 2 : lineBreak < kept.length / 2))
    kept = keep === 'head' ? kept.slice(0, lineBreak + 1) : kept.slice(lineBreak + 1);
  const omitted = bytes.length - Buffer.byteLength(kept, 'utf8');
  return keep === 'head'
    ? `${kept}\n[truncated: ${omitted} more bytes not shown; narrow the question with a selector or a name]`
    : `[truncated: the first ${omitted} bytes are not shown; this is the end of the output]\n${kept}`;
}
