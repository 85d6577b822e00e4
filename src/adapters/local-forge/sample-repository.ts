import type { LocalRepoPolicy } from '../../config/policy.js';
import { DEFAULT_IDENTITY, type Git } from '../../git/git.js';
import type { Logger } from '../../log.js';

/**
 * The sample repository of local mode (SPEC §8, issue 12): a small web app with tests and no
 * dependencies, created as a bare repository on first start for every local repository whose
 * policy says `sample: true`, so `/ship demo/shop add a /healthz endpoint` has something real to
 * change. An existing repository is never touched.
 */

export const SAMPLE_SHOP_FILES: Readonly<Record<string, string>> = {
  'README.md': [
    '# shop',
    '',
    "A small sample web app for shipgate's local mode. `node --test` runs its tests;",
    '`node src/server.js` serves it on port 3000.',
    '',
  ].join('\n'),
  'package.json': `${JSON.stringify({ name: 'shop', version: '1.0.0', private: true, scripts: { start: 'node src/server.js', test: 'node --test' } }, null, 2)}\n`,
  'src/app.js': [
    "'use strict';",
    '',
    '// The routes of the shop: path -> handler returning { status, body }.',
    'const products = [',
    "  { id: 1, name: 'coffee', priceCents: 350 },",
    "  { id: 2, name: 'tea', priceCents: 300 },",
    '];',
    '',
    'const routes = {',
    "  '/': () => ({ status: 200, body: { name: 'shop' } }),",
    "  '/products': () => ({ status: 200, body: products }),",
    '};',
    '',
    'function handle(path) {',
    '  const route = routes[path];',
    "  return route === undefined ? { status: 404, body: { error: 'not found' } } : route();",
    '}',
    '',
    'module.exports = { handle, routes };',
    '',
  ].join('\n'),
  'src/server.js': [
    "'use strict';",
    '',
    "const http = require('node:http');",
    "const { handle } = require('./app');",
    '',
    'const server = http.createServer((req, res) => {',
    "  const { status, body } = handle(new URL(req.url, 'http://localhost').pathname);",
    "  res.writeHead(status, { 'content-type': 'application/json' });",
    '  res.end(JSON.stringify(body));',
    '});',
    '',
    'if (require.main === module) server.listen(Number(process.env.PORT ?? 3000));',
    '',
    'module.exports = { server };',
    '',
  ].join('\n'),
  'test/app.test.js': [
    "'use strict';",
    '',
    "const test = require('node:test');",
    "const assert = require('node:assert');",
    "const { handle } = require('../src/app');",
    '',
    "test('the root names the shop', () => {",
    "  assert.deepStrictEqual(handle('/'), { status: 200, body: { name: 'shop' } });",
    '});',
    '',
    "test('products are listed', () => {",
    "  assert.strictEqual(handle('/products').body.length, 2);",
    '});',
    '',
    "test('an unknown path is 404', () => {",
    "  assert.strictEqual(handle('/nope').status, 404);",
    '});',
    '',
  ].join('\n'),
};

/** Creates the sample repository where the policy asks for one and nothing is there yet. */
export async function seedSampleRepositories(
  repos: Readonly<Record<string, LocalRepoPolicy>>,
  git: Pick<Git, 'local'>,
  log: Logger,
): Promise<void> {
  for (const [name, repo] of Object.entries(repos)) {
    if (repo.sample !== true || (await git.local.exists(repo.path))) continue;
    const commit = await git.local.seedBare(
      repo.path,
      'main',
      SAMPLE_SHOP_FILES,
      'The sample shop app',
      DEFAULT_IDENTITY,
    );
    log.info({ repo: name, path: repo.path, commit }, 'local forge: created the sample repository');
  }
}
