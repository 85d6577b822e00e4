import { KubeConfig } from '@kubernetes/client-node';
import { createKubernetesMcpDiagnosis } from '../../src/adapters/kubernetes-mcp/kubernetes-mcp-diagnosis.js';
import { createLogger } from '../../src/log.js';

/**
 * A bot stand-in for the no-orphan test (test/integration/diagnosis-mcp.test.ts): opens a diagnosis
 * session, prints `ready`, and waits to be SIGKILLed mid-session. Arguments: kubeconfig path,
 * namespace, work root.
 */
const [kubeconfigPath, namespace, workRoot] = process.argv.slice(2);
if (kubeconfigPath === undefined || namespace === undefined || workRoot === undefined)
  throw new Error('usage: diagnosis-parent <kubeconfig> <namespace> <workRoot>');
const kubeConfig = new KubeConfig();
kubeConfig.loadFromFile(kubeconfigPath);
const port = createKubernetesMcpDiagnosis({
  kubeConfig,
  scrub: (text) => text,
  log: createLogger({ level: 'silent' }),
  workRoot,
});
const session = await port.open({ namespace });
const answer = await session.call('pods_list_in_namespace', {}, new AbortController().signal);
process.stdout.write(`ready ${answer.isError ? 'error' : 'ok'}\n`);
// Keep the session open until killed.
setInterval(() => undefined, 60_000);
