import { readFileSync } from 'node:fs';
import { parseAllDocuments } from 'yaml';
import { z } from 'zod';

/**
 * What the Kubernetes API server does with a custom resource before it stores it, for the test
 * Kubernetes server (test/helpers/kubernetes-server.ts): prune unknown fields, drop nulls the
 * schema does not allow, apply `default`s, then validate the structural OpenAPI v3 schema
 * (type, required, enum, properties, items, additionalProperties, the list/string/number
 * bounds, `x-kubernetes-int-or-string`, `x-kubernetes-preserve-unknown-fields`,
 * `x-kubernetes-embedded-resource`). Not done: CEL rules (`x-kubernetes-validations`),
 * `format`, `anyOf`/`oneOf`/`allOf`/`not` (the CRDs here use them only for int-or-string
 * patterns), list-map key uniqueness. The order (prune → default → validate) is the API server's.
 */

type JsonValue = z.core.util.JSONType;
type JsonObject = { [key: string]: JsonValue };

export interface OpenApiSchema {
  type?: string | undefined;
  properties?: Record<string, OpenApiSchema> | undefined;
  items?: OpenApiSchema | undefined;
  additionalProperties?: OpenApiSchema | boolean | undefined;
  required?: string[] | undefined;
  enum?: JsonValue[] | undefined;
  nullable?: boolean | undefined;
  default?: JsonValue | undefined;
  minItems?: number | undefined;
  maxItems?: number | undefined;
  minLength?: number | undefined;
  maxLength?: number | undefined;
  pattern?: string | undefined;
  minimum?: number | undefined;
  maximum?: number | undefined;
  'x-kubernetes-preserve-unknown-fields'?: boolean | undefined;
  'x-kubernetes-int-or-string'?: boolean | undefined;
  'x-kubernetes-embedded-resource'?: boolean | undefined;
}

const schemaSchema: z.ZodType<OpenApiSchema> = z.lazy(() =>
  z.looseObject({
    type: z.string().optional(),
    properties: z.record(z.string(), schemaSchema).optional(),
    items: schemaSchema.optional(),
    additionalProperties: z.union([z.boolean(), schemaSchema]).optional(),
    required: z.array(z.string()).optional(),
    enum: z.array(z.json()).optional(),
    nullable: z.boolean().optional(),
    default: z.json().optional(),
    minItems: z.number().optional(),
    maxItems: z.number().optional(),
    minLength: z.number().optional(),
    maxLength: z.number().optional(),
    pattern: z.string().optional(),
    minimum: z.number().optional(),
    maximum: z.number().optional(),
    'x-kubernetes-preserve-unknown-fields': z.boolean().optional(),
    'x-kubernetes-int-or-string': z.boolean().optional(),
    'x-kubernetes-embedded-resource': z.boolean().optional(),
  }),
);

const crdSchema = z.object({
  apiVersion: z.literal('apiextensions.k8s.io/v1'),
  kind: z.literal('CustomResourceDefinition'),
  spec: z.object({
    group: z.string(),
    names: z.object({ kind: z.string(), plural: z.string(), listKind: z.string().optional() }),
    scope: z.enum(['Namespaced', 'Cluster']),
    versions: z.array(
      z.object({
        name: z.string(),
        served: z.boolean(),
        storage: z.boolean(),
        schema: z.object({ openAPIV3Schema: schemaSchema }),
        subresources: z.object({ status: z.object({}).optional() }).optional(),
      }),
    ),
  }),
});

export interface CustomResourceDefinition {
  group: string;
  version: string;
  kind: string;
  listKind: string;
  plural: string;
  namespaced: boolean;
  hasStatusSubresource: boolean;
  schema: OpenApiSchema;
}

/** The served storage version of every CRD in a YAML file (one or more documents). */
export function loadCrds(path: string): CustomResourceDefinition[] {
  const out: CustomResourceDefinition[] = [];
  for (const doc of parseAllDocuments(readFileSync(path, 'utf8'))) {
    const crd = crdSchema.parse(doc.toJS());
    const version = crd.spec.versions.find((v) => v.served && v.storage);
    if (version === undefined) continue;
    out.push({
      group: crd.spec.group,
      version: version.name,
      kind: crd.spec.names.kind,
      listKind: crd.spec.names.listKind ?? `${crd.spec.names.kind}List`,
      plural: crd.spec.names.plural,
      namespaced: crd.spec.scope === 'Namespaced',
      hasStatusSubresource: version.subresources?.status !== undefined,
      schema: version.schema.openAPIV3Schema,
    });
  }
  return out;
}

/** One field error, as the API server reports it in a 422's `details.causes`. */
export interface FieldError {
  field: string;
  reason: 'FieldValueRequired' | 'FieldValueInvalid' | 'FieldValueNotSupported' | 'FieldValueTypeInvalid';
  message: string;
}

export interface AdmitResult {
  /** The object as it would be stored: pruned and defaulted. */
  object: JsonObject;
  errors: FieldError[];
}

function isObject(value: JsonValue | undefined): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function typeName(value: JsonValue): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number';
  return typeof value;
}

function typeMatches(schema: OpenApiSchema, value: JsonValue): boolean {
  if (schema['x-kubernetes-int-or-string'] === true) {
    return typeof value === 'string' || (typeof value === 'number' && Number.isInteger(value));
  }
  switch (schema.type) {
    case undefined:
      return true;
    case 'object':
      return isObject(value);
    case 'array':
      return Array.isArray(value);
    case 'string':
      return typeof value === 'string';
    case 'boolean':
      return typeof value === 'boolean';
    case 'integer':
      return typeof value === 'number' && Number.isInteger(value);
    case 'number':
      return typeof value === 'number';
    default:
      return false;
  }
}

