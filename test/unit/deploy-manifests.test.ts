import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { z } from 'zod';

/**
 * The Kubernetes manifests under deploy/k8s (SPEC §8, issue 12): every file parses, every object
 * is of a kind we ship, and the invariants a platform team relies on hold — each Deployment has a
 * PodDisruptionBudget selecting it, the web pods hold neither the model key nor GitHub
 * credentials and no service-account token, the namespace starts from a default-deny
 * NetworkPolicy and each role is let through on the ports it declares, probes and scrape
 * annotations point at ports the pods serve, and the RBAC bindings name the worker's account.
 */

const ROOT = resolve(import.meta.dirname, '../..');
const K8S = join(ROOT, 'deploy/k8s');

/** What the web role must never be given (src/config/config.ts: only the worker reads them). */
const WORKER_ONLY_KEYS = ['ANTHROPIC_API_KEY', 'GITHUB_APP_PRIVATE_KEY', 'GITHUB_APP_ID', 'GITHUB_TOKEN'];

const KINDS = [
  'ClusterRole',
  'ConfigMap',
  'Deployment',
  'Kustomization',
  'NetworkPolicy',
  'PodDisruptionBudget',
  'Role',
  'RoleBinding',
  'Secret',
  'Service',
  'ServiceAccount',
  'StatefulSet',
] as const;

const objectSchema = z.looseObject({
  apiVersion: z.string().min(1),
  kind: z.enum(KINDS),
  metadata: z.looseObject({ name: z.string().min(1).optional() }).optional(),
});
const labels = z.record(z.string(), z.string());
const selectorSchema = z.looseObject({ matchLabels: labels });
const portRef = z.union([z.string(), z.number()]);
const probeSchema = z.looseObject({ httpGet: z.looseObject({ path: z.string(), port: portRef }) });
const containerSchema = z.looseObject({
  name: z.string(),
  env: z
    .array(
      z.looseObject({
        name: z.string(),
        value: z.string().optional(),
        valueFrom: z
          .looseObject({ secretKeyRef: z.looseObject({ name: z.string(), key: z.string() }).optional() })
          .optional(),
      }),
    )
    .default([]),
  envFrom: z.array(z.looseObject({ secretRef: z.looseObject({ name: z.string() }).optional() })).default([]),
  ports: z.array(z.looseObject({ name: z.string(), containerPort: z.number() })).default([]),
  readinessProbe: probeSchema,
  livenessProbe: probeSchema,
});
const deploymentSchema = z.looseObject({
  metadata: z.looseObject({ name: z.string() }),
  spec: z.looseObject({
    selector: selectorSchema,
    template: z.looseObject({
      metadata: z.looseObject({ labels, annotations: labels.default({}) }),
      spec: z.looseObject({
        serviceAccountName: z.string(),
        automountServiceAccountToken: z.boolean(),
        containers: z.array(containerSchema).min(1),
        volumes: z
          .array(z.looseObject({ name: z.string(), secret: z.looseObject({ secretName: z.string() }).optional() }))
          .default([]),
      }),
    }),
  }),
});
const pdbSchema = z.looseObject({
  metadata: z.looseObject({ name: z.string() }),
  spec: z.looseObject({ selector: selectorSchema }),
});
const policyPort = z.looseObject({ port: portRef, protocol: z.enum(['TCP', 'UDP', 'SCTP']).optional() });
const policyRule = z.looseObject({ ports: z.array(policyPort).optional() });
const networkPolicySchema = z.looseObject({
  metadata: z.looseObject({ name: z.string() }),
  spec: z.looseObject({
    podSelector: z.looseObject({ matchLabels: labels.optional() }),
    policyTypes: z.array(z.enum(['Ingress', 'Egress'])),
    ingress: z.array(policyRule).optional(),
    egress: z.array(policyRule).optional(),
  }),
});
const secretSchema = z.looseObject({
  metadata: z.looseObject({ name: z.string() }),
  stringData: z.record(z.string(), z.string()),
});
const serviceAccountSchema = z.looseObject({
  metadata: z.looseObject({ name: z.string() }),
  automountServiceAccountToken: z.boolean().optional(),
});
const roleBindingSchema = z.looseObject({
  subjects: z.array(z.looseObject({ kind: z.string(), name: z.string() })).min(1),
});
const serviceSchema = z.looseObject({
  metadata: z.looseObject({ name: z.string() }),
  spec: z.looseObject({
    selector: labels,
    ports: z.array(z.looseObject({ name: z.string(), port: z.number(), targetPort: portRef })).min(1),
  }),
});
const kustomizationSchema = z.looseObject({ resources: z.array(z.string()).min(1) });

