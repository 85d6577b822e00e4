import { chmod, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import { stringify } from 'yaml';
import { z } from 'zod';
import { DiagnosisUnavailableError } from '../../ports/diagnosis.js';

/**
 * The kubeconfig the MCP server gets for one session: the bot's own current cluster and user (the
 * credentials its informers use), in a context whose namespace is the stage's. Written 0600 into a
 * fresh 0700 directory and removed when the session closes: the server re-reads the file when it
 * changes (and crashes on a missing one), so it has to stay for the session's length.
 *
 * A directory's name carries the bot's pid, so one left behind by a bot that was SIGKILLed (no
 * chance to clean up) is swept by the next session of any bot on the machine.
 */

const DIR_PREFIX = 'shipgate-kmcp-';

/** client-node keeps `exec` and `authProvider` untyped: read the parts a kubeconfig can carry on. */
const execSchema = z.looseObject({
  command: z.string().min(1),
  args: z.array(z.string()).nullish(),
  env: z.array(z.object({ name: z.string(), value: z.string() })).nullish(),
  apiVersion: z.string().min(1),
});
const tokenFileProvider = z.object({
  name: z.literal('tokenFile'),
  config: z.object({ tokenFile: z.string().min(1) }),
});

export interface ScopedKubeconfig {
  /** The kubeconfig file. */
  path: string;
  /** Its directory, removed by `remove`. */
  dir: string;
  remove(): Promise<void>;
  /** For a process `exit` handler: no await there. */
  removeSync(): void;
}

/** The kubeconfig document (as plain data) for `kc`'s current cluster and user, in `namespace`. */
export function scopedKubeconfigDocument(kc: KubeConfig, namespace: string): Record<string, unknown> {
  const cluster = kc.getCurrentCluster();
  const user = kc.getCurrentUser();
  if (cluster === null || user === null)
    throw new DiagnosisUnavailableError('the Kubernetes configuration has no current cluster and user');
  const clusterEntry: Record<string, unknown> = { server: cluster.server };
  if (cluster.caData !== undefined) clusterEntry['certificate-authority-data'] = cluster.caData;
  if (cluster.caFile !== undefined) clusterEntry['certificate-authority'] = cluster.caFile;
  if (cluster.skipTLSVerify) clusterEntry['insecure-skip-tls-verify'] = true;
  if (cluster.tlsServerName !== undefined) clusterEntry['tls-server-name'] = cluster.tlsServerName;
  if (cluster.proxyUrl !== undefined) clusterEntry['proxy-url'] = cluster.proxyUrl;

  const userEntry: Record<string, unknown> = {};
  if (user.token !== undefined) userEntry['token'] = user.token;
  if (user.certData !== undefined) userEntry['client-certificate-data'] = user.certData;
  if (user.certFile !== undefined) userEntry['client-certificate'] = user.certFile;
  if (user.keyData !== undefined) userEntry['client-key-data'] = user.keyData;
  if (user.keyFile !== undefined) userEntry['client-key'] = user.keyFile;
  if (user.username !== undefined) userEntry['username'] = user.username;
  if (user.password !== undefined) userEntry['password'] = user.password;
  if (user.impersonateUser !== undefined) userEntry['as'] = user.impersonateUser;
  if (user.exec !== undefined && user.exec !== null) {
    const exec = execSchema.safeParse(user.exec);
    if (!exec.success)
      throw new DiagnosisUnavailableError('the Kubernetes user has an exec credential plugin this bot cannot pass on');
    // Never interactive: the server has no terminal, and a prompt would hang the session.
    userEntry['exec'] = { ...exec.data, interactiveMode: 'Never' };
  }
  if (user.authProvider !== undefined && user.authProvider !== null) {
    // The in-cluster service account token (src/adapters/kubernetes/kubeconfig.ts): client-go reads the projected file itself.
    const provider = tokenFileProvider.safeParse(user.authProvider);
    if (!provider.success)
      throw new DiagnosisUnavailableError(
        'the Kubernetes user has an auth provider the MCP server cannot use; use a token, a client certificate or an exec plugin',
      );
    userEntry['tokenFile'] = provider.data.config.tokenFile;
  }
  return {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'shipgate', cluster: clusterEntry }],
    users: [{ name: 'shipgate', user: userEntry }],
    contexts: [{ name: 'shipgate', context: { cluster: 'shipgate', user: 'shipgate', namespace } }],
    'current-context': 'shipgate',
  };
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: alive, someone else's.
    return typeof error === 'object' && error !== null && 'code' in error && error.code === 'EPERM';
  }
}

/** Removes session directories under `root` whose bot is gone (SIGKILLed before it could clean up). */
export async function sweepStaleKubeconfigs(root: string): Promise<number> {
  let names: string[];
  try {
    names = await readdir(root);
  } catch {
    return 0;
  }
  let removed = 0;
  for (const name of names) {
    const found = new RegExp(`^${DIR_PREFIX}(\\d+)-`).exec(name);
    if (found === null) continue;
    const pid = Number(found[1]);
    if (pid === process.pid || pidAlive(pid)) continue;
    await rm(join(root, name), { recursive: true, force: true });
    removed += 1;
  }
  return removed;
}

/** Writes the session's kubeconfig under `root` (0700 directory, 0600 file). */
export async function writeScopedKubeconfig(
  kc: KubeConfig,
  namespace: string,
  root: string,
): Promise<ScopedKubeconfig> {
  const document = scopedKubeconfigDocument(kc, namespace);
  const dir = await mkdtemp(join(root, `${DIR_PREFIX}${process.pid}-`));
  await chmod(dir, 0o700);
  const path = join(dir, 'kubeconfig.yaml');
  try {
    await writeFile(path, stringify(document), { mode: 0o600, flag: 'wx' });
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
  return {
    path,
    dir,
    remove: () => rm(dir, { recursive: true, force: true }),
    removeSync: () => rmSync(dir, { recursive: true, force: true }),
  };
}
