import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CONSOLE_CHANNEL, CONSOLE_USER } from '../../src/adapters/console/console-chat.js';
import { loadConfig } from '../../src/config/config.js';
import { localRepos } from '../../src/config/policy.js';
import { authoriseRunRequest } from '../../src/domain/authorise.js';
import { gatesFor } from '../../src/domain/run.js';
import { TEST_AUDIT_KEY } from '../helpers/audit-key.js';

/**
 * The policies a newcomer starts from (SPEC §8): the person at the console may request runs on
 * acme/shop with either, and the example's card shows its deploy gates.
 */

const ROOT = resolve(import.meta.dirname, '../..');
const noGroups = { isGroup: () => false, members: async () => [] };

function consolePolicy(file: string) {
  // Console mode (no Slack variables); the example's golden signals need PROMETHEUS_URL.
  return loadConfig(
    { SHIPGATE_CONFIG: file, SHIPGATE_AUDIT_KEY: TEST_AUDIT_KEY, PROMETHEUS_URL: 'http://127.0.0.1:9090' },
    { cwd: ROOT, readFile: (path) => readFileSync(path, 'utf8') },
  ).policy;
}

describe.each(['shipgate.yaml', 'shipgate.example.yaml'])('%s', (file) => {
  it('lets the console user request a run on acme/shop and on the local demo/shop in the console channel', async () => {
    for (const repo of ['acme/shop', 'demo/shop']) {
      const decision = await authoriseRunRequest(consolePolicy(file), { repo, channelId: CONSOLE_CHANNEL, userId: CONSOLE_USER }, noGroups);
      expect(decision).toEqual({ allowed: true });
    }
  });

  it('serves demo/shop from the sample repository beside the policy file, by the local forge', () => {
    const local = localRepos(consolePolicy(file));
    expect(Object.keys(local)).toEqual(['demo/shop']);
    expect(local['demo/shop']).toMatchObject({ path: resolve(ROOT, '.shipgate/repos/shop.git'), sample: true, ci: { test: 'node --test' } });
  });
});

it('shows the deploy gates of acme/shop on the card with the example policy', () => {
  const names = gatesFor(consolePolicy('shipgate.example.yaml'), 'acme/shop').map((gate) => gate.name);
  expect(names).toEqual(['agent', 'pr', 'ci', 'merge', 'freight', 'stage:dev', 'stage:staging', 'approval', 'stage:prod']);
});

it('keeps the Slack channel and requester guidance in the example, as comments', () => {
  const text = readFileSync(resolve(ROOT, 'shipgate.example.yaml'), 'utf8');
  expect(text).toMatch(/^\s*#\s+channels: \[C0123ABCD\]$/m);
  expect(text).toMatch(/^\s*#\s+requesters: \[U0123ABCD, S0456ABCD\]$/m);
});