interface Doc {
  /** Path under deploy/k8s. */
  file: string;
  kind: (typeof KINDS)[number];
  body: unknown;
}

function yamlFiles(dir: string): string[] {
  return readdirSync(dir)
    .flatMap((entry) => {
      const path = join(dir, entry);
      return statSync(path).isDirectory() ? yamlFiles(path) : /\.ya?ml$/.test(entry) ? [path] : [];
    })
    .sort();
}

function load(): Doc[] {
  const docs: Doc[] = [];
  for (const path of yamlFiles(K8S)) {
    const file = relative(K8S, path);
    const parsed = parseAllDocuments(readFileSync(path, 'utf8'));
    const list = Array.isArray(parsed) ? parsed : [parsed];
    for (const document of list) {
      if (document.errors.length > 0) throw new Error(`${file}: ${document.errors.map((e) => e.message).join('; ')}`);
      const body: unknown = document.toJS();
      if (body === null || body === undefined) continue;
      const object = objectSchema.safeParse(body);
      if (!object.success) throw new Error(`${file}: not a Kubernetes object we ship: ${object.error.message}`);
      docs.push({ file, kind: object.data.kind, body });
    }
  }
  return docs;
}

const docs = load();
/** The objects of the base kustomization (deploy/k8s/*.yaml, not the folders applied elsewhere). */
const base = docs.filter((doc) => !doc.file.includes('/'));
const ofKind = <T extends z.ZodType>(kind: Doc['kind'], schema: T, from: readonly Doc[] = base): z.infer<T>[] =>
  from.filter((doc) => doc.kind === kind).map((doc) => schema.parse(doc.body));

const deployments = ofKind('Deployment', deploymentSchema);
const roleOf = (deployment: z.infer<typeof deploymentSchema>) =>
  deployment.spec.template.metadata.labels['app.kubernetes.io/component'];
const webDeployment = deployments.find((deployment) => roleOf(deployment) === 'web');
const workerDeployment = deployments.find((deployment) => roleOf(deployment) === 'worker');
const selects = (selector: Record<string, string>, podLabels: Record<string, string>) =>
  Object.entries(selector).every(([key, value]) => podLabels[key] === value);

describe('deploy/k8s parses', () => {
  it('every file is YAML of Kubernetes objects of the kinds shipgate ships', () => {
    const files = yamlFiles(K8S).map((path) => relative(K8S, path));
    expect(files.length).toBeGreaterThan(10);
    for (const file of files)
      expect(
        docs.some((doc) => doc.file === file),
        `${file} holds no object`,
      ).toBe(true);
    expect(deployments.map(roleOf).sort()).toEqual(['web', 'worker']);
  });

  it('the kustomization lists every base file that exists, and every base file but the Secret templates', () => {
    const { resources } = kustomizationSchema.parse(docs.find((doc) => doc.file === 'kustomization.yaml')?.body);
    const baseFiles = [...new Set(base.map((doc) => doc.file))].filter((file) => file !== 'kustomization.yaml');
    expect([...resources].sort()).toEqual(baseFiles.filter((file) => file !== 'secret.example.yaml').sort());
  });

  it('names every object once per kind in the base', () => {
    const keys = base
      .filter((doc) => doc.kind !== 'Kustomization')
      .map((doc) => `${doc.kind}/${objectSchema.parse(doc.body).metadata?.name ?? ''}`);
    expect(new Set(keys).size).toBe(keys.length);
  });
});

