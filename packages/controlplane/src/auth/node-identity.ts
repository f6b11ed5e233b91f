// The node role's certificate rule (DESIGN §7): a node may request a workload certificate only
// for an identity running on it — a Pod (spec.nodeName) or WorkloadEndpoint (spec.node) of that
// node in the SPIFFE ID's namespace with that service account. For the CSR endpoint that arrives
// with the CA. Owns: that decision. Must never: allow an identity that is malformed, of another
// trust domain, or not running on the node.

import { kindByPath } from '../resources/kinds.js';
import type { ServerKind } from '../resources/kinds.js';
import { decodeObject, namespacePrefix } from '../resources/keys.js';
import { checkNamespaceName, checkResourceName } from '../resources/names.js';
import type { Store } from '../store/store.js';

const POD = kindByPath('core', 'Pod') as ServerKind;
const WEP = kindByPath('projectcalico.org', 'WorkloadEndpoint') as ServerKind;

export type IdentityDecision =
  | { readonly allowed: true; readonly by: string }
  | { readonly allowed: false; readonly reason: string };

export function parseWorkloadId(
  id: string,
  trustDomain: string,
): { namespace: string; serviceAccount: string } | undefined {
  const m = /^spiffe:\/\/([^/]+)\/ns\/([^/]+)\/sa\/([^/]+)$/.exec(id);
  if (!m || m[1] !== trustDomain) return undefined;
  const [, , namespace = '', serviceAccount = ''] = m;
  if (checkNamespaceName(namespace) || checkResourceName(serviceAccount)) return undefined;
  return { namespace, serviceAccount };
}

export async function nodeMayRequestIdentity(
  store: Store,
  node: string,
  spiffeId: string,
  trustDomain = 'cluster.local',
): Promise<IdentityDecision> {
  const id = parseWorkloadId(spiffeId, trustDomain);
  if (!id)
    return {
      allowed: false,
      reason: `${JSON.stringify(spiffeId.slice(0, 200))} is not a workload identity spiffe://${trustDomain}/ns/<namespace>/sa/<service-account>`,
    };
  const [pods, weps] = await Promise.all([
    store.list(namespacePrefix(POD, id.namespace)),
    store.list(namespacePrefix(WEP, id.namespace)),
  ]);
  for (const kv of pods.items) {
    const o = decodeObject(kv) as {
      spec?: { nodeName?: string; serviceAccountName?: string; serviceAccount?: string };
    };
    const sa = o.spec?.serviceAccountName ?? o.spec?.serviceAccount ?? 'default';
    if (o.spec?.nodeName === node && sa === id.serviceAccount)
      return { allowed: true, by: `Pod ${id.namespace}/${decodeObject(kv).metadata.name}` };
  }
  for (const kv of weps.items) {
    const o = decodeObject(kv) as { spec?: { node?: string; serviceAccountName?: string } };
    if (o.spec?.node === node && (o.spec.serviceAccountName ?? 'default') === id.serviceAccount)
      return {
        allowed: true,
        by: `WorkloadEndpoint ${id.namespace}/${decodeObject(kv).metadata.name}`,
      };
  }
  return {
    allowed: false,
    reason: `no pod or workload endpoint on node ${JSON.stringify(node)} runs as service account ${id.namespace}/${id.serviceAccount}`,
  };
}
