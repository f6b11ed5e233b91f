// A small schema language for the resources we accept, and the validator that walks a value
// against it, reporting every problem with its field path.
// Owns: structural validation. Must never: know about YAML positions (load.ts maps paths).

import { suggest } from '../diagnostics/suggest.js';
import type { LoadErrorCode } from './codes.js';

export type Path = readonly (string | number)[];

export interface Problem {
  readonly code: LoadErrorCode;
  readonly path: Path;
  readonly message: string;
  readonly hint?: string;
  /** Point at the key of the last path element rather than its value. */
  readonly atKey?: boolean;
  /** Offset inside a string value (selector errors). */
  readonly offset?: number;
}

export type Check = (value: never, path: Path, report: (p: Problem) => void) => void;

export type Schema =
  | {
      readonly t: 'string';
      readonly check?: (v: string) => string | undefined;
      readonly max?: number;
    }
  | { readonly t: 'int'; readonly min?: number; readonly max?: number }
  | { readonly t: 'bool' }
  | { readonly t: 'any' }
  | { readonly t: 'enum'; readonly values: readonly (string | number)[] }
  | { readonly t: 'intOrString'; readonly check?: (v: number | string) => string | undefined }
  | { readonly t: 'map'; readonly values: Schema; readonly key?: (k: string) => string | undefined }
  | { readonly t: 'list'; readonly of: Schema; readonly max?: number; readonly what?: string }
  | {
      readonly t: 'obj';
      readonly fields: Readonly<Record<string, Schema>>;
      readonly required?: readonly string[];
      /** Unknown fields are ignored unless they are near-misspellings of known ones. */
      readonly tolerant?: boolean;
      readonly check?: (
        v: Record<string, unknown>,
        path: Path,
        report: (p: Problem) => void,
      ) => void;
    };

function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  if (typeof v === 'string')
    return `string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)}`;
  return `${typeof v} ${JSON.stringify(v) ?? typeof v}`;
}

export function fieldPath(path: Path): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? p : `.${p}`;
  return out;
}

export function validate(
  schema: Schema,
  v: unknown,
  path: Path,
  report: (p: Problem) => void,
): void {
  const bad = (expected: string) =>
    report({
      code: 'POLICY_ERR_INVALID_TYPE',
      path,
      message: `${fieldPath(path)} must be ${expected}, not ${typeName(v)}`,
    });
  switch (schema.t) {
    case 'any':
      return;
    case 'string': {
      if (typeof v !== 'string') return bad('a string');
      if (schema.max !== undefined && v.length > schema.max) {
        report({
          code: 'POLICY_ERR_LIMIT_EXCEEDED',
          path,
          message: `${fieldPath(path)} is ${v.length} characters long; the limit is ${schema.max}`,
        });
        return;
      }
      const m = schema.check?.(v);
      if (m)
        report({ code: 'POLICY_ERR_INVALID_VALUE', path, message: `${fieldPath(path)}: ${m}` });
      return;
    }
    case 'int': {
      if (typeof v !== 'number' || !Number.isInteger(v)) return bad('an integer');
      if (
        (schema.min !== undefined && v < schema.min) ||
        (schema.max !== undefined && v > schema.max)
      )
        report({
          code: 'POLICY_ERR_INVALID_VALUE',
          path,
          message: `${fieldPath(path)} is ${v}; it must be between ${schema.min ?? '-∞'} and ${schema.max ?? '∞'}`,
        });
      return;
    }
    case 'bool':
      if (typeof v !== 'boolean') bad('true or false');
      return;
    case 'enum':
      if (!schema.values.includes(v as string | number)) {
        const near = typeof v === 'string' ? suggest(v, schema.values.map(String)) : undefined;
        report({
          code: 'POLICY_ERR_INVALID_VALUE',
          path,
          message: `${fieldPath(path)} is ${typeName(v)}; it must be one of ${schema.values.map((x) => JSON.stringify(x)).join(', ')}`,
          ...(near ? { hint: `did you mean ${JSON.stringify(near)}?` } : {}),
        });
      }
      return;
    case 'intOrString': {
      if (typeof v !== 'string' && !(typeof v === 'number' && Number.isInteger(v)))
        return bad('an integer or a string');
      const m = schema.check?.(v);
      if (m)
        report({ code: 'POLICY_ERR_INVALID_VALUE', path, message: `${fieldPath(path)}: ${m}` });
      return;
    }
    case 'map': {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) return bad('a mapping');
      for (const [k, val] of Object.entries(v)) {
        const km = schema.key?.(k);
        if (km)
          report({
            code: 'POLICY_ERR_INVALID_VALUE',
            path: [...path, k],
            atKey: true,
            message: `${fieldPath([...path, k])}: ${km}`,
          });
        validate(schema.values, val, [...path, k], report);
      }
      return;
    }
    case 'list': {
      if (!Array.isArray(v)) return bad('a list');
      if (schema.max !== undefined && v.length > schema.max) {
        report({
          code: 'POLICY_ERR_LIMIT_EXCEEDED',
          path,
          message: `${fieldPath(path)} has ${v.length} ${schema.what ?? 'entries'}; the limit is ${schema.max}`,
        });
      }
      v.forEach((x, i) => validate(schema.of, x, [...path, i], report));
      return;
    }
    case 'obj': {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) return bad('a mapping');
      const rec = v as Record<string, unknown>;
      const known = Object.keys(schema.fields);
      for (const [k, val] of Object.entries(rec)) {
        const fs = schema.fields[k];
        if (fs) {
          if (val === null) continue;
          validate(fs, val, [...path, k], report);
          continue;
        }
        const near = suggest(k, known);
        if (schema.tolerant && !near) continue;
        report({
          code: 'POLICY_ERR_UNKNOWN_FIELD',
          path: [...path, k],
          atKey: true,
          message: `unknown field ${JSON.stringify(k)} in ${fieldPath(path) || 'the document'}`,
          hint: near
            ? `did you mean ${JSON.stringify(near)}?`
            : `known fields here: ${known.join(', ')}`,
        });
      }
      for (const r of schema.required ?? []) {
        if (rec[r] === undefined || rec[r] === null)
          report({
            code: 'POLICY_ERR_MISSING_FIELD',
            path,
            message: `${fieldPath(path) || 'the document'} needs the field ${JSON.stringify(r)}`,
          });
      }
      schema.check?.(rec, path, report);
      return;
    }
  }
}
