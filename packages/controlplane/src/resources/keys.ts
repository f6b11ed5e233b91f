// The store layout of the API server (docs/design/server.md): one prefix per kind, namespaced
// kinds one level deeper, tokens and the audit log under prefixes of their own. Owns: building
// and parsing keys. Must never: build a key from an unchecked name (resources/names.ts).

import type { KeyValue } from '../store/store.js';
import type { ServerKind } from './kinds.js';
import { SERVER_KINDS } from './kinds.js';

export const ROOT = '/palisade/';
export const RESOURCES_PREFIX = '/palisade/resources/';
export const TOKENS_PREFIX = '/palisade/tokens/';
export const AUDIT_ENTRIES_PREFIX = '/palisade/audit/entries/';
export const AUDIT_HEAD_KEY = '/palisade/audit/head';

/** The prefix of every object of a kind (in every namespace). */
export function kindPrefix(k: ServerKind): string {
  return `${RESOURCES_PREFIX}${k.group}/${k.kind}/`;
}

/** The prefix of a namespaced kind's objects in one namespace. */
export function namespacePrefix(k: ServerKind, namespace: string): string {
  return `${kindPrefix(k)}${namespace}/`;
}

export function objectKey(k: ServerKind, namespace: string | undefined, name: string): string {
  return k.namespaced
    ? `${kindPrefix(k)}${namespace ?? 'default'}/${name}`
    : `${kindPrefix(k)}${name}`;
}

export interface ObjectRef {
  readonly kind: ServerKind;
  readonly namespace: string | undefined;
  readonly name: string;
}

/** The kind, namespace and name behind a resource key; undefined for other keys. */
export function parseObjectKey(key: string): ObjectRef | undefined {
  if (!key.startsWith(RESOURCES_PREFIX)) return undefined;
  const parts = key.slice(RESOURCES_PREFIX.length).split('/');
  const [group, kind] = parts;
  const k = SERVER_KINDS.find((s) => s.group === group && s.kind === kind);
  if (!k) return undefined;
  if (k.namespaced && parts.length === 4)
    return { kind: k, namespace: parts[2], name: parts[3] ?? '' };
  if (!k.namespaced && parts.length === 3)
    return { kind: k, namespace: undefined, name: parts[2] ?? '' };
  return undefined;
}

export function auditEntryKey(seq: number): string {
  return `${AUDIT_ENTRIES_PREFIX}${String(seq).padStart(16, '0')}`;
}

export function tokenKey(hashHex: string): string {
  return `${TOKENS_PREFIX}${hashHex}`;
}

/** A stored object as the API returns it: `metadata.resourceVersion` is the key's modRevision. */
export type ApiObject = Record<string, unknown> & {
  apiVersion: string;
  kind: string;
  metadata: Record<string, unknown> & { name: string; namespace?: string };
};

export function decodeObject(kv: KeyValue): ApiObject {
  const o = JSON.parse(kv.value) as ApiObject;
  return { ...o, metadata: { ...o.metadata, resourceVersion: String(kv.modRevision) } };
}

/** The stored form: no resourceVersion (the key's revision is), no loader source positions. */
export function encodeObject(o: ApiObject): string {
  const rest = omit(o as Record<string, unknown>, ['source']);
  return JSON.stringify({ ...rest, metadata: omit(o.metadata, ['resourceVersion']) });
}

/** A shallow copy without the named fields. */
export function omit<T extends Record<string, unknown>>(
  o: T,
  keys: readonly string[],
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(o)) if (!keys.includes(k)) out[k] = v;
  return out;
}
