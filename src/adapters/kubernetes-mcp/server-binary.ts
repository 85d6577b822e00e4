import { accessSync, constants } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

/**
 * Where the kubernetes-mcp-server binary is. The npm package `kubernetes-mcp-server` (a
 * dependency) installs the binary of this platform as one of its optional dependencies
 * (`kubernetes-mcp-server-<os>-<arch>`, ~75 MiB on linux-amd64); its own `bin/index.js` is a
 * wrapper that prints to stdout on signals, which would corrupt the MCP stream, so the bot starts
 * the platform binary itself.
 */

const OS: Partial<Record<NodeJS.Platform, string>> = { linux: 'linux', darwin: 'darwin', win32: 'windows' };
const ARCH: Partial<Record<string, string>> = { x64: 'amd64', arm64: 'arm64' };

export type ServerBinary = { found: true; path: string } | { found: false; reason: string };

export function resolveServerBinary(
  platform: NodeJS.Platform = process.platform,
  arch: string = process.arch,
): ServerBinary {
  const os = OS[platform];
  const cpu = ARCH[arch];
  if (os === undefined || cpu === undefined)
    return { found: false, reason: `kubernetes-mcp-server ships no binary for ${platform}/${arch}` };
  const name = `kubernetes-mcp-server-${os}-${cpu}`;
  let manifest: string;
  try {
    manifest = createRequire(import.meta.url).resolve(`${name}/package.json`);
  } catch {
    return {
      found: false,
      reason: `the npm package ${name} is not installed (an optional dependency of kubernetes-mcp-server; run npm install on ${platform}/${arch})`,
    };
  }
  const path = join(dirname(manifest), 'bin', `${name}${os === 'windows' ? '.exe' : ''}`);
  try {
    accessSync(path, constants.X_OK);
  } catch {
    return { found: false, reason: `${path} is missing or not executable` };
  }
  return { found: true, path };
}
