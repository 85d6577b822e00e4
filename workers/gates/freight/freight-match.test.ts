import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  DEFAULT_IMAGE_TAG_PATTERNS,
  expandTagPatterns,
  findRunFreight,
  parseKargoFreight,
  type KargoFreight,
} from './freight-match.js';
import { sampleYaml } from '../../../test/helpers/samples.js';

/**
 * The freight gate's match. No upstream Freight object exists among the samples (SOURCES.md, known
 * gaps), but the docs' Stage status (`kargo/stage-status.docs-example.legacy-v0.8.yaml`) carries real
 * FreightReferences — name, origin, commits, images, the fields a Freight has at its top level — so
 * the Freight here are built from those, with metadata added.
 */

const reference = z.object({
  name: z.string(),
  origin: z.object({ kind: z.string(), name: z.string() }),
  commits: z.array(z.object({ repoURL: z.string(), id: z.string() })),
  images: z.array(z.object({ repoURL: z.string(), tag: z.string(), digest: z.string() })),
});
const docsRef = z
  .object({ status: z.object({ freightHistory: z.array(z.object({ items: z.record(z.string(), reference) })) }) })
  .parse(sampleYaml('kargo', 'stage-status.docs-example.legacy-v0.8.yaml')).status.freightHistory[0]?.items[
  'Warehouse/my-warehouse'
];
if (!docsRef) throw new Error('sample changed');

const SHA = '961cfaedbc53aacdb65110028839a2c1c281290d';
const OTHER = '111eaf55aa41f21bb9bb707ba1baa748b83ec51e';

function freight(change: Partial<KargoFreight> & { name?: string; created?: string } = {}): KargoFreight {
  const { name, created, ...rest } = change;
  return parseKargoFreight({
    apiVersion: 'kargo.akuity.io/v1alpha1',
    kind: 'Freight',
    metadata: {
      name: name ?? docsRef?.name,
      namespace: 'kargo-demo',
      creationTimestamp: created ?? '2024-07-15T22:10:00Z',
    },
    alias: 'wonky-wombat',
    ...docsRef,
    ...rest,
  });
}

describe('match: commit', () => {
  const rule = { match: 'commit' } as const;

  it('finds the Freight of the pipeline Warehouse whose commit is the merge commit, full SHA, any case', () => {
    const found = findRunFreight({
      freight: [freight()],
      warehouse: 'my-warehouse',
      mergeSha: SHA.toUpperCase(),
      rule,
    });
    expect(found).toMatchObject({
      name: '666209fd9755a1e48bec6b27f5f447747410dd9e',
      alias: 'wonky-wombat',
      matchedBy: 'https://github.com/example/kargo-demo.git',
    });
  });

  it('never takes Freight of another Warehouse or another commit', () => {
    expect(findRunFreight({ freight: [freight()], warehouse: 'images', mergeSha: SHA, rule })).toBeNull();
    expect(findRunFreight({ freight: [freight()], warehouse: 'my-warehouse', mergeSha: OTHER, rule })).toBeNull();
    const short = freight({
      commits: [{ repoURL: 'https://github.com/example/kargo-demo.git', id: SHA.slice(0, 12) }],
    });
    expect(findRunFreight({ freight: [short], warehouse: 'my-warehouse', mergeSha: SHA, rule })).toBeNull();
  });

  it('picks deterministically among several: oldest first, then by name', () => {
    const candidates = [
      freight({ name: 'ccc', created: '2024-07-15T22:12:00Z' }),
      freight({ name: 'bbb', created: '2024-07-15T22:11:00Z' }),
      freight({ name: 'aaa', created: '2024-07-15T22:11:00Z' }),
      freight({ name: '000', created: '2024-07-15T22:00:00Z', origin: { kind: 'Warehouse', name: 'other' } }),
    ];
    expect(findRunFreight({ freight: candidates, warehouse: 'my-warehouse', mergeSha: SHA, rule })?.name).toBe('aaa');
    expect(
      findRunFreight({ freight: [...candidates].reverse(), warehouse: 'my-warehouse', mergeSha: SHA, rule })?.name,
    ).toBe('aaa');
  });

  it('refuses a merge SHA that is not a full SHA', () => {
    expect(() => findRunFreight({ freight: [], warehouse: 'my-warehouse', mergeSha: SHA.slice(0, 7), rule })).toThrow(
      /not a full SHA/,
    );
  });
});

describe('match: image', () => {
  const built = (tag: string, repoURL = 'public.ecr.aws/nginx/nginx') =>
    freight({
      commits: [],
      images: [{ repoURL, tag, digest: 'sha256:b2487a28589657b318e0d63110056e11564e73b9fd3ec4c4afba5542f9d07d46' }],
    });

  it("the docs Freight (tag 1.27.0) is no commit's image", () => {
    expect(
      findRunFreight({ freight: [freight()], warehouse: 'my-warehouse', mergeSha: SHA, rule: { match: 'image' } }),
    ).toBeNull();
  });

  it.each([SHA, SHA.slice(0, 7), SHA.slice(0, 12).toUpperCase()])('default patterns take tag %s', (tag) => {
    expect(
      findRunFreight({ freight: [built(tag)], warehouse: 'my-warehouse', mergeSha: SHA, rule: { match: 'image' } })
        ?.matchedBy,
    ).toBe(`public.ecr.aws/nginx/nginx:${tag}`);
  });

  it.each([SHA.slice(0, 6), SHA.slice(0, 13), OTHER.slice(0, 7), `v${SHA.slice(0, 7)}`])(
    'default patterns refuse tag %s',
    (tag) => {
      expect(
        findRunFreight({ freight: [built(tag)], warehouse: 'my-warehouse', mergeSha: SHA, rule: { match: 'image' } }),
      ).toBeNull();
    },
  );

  it('a policy pattern and image repository narrow the match', () => {
    const rule = { match: 'image', tagPatterns: ['sha-{sha:7}'], imageRepoURL: 'ghcr.io/acme/shop' } as const;
    const ours = built(`sha-${SHA.slice(0, 7)}`, 'ghcr.io/acme/shop');
    const theirs = built(`sha-${SHA.slice(0, 7)}`, 'ghcr.io/acme/other');
    expect(findRunFreight({ freight: [theirs, ours], warehouse: 'my-warehouse', mergeSha: SHA, rule })?.matchedBy).toBe(
      `ghcr.io/acme/shop:sha-${SHA.slice(0, 7)}`,
    );
    expect(
      findRunFreight({ freight: [built(SHA, 'ghcr.io/acme/shop')], warehouse: 'my-warehouse', mergeSha: SHA, rule }),
    ).toBeNull();
  });

  it('patterns must use the SHA with at least 7 characters', () => {
    expect([...expandTagPatterns(DEFAULT_IMAGE_TAG_PATTERNS, SHA)]).toHaveLength(7);
    expect(() => expandTagPatterns(['latest'], SHA)).toThrow(/does not use/);
    expect(() => expandTagPatterns(['{sha:4}'], SHA)).toThrow(/7 ≤ N ≤ 40/);
  });
});
