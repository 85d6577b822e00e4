import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type RequestListener, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { admit, loadCrds, type CustomResourceDefinition, type FieldError } from './crd-schema.js';

/**
 * A local stand-in for the Kubernetes API server (SPEC §9) for the custom resources the deploy
 * gates follow, for the real `@kubernetes/client-node`. It speaks what the informers and the
 * Promotion create use:
 * - `GET /apis/{group}/{version}/namespaces/{ns}/{plural}`: LIST with the collection's
 *   `resourceVersion` (and equality `labelSelector`s);
 * - the same with `?watch=true`: chunked JSON lines `ADDED`/`MODIFIED`/`DELETED`, `BOOKMARK`s
 *   when `allowWatchBookmarks=true`, replay from `resourceVersion`, and, for a resourceVersion
 *   older than the last compaction, a `200` whose one event is `ERROR` with a Status
 *   `code: 410` (what a real API server sends), then the end of the stream;
 * - `GET`, `POST` (with `generateName`), `PUT`, `PATCH` (`merge-patch+json`, `json-patch+json`),
 *   `DELETE`, and `/status` where the CRD declares the status subresource (the main resource
 *   then ignores status writes, and a create drops the status, as the API server does).
 *
 * Everything stored goes through the real CRDs in ../shared/upstream-samples (structural
 * validation, pruning of unknown fields, defaults: see crd-schema.ts); an invalid object is a
 * `422` Status with the field causes. resourceVersions are one server-wide counter.
 *
 * Unknown routes, verbs, query parameters and patch types answer 404/415 and land in
 * `unexpected`, which tests assert empty. Every request is recorded with its verb and kind, so
 * tests can count LIST versus WATCH per kind.
 *
 * Opt-in, for the diagnosis tools' real `kubernetes-mcp-server` (issue 11), which speaks client-go:
 * - `builtins: true`: core/v1 Pods (with `pods/{name}/log`, honouring `container`, `tailLines`,
 *   `previous`), Events and Secrets, apps/v1 Deployments, and API discovery (`/api`, `/api/v1`,
 *   `/apis`, `/apis/{group}/{version}`, legacy form: client-go falls back to it from aggregated
 *   discovery). Built-in objects are stored as given (no schema); lists take equality
 *   `fieldSelector`s. Without it, those paths stay unknown routes, as before.
 * - `tls: true`: HTTPS with a self-signed certificate made at start by the `openssl` CLI (the Go
 *   client refuses bearer tokens over plain HTTP), and every request must carry the kubeconfig's
 *   bearer token (a 401 otherwise, recorded as unexpected), so a test sees which credentials came.
 */

export type JsonValue = z.core.util.JSONType;
export type JsonObject = { [key: string]: JsonValue };

const SAMPLES = new URL('../../../shared/upstream-samples/', import.meta.url);

/** The CRDs the deploy gates need, from the upstream samples (SOURCES.md names their versions). */
export const DEFAULT_CRD_PATHS: readonly string[] = [
  'kargo/crds/kargo.akuity.io_freights.yaml',
  'kargo/crds/kargo.akuity.io_stages.yaml',
  'kargo/crds/kargo.akuity.io_promotions.yaml',
  'kargo/crds/kargo.akuity.io_warehouses.yaml',
  'argocd/crds/application-crd.yaml',
  'argo-rollouts/crds/analysis-run-crd.yaml',
].map((p) => new URL(p, SAMPLES).pathname);

export type KubeVerb = 'list' | 'watch' | 'get' | 'create' | 'update' | 'patch' | 'delete';

export interface RecordedKubeRequest {
  method: string;
  path: string;
  query: Record<string, string>;
  verb: KubeVerb | undefined;
  /** The CRD kind, e.g. `Freight`. */
  kind: string | undefined;
  namespace: string | undefined;
  name: string | undefined;
  subresource: string | undefined;
  contentType: string | undefined;
  /** The answer's HTTP status (200 for a watch that started). */
  status: number;
}

export interface UnexpectedKubeRequest {
  method: string;
  path: string;
  reason: string;
}

export interface KubernetesServerOptions {
  crdPaths?: readonly string[];
  /** Serve core/v1 pods (and their logs), events, secrets, apps/v1 deployments and discovery (see above). */
  builtins?: boolean;
  /** Serve HTTPS with a self-signed certificate and require the kubeconfig's bearer token. */
  tls?: boolean;
  /** How often open watches that asked for bookmarks get one; default 0 (only on `bookmark()`). */
  bookmarkIntervalMs?: number;
  /**
   * Called once a request (not a watch) was carried out, before it is answered; the answer waits for
   * the returned promise. Lets a test hold the answer to a write that already took effect (a client
   * killed between the server's change and its reply).
   */
  beforeAnswer?: (request: RecordedKubeRequest) => Promise<void> | undefined;
}

