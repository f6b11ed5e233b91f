// Authorization (DESIGN §7): deny by default; Role and RoleBinding of palisade.dev/v1; policies
// authorized by the tier they sit in, as in Calico; built-in roles admin, viewer and node.
// Owns: the decision, as a pure function of the roles, the bindings and the request.
// Must never: allow anything no rule names; do I/O (the server reads roles from the store).

import type { Principal } from './principal.js';
import { ADMINS_GROUP, VIEWERS_GROUP } from './principal.js';

export type Verb = 'get' | 'list' | 'watch' | 'create' | 'update' | 'delete';
export const READ_VERBS: readonly Verb[] = ['get', 'list', 'watch'];
export const WRITE_VERBS: readonly Verb[] = ['create', 'update', 'delete'];

export interface RoleRule {
  readonly verbs: readonly string[];
  readonly kinds: readonly string[];
  /** Absent: every namespace and the cluster-scoped kinds. Present: only these namespaces. */
  readonly namespaces?: readonly string[];
  /** Absent: every tier. Present: tiered kinds only in these tiers (others are unaffected). */
  readonly tiers?: readonly string[];
  /** Absent: every name. */
  readonly names?: readonly string[];
}

export interface RoleDef {
  readonly name: string;
  readonly rules: readonly RoleRule[];
}

export interface BindingDef {
  readonly name: string;
  readonly subjects: readonly { readonly kind: 'User' | 'Group' | 'Node'; readonly name: string }[];
  readonly roleRef: string;
}

/** What is being touched. For a tiered kind `tier` is set; for endpoints, `node`. */
export interface Target {
  readonly kind: string;
  readonly group: string;
  readonly namespace?: string | undefined;
  readonly name?: string | undefined;
  readonly tier?: string | undefined;
  readonly node?: string | undefined;
}

export interface AuthzRequest {
  readonly principal: Principal;
  readonly verb: Verb;
  /**
   * Every version of the object the verb touches: an update that moves a policy between tiers
   * names both, and both must be allowed.
   */
  readonly targets: readonly Target[];
}

export type AuthzDecision =
  | { readonly allowed: true; readonly by: string }
  | { readonly allowed: false; readonly reason: string };

export const BUILTIN_ROLE_NAMES = new Set(['admin', 'viewer', 'node']);

const NODE_WRITABLE = new Set(['WorkloadEndpoint', 'HostEndpoint']);
/** Kinds no built-in read role covers except admin: credentials and access control. */
const PRIVILEGED_GROUP = 'palisade.dev';

/**
 * `*` in `kinds` never covers our own group (Role, RoleBinding, Token, AuditEntry): access
 * control and credentials must be named (`Role`, `*.palisade.dev`), so a team role written as
 * "everything in my tier" cannot mint tokens or bind itself to admin.
 */
export const BUILTIN_ROLES: ReadonlyMap<string, RoleDef> = new Map([
  ['admin', { name: 'admin', rules: [{ verbs: ['*'], kinds: ['*', '*.palisade.dev'] }] }],
  [
    'viewer',
    {
      name: 'viewer',
      rules: [
        {
          verbs: ['get', 'list', 'watch'],
          kinds: ['*', 'Role', 'RoleBinding', 'AuditEntry', 'FlowRecord'],
        },
      ],
    },
  ],
]);

function listed(list: readonly string[] | undefined, v: string | undefined): boolean {
  if (list === undefined) return true;
  if (list.includes('*')) return true;
  return v !== undefined && list.includes(v);
}

function ruleCovers(rule: RoleRule, verb: Verb, t: Target): boolean {
  if (!rule.verbs.includes('*') && !rule.verbs.includes(verb)) return false;
  const kindOk = rule.kinds.some(
    (k) =>
      (k === '*' && t.group !== PRIVILEGED_GROUP) ||
      k === t.kind ||
      k === `${t.kind}.${t.group}` ||
      k === `*.${t.group}`,
  );
  if (!kindOk) return false;
  if (
    rule.namespaces !== undefined &&
    (t.namespace === undefined || !listed(rule.namespaces, t.namespace))
  )
    return false;
  if (t.tier !== undefined && !listed(rule.tiers, t.tier)) return false;
  if (!listed(rule.names, t.name)) return false;
  return true;
}

function nodeRoleCovers(node: string, verb: Verb, t: Target): boolean {
  if (t.group === PRIVILEGED_GROUP) return false;
  if (READ_VERBS.includes(verb)) return true;
  // Writes: only its own node's endpoints (spec.node), before and after the change.
  return NODE_WRITABLE.has(t.kind) && t.group === 'projectcalico.org' && t.node === node;
}

