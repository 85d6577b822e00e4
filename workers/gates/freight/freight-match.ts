import { z } from 'zod';

/**
 * Which Freight is this run's (SPEC §1 gate 5): Freight of the pipeline's Warehouse that contains
 * the merge commit (`match: commit`) or an image built from it (`match: image`). Pure: the caller
 * hands the Freight its informer holds. Freight of another Warehouse, or for another commit, is
 * never this run's.
 *
 * - Commits compare as full 40-hex SHAs, case-insensitively: a short SHA in Freight could name
 *   another commit, so it never matches.
 * - An image matches when its tag equals one of the tag patterns expanded for the merge SHA
 *   (`{sha}` the full SHA, `{sha:N}` its first N characters, anything else literal), compared
 *   case-insensitively. The patterns are the policy's knob; the default takes the common CI tags:
 *   the full SHA or a 7–12 character prefix. A digest cannot be derived from a commit, so digests
 *   are not matched; `imageRepoURL` narrows the match to the image the pipeline builds.
 * - Several matches (a re-run of CI that pushed the same tag again, a Warehouse that picked the
 *   commit up twice) resolve to the oldest Freight, then the smallest name, so every worker picks
 *   the same one.
 */

export const kargoFreightSchema = z.object({
  metadata: z.object({ name: z.string(), namespace: z.string().optional(), creationTimestamp: z.string().optional() }),
  alias: z.string().optional(),
  origin: z.object({ kind: z.string(), name: z.string() }),
  commits: z
    .array(z.object({ repoURL: z.string().optional(), id: z.string().optional(), tag: z.string().optional() }))
    .nullish(),
  images: z
    .array(z.object({ repoURL: z.string().optional(), tag: z.string().optional(), digest: z.string().optional() }))
    .nullish(),
});

export type KargoFreight = z.infer<typeof kargoFreightSchema>;

export function parseKargoFreight(raw: unknown): KargoFreight {
  return kargoFreightSchema.parse(raw);
}

export const DEFAULT_IMAGE_TAG_PATTERNS: readonly string[] = [
  '{sha}',
  '{sha:7}',
  '{sha:8}',
  '{sha:9}',
  '{sha:10}',
  '{sha:11}',
  '{sha:12}',
];

export type FreightMatchRule =
  { match: 'commit' } | { match: 'image'; tagPatterns?: readonly string[]; imageRepoURL?: string };

export interface FreightMatch {
  freight: KargoFreight;
  name: string;
  alias: string | null;
  /** What matched: the commit's repository, or the image's `repo:tag`. */
  matchedBy: string;
}

const SHA = /^[0-9a-f]{40}$/i;
const PLACEHOLDER = /\{sha(?::(\d+))?\}/g;

/** The tags the patterns stand for, for one SHA; throws on a pattern that cannot be expanded. */
export function expandTagPatterns(patterns: readonly string[], sha: string): Set<string> {
  return new Set(
    patterns.map((pattern) => {
      if (!pattern.includes('{sha')) throw new Error(`image tag pattern ${JSON.stringify(pattern)} does not use {sha}`);
      return pattern
        .replace(PLACEHOLDER, (_all, n: string | undefined) => {
          const length = n === undefined ? 40 : Number(n);
          if (length < 7 || length > 40)
            throw new Error(`image tag pattern ${JSON.stringify(pattern)}: {sha:N} needs 7 ≤ N ≤ 40`);
          return sha.slice(0, length);
        })
        .toLowerCase();
    }),
  );
}

/** The run's Freight among `freight`, or `null` while the Warehouse has not produced it. */
export function findRunFreight(input: {
  freight: readonly KargoFreight[];
  warehouse: string;
  mergeSha: string;
  rule: FreightMatchRule;
}): FreightMatch | null {
  const { warehouse, rule } = input;
  if (!SHA.test(input.mergeSha)) throw new Error(`merge commit ${JSON.stringify(input.mergeSha)} is not a full SHA`);
  const sha = input.mergeSha.toLowerCase();
  const tags =
    rule.match === 'image' ? expandTagPatterns(rule.tagPatterns ?? DEFAULT_IMAGE_TAG_PATTERNS, sha) : new Set<string>();
  const repo = rule.match === 'image' && rule.imageRepoURL ? normaliseImageRepo(rule.imageRepoURL) : null;

  const matches: FreightMatch[] = [];
  for (const freight of input.freight) {
    if (freight.origin.kind !== 'Warehouse' || freight.origin.name !== warehouse) continue;
    const matchedBy =
      rule.match === 'commit'
        ? (freight.commits ?? []).find((c) => c.id !== undefined && SHA.test(c.id) && c.id.toLowerCase() === sha)
            ?.repoURL
        : (() => {
            const image = (freight.images ?? []).find(
              (i) =>
                i.tag !== undefined &&
                tags.has(i.tag.toLowerCase()) &&
                (repo === null || normaliseImageRepo(i.repoURL ?? '') === repo),
            );
            return image ? `${image.repoURL ?? ''}:${image.tag ?? ''}` : undefined;
          })();
    if (matchedBy === undefined) continue;
    matches.push({ freight, name: freight.metadata.name, alias: freight.alias ?? null, matchedBy: matchedBy || sha });
  }
  matches.sort(compareFreight);
  return matches[0] ?? null;
}

function normaliseImageRepo(url: string): string {
  return url.trim().toLowerCase().replace(/\/+$/, '');
}

/** Oldest first (unknown creation times last), then by name. */
function compareFreight(a: FreightMatch, b: FreightMatch): number {
  const ta = Date.parse(a.freight.metadata.creationTimestamp ?? '');
  const tb = Date.parse(b.freight.metadata.creationTimestamp ?? '');
  const ka = Number.isFinite(ta) ? ta : Infinity;
  const kb = Number.isFinite(tb) ? tb : Infinity;
  if (ka !== kb) return ka < kb ? -1 : 1;
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}
