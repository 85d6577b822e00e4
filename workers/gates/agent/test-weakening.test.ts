import { describe, expect, it } from 'vitest';
import { detectTestWeakening, isTestFile, type FileChange } from './test-weakening.js';

/** The agent gate's test-weakening check: a fix that deletes, skips or loosens tests is flagged in the thread. */

describe('detectTestWeakening', () => {
  const testBefore = [
    "import { expect, it } from 'vitest';",
    "import { total } from '../src/cart.js';",
    '',
    "it('sums the cart', () => {",
    '  expect(total([1, 2])).toEqual(3);',
    '  expect(total([])).toBe(0);',
    '});',
    '',
    "it('rejects negatives', () => {",
    '  expect(() => total([-1])).toThrow(RangeError);',
    '});',
  ].join('\n');
  const modified = (path: string, before: string, after: string): FileChange => ({
    path,
    status: 'modified',
    before,
    after,
  });

  it('recognises test files by name and directory', () => {
    for (const path of [
      'src/cart.test.ts',
      'web/cart.spec.tsx',
      'test/helpers.ts',
      'pkg/tests/util.py',
      'src/__tests__/x.js',
      'cart_test.go',
      'test_cart.py',
      'cart_test.py',
      'src/main/java/CartTest.java',
      'spec/models/cart_rb.rb',
    ]) {
      expect(isTestFile(path), path).toBe(true);
    }
    for (const path of ['src/cart.ts', 'src/testing.ts', 'latest/x.ts', 'contest.py'])
      expect(isTestFile(path), path).toBe(false);
  });

  it('flags a deleted test file', () => {
    const findings = detectTestWeakening([
      { path: 'test/cart.test.ts', status: 'deleted', before: testBefore, after: undefined },
    ]);
    expect(findings).toEqual(['test file deleted: test/cart.test.ts']);
  });

  it('does not flag a moved test file, but compares the two', () => {
    const moved: FileChange[] = [
      { path: 'test/cart.test.ts', status: 'deleted', before: testBefore, after: undefined },
      { path: 'src/cart/cart.test.ts', status: 'added', before: undefined, after: testBefore },
    ];
    expect(detectTestWeakening(moved)).toEqual([]);
    const movedAndGutted: FileChange[] = [
      { path: 'src/cart/cart.test.ts', status: 'added', before: undefined, after: "it('sums', () => {});" },
      { path: 'test/cart.test.ts', status: 'deleted', before: testBefore, after: undefined },
    ];
    expect(detectTestWeakening(movedAndGutted)).toEqual([
      'test/cart.test.ts → src/cart/cart.test.ts: 3 assertion lines removed (3 → 0)',
    ]);
  });

  it('flags an added it.skip(', () => {
    const after = testBefore.replace("it('rejects negatives'", "it.skip('rejects negatives'");
    const findings = detectTestWeakening([modified('test/cart.test.ts', testBefore, after)]);
    expect(findings).toEqual([
      "test/cart.test.ts: adds 1 skip/focus marker .skip(: `it.skip('rejects negatives', () => {`",
    ]);
    // A new test file that arrives skipped counts too; a commented-out skip does not.
    expect(
      detectTestWeakening([
        {
          path: 'tests/test_cart.py',
          status: 'added',
          before: undefined,
          after: '@pytest.mark.skip\ndef test_x():\n    assert 1',
        },
      ]),
    ).toHaveLength(1);
    expect(
      detectTestWeakening([modified('test/cart.test.ts', testBefore, `${testBefore}\n// it.skip('later')`)]),
    ).toEqual([]);
  });

  it('flags removed and commented-out expect( lines with how many', () => {
    const removed = testBefore.replace('  expect(total([])).toBe(0);\n', '');
    expect(detectTestWeakening([modified('test/cart.test.ts', testBefore, removed)])).toEqual([
      'test/cart.test.ts: 1 assertion line removed (3 → 2)',
    ]);
    const commented = testBefore.replace(/ {2}expect/g, '  // expect');
    expect(detectTestWeakening([modified('test/cart.test.ts', testBefore, commented)])).toEqual([
      'test/cart.test.ts: 3 assertion lines removed (3 → 0)',
    ]);
  });

  it('flags toEqual( loosened to toBeTruthy() and assertEqual to assertTrue', () => {
    const after = testBefore.replace('.toEqual(3)', '.toBeTruthy()');
    expect(detectTestWeakening([modified('test/cart.test.ts', testBefore, after)])).toEqual([
      'test/cart.test.ts: assertions loosened (toEqual( ×1 replaced by toBeTruthy() ×1)',
    ]);
    const py = 'def test_total():\n    self.assertEqual(total([1, 2]), 3)\n';
    expect(
      detectTestWeakening([
        modified('tests/test_cart.py', py, py.replace('assertEqual(total([1, 2]), 3)', 'assertTrue(total([1, 2]))')),
      ]),
    ).toEqual(['tests/test_cart.py: assertions loosened (assertEqual ×1 replaced by assertTrue ×1)']);
  });

  it('flags test configuration that excludes tests', () => {
    const before = "export default defineConfig({ test: { include: ['test/**/*.test.ts'] } });";
    const after =
      "export default defineConfig({ test: { include: ['test/**/*.test.ts'], exclude: ['test/cart.test.ts'] } });";
    expect(detectTestWeakening([modified('vitest.config.ts', before, after)])).toHaveLength(1);
    const pkgBefore = '{\n  "scripts": {\n    "test": "jest"\n  }\n}';
    const pkgAfter = '{\n  "scripts": {\n    "test": "jest --passWithNoTests"\n  }\n}';
    expect(detectTestWeakening([modified('package.json', pkgBefore, pkgAfter)])).toEqual([
      'package.json: test configuration may exclude tests: `"test": "jest --passWithNoTests"`',
    ]);
  });

  it('stays silent for an ordinary code fix, even alongside a strengthened test', () => {
    const code = 'export function total(xs: number[]): number {\n  return xs.reduce((a, b) => a + b, 1);\n}\n';
    const fixed = code.replace('b, 1)', 'b, 0)');
    const strengthened = testBefore.replace('});\n\nit(', '  expect(total([5])).toBe(5);\n});\n\nit(');
    expect(
      detectTestWeakening([
        modified('src/cart.ts', code, fixed),
        modified('test/cart.test.ts', testBefore, strengthened),
        {
          path: 'src/discount.ts',
          status: 'added',
          before: undefined,
          after: 'export const skip = (xs: number[]) => xs.skip(1);',
        },
        { path: 'src/old.ts', status: 'deleted', before: code, after: undefined },
        modified('package.json', '{\n  "version": "1.0.0"\n}', '{\n  "version": "1.0.1"\n}'),
      ]),
    ).toEqual([]);
  });
});