export interface KubernetesServer {
  /** `http://127.0.0.1:<port>` (`https://` with `tls`). */
  readonly url: string;
  /** The bearer token the kubeconfig carries (required with `tls`). */
  readonly token: string;
  readonly requests: readonly RecordedKubeRequest[];
  readonly unexpected: readonly UnexpectedKubeRequest[];
  /** The current (latest) resourceVersion. */
  readonly resourceVersion: number;
  /** Writes a kubeconfig for this server into `dir` and returns its path (see the README's Kubernetes note). */
  writeKubeconfig(dir: string): string;
  /** Recorded requests with this verb (and kind). */
  count(verb: KubeVerb, kind?: string): number;
  /** As a controller would: create or replace the object (status included), validated and pruned; throws when invalid. */
  put(object: JsonObject): JsonObject;
  /** As a controller would: change a stored object in place (status included); throws when absent or invalid. */
  modify(kind: string, namespace: string, name: string, mutate: (object: JsonObject) => void): JsonObject;
  remove(kind: string, namespace: string, name: string): void;
  get(kind: string, namespace: string, name: string): JsonObject | undefined;
  list(kind: string, namespace: string): JsonObject[];
  /** Forgets the event history: a watch from any resourceVersion before now gets 410. */
  compact(): void;
  /** Compacts, then sends every open watch (of `kind`) an `ERROR` 410 event and ends it. */
  expireWatches(kind?: string): void;
  /** Destroys the connection of every open watch (of `kind`) mid-stream, as a broken network or a restarting apiserver does. */
  dropWatches(kind?: string): void;
  /** Ends open watches (of `kind`) cleanly, as the apiserver's watch timeout does. */
  endWatches(kind?: string): void;
  /** Sends a BOOKMARK to every open watch that asked for them. */
  bookmark(): void;
  /** Open watch connections (of `kind`). */
  openWatches(kind?: string): number;
  /** With `builtins`: the log a Pod's container (default `app`) prints; `previous` for the terminated one before it. */
  setPodLog(namespace: string, pod: string, text: string, options?: { container?: string; previous?: boolean }): void;
  close(): Promise<void>;
}

interface Stored {
  crd: CustomResourceDefinition;
  objects: Map<string, JsonObject>; // key: namespace/name
}

interface WatchEvent {
  rv: number;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  crd: CustomResourceDefinition;
  namespace: string;
  object: JsonObject;
}

interface OpenWatch {
  crd: CustomResourceDefinition;
  namespace: string;
  selector: LabelSelector;
  bookmarks: boolean;
  res: ServerResponse;
  socket: Socket;
  timer: NodeJS.Timeout | undefined;
}

type LabelSelector = (labels: Record<string, string>) => boolean;

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly body: JsonObject,
  ) {
    super(typeof body['message'] === 'string' ? body['message'] : `HTTP ${status}`);
  }
}

function statusBody(code: number, reason: string, message: string, details?: JsonObject): JsonObject {
  return {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason,
    ...(details === undefined ? {} : { details }),
    code,
  };
}

const metadataSchema = z.looseObject({
  name: z.string().optional(),
  generateName: z.string().optional(),
  namespace: z.string().optional(),
  resourceVersion: z.string().optional(),
  labels: z.record(z.string(), z.string()).optional(),
  annotations: z.record(z.string(), z.string()).optional(),
});

function isObject(value: JsonValue | undefined): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function metaOf(object: JsonObject): z.infer<typeof metadataSchema> {
  const parsed = metadataSchema.safeParse(object['metadata'] ?? {});
  if (!parsed.success) throw new HttpError(400, statusBody(400, 'BadRequest', `metadata: ${parsed.error.message}`));
  return parsed.data;
}

function metadataObject(object: JsonObject): JsonObject {
  const metadata = object['metadata'];
  if (!isObject(metadata)) throw new Error('stored object without metadata');
  return metadata;
}

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/u;
// The API server's generateName suffix alphabet (no vowels, no look-alikes).
const SUFFIX_ALPHABET = 'bcdfghjklmnpqrstvwxz2456789';

function parseSelector(text: string | undefined): LabelSelector {
  if (text === undefined || text === '') return () => true;
  const terms = text.split(',').map((term) => {
    const neq = /^([^!=]+)!=(.*)$/u.exec(term);
    if (neq !== null) return (labels: Record<string, string>) => labels[neq[1]!.trim()] !== neq[2]!.trim();
    const eq = /^([^!=]+)==?(.*)$/u.exec(term);
    if (eq !== null) return (labels: Record<string, string>) => labels[eq[1]!.trim()] === eq[2]!.trim();
    if (/^[A-Za-z0-9./_-]+$/u.test(term)) return (labels: Record<string, string>) => labels[term] !== undefined;
    throw new HttpError(400, statusBody(400, 'BadRequest', `unable to parse requirement: ${term}`));
  });
  return (labels) => terms.every((t) => t(labels));
}

/** RFC 7386 JSON merge patch. */
function mergePatch(target: JsonValue | undefined, patch: JsonValue): JsonValue {
  if (!isObject(patch)) return patch;
  const out: JsonObject = isObject(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) Reflect.deleteProperty(out, key);
    else out[key] = mergePatch(out[key], value);
  }
  return out;
}

const jsonPatchSchema = z.array(
  z.object({
    op: z.enum(['add', 'remove', 'replace', 'move', 'copy', 'test']),
    path: z.string(),
    from: z.string().optional(),
    value: z.json().optional(),
  }),
);

function pointer(path: string): string[] {
  if (path === '') return [];
  if (!path.startsWith('/')) throw new HttpError(422, statusBody(422, 'Invalid', `invalid JSON pointer: ${path}`));
  return path
    .slice(1)
    .split('/')
    .map((p) => p.replaceAll('~1', '/').replaceAll('~0', '~'));
}

function patchFailure(message: string): HttpError {
  return new HttpError(
    422,
    statusBody(422, 'Invalid', `the server rejected our request due to an error in our request: ${message}`),
  );
}

function getAt(doc: JsonValue, parts: readonly string[]): JsonValue | undefined {
  let node: JsonValue | undefined = doc;
  for (const part of parts) {
    if (Array.isArray(node)) node = node[Number(part)];
    else if (isObject(node)) node = node[part];
    else return undefined;
  }
  return node;
}

function parentOf(doc: JsonValue, parts: readonly string[]): { parent: JsonObject | JsonValue[]; key: string } {
  const parent = getAt(doc, parts.slice(0, -1));
  const key = parts[parts.length - 1];
  if (key === undefined || !(Array.isArray(parent) || isObject(parent)))
    throw patchFailure(`missing path: /${parts.join('/')}`);
  return { parent, key };
}