describe('each Deployment', () => {
  it('selects its own pods, and has exactly one PodDisruptionBudget selecting them and no other', () => {
    const budgets = ofKind('PodDisruptionBudget', pdbSchema);
    for (const deployment of deployments) {
      const podLabels = deployment.spec.template.metadata.labels;
      expect(selects(deployment.spec.selector.matchLabels, podLabels)).toBe(true);
      const mine = budgets.filter((budget) => selects(budget.spec.selector.matchLabels, podLabels));
      expect(
        mine.map((budget) => budget.metadata.name),
        deployment.metadata.name,
      ).toHaveLength(1);
      const others = deployments.filter((other) => other !== deployment);
      for (const other of others)
        expect(selects(mine[0]?.spec.selector.matchLabels ?? {}, other.spec.template.metadata.labels)).toBe(false);
    }
  });

  it('probes and is scraped on ports its container declares; the metrics port is METRICS_PORT', () => {
    for (const deployment of deployments) {
      const pod = deployment.spec.template;
      const container = pod.spec.containers[0];
      const declared = new Map((container?.ports ?? []).map((port) => [port.name, port.containerPort]));
      const env = new Map((container?.env ?? []).map((variable) => [variable.name, variable.value]));
      for (const probe of [container?.readinessProbe, container?.livenessProbe]) {
        expect(declared.has(String(probe?.httpGet.port)), `${deployment.metadata.name} probe port`).toBe(true);
      }
      expect(container?.readinessProbe.httpGet.path).toBe('/readyz');
      expect(container?.livenessProbe.httpGet.path).toBe('/healthz');
      const metricsPort = declared.get('metrics');
      expect(metricsPort, `${deployment.metadata.name} declares a metrics port`).toBeDefined();
      expect(env.get('METRICS_PORT')).toBe(String(metricsPort));
      expect(pod.metadata.annotations['prometheus.io/port']).toBe(String(metricsPort));
      expect(pod.metadata.annotations['prometheus.io/path']).toBe('/metrics');
      if (declared.has('http')) expect(env.get('PORT')).toBe(String(declared.get('http')));
    }
  });
});

describe('the web role', () => {
  it('mounts no service-account token, and its account is bound to nothing', () => {
    const pod = webDeployment?.spec.template.spec;
    expect(pod?.automountServiceAccountToken).toBe(false);
    const account = ofKind('ServiceAccount', serviceAccountSchema).find(
      (sa) => sa.metadata.name === pod?.serviceAccountName,
    );
    expect(account?.automountServiceAccountToken).toBe(false);
    expect(pod?.serviceAccountName).not.toBe(workerDeployment?.spec.template.spec.serviceAccountName);
    const subjects = ofKind('RoleBinding', roleBindingSchema, docs).flatMap((binding) => binding.subjects);
    expect(subjects.filter((subject) => subject.name === pod?.serviceAccountName)).toEqual([]);
  });

  it('reads only Secrets that hold neither the model key nor GitHub credentials', () => {
    const secrets = new Map(ofKind('Secret', secretSchema).map((secret) => [secret.metadata.name, secret]));
    const pod = webDeployment?.spec.template.spec;
    const names = [
      ...(pod?.containers ?? []).flatMap((container) => [
        ...container.envFrom.flatMap((from) => (from.secretRef === undefined ? [] : [from.secretRef.name])),
        ...container.env.flatMap((variable) =>
          variable.valueFrom?.secretKeyRef === undefined ? [] : [variable.valueFrom.secretKeyRef.name],
        ),
      ]),
      ...(pod?.volumes ?? []).flatMap((volume) => (volume.secret === undefined ? [] : [volume.secret.secretName])),
    ];
    expect(names.length).toBeGreaterThan(0);
    for (const name of names) {
      const secret = secrets.get(name);
      expect(secret, `the web pod reads Secret ${name}, which secret.example.yaml does not describe`).toBeDefined();
      const keys = Object.keys(secret?.stringData ?? {});
      expect(keys.filter((key) => WORKER_ONLY_KEYS.includes(key))).toEqual([]);
      for (const needed of [
        'REDIS_URL',
        'SHIPGATE_AUDIT_KEY',
        'SLACK_SIGNING_SECRET',
        'SLACK_BOT_TOKEN',
        'GITHUB_WEBHOOK_SECRET',
      ])
        expect(keys).toContain(needed);
    }
    const envNames = (pod?.containers ?? []).flatMap((container) => container.env.map((variable) => variable.name));
    expect(envNames.filter((name) => WORKER_ONLY_KEYS.includes(name))).toEqual([]);
    // And the worker's Secret is where those keys live.
    const workerSecret = workerDeployment?.spec.template.spec.containers[0]?.envFrom[0]?.secretRef?.name ?? '';
    expect(Object.keys(secrets.get(workerSecret)?.stringData ?? {})).toEqual(
      expect.arrayContaining(['ANTHROPIC_API_KEY', 'GITHUB_APP_PRIVATE_KEY']),
    );
  });

  it('is exposed through its Service on the http port only; metrics have a Service of their own', () => {
    const services = ofKind('Service', serviceSchema);
    const podLabels = webDeployment?.spec.template.metadata.labels ?? {};
    const exposing = services.filter((service) => selects(service.spec.selector, podLabels));
    const web = exposing.find((service) => service.metadata.name === 'shipgate-web');
    expect(web?.spec.ports.map((port) => port.targetPort)).toEqual(['http']);
    const metrics = services.find((service) => service.metadata.name === 'shipgate-metrics');
    expect(metrics?.spec.ports.map((port) => port.targetPort)).toEqual(['metrics']);
    for (const deployment of deployments)
      expect(selects(metrics?.spec.selector ?? {}, deployment.spec.template.metadata.labels)).toBe(true);
  });
});

