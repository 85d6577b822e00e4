import { RefusedError } from '../errors.js';

const ALLOWED_PROTOCOLS = new Set(['https:', 'http:', 'file:']);

/**
 * The clone URL is stored in .git/config verbatim, so it must carry no
 * credentials; and only transports that cannot run commands are accepted
 * (`ext::`, and ssh whose prompts and agent we do not control, are out).
 */
export function cloneUrlProblem(cloneUrl: string): string | undefined {
  let url: URL;
  try {
    url = new URL(cloneUrl);
  } catch {
    return 'not an absolute URL';
  }
  if (!ALLOWED_PROTOCOLS.has(url.protocol)) return `protocol ${url.protocol} is not allowed`;
  if (url.username !== '' || url.password !== '') return 'the URL carries credentials';
  if (/[\s\0]/.test(cloneUrl)) return 'the URL contains whitespace';
  return undefined;
}

export function assertCloneUrl(cloneUrl: string): void {
  const problem = cloneUrlProblem(cloneUrl);
  // The URL itself is not echoed back: a URL with userinfo is exactly what must not reach a log.
  if (problem !== undefined) throw new RefusedError(`unusable clone URL: ${problem}`);
}
