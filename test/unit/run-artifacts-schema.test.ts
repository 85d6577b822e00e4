import { describe, expect, it } from 'vitest';
import { runArtifactsSchema } from '../../src/store/run-store.js';

/** Runs a deployed bot stored before artifacts were namespaced per gate keep going where they were. */
describe('stored run artifacts', () => {
  it('reads the old flat bag into the gate namespaces', () => {
    const legacy = {
      branch: 'shipgate/sg-1-x',
      commitSha: 'a'.repeat(40),
      previousCommitSha: 'b'.repeat(40),
      summary: 'Did it.',
      checks: [{ name: 'test', passed: true }],
      agentTurns: 4,
      feedback: 'CI said no',
      prNumber: 12,
      ciIterations: 1,
      ciFingerprints: ['f1'],
      mergeCommitSha: 'c'.repeat(40),
    };
    expect(runArtifactsSchema.parse(legacy)).toEqual({
      agent: { branch: 'shipgate/sg-1-x', commitSha: 'a'.repeat(40), previousCommitSha: 'b'.repeat(40), summary: 'Did it.', checks: [{ name: 'test', passed: true }], turns: 4, feedback: 'CI said no' },
      pr: { number: 12 },
      ci: { iterations: 1, fingerprints: ['f1'] },
      merge: { commitSha: 'c'.repeat(40) },
    });
    expect(runArtifactsSchema.parse({ branch: 'shipgate/sg-1-x' })).toEqual({ agent: { branch: 'shipgate/sg-1-x' } });
  });

  it('reads the namespaced shape as it is, and an empty one as empty', () => {
    const current = { agent: { branch: 'shipgate/sg-1-x', turns: 2 }, pr: { number: 3 } };
    expect(runArtifactsSchema.parse(current)).toEqual(current);
    expect(runArtifactsSchema.parse({})).toEqual({});
  });

  it('refuses a malformed record rather than guessing', () => {
    expect(runArtifactsSchema.safeParse({ prNumber: 'twelve' }).success).toBe(false);
    expect(runArtifactsSchema.safeParse({ pr: { number: 'twelve' } }).success).toBe(false);
  });
});