describe('RBAC', () => {
  it('binds roles only to the worker’s ServiceAccount, which the base defines, without mounting its token by default', () => {
    const workerAccount = workerDeployment?.spec.template.spec.serviceAccountName;
    expect(workerDeployment?.spec.template.spec.automountServiceAccountToken).toBe(true);
    const account = ofKind('ServiceAccount', serviceAccountSchema).find((sa) => sa.metadata.name === workerAccount);
    expect(account?.automountServiceAccountToken).toBe(false);
    const bindings = ofKind('RoleBinding', roleBindingSchema, docs);
    expect(bindings.length).toBeGreaterThanOrEqual(4);
    for (const binding of bindings)
      expect(binding.subjects).toEqual([expect.objectContaining({ kind: 'ServiceAccount', name: workerAccount })]);
  });
});

describe('network policy', () => {
  const policies = ofKind('NetworkPolicy', networkPolicySchema);
  const portsOf = (rules: readonly z.infer<typeof policyRule>[] | undefined) =>
    (rules ?? []).flatMap((rule) => (rule.ports ?? []).map((port) => port.port));

  it('starts from default deny: every pod of the namespace, ingress and egress, no rule', () => {
    const deny = policies.filter(
      (policy) =>
        Object.keys(policy.spec.podSelector.matchLabels ?? {}).length === 0 &&
        policy.spec.policyTypes.includes('Ingress') &&
        policy.spec.policyTypes.includes('Egress') &&
        (policy.spec.ingress ?? []).length === 0 &&
        (policy.spec.egress ?? []).length === 0,
    );
    expect(deny.map((policy) => policy.metadata.name)).toEqual(['shipgate-default-deny']);
    expect(Object.keys(deny[0]?.spec.podSelector ?? {})).toEqual([]);
  });

  it('lets each role in only on named ports its pod declares, and out to DNS and Redis', () => {
    for (const deployment of deployments) {
      const podLabels = deployment.spec.template.metadata.labels;
      const mine = policies.filter(
        (policy) =>
          Object.keys(policy.spec.podSelector.matchLabels ?? {}).length > 0 &&
          selects(policy.spec.podSelector.matchLabels ?? {}, podLabels),
      );
      expect(mine, deployment.metadata.name).toHaveLength(1);
      const policy = mine[0];
      const declared = (deployment.spec.template.spec.containers[0]?.ports ?? []).map((port) => port.name);
      const ingress = portsOf(policy?.spec.ingress);
      expect(ingress.length).toBeGreaterThan(0);
      for (const port of ingress) expect(declared).toContain(port);
      expect(ingress).toContain('metrics');
      const egress = portsOf(policy?.spec.egress);
      expect(egress).toEqual(expect.arrayContaining([53, 6379, 443]));
    }
  });

  it('gives the web role Slack’s ingress on http and no way to the Kubernetes API or Prometheus', () => {
    const web = policies.find((policy) => policy.metadata.name === 'shipgate-web');
    expect(portsOf(web?.spec.ingress).sort()).toEqual(['http', 'metrics']);
    expect([...new Set(portsOf(web?.spec.egress))].sort()).toEqual([443, 53, 6379]);
  });

  it('gives the worker no ingress but metrics, and egress to the API server and Prometheus', () => {
    const worker = policies.find((policy) => policy.metadata.name === 'shipgate-worker');
    expect(portsOf(worker?.spec.ingress)).toEqual(['metrics']);
    expect(portsOf(worker?.spec.egress)).toEqual(expect.arrayContaining([6443, 9090]));
  });
});
