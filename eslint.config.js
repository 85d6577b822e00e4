// @ts-check
import js from '@eslint/js';
import { defineConfig, globalIgnores } from 'eslint/config';
import { createNodeResolver, importX } from 'eslint-plugin-import-x';
import tseslint from 'typescript-eslint';

/**
 * Flat ESLint config. Formatting belongs to Prettier (.prettierrc.json): none of
 * the presets below carries stylistic rules, and the stylistic presets are not
 * used on purpose, so the two tools never fight.
 */
export default defineConfig(
  globalIgnores(['dist/', 'node_modules/', 'coverage/']),

  js.configs.recommended,
  tseslint.configs.strictTypeChecked,

  {
    languageOptions: {
      parserOptions: {
        projectService: true,
        tsconfigRootDir: import.meta.dirname,
      },
    },
    plugins: {
      'import-x': importX,
    },
    settings: {
      'import-x/extensions': ['.ts', '.tsx', '.cts', '.mts', '.js', '.jsx', '.cjs', '.mjs'],
      'import-x/external-module-folders': ['node_modules', 'node_modules/@types'],
      'import-x/parsers': { '@typescript-eslint/parser': ['.ts', '.tsx', '.cts', '.mts'] },
      // NodeNext ESM: sources import `./x.js`, the file on disk is `./x.ts`.
      'import-x/resolver-next': [
        createNodeResolver({
          extensions: ['.ts', '.tsx', '.mts', '.cts', '.js', '.mjs', '.cjs', '.json', '.node'],
          extensionAlias: {
            '.js': ['.ts', '.tsx', '.js'],
            '.mjs': ['.mts', '.mjs'],
            '.cjs': ['.cts', '.cjs'],
          },
          conditionNames: ['types', 'import', 'node', 'default'],
        }),
      ],
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true }],
      // zod `.default()`/`.optional()` outputs, `noUncheckedIndexedAccess` and defensive checks on
      // untrusted payloads (Slack, GitHub, Kubernetes) make this rule report correct code too often.
      '@typescript-eslint/no-unnecessary-condition': 'off',
      // Adapters implement Promise-returning ports with `async` methods that need no `await`
      // (console/fake adapters); `async` still turns a throw into a rejection. Floating and
      // misused promises stay errors above.
      '@typescript-eslint/require-await': 'off',
      // `(r) => setTimeout(r, 50)` / `() => resolve()` callbacks are idiomatic; still flagged elsewhere.
      '@typescript-eslint/no-confusing-void-expression': ['error', { ignoreArrowShorthand: true }],
      // `_`-prefixed names mark parameters that an interface requires but an implementation ignores.
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_' },
      ],
      'import-x/no-cycle': 'error',
      // The layers (ARCHITECTURE.md): logic takes ports, adapters stay at the edge, and only the
      // entry point knows how everything is wired.
      'import-x/no-restricted-paths': [
        'error',
        {
          zones: [
            {
              target: './src/domain',
              from: './src',
              // render/view.ts is the chat-neutral message model (data only, no imports): refusals are rich text.
              except: ['./domain', './config', './render/view.ts'],
              message: 'The domain is pure: it imports only itself, the policy types and the neutral view model.',
            },
            {
              target: ['./src/domain', './src/ports'],
              from: ['./commands', './workers', './bench', './test'],
              message: 'The domain and the ports sit below commands and workers: they never import them.',
            },
            {
              target: ['./src/domain', './src/ports', './commands', './workers'],
              from: './src/adapters',
              message: 'Logic talks to outside systems through ports; only the composition root picks adapters.',
            },
            {
              // Every file of src/ outside src/app/ (whose modules wire each other), commands and workers.
              target: ['./src/!(app)/**', './src/*.ts', './commands', './workers'],
              from: './src/app',
              message: 'Only src/main.ts (and tests) may import the composition root.',
            },
          ],
        },
      ],
    },
  },

  {
    // The domain is pure: no I/O, no outside system, no framework. Only zod (for the policy types it reads).
    files: ['src/domain/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: [{ group: ['node:*', 'ioredis', 'bullmq', '@slack/*', '@octokit/*', '@anthropic-ai/*', 'pino', 'prom-client', 'yaml'], message: 'The domain does no I/O: take what you need through a port or as plain data.' }] },
      ],
    },
  },

  {
    // The entry point is the one place that starts the composition root.
    files: ['src/main.ts'],
    rules: { 'import-x/no-restricted-paths': 'off' },
  },

  {
    files: ['test/**/*.ts', 'bench/**/*.ts', '**/*.test.ts'],
    rules: {
      '@typescript-eslint/no-non-null-assertion': 'off',
    },
  },

  {
    // Plain JS config files are not part of the TypeScript program (no allowJs).
    files: ['**/*.js', '**/*.mjs', '**/*.cjs'],
    extends: [tseslint.configs.disableTypeChecked],
  },
);
