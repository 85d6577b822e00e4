import { randomBytes } from 'node:crypto';

/** A Redis key prefix unique to one test, so tests sharing a Redis never see each other's keys. */
export function testPrefix(name: string): string {
  return `t-${name}-${randomBytes(4).toString('hex')}`;
}