/** Roles bound to the principal, by binding name, including the built-in bindings. */
function boundRoles(
  p: Principal,
  bindings: readonly BindingDef[],
): { binding: string; role: string }[] {
  const out: { binding: string; role: string }[] = [];
  if (p.groups.includes(ADMINS_GROUP))
    out.push({ binding: `group ${ADMINS_GROUP}`, role: 'admin' });
  if (p.groups.includes(VIEWERS_GROUP))
    out.push({ binding: `group ${VIEWERS_GROUP}`, role: 'viewer' });
  for (const b of bindings) {
    const hit = b.subjects.some(
      (s) =>
        (s.kind === p.kind && s.name === p.name) ||
        (s.kind === 'Group' && p.groups.includes(s.name)),
    );
    if (hit) out.push({ binding: `RoleBinding ${b.name}`, role: b.roleRef });
  }
  return out;
}

/** Deny by default: allowed only when one bound role covers the verb on every target. */
export function authorize(
  req: AuthzRequest,
  roles: ReadonlyMap<string, RoleDef>,
  bindings: readonly BindingDef[],
): AuthzDecision {
  const p = req.principal;
  const candidates = boundRoles(p, bindings);
  const covered = (t: Target): string | undefined => {
    if (p.kind === 'Node' && nodeRoleCovers(p.name, req.verb, t)) return 'built-in role node';
    for (const c of candidates) {
      if (c.role === 'node') {
        if (p.kind === 'Node' && nodeRoleCovers(p.name, req.verb, t)) return c.binding;
        continue;
      }
      const role = BUILTIN_ROLES.get(c.role) ?? roles.get(c.role);
      if (role?.rules.some((r) => ruleCovers(r, req.verb, t)))
        return `${c.binding} (role ${c.role})`;
    }
    return undefined;
  };
  let by = '';
  for (const t of req.targets) {
    const hit = covered(t);
    if (hit === undefined) return { allowed: false, reason: refusal(p, req.verb, t) };
    by = hit;
  }
  return { allowed: true, by };
}

function refusal(p: Principal, verb: Verb, t: Target): string {
  const where = [
    t.tier !== undefined ? `in tier ${JSON.stringify(t.tier)}` : '',
    t.namespace !== undefined ? `in namespace ${JSON.stringify(t.namespace)}` : '',
    t.node !== undefined && p.kind === 'Node' ? `on node ${JSON.stringify(t.node)}` : '',
  ]
    .filter((s) => s !== '')
    .join(' ');
  return `${p.kind} ${JSON.stringify(p.name)} may not ${verb} ${t.kind}${t.name !== undefined ? ` ${JSON.stringify(t.name)}` : ''}${where ? ` ${where}` : ''}`;
}

const ALL_VERBS: readonly Verb[] = [...READ_VERBS, ...WRITE_VERBS];

/**
 * Escalation check for writing a Role or a RoleBinding, as Kubernetes does: the writer must
 * already hold every permission the role grants. Each rule is expanded into verb × kind ×
 * namespace × tier probes (wildcards stay wildcards, which only a wildcard covers).
 */
export function holdsRules(
  principal: Principal,
  rules: readonly RoleRule[],
  roles: ReadonlyMap<string, RoleDef>,
  bindings: readonly BindingDef[],
  /** The group of a bare kind name and whether it is tiered (`*` counts as tiered). */
  kindInfo: (kind: string) => { group: string; tiered: boolean },
): AuthzDecision {
  for (const r of rules) {
    const verbs = r.verbs.includes('*') ? ALL_VERBS : (r.verbs as Verb[]);
    for (const verb of verbs)
      for (const kindSpec of r.kinds) {
        const dot = kindSpec.indexOf('.');
        const kind = dot > 0 ? kindSpec.slice(0, dot) : kindSpec;
        const info = kind === '*' ? { group: '*', tiered: true } : kindInfo(kind);
        const group = dot > 0 ? kindSpec.slice(dot + 1) : info.group;
        // "Every tier" is probed as tier `*`, which only an unrestricted rule covers.
        const tiers = info.tiered ? (r.tiers ?? ['*']) : [undefined];
        for (const namespace of r.namespaces ?? [undefined])
          for (const tier of tiers)
            for (const name of r.names ?? [undefined]) {
              const t: Target = { kind, group, namespace, tier, name };
              const d = authorize({ principal, verb, targets: [t] }, roles, bindings);
              if (!d.allowed)
                return {
                  allowed: false,
                  reason: `granting ${verb} on ${kindSpec}${tier !== undefined ? ` in tier ${JSON.stringify(tier)}` : ''}${namespace !== undefined ? ` in namespace ${JSON.stringify(namespace)}` : ''} needs that permission yourself (${d.reason})`,
                };
            }
      }
  }
  return { allowed: true, by: 'holds every rule' };
}
