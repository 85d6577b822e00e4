import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { resolveKubeConfig } from '../../src/adapters/kubernetes/kubeconfig.js';

function kubeconfig(name: string, server: string): string {
  return [
    'apiVersion: v1',
    'kind: Config',
    `clusters: [{ name: ${name}, cluster: { server: '${server}', insecure-skip-tls-verify: true } }]`,
    `users: [{ name: ${name}, user: { token: t } }]`,
    `contexts: [{ name: ${name}, context: { cluster: ${name}, user: ${name} } }]`,
    `current-context: ${name}`,
    '',
  ].join('\n');
}

describe('resolveKubeConfig', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'shipgate-kubeconfig-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('loads the KUBECONFIG list, the first file giving the context, the others merged', () => {
    writeFileSync(join(dir, 'a'), kubeconfig('a', 'http://127.0.0.1:1'));
    writeFileSync(join(dir, 'b'), kubeconfig('b', 'http://127.0.0.1:2'));
    const kc = resolveKubeConfig({
      kubeconfig: `${join(dir, 'a')}${delimiter}${join(dir, 'b')}`,
      homeDir: dir,
      inCluster: undefined,
    });
    expect(kc.getCurrentCluster()?.server).toBe('http://127.0.0.1:1');
    expect(kc.getClusters().map((c) => c.name)).toEqual(['a', 'b']);
  });

  it('falls back to ~/.kube/config, then to the pod service account', () => {
    mkdirSync(join(dir, '.kube'));
    writeFileSync(join(dir, '.kube', 'config'), kubeconfig('home', 'http://127.0.0.1:3'));
    expect(
      resolveKubeConfig({ kubeconfig: undefined, homeDir: dir, inCluster: undefined }).getCurrentCluster()?.server,
    ).toBe('http://127.0.0.1:3');

    const inPod = resolveKubeConfig({
      kubeconfig: undefined,
      homeDir: join(dir, 'nowhere'),
      inCluster: { host: 'fd00::1', port: '443' },
      serviceAccountDir: '/sa',
      fileExists: (path) => path === '/sa/token',
    });
    expect(inPod.getCurrentCluster()).toMatchObject({
      server: 'https://[fd00::1]:443',
      caFile: '/sa/ca.crt',
      skipTLSVerify: false,
    });
    expect(inPod.getCurrentUser()?.authProvider).toEqual({ name: 'tokenFile', config: { tokenFile: '/sa/token' } });
  });

  it('refuses to guess when there is no configuration at all (no localhost:8080 fallback)', () => {
    expect(() =>
      resolveKubeConfig({
        kubeconfig: undefined,
        homeDir: undefined,
        inCluster: { host: '10.0.0.1', port: '443' },
        fileExists: () => false,
      }),
    ).toThrow(/No Kubernetes configuration/u);
  });
});
