import { existsSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';

/** Where the service account's credentials are mounted in a pod. */
const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export interface KubeConfigSource {
  /** `KUBECONFIG` as the config read it: one path or a list separated like PATH. */
  kubeconfig: string | undefined;
  /** The home directory, for `~/.kube/config`; undefined skips it. */
  homeDir: string | undefined;
  /** `KUBERNETES_SERVICE_HOST`/`_PORT` when running in a pod; undefined outside one. */
  inCluster: { host: string; port: string } | undefined;
  /** Test seam for the default-file and service-account checks. */
  fileExists?: (path: string) => boolean;
  serviceAccountDir?: string;
}

/**
 * client-node's `loadFromDefault` order (KUBECONFIG files merged, then ~/.kube/config, then the
 * pod's service account), but from injected values: `loadFromDefault` and `loadFromCluster`
 * read `process.env` themselves, and the config is read once, in one place. Unlike
 * `loadFromDefault` there is no silent fallback to `http://localhost:8080`: no config is an error.
 */
export function resolveKubeConfig(source: KubeConfigSource): KubeConfig {
  const exists = source.fileExists ?? existsSync;
  const kc = new KubeConfig();
  const files = (source.kubeconfig ?? '').split(delimiter).filter((file) => file !== '');
  const [first, ...rest] = files;
  if (first !== undefined) {
    kc.loadFromFile(first);
    for (const file of rest) {
      const other = new KubeConfig();
      other.loadFromFile(file);
      // kubectl's rule: the first file that sets current-context wins (loadFromDefault's default is the last).
      kc.mergeConfig(other, true);
    }
    return kc;
  }
  if (source.homeDir !== undefined) {
    const path = join(source.homeDir, '.kube', 'config');
    if (exists(path)) {
      kc.loadFromFile(path);
      return kc;
    }
  }
  const accountDir = source.serviceAccountDir ?? SERVICE_ACCOUNT_DIR;
  const tokenFile = join(accountDir, 'token');
  if (source.inCluster !== undefined && exists(tokenFile)) {
    const { host, port } = source.inCluster;
    const serverHost = host.includes(':') ? `[${host}]` : host;
    kc.loadFromClusterAndUser(
      {
        name: 'inCluster',
        server: `https://${serverHost}:${port}`,
        caFile: join(accountDir, 'ca.crt'),
        skipTLSVerify: false,
      },
      // The tokenFile provider re-reads the projected token, which the kubelet rotates.
      { name: 'inClusterUser', authProvider: { name: 'tokenFile', config: { tokenFile } } },
    );
    return kc;
  }
  throw new Error(
    'No Kubernetes configuration: set KUBECONFIG, provide ~/.kube/config, or run in a pod with a service account',
  );
}
