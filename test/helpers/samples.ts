import { readFileSync } from 'node:fs';

/**
 * The shared upstream samples (SPEC §9), read in place: `../shared/` sits beside the checkout on
 * every machine and in CI, and is not copied into the repository.
 */
const SAMPLES = new URL('../../../shared/upstream-samples/', import.meta.url);

/** The raw text of `upstream-samples/<system>/<name>`. */
export function sampleText(system: 'github' | 'slack' | 'kargo' | 'argocd', name: string): string {
  return readFileSync(new URL(`${system}/${name}`, SAMPLES), 'utf8');
}

/** A JSON sample, unparsed beyond JSON: callers validate the shape they use. */
export function sampleJson(system: 'github' | 'slack' | 'kargo' | 'argocd', name: string): unknown {
  return JSON.parse(sampleText(system, name));
}
