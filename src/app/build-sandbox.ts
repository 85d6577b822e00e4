import { createBubblewrapSandbox } from '../adapters/sandbox/bubblewrap-sandbox.js';
import { createUnsandboxed } from '../adapters/sandbox/unsandboxed.js';
import { ConfigError } from '../config/config.js';
import type { Policy } from '../config/policy.js';
import type { Logger } from '../log.js';
import { SandboxUnavailableError, type SandboxPort } from '../ports/sandbox.js';

/** Where repository code (checks) runs: bubblewrap, or `none` only when the policy says so in as many words. */
export function buildSandbox(policy: Pick<Policy, 'sandbox'>, hostPath: string | undefined, log: Logger): SandboxPort {
  if (policy.sandbox === 'none') return createUnsandboxed();
  return createBubblewrapSandbox({
    workerUid: process.getuid?.() ?? 0,
    hostPath,
    onCleanupError: (err: unknown) =>
      log.warn({ err }, 'sandbox: a scratch copy could not be removed (start-up sweeps it)'),
  });
}

/** A worker that cannot isolate checks does not start: the failure is a ConfigError naming what is missing. */
export async function probeSandbox(sandbox: SandboxPort, log: Logger): Promise<void> {
  try {
    await sandbox.probe();
  } catch (error) {
    if (error instanceof SandboxUnavailableError) throw new ConfigError([`sandbox: ${error.message}.`]);
    throw error;
  }
  if (!sandbox.isolated)
    log.warn(
      { sandbox: sandbox.kind },
      'checks run UNSANDBOXED (policy sandbox: none): repository code runs as the worker',
    );
}
