import { realpath, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { SandboxPort, SandboxRequest, SandboxResult } from '../../ports/sandbox.js';
import { createScratchTree, removeTree } from './scratch-tree.js';
import { CHECK_PATH, sandboxResult, supervise } from './supervise.js';

/**
 * `sandbox: none` — only when the policy says so explicitly, and then every
 * card says checks are unsandboxed. The command still works on a throwaway
 * copy of the tree with an environment built from nothing (no token or key
 * of the worker), a timeout and an output cap, and its process group is
 * killed afterwards; but it runs as the worker's user, sees the host's
 * network and processes, and a process that leaves its group survives.
 */

export interface UnsandboxedOptions {
  /** PATH for the command (default a fixed system PATH). */
  path?: string | undefined;
  scratchParent?: string | undefined;
}

export function createUnsandboxed(options: UnsandboxedOptions = {}): SandboxPort {
  const scratchParent = options.scratchParent ?? tmpdir();
  return {
    kind: 'none',
    isolated: false,
    async probe() {},
    async run(request: SandboxRequest): Promise<SandboxResult> {
      const scratch = await createScratchTree(request.tree, scratchParent);
      const home = await mkdtemp(join(scratchParent, 'shipgate-check-home-'));
      try {
        const outcome = await supervise({
          file: '/bin/sh',
          args: ['-c', request.command],
          cwd: scratch.repo,
          env: { PATH: options.path ?? CHECK_PATH, HOME: home, TMPDIR: scratchParent, LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8', CI: 'true' },
          timeoutMs: request.timeoutMs,
          // Room for the longest path spelling to be replaced whole at the tail's edge.
          keepBytes: request.outputCapBytes + 4_096,
          signal: request.signal,
        });
        // The command saw the copy's real path; people and the model see /repo.
        const spellings = [...new Set([scratch.repo, await realpath(scratch.repo)])].sort((a, b) => b.length - a.length);
        let output = outcome.output.toString('utf8');
        for (const spelling of spellings) output = output.split(spelling).join('/repo');
        output = output.split(home).join('$HOME');
        const bytes = Buffer.from(output, 'utf8');
        if (bytes.length > request.outputCapBytes) output = bytes.subarray(bytes.length - request.outputCapBytes).toString('utf8');
        return sandboxResult(outcome, output);
      } finally {
        await Promise.all([scratch.remove(), removeTree(home)]).catch(() => undefined);
      }
    },
  };
}