function removeAt(doc: JsonValue, parts: readonly string[]): JsonValue {
  const { parent, key } = parentOf(doc, parts);
  if (Array.isArray(parent)) {
    const i = Number(key);
    if (!Number.isInteger(i) || i < 0 || i >= parent.length) throw patchFailure(`index out of range: ${key}`);
    return parent.splice(i, 1)[0]!;
  }
  const value = parent[key];
  if (value === undefined) throw patchFailure(`missing path: /${parts.join('/')}`);
  Reflect.deleteProperty(parent, key);
  return value;
}

function addAt(doc: JsonValue, parts: readonly string[], value: JsonValue, replace: boolean): JsonValue {
  if (parts.length === 0) return value;
  const { parent, key } = parentOf(doc, parts);
  if (Array.isArray(parent)) {
    const i = key === '-' ? parent.length : Number(key);
    if (!Number.isInteger(i) || i < 0 || i > parent.length || (replace && i === parent.length))
      throw patchFailure(`index out of range: ${key}`);
    parent.splice(i, replace ? 1 : 0, value);
  } else {
    if (replace && parent[key] === undefined) throw patchFailure(`missing path: /${parts.join('/')}`);
    parent[key] = value;
  }
  return doc;
}

/** RFC 6902 JSON patch. */
function jsonPatch(target: JsonObject, patchBody: JsonValue): JsonValue {
  const parsed = jsonPatchSchema.safeParse(patchBody);
  if (!parsed.success)
    throw new HttpError(400, statusBody(400, 'BadRequest', `invalid JSON patch: ${parsed.error.message}`));
  let doc: JsonValue = structuredClone(target);
  for (const op of parsed.data) {
    const parts = pointer(op.path);
    switch (op.op) {
      case 'add':
      case 'replace':
        if (op.value === undefined) throw patchFailure(`${op.op} without value`);
        doc = addAt(doc, parts, structuredClone(op.value), op.op === 'replace');
        break;
      case 'remove':
        removeAt(doc, parts);
        break;
      case 'move':
      case 'copy': {
        if (op.from === undefined) throw patchFailure(`${op.op} without from`);
        const from = pointer(op.from);
        const value = op.op === 'move' ? removeAt(doc, from) : structuredClone(getAt(doc, from));
        if (value === undefined) throw patchFailure(`missing path: ${op.from}`);
        doc = addAt(doc, parts, value, false);
        break;
      }
      case 'test':
        if (JSON.stringify(getAt(doc, parts)) !== JSON.stringify(op.value))
          throw patchFailure(`testing value ${op.path} failed`);
        break;
    }
  }
  return doc;
}

const ROUTE = /^\/apis\/([^/]+)\/([^/]+)\/namespaces\/([^/]+)\/([^/]+)(?:\/([^/]+)(?:\/([^/]+))?)?$/u;
/** core/v1 (`/api/v1/namespaces/...`): the group is empty. */
const CORE_ROUTE = /^\/api\/(v1)\/namespaces\/([^/]+)\/([^/]+)(?:\/([^/]+)(?:\/([^/]+))?)?$/u;
/** Query parameters client-go adds for built-in resources (`timeout` on every request, log options). */
const BUILTIN_QUERY = new Set([
  'timeout',
  'limit',
  'fieldSelector',
  'container',
  'tailLines',
  'previous',
  'timestamps',
]);

/** Built-in kinds with `builtins: true`: stored as given (a schema that keeps every field). */
const ANY_OBJECT = { type: 'object', 'x-kubernetes-preserve-unknown-fields': true } as const;
const BUILTIN_KINDS: readonly CustomResourceDefinition[] = [
  {
    group: '',
    version: 'v1',
    kind: 'Pod',
    listKind: 'PodList',
    plural: 'pods',
    namespaced: true,
    hasStatusSubresource: true,
    schema: ANY_OBJECT,
  },
  {
    group: '',
    version: 'v1',
    kind: 'Event',
    listKind: 'EventList',
    plural: 'events',
    namespaced: true,
    hasStatusSubresource: false,
    schema: ANY_OBJECT,
  },
  {
    group: '',
    version: 'v1',
    kind: 'Secret',
    listKind: 'SecretList',
    plural: 'secrets',
    namespaced: true,
    hasStatusSubresource: false,
    schema: ANY_OBJECT,
  },
  {
    group: 'apps',
    version: 'v1',
    kind: 'Deployment',
    listKind: 'DeploymentList',
    plural: 'deployments',
    namespaced: true,
    hasStatusSubresource: true,
    schema: ANY_OBJECT,
  },
];

/** `apiVersion` of a kind: `v1` for the core group. */
function groupVersion(crd: CustomResourceDefinition): string {
  return crd.group === '' ? crd.version : `${crd.group}/${crd.version}`;
}

/** Equality field selectors (`a.b=c`, `a.b==c`, `a.b!=c`, comma-joined) over dotted paths of the object. */
function parseFieldSelector(text: string | undefined): (object: JsonObject) => boolean {
  if (text === undefined || text === '') return () => true;
  const terms = text.split(',').map((term) => {
    const found = /^([A-Za-z0-9.]+)(!=|==|=)(.*)$/u.exec(term);
    if (found === null) throw new HttpError(400, statusBody(400, 'BadRequest', `invalid field selector: ${term}`));
    const [, path, op, value] = found;
    return (object: JsonObject): boolean => {
      let node: JsonValue | undefined = object;
      for (const part of path!.split('.')) node = isObject(node) ? node[part] : undefined;
      const actual =
        node === undefined || node === null ? '' : typeof node === 'object' ? JSON.stringify(node) : String(node);
      return op === '!=' ? actual !== value : actual === value;
    };
  });
  return (object) => terms.every((t) => t(object));
}