const EMBEDDED_KEYS = new Set(['apiVersion', 'kind', 'metadata']);

/** Prunes, defaults and validates one value; returns the value to store (undefined = drop it). */
function walk(value: JsonValue, schema: OpenApiSchema, path: string, errors: FieldError[], root: boolean): JsonValue {
  if (value === null) {
    if (schema.nullable === true) return null;
    // The API server prunes nulls the schema does not allow before it validates (they never store).
    errors.push({
      field: path,
      reason: 'FieldValueTypeInvalid',
      message: `${path}: Invalid value: "null": ${path} in body must be of type ${schema.type ?? 'any'}: "null"`,
    });
    return null;
  }
  if (!typeMatches(schema, value)) {
    errors.push({
      field: path,
      reason: 'FieldValueTypeInvalid',
      message: `${path}: Invalid value: "${typeName(value)}": ${path} in body must be of type ${schema.type ?? 'int-or-string'}: "${typeName(value)}"`,
    });
    return value;
  }
  if (schema.enum !== undefined && !schema.enum.some((allowed) => JSON.stringify(allowed) === JSON.stringify(value))) {
    errors.push({
      field: path,
      reason: 'FieldValueNotSupported',
      message: `${path}: Unsupported value: ${JSON.stringify(value)}: supported values: ${schema.enum.map((e) => JSON.stringify(e)).join(', ')}`,
    });
  }
  if (typeof value === 'string') {
    if (schema.minLength !== undefined && value.length < schema.minLength) {
      errors.push({
        field: path,
        reason: 'FieldValueInvalid',
        message: `${path}: Invalid value: ${JSON.stringify(value)}: ${path} in body should be at least ${schema.minLength} chars long`,
      });
    }
    if (schema.maxLength !== undefined && value.length > schema.maxLength) {
      errors.push({
        field: path,
        reason: 'FieldValueInvalid',
        message: `${path}: Too long: may not be more than ${schema.maxLength} bytes`,
      });
    }
    if (schema.pattern !== undefined && !new RegExp(schema.pattern, 'u').test(value)) {
      errors.push({
        field: path,
        reason: 'FieldValueInvalid',
        message: `${path}: Invalid value: ${JSON.stringify(value)}: ${path} in body should match '${schema.pattern}'`,
      });
    }
    return value;
  }
  if (typeof value === 'number') {
    if (schema.minimum !== undefined && value < schema.minimum) {
      errors.push({
        field: path,
        reason: 'FieldValueInvalid',
        message: `${path}: Invalid value: ${value}: ${path} in body should be greater than or equal to ${schema.minimum}`,
      });
    }
    if (schema.maximum !== undefined && value > schema.maximum) {
      errors.push({
        field: path,
        reason: 'FieldValueInvalid',
        message: `${path}: Invalid value: ${value}: ${path} in body should be less than or equal to ${schema.maximum}`,
      });
    }
    return value;
  }
  if (Array.isArray(value)) {
    if (schema.minItems !== undefined && value.length < schema.minItems) {
      errors.push({
        field: path,
        reason: 'FieldValueInvalid',
        message: `${path}: Invalid value: ${value.length}: ${path} in body should have at least ${schema.minItems} items`,
      });
    }
    if (schema.maxItems !== undefined && value.length > schema.maxItems) {
      errors.push({
        field: path,
        reason: 'FieldValueInvalid',
        message: `${path}: Too many: ${value.length}: must have at most ${schema.maxItems} items`,
      });
    }
    const items = schema.items;
    if (items === undefined) return value;
    return value.map((item, i) => walk(item, items, `${path}[${i}]`, errors, false));
  }
  if (isObject(value)) return walkObject(value, schema, path, errors, root);
  return value;
}

function walkObject(
  value: JsonObject,
  schema: OpenApiSchema,
  path: string,
  errors: FieldError[],
  root: boolean,
): JsonObject {
  const preserve = schema['x-kubernetes-preserve-unknown-fields'] === true;
  const embedded = schema['x-kubernetes-embedded-resource'] === true;
  const properties = schema.properties ?? {};
  const additional = schema.additionalProperties;
  const out: JsonObject = {};
  for (const [key, child] of Object.entries(value)) {
    const childPath = path === '' ? key : `${path}.${key}`;
    // apiVersion, kind and metadata of the object itself (and of embedded resources) are the API
    // server's business, not the schema's: never pruned here.
    if ((root || embedded) && EMBEDDED_KEYS.has(key)) {
      out[key] = child;
      continue;
    }
    const childSchema = properties[key] ?? (typeof additional === 'object' ? additional : undefined);
    if (childSchema === undefined) {
      if (preserve || additional === true) out[key] = child;
      // Otherwise pruned: the API server drops fields its schema does not know, silently.
      continue;
    }
    if (child === null && childSchema.nullable !== true) continue;
    out[key] = walk(child, childSchema, childPath, errors, false);
  }
  for (const [key, childSchema] of Object.entries(properties)) {
    if (out[key] === undefined && childSchema.default !== undefined) {
      out[key] = walk(
        structuredClone(childSchema.default),
        childSchema,
        path === '' ? key : `${path}.${key}`,
        errors,
        false,
      );
    }
  }
  for (const key of schema.required ?? []) {
    if (out[key] === undefined) {
      const field = path === '' ? key : `${path}.${key}`;
      errors.push({ field, reason: 'FieldValueRequired', message: `${field}: Required value` });
    }
  }
  return out;
}

/** Prune, default and validate a whole object against its CRD's schema. */
export function admit(object: JsonObject, schema: OpenApiSchema): AdmitResult {
  const errors: FieldError[] = [];
  const stored = walkObject(object, schema, '', errors, true);
  return { object: stored, errors };
}
