// Reading roles and bindings from the store, and the authorization targets of an object.
// Owns: the translation from stored objects to the pure RBAC model of auth/rbac.ts.

import type { BindingDef, RoleDef, RoleRule, Target } from '../auth/rbac.js';
import type { ServerKind } from '../resources/kinds.js';
import { kindByPath } from '../resources/kinds.js';
import type { ApiObject } from '../resources/keys.js';
import { decodeObject, kindPrefix } from '../resources/keys.js';
import type { Store } from '../store/store.js';

const ROLE = kindByPath('palisade.dev', 'Role') as ServerKind;
const BINDING = kindByPath('palisade.dev', 'RoleBinding') as ServerKind;

export async function readAccess(
  store: Store,
): Promise<{ roles: Map<string, RoleDef>; bindings: BindingDef[] }> {
  const [r, b] = await Promise.all([store.list(kindPrefix(ROLE)), store.list(kindPrefix(BINDING))]);
  const roles = new Map<string, RoleDef>();
  for (const kv of r.items) {
    const o = decodeObject(kv) as ApiObject & { rules?: RoleRule[] };
    roles.set(o.metadata.name, { name: o.metadata.name, rules: o.rules ?? [] });
  }
  const bindings: BindingDef[] = b.items.map((kv) => {
    const o = decodeObject(kv) as ApiObject & {
      subjects?: BindingDef['subjects'];
      roleRef?: { name: string };
    };
    return { name: o.metadata.name, subjects: o.subjects ?? [], roleRef: o.roleRef?.name ?? '' };
  });
  return { roles, bindings };
}

/** The tier a policy sits in (Calico: `spec.tier`, default `default`); a Tier is its own. */
export function tierOf(k: ServerKind, o: ApiObject | undefined): string | undefined {
  switch (k.tiered) {
    case false:
      return undefined;
    case 'default':
      return 'default';
    case 'self':
      return o?.metadata.name;
    case 'spec.tier': {
      const t = (o?.spec as { tier?: unknown } | undefined)?.tier;
      return typeof t === 'string' && t !== '' ? t : 'default';
    }
  }
}

export function targetOf(k: ServerKind, o: ApiObject): Target {
  const node = (o.spec as { node?: unknown } | undefined)?.node;
  return {
    kind: k.kind,
    group: k.group,
    namespace: k.namespaced ? (o.metadata.namespace ?? 'default') : undefined,
    name: o.metadata.name,
    tier: tierOf(k, o),
    node: typeof node === 'string' ? node : undefined,
  };
}