/**
 * A list as a `meta.k8s.io/v1` Table (server-side printing): a few of the real columns (Pods their
 * phase, Deployments their ready replicas), each row with the object's metadata.
 */
function asTable(crd: CustomResourceDefinition, list: JsonObject): JsonObject {
  const items = Array.isArray(list['items']) ? list['items'].filter(isObject) : [];
  const at = (object: JsonObject, path: string): string => {
    let node: JsonValue | undefined = object;
    for (const part of path.split('.')) node = isObject(node) ? node[part] : undefined;
    return node === undefined || node === null ? '' : typeof node === 'object' ? JSON.stringify(node) : String(node);
  };
  const extra: Array<[string, (o: JsonObject) => string]> =
    crd.kind === 'Pod'
      ? [['Status', (o) => at(o, 'status.phase')]]
      : crd.kind === 'Deployment'
        ? [['Ready', (o) => `${at(o, 'status.readyReplicas') || '0'}/${at(o, 'spec.replicas') || '0'}`]]
        : [];
  const column = (name: string): JsonObject => ({
    name,
    type: 'string',
    format: name === 'Name' ? 'name' : '',
    description: name,
    priority: 0,
  });
  return {
    kind: 'Table',
    apiVersion: 'meta.k8s.io/v1',
    metadata: isObject(list['metadata']) ? list['metadata'] : {},
    columnDefinitions: [column('Name'), ...extra.map(([name]) => column(name))],
    rows: items.map((object) => ({
      cells: [at(object, 'metadata.name'), ...extra.map(([, cell]) => cell(object))],
      object: {
        kind: 'PartialObjectMetadata',
        apiVersion: 'meta.k8s.io/v1',
        metadata: isObject(object['metadata']) ? object['metadata'] : {},
      },
    })),
  };
}

