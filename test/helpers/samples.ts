import { readFileSync } from 'node:fs';
import { parseAllDocuments } from 'yaml';

/**
 * The shared upstream samples (SPEC §9), read in place: `../shared/` sits beside the checkout on
 * every machine and in CI, and is not copied into the repository.
 */
const SAMPLES = new URL('../../../shared/upstream-samples/', import.meta.url);

type SampleSystem = 'github' | 'slack' | 'kargo' | 'argocd';

/** The raw text of `upstream-samples/<system>/<name>`. */
export function sampleText(system: SampleSystem, name: string): string {
  return readFileSync(new URL(`${system}/${name}`, SAMPLES), 'utf8');
}

/** A JSON sample, unparsed beyond JSON: callers validate the shape they use. */
export function sampleJson(system: SampleSystem, name: string): unknown {
  return JSON.parse(sampleText(system, name));
}

/** Every document of a YAML sample (`---`-separated), unparsed beyond YAML: callers validate the shape they use. */
export function sampleYamlDocuments(system: SampleSystem, name: string): unknown[] {
  return parseAllDocuments(sampleText(system, name)).map((doc): unknown => {
    if (doc.errors.length > 0) throw new Error(`${system}/${name}: ${doc.errors.map((e) => e.message).join('; ')}`);
    const value: unknown = doc.toJS();
    return value;
  });
}

/** A single-document YAML sample. */
export function sampleYaml(system: SampleSystem, name: string): unknown {
  const docs = sampleYamlDocuments(system, name);
  if (docs.length !== 1) throw new Error(`${system}/${name}: expected one YAML document, found ${docs.length}`);
  return docs[0];
}
