// The issuance policy of issue 4 as a pure function: a node agent may obtain an SVID for
// service account S in namespace N only while an endpoint running as N/S is registered on its
// own node. The API server feeds it the requester's node and the endpoint registry; nothing here
// reads a store or a clock.

import type { PkiFailure } from './errors.js';
import { fail } from './errors.js';
import { parseWorkloadId } from './spiffe-id.js';
import type { SpiffeId, WorkloadIdentity } from './spiffe-id.js';

/** One endpoint as the registry knows it (only what attestation needs). */
export interface RegisteredEndpoint {
  readonly node: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  /** For the audit trail: which endpoint vouched for the identity. */
  readonly name?: string;
}

export interface AttestationInput {
  /** The node whose credential made the request. */
  readonly requesterNode: string;
  readonly spiffeId: string;
  readonly trustDomain: string;
  readonly registeredEndpoints: Iterable<RegisteredEndpoint>;
}

export type AttestationResult =
  | {
      readonly ok: true;
      readonly identity: WorkloadIdentity;
      /** Names of the endpoints on the requesting node that run as this identity. */
      readonly endpoints: readonly string[];
    }
  | PkiFailure;

/** What the CA asks before it signs; sync or async, so a server may consult its store. */
export type Authorizer = (
  id: SpiffeId,
) => { readonly ok: true } | PkiFailure | Promise<{ readonly ok: true } | PkiFailure>;

/**
 * For `palisade ca issue` and tests only: the operator holding the CA key may mint any identity
 * of the trust domain. Never give this to a network-facing path.
 */
export const allowAnyIdentityForDevelopment: Authorizer = () => ({ ok: true });

export function attestIssuance(input: AttestationInput): AttestationResult {
  if (typeof input.requesterNode !== 'string' || input.requesterNode.length === 0)
    return fail('PKI_ERR_NOT_ATTESTED', 'the request does not come from a node credential');
  const w = parseWorkloadId(input.spiffeId);
  if (!w.ok) return w;
  const { identity } = w;
  if (identity.id.trustDomain !== input.trustDomain)
    return fail(
      'PKI_ERR_WRONG_TRUST_DOMAIN',
      `${identity.id.uri} is not in this CA's trust domain ${input.trustDomain}`,
    );
  const here: string[] = [];
  let elsewhere = 0;
  for (const e of input.registeredEndpoints) {
    if (e.namespace !== identity.namespace || e.serviceAccount !== identity.serviceAccount)
      continue;
    if (e.node === input.requesterNode) here.push(e.name ?? `${e.namespace}/?`);
    else elsewhere++;
  }
  if (here.length > 0) return { ok: true, identity, endpoints: here };
  const who = `${identity.namespace}/${identity.serviceAccount}`;
  return fail(
    'PKI_ERR_NOT_ATTESTED',
    elsewhere > 0
      ? `node ${input.requesterNode} runs no endpoint as ${who} (${elsewhere} registered on other nodes)`
      : `no endpoint runs as ${who} anywhere; no certificate for an identity without endpoints`,
  );
}

/** Wraps attestIssuance as the CA's Authorizer for one request. */
export function attestingAuthorizer(
  requesterNode: string,
  trustDomain: string,
  registeredEndpoints: Iterable<RegisteredEndpoint>,
): Authorizer {
  return (id) => {
    const r = attestIssuance({ requesterNode, spiffeId: id.uri, trustDomain, registeredEndpoints });
    return r.ok ? { ok: true } : r;
  };
}