/** A self-signed certificate for 127.0.0.1, made by the openssl CLI (Node cannot issue X.509 itself). */
function selfSignedCertificate(): { key: string; cert: string } {
  const dir = mkdtempSync(join(tmpdir(), 'k8s-test-tls-'));
  try {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
        '-days',
        '1',
        '-subj',
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    return { key: readFileSync(join(dir, 'key.pem'), 'utf8'), cert: readFileSync(join(dir, 'cert.pem'), 'utf8') };
  } catch (error) {
    throw new Error('kubernetes test server: the openssl CLI is needed for tls: true (apt-get install openssl)', {
      cause: error,
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
const KNOWN_QUERY = new Set([
  'watch',
  'resourceVersion',
  'resourceVersionMatch',
  'allowWatchBookmarks',
  'timeoutSeconds',
  'labelSelector',
  'fieldManager',
  'fieldValidation',
  'pretty',
]);

export async function startKubernetesServer(options: KubernetesServerOptions = {}): Promise<KubernetesServer> {
  const crds = (options.crdPaths ?? DEFAULT_CRD_PATHS).flatMap((path) => loadCrds(path));
  const builtins = options.builtins === true;
  const token = 'test-token';
  const stores = new Map<string, Stored>(); // key: group/plural (core: `/plural`)
  for (const crd of [...crds, ...(builtins ? BUILTIN_KINDS : [])])
    stores.set(`${crd.group}/${crd.plural}`, { crd, objects: new Map() });
  const podLogs = new Map<string, string>(); // key: namespace/pod/container[/previous]
  const plainBodies = new WeakMap<RecordedKubeRequest, string>(); // pods/log answers, text/plain
  const byKind = (kind: string): Stored => {
    const store = [...stores.values()].find((s) => s.crd.kind === kind);
    if (store === undefined) throw new Error(`no CRD for kind ${kind}`);
    return store;
  };

  const requests: RecordedKubeRequest[] = [];
  const unexpected: UnexpectedKubeRequest[] = [];
  let rv = 1;
  let compactedRv = 0;
  let history: WatchEvent[] = [];
  const watches = new Set<OpenWatch>();
  const sockets = new Set<Socket>();

  const labelsOf = (object: JsonObject): Record<string, string> => metaOf(object).labels ?? {};

  const send = (watch: OpenWatch, type: string, object: JsonObject): void => {
    watch.res.write(`${JSON.stringify({ type, object })}\n`);
  };

  const emit = (event: WatchEvent): void => {
    history.push(event);
    for (const watch of watches) {
      if (watch.crd !== event.crd || watch.namespace !== event.namespace) continue;
      if (!watch.selector(labelsOf(event.object))) continue;
      send(watch, event.type, event.object);
    }
  };

  const closeWatch = (watch: OpenWatch, how: 'end' | 'destroy'): void => {
    watches.delete(watch);
    if (watch.timer !== undefined) clearTimeout(watch.timer);
    if (how === 'end') watch.res.end();
    else watch.socket.destroy();
  };

  const invalid = (crd: CustomResourceDefinition, name: string, errors: FieldError[]): HttpError => {
    const messages = errors.map((e) => e.message);
    const joined = messages.length === 1 ? messages[0]! : `[${messages.join(', ')}]`;
    return new HttpError(
      422,
      statusBody(422, 'Invalid', `${crd.kind}.${crd.group} "${name}" is invalid: ${joined}`, {
        name,
        group: crd.group,
        kind: crd.kind,
        causes: errors.map((e) => ({ reason: e.reason, message: e.message.replace(/^[^:]*: /u, ''), field: e.field })),
      }),
    );
  };

  /** Validates, prunes and stores `candidate` (a create when `previous` is undefined); emits the watch event. */
  const store = (
    stored: Stored,
    namespace: string,
    name: string,
    candidate: JsonObject,
    previous: JsonObject | undefined,
  ): JsonObject => {
    const { crd } = stored;
    const result = admit(candidate, crd.schema);
    if (result.errors.length > 0) throw invalid(crd, name, result.errors);
    const object = result.object;
    const meta = metadataObject(object);
    rv += 1;
    meta['name'] = name;
    meta['namespace'] = namespace;
    meta['resourceVersion'] = String(rv);
    if (previous === undefined) {
      meta['uid'] = randomUUID();
      meta['creationTimestamp'] = new Date().toISOString().replace(/\.\d+Z$/u, 'Z');
      meta['generation'] = 1;
    } else {
      const before = metadataObject(previous);
      meta['uid'] = before['uid'] ?? randomUUID();
      meta['creationTimestamp'] = before['creationTimestamp'] ?? null;
      const generation = typeof before['generation'] === 'number' ? before['generation'] : 1;
      // generation counts changes to the desired state: everything but metadata (and status, where
      // status is its own subresource).
      const strip = (o: JsonObject): string => {
        const { metadata: _m, status, ...rest } = o;
        return JSON.stringify(crd.hasStatusSubresource ? rest : { ...rest, status });
      };
      meta['generation'] = strip(previous) === strip(object) ? generation : generation + 1;
    }
    object['apiVersion'] = groupVersion(crd);
    object['kind'] = crd.kind;
    stored.objects.set(`${namespace}/${name}`, object);
    emit({ rv, type: previous === undefined ? 'ADDED' : 'MODIFIED', crd, namespace, object });
    return object;
  };

  const removeObject = (stored: Stored, namespace: string, name: string): JsonObject => {
    const key = `${namespace}/${name}`;
    const object = stored.objects.get(key);
    if (object === undefined)
      throw new HttpError(
        404,
        statusBody(404, 'NotFound', `${stored.crd.plural}.${stored.crd.group} "${name}" not found`),
      );
    stored.objects.delete(key);
    rv += 1;
    const deleted = structuredClone(object);
    metadataObject(deleted)['resourceVersion'] = String(rv);
    emit({ rv, type: 'DELETED', crd: stored.crd, namespace, object: deleted });
    return deleted;
  };

  const itemsOf = (stored: Stored, namespace: string, selector: LabelSelector): JsonObject[] =>
    [...stored.objects.entries()]
      .filter(([key, object]) => key.startsWith(`${namespace}/`) && selector(labelsOf(object)))
      .map(([, object]) => object);
  const listBody = (
    stored: Stored,
    namespace: string,
    selector: LabelSelector,
    fields: (object: JsonObject) => boolean = () => true,
  ): JsonObject => ({
    apiVersion: groupVersion(stored.crd),
    kind: stored.crd.listKind,
    metadata: { resourceVersion: String(rv) },
    items: itemsOf(stored, namespace, selector).filter(fields),
  });

  /** Legacy discovery documents (client-go asks for the aggregated form first and takes these). */
  const resourceList = (group: string, version: string): JsonObject | undefined => {
    const kinds = [...stores.values()]
      .map((s) => s.crd)
      .filter((crd) => crd.group === group && crd.version === version);
    if (kinds.length === 0) return undefined;
    const verbs = ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete'];
    return {
      kind: 'APIResourceList',
      apiVersion: 'v1',
      groupVersion: group === '' ? version : `${group}/${version}`,
      resources: kinds.flatMap((crd) => [
        { name: crd.plural, singularName: crd.kind.toLowerCase(), namespaced: crd.namespaced, kind: crd.kind, verbs },
        ...(crd.hasStatusSubresource
          ? [
              {
                name: `${crd.plural}/status`,
                singularName: '',
                namespaced: crd.namespaced,
                kind: crd.kind,
                verbs: ['get', 'patch', 'update'],
              },
            ]
          : []),
        ...(crd.kind === 'Pod' && crd.group === ''
          ? [{ name: 'pods/log', singularName: '', namespaced: true, kind: 'Pod', verbs: ['get'] }]
          : []),
      ]),
    };
  };
  const discovery = (path: string): JsonObject | undefined => {
    if (path === '/api') return { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [] };
    if (path === '/apis') {
      const groups = new Map<string, Set<string>>();
      for (const { crd } of stores.values())
        if (crd.group !== '') groups.set(crd.group, (groups.get(crd.group) ?? new Set()).add(crd.version));
      return {
        kind: 'APIGroupList',
        apiVersion: 'v1',
        groups: [...groups].map(([name, versions]) => {
          const list = [...versions].map((version) => ({ groupVersion: `${name}/${version}`, version }));
          return { name, versions: list, preferredVersion: list[0]! };
        }),
      };
    }
    if (path === '/api/v1') return resourceList('', 'v1');
    const found = /^\/apis\/([^/]+)\/([^/]+)$/u.exec(path);
    return found === null ? undefined : resourceList(found[1]!, found[2]!);
  };

  const startWatch = (
    stored: Stored,
    namespace: string,
    query: Record<string, string>,
    req: IncomingMessage,
    res: ServerResponse,
  ): void => {
    const selector = parseSelector(query['labelSelector']);
    const from = query['resourceVersion'];
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    const watch: OpenWatch = {
      crd: stored.crd,
      namespace,
      selector,
      bookmarks: query['allowWatchBookmarks'] === 'true',
      res,
      socket: req.socket,
      timer: undefined,
    };
    if (from !== undefined && from !== '' && from !== '0') {
      const since = Number(from);
      if (!Number.isInteger(since) || since < compactedRv) {
        // The API server answers a watch from a compacted resourceVersion with a 200 whose only
        // event is an ERROR carrying a 410 Status, then ends the stream.
        res.end(
          `${JSON.stringify({ type: 'ERROR', object: statusBody(410, 'Expired', `too old resource version: ${from} (${compactedRv})`) })}\n`,
        );
        return;
      }
      watches.add(watch);
      for (const event of history) {
        if (
          event.rv > since &&
          event.crd === stored.crd &&
          event.namespace === namespace &&
          selector(labelsOf(event.object))
        )
          send(watch, event.type, event.object);
      }
    } else {
      // No resourceVersion (or "0"): synthetic ADDED events for the current state, then changes.
      watches.add(watch);
      for (const object of itemsOf(stored, namespace, selector)) send(watch, 'ADDED', object);
    }
    const timeout = Number(query['timeoutSeconds'] ?? '0');
    if (timeout > 0) watch.timer = setTimeout(() => closeWatch(watch, 'end'), timeout * 1000);
    res.on('close', () => {
      watches.delete(watch);
      if (watch.timer !== undefined) clearTimeout(watch.timer);
    });
  };

  const readBody = async (req: IncomingMessage): Promise<JsonValue> => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
    const text = Buffer.concat(chunks).toString('utf8');
    try {
      return z.json().parse(JSON.parse(text));
    } catch {
      throw new HttpError(400, statusBody(400, 'BadRequest', 'the request body is not valid JSON'));
    }
  };

  const handle = async (
    req: IncomingMessage,
    res: ServerResponse,
    record: RecordedKubeRequest,
  ): Promise<JsonValue | undefined> => {
    const fail = (status: number, reason: string): HttpError => {
      unexpected.push({ method: record.method, path: record.path, reason });
      return new HttpError(status, statusBody(status, status === 415 ? 'UnsupportedMediaType' : 'NotFound', reason));
    };
    const builtinPath =
      builtins &&
      (record.path.startsWith('/api/') ||
        record.path === '/api' ||
        record.path === '/apis' ||
        /^\/apis\/[^/]+\/[^/]+(\/namespaces\/[^/]+\/(deployments)(\/.*)?)?$/u.test(record.path));
    for (const key of Object.keys(record.query))
      if (!KNOWN_QUERY.has(key) && !(builtinPath && BUILTIN_QUERY.has(key)))
        throw fail(400, `query parameter ${key} is not supported by the test server`);
    if (builtins && req.method === 'GET') {
      const document = discovery(record.path);
      if (document !== undefined) {
        record.verb = 'get';
        record.kind = 'Discovery';
        return document;
      }
    }
    const core = builtins ? CORE_ROUTE.exec(record.path) : null;
    const match = core === null ? ROUTE.exec(record.path) : ([core[0], '', ...core.slice(1)] as const);
    if (match === null) throw fail(404, 'no such route');
    const [, group, version, namespace, plural, name, subresource] = match;
    const stored = stores.get(`${group}/${plural}`);
    if (stored === undefined || stored.crd.version !== version || !stored.crd.namespaced)
      throw fail(404, `no such resource: ${group}/${version} ${plural}`);
    const { crd } = stored;
    record.kind = crd.kind;
    record.namespace = namespace;
    record.name = name;
    record.subresource = subresource;
    const podLog = subresource === 'log' && crd.kind === 'Pod' && crd.group === '';
    if (subresource !== undefined && !podLog && (subresource !== 'status' || !crd.hasStatusSubresource))
      throw fail(404, `no such subresource: ${subresource}`);
    const notFound = (): HttpError =>
      new HttpError(
        404,
        statusBody(404, 'NotFound', `${crd.plural}.${crd.group} "${name}" not found`, {
          name: name ?? '',
          group: crd.group,
          kind: crd.plural,
        }),
      );

    if (name === undefined) {
      if (req.method === 'GET' && record.query['watch'] === 'true') {
        record.verb = 'watch';
        startWatch(stored, namespace!, record.query, req, res);
        return undefined;
      }
      if (req.method === 'GET') {
        record.verb = 'list';
        const list = listBody(
          stored,
          namespace!,
          parseSelector(record.query['labelSelector']),
          parseFieldSelector(record.query['fieldSelector']),
        );
        // Server-side printing, as kubectl (and kubernetes-mcp-server's table output) ask for it.
        return builtins && (req.headers.accept ?? '').includes('as=Table') ? asTable(crd, list) : list;
      }
      if (req.method === 'POST') {
        record.verb = 'create';
        const body = await readBody(req);
        if (!isObject(body)) throw new HttpError(400, statusBody(400, 'BadRequest', 'the body must be an object'));
        if (body['apiVersion'] !== `${crd.group}/${crd.version}` || body['kind'] !== crd.kind) {
          throw new HttpError(
            400,
            statusBody(
              400,
              'BadRequest',
              `the API version in the data (${JSON.stringify(body['apiVersion'] ?? null)}) does not match the expected API version (${crd.group}/${crd.version})`,
            ),
          );
        }
        const meta = metaOf(body);
        if (meta.namespace !== undefined && meta.namespace !== namespace) {
          throw new HttpError(
            400,
            statusBody(
              400,
              'BadRequest',
              'the namespace of the provided object does not match the namespace sent on the request',
            ),
          );
        }
        let objectName = meta.name;
        if (
          (objectName === undefined || objectName === '') &&
          meta.generateName !== undefined &&
          meta.generateName !== ''
        ) {
          let suffix = '';
          for (let i = 0; i < 5; i += 1)
            suffix += SUFFIX_ALPHABET.charAt(Math.floor(Math.random() * SUFFIX_ALPHABET.length));
          objectName = `${meta.generateName.slice(0, 58)}${suffix}`;
        }
        if (objectName === undefined || objectName === '')
          throw invalid(crd, '', [
            {
              field: 'metadata.name',
              reason: 'FieldValueRequired',
              message: 'metadata.name: Required value: name or generateName is required',
            },
          ]);
        if (!DNS_SUBDOMAIN.test(objectName) || objectName.length > 253) {
          throw invalid(crd, objectName, [
            {
              field: 'metadata.name',
              reason: 'FieldValueInvalid',
              message: `metadata.name: Invalid value: "${objectName}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'`,
            },
          ]);
        }
        if (stored.objects.has(`${namespace}/${objectName}`)) {
          throw new HttpError(
            409,
            statusBody(409, 'AlreadyExists', `${crd.plural}.${crd.group} "${objectName}" already exists`, {
              name: objectName,
              group: crd.group,
              kind: crd.plural,
            }),
          );
        }
        const candidate = structuredClone(body);
        const candidateMeta = metadataObject(candidate);
        delete candidateMeta['resourceVersion'];
        // With a status subresource, a create's status is dropped: only the controller writes it.
        if (crd.hasStatusSubresource) delete candidate['status'];
        res.statusCode = 201;
        return store(stored, namespace!, objectName, candidate, undefined);
      }
      throw fail(405, `${req.method ?? ''} on a collection is not supported`);
    }

    const key = `${namespace}/${name}`;
    const current = stored.objects.get(key);
    if (podLog) {
      if (req.method !== 'GET') throw fail(405, `${req.method ?? ''} on pods/log`);
      record.verb = 'get';
      if (current === undefined) throw notFound();
      const containers = z
        .object({ spec: z.object({ containers: z.array(z.object({ name: z.string() })).min(1) }) })
        .safeParse(current);
      const names = containers.success ? containers.data.spec.containers.map((c) => c.name) : [];
      const container = record.query['container'] ?? (names.length === 1 ? names[0] : undefined);
      if (container === undefined || !names.includes(container))
        throw new HttpError(
          400,
          statusBody(
            400,
            'BadRequest',
            `a container name must be specified for pod ${name}, choose one of: [${names.join(' ')}]`,
          ),
        );
      const previous = record.query['previous'] === 'true';
      const text = podLogs.get(`${key}/${container}${previous ? '/previous' : ''}`);
      if (text === undefined && previous)
        throw new HttpError(
          400,
          statusBody(400, 'BadRequest', `previous terminated container "${container}" in pod "${name}" not found`),
        );
      const lines = (text ?? '').split(/(?<=\n)/u).filter((line) => line !== '');
      const tail = record.query['tailLines'] === undefined ? undefined : Number(record.query['tailLines']);
      plainBodies.set(record, (tail === undefined ? lines : tail <= 0 ? [] : lines.slice(-tail)).join(''));
      return undefined;
    }
    if (req.method === 'GET') {
      record.verb = 'get';
      if (current === undefined) throw notFound();
      return current;
    }
    if (req.method === 'DELETE') {
      record.verb = 'delete';
      if (subresource !== undefined) throw fail(405, 'DELETE on a subresource');
      if (current === undefined) throw notFound();
      removeObject(stored, namespace!, name);
      return {
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Success',
        details: { name, group: crd.group, kind: crd.plural },
      };
    }
    if (req.method !== 'PUT' && req.method !== 'PATCH') throw fail(405, `${req.method ?? ''} is not supported`);
    record.verb = req.method === 'PUT' ? 'update' : 'patch';
    if (current === undefined) throw notFound();
    const body = await readBody(req);
    let candidate: JsonValue;
    if (req.method === 'PUT') {
      candidate = body;
    } else {
      const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim();
      if (type === 'application/merge-patch+json') candidate = mergePatch(structuredClone(current), body);
      else if (type === 'application/json-patch+json') candidate = jsonPatch(current, body);
      else throw fail(415, `patch type ${type} is not supported for custom resources here`);
    }
    if (!isObject(candidate))
      throw new HttpError(400, statusBody(400, 'BadRequest', 'the object must be a JSON object'));
    const wanted = metaOf(candidate).resourceVersion;
    if (req.method === 'PUT' && wanted === undefined)
      throw invalid(crd, name, [
        {
          field: 'metadata.resourceVersion',
          reason: 'FieldValueInvalid',
          message: 'metadata.resourceVersion: Invalid value: 0x0: must be specified for an update',
        },
      ]);
    if (wanted !== undefined && wanted !== metaOf(current).resourceVersion) {
      throw new HttpError(
        409,
        statusBody(
          409,
          'Conflict',
          `Operation cannot be fulfilled on ${crd.plural}.${crd.group} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
        ),
      );
    }
    let next: JsonObject;
    if (subresource === 'status') {
      // A status write changes only the status.
      next = structuredClone(current);
      if (candidate['status'] === undefined) delete next['status'];
      else next['status'] = candidate['status'];
    } else {
      next = structuredClone(candidate);
      // System metadata is the server's; with a status subresource the main resource ignores status.
      const meta = metadataObject(next);
      const before = metadataObject(current);
      for (const field of ['uid', 'creationTimestamp', 'generation']) {
        if (before[field] === undefined) Reflect.deleteProperty(meta, field);
        else meta[field] = before[field];
      }
      if (crd.hasStatusSubresource) {
        if (current['status'] === undefined) delete next['status'];
        else next['status'] = current['status'];
      }
    }
    return store(stored, namespace!, name, next, current);
  };

  const listener: RequestListener = (req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const record: RecordedKubeRequest = {
      method: req.method ?? 'GET',
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      verb: undefined,
      kind: undefined,
      namespace: undefined,
      name: undefined,
      subresource: undefined,
      contentType: req.headers['content-type'],
      status: 200,
    };
    requests.push(record);
    if (options.tls === true && req.headers.authorization !== `Bearer ${token}`) {
      unexpected.push({ method: record.method, path: record.path, reason: 'no or wrong bearer token' });
      record.status = 401;
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end(JSON.stringify(statusBody(401, 'Unauthorized', 'Unauthorized')));
      return;
    }
    const carriedOut = handle(req, res, record).then(async (body) => {
      if (record.verb !== 'watch') await options.beforeAnswer?.(record);
      return body;
    });
    carriedOut.then(
      (body) => {
        if (record.verb === 'watch') return;
        record.status = res.statusCode;
        const text = plainBodies.get(record);
        res.setHeader('content-type', text === undefined ? 'application/json' : 'text/plain');
        res.end(text ?? JSON.stringify(body));
      },
      (error: unknown) => {
        const httpError =
          error instanceof HttpError
            ? error
            : new HttpError(
                500,
                statusBody(500, 'InternalError', error instanceof Error ? error.message : String(error)),
              );
        if (!(error instanceof HttpError))
          unexpected.push({ method: record.method, path: record.path, reason: `server error: ${httpError.message}` });
        record.status = httpError.status;
        res.writeHead(httpError.status, { 'content-type': 'application/json' });
        res.end(JSON.stringify(httpError.body));
      },
    );
  };
  const server = options.tls === true ? createHttpsServer(selfSignedCertificate(), listener) : createServer(listener);
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('kubernetes test server: no TCP address');
  const url = `${options.tls === true ? 'https' : 'http'}://127.0.0.1:${address.port}`;

  let bookmarkTimer: NodeJS.Timeout | undefined;
  const bookmark = (): void => {
    for (const watch of watches) {
      if (!watch.bookmarks) continue;
      send(watch, 'BOOKMARK', {
        kind: watch.crd.kind,
        apiVersion: `${watch.crd.group}/${watch.crd.version}`,
        metadata: { resourceVersion: String(rv) },
      });
    }
  };
  if ((options.bookmarkIntervalMs ?? 0) > 0) {
    bookmarkTimer = setInterval(bookmark, options.bookmarkIntervalMs);
    bookmarkTimer.unref();
  }

  const watchesOf = (kind: string | undefined): OpenWatch[] =>
    [...watches].filter((w) => kind === undefined || w.crd.kind === kind);
  const setterName = (object: JsonObject): { stored: Stored; namespace: string; name: string } => {
    const kind = object['kind'];
    if (typeof kind !== 'string') throw new Error('object without kind');
    const meta = metaOf(object);
    if (meta.name === undefined || meta.namespace === undefined)
      throw new Error('object needs metadata.name and metadata.namespace');
    return { stored: byKind(kind), namespace: meta.namespace, name: meta.name };
  };
  const asController = <T>(fn: () => T): T => {
    try {
      return fn();
    } catch (error) {
      // A controller writing an invalid object is a bug in the test: say what the CRD refused.
      if (error instanceof HttpError)
        throw new Error(`kubernetes test server refused the write: ${error.message}`, { cause: error });
      throw error;
    }
  };

  return {
    url,
    token,
    requests,
    unexpected,
    get resourceVersion() {
      return rv;
    },
    writeKubeconfig(dir) {
      const path = join(dir, 'kubeconfig.yaml');
      // client-node 1.x refuses a plain-http server unless TLS verification is (nominally) skipped.
      writeFileSync(
        path,
        [
          'apiVersion: v1',
          'kind: Config',
          'clusters:',
          '- name: test',
          '  cluster:',
          `    server: ${url}`,
          '    insecure-skip-tls-verify: true',
          'users:',
          '- name: test',
          '  user:',
          `    token: ${token}`,
          'contexts:',
          '- name: test',
          '  context:',
          '    cluster: test',
          '    user: test',
          'current-context: test',
          '',
        ].join('\n'),
      );
      return path;
    },
    count(verb, kind) {
      return requests.filter((r) => r.verb === verb && (kind === undefined || r.kind === kind)).length;
    },
    put(object) {
      return asController(() => {
        const { stored, namespace, name } = setterName(object);
        const previous = stored.objects.get(`${namespace}/${name}`);
        return structuredClone(store(stored, namespace, name, structuredClone(object), previous));
      });
    },
    modify(kind, namespace, name, mutate) {
      return asController(() => {
        const stored = byKind(kind);
        const previous = stored.objects.get(`${namespace}/${name}`);
        if (previous === undefined) throw new Error(`no ${kind} ${namespace}/${name}`);
        const next = structuredClone(previous);
        mutate(next);
        return structuredClone(store(stored, namespace, name, next, previous));
      });
    },
    remove(kind, namespace, name) {
      asController(() => removeObject(byKind(kind), namespace, name));
    },
    get(kind, namespace, name) {
      const object = byKind(kind).objects.get(`${namespace}/${name}`);
      return object === undefined ? undefined : structuredClone(object);
    },
    list(kind, namespace) {
      return [...byKind(kind).objects.entries()]
        .filter(([key]) => key.startsWith(`${namespace}/`))
        .map(([, o]) => structuredClone(o));
    },
    compact() {
      compactedRv = rv;
      history = [];
    },
    expireWatches(kind) {
      compactedRv = rv;
      history = [];
      for (const watch of watchesOf(kind)) {
        send(watch, 'ERROR', statusBody(410, 'Expired', 'The resourceVersion for the provided watch is too old.'));
        closeWatch(watch, 'end');
      }
    },
    dropWatches(kind) {
      for (const watch of watchesOf(kind)) closeWatch(watch, 'destroy');
    },
    endWatches(kind) {
      for (const watch of watchesOf(kind)) closeWatch(watch, 'end');
    },
    bookmark,
    openWatches(kind) {
      return watchesOf(kind).length;
    },
    setPodLog(namespace, pod, text, logOptions = {}) {
      podLogs.set(
        `${namespace}/${pod}/${logOptions.container ?? 'app'}${logOptions.previous === true ? '/previous' : ''}`,
        text,
      );
    },
    async close() {
      if (bookmarkTimer !== undefined) clearInterval(bookmarkTimer);
      for (const watch of [...watches]) closeWatch(watch, 'end');
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
