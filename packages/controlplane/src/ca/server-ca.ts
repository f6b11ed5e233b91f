// The Palisade CA inside the API server (DESIGN §6, §7; docs/design/pki.md "Wiring"): opening or
// creating the CA in the data dir, the server's own HTTPS certificate from it, attestation of
// workload identities against the endpoint registry in the store, and the bridge that writes
// every issuance and refusal into the server's hash-chained audit log.
// Owns: those four. Must never: use allowAnyIdentityForDevelopment, hand out a certificate
// whose audit entry was not committed, or log a private key.

import { AsyncLocalStorage } from 'node:async_hooks';
import { PKI_ERRORS } from '@palisade/core';
import type {
  Authorizer,
  CertificateAuthority as Ca,
  IssuanceEvent,
  RegisteredEndpoint,
} from '@palisade/pki';
import {
  attestIssuance,
  CertificateAuthority,
  createKeyAndCsr,
  parseWorkloadId,
  PkiError,
  renewalTime,
} from '@palisade/pki';
import type { AuditRecord } from '../audit/audit-log.js';
import { appendAudit, principalRecord } from '../audit/audit-log.js';
import type { Principal } from '../auth/principal.js';
import { decodeObject, namespacePrefix } from '../resources/keys.js';
import { kindByPath } from '../resources/kinds.js';
import type { ServerKind } from '../resources/kinds.js';
import type { Store } from '../store/store.js';
import type { ServerCredentials } from '../server/tls.js';

/** The audit kind of certificate entries. */
export const CERTIFICATE_KIND = 'Certificate.palisade.dev';

interface Caller {
  readonly principal: Principal | undefined;
  readonly remote: string;
}

/**
 * Turns the CA's issuance events into audit entries of the server's log. The CA calls `sink`
 * before it hands a certificate out; the caller of the current request is carried by
 * AsyncLocalStorage, so the entry names who asked and from where. Outside a request (the
 * server's own certificate) the caller is `local`.
 */
export class IssuanceAudit {
  readonly #store: Store;
  readonly #caller = new AsyncLocalStorage<Caller>();

  constructor(store: Store) {
    this.#store = store;
  }

  run<T>(caller: Caller, fn: () => Promise<T>): Promise<T> {
    return this.#caller.run(caller, fn);
  }

  readonly sink = async (e: IssuanceEvent): Promise<void> => {
    const c = this.#caller.getStore();
    const status = e.outcome === 'issued' ? 201 : e.code ? statusOf(e.code) : 403;
    const rec: AuditRecord = {
      time: e.at,
      principal: principalRecord(c?.principal),
      remote: c?.remote ?? 'local',
      verb: e.kind === 'server' ? 'certificate.server' : 'certificate.issue',
      kind: CERTIFICATE_KIND,
      name: e.spiffeId.slice(0, 2048),
      outcome: e.outcome === 'issued' ? 'allowed' : 'refused',
      status,
      ...(e.code ? { code: e.code } : {}),
      message:
        e.outcome === 'issued'
          ? `serial ${e.serial ?? '?'}, not after ${e.notAfter ?? '?'}; requester ${e.requester}; ${e.reason}`
          : `requester ${e.requester}: ${e.reason}`.slice(0, 2000),
    };
    await appendAudit(this.#store, [rec]);
  };
}

export function statusOf(code: keyof typeof PKI_ERRORS): number {
  return PKI_ERRORS[code].status;
}

/** Loads the CA of the data dir, creating a self-signed one at first start. */
export async function openServerCa(
  dataDir: string,
  opts: { readonly audit: IssuanceAudit['sink']; readonly passphrase?: string },
): Promise<{ ca: Ca; created: boolean }> {
  const runtime = {
    audit: opts.audit,
    ...(opts.passphrase !== undefined ? { passphrase: opts.passphrase } : {}),
  };
  if (CertificateAuthority.exists(dataDir))
    return { ca: await CertificateAuthority.load(dataDir, runtime), created: false };
  return { ca: await CertificateAuthority.init(dataDir, runtime), created: true };
}

const POD = kindByPath('core', 'Pod') as ServerKind;
const WEP = kindByPath('projectcalico.org', 'WorkloadEndpoint') as ServerKind;

/** Pods (spec.nodeName) and WorkloadEndpoints (spec.node) of one namespace, as attestation sees them. */
export async function endpointsInNamespace(
  store: Store,
  namespace: string,
): Promise<RegisteredEndpoint[]> {
  const [pods, weps] = await Promise.all([
    store.list(namespacePrefix(POD, namespace)),
    store.list(namespacePrefix(WEP, namespace)),
  ]);
  const out: RegisteredEndpoint[] = [];
  for (const kv of pods.items) {
    const o = decodeObject(kv) as ReturnType<typeof decodeObject> & {
      spec?: { nodeName?: unknown; serviceAccountName?: unknown; serviceAccount?: unknown };
    };
    const sa = o.spec?.serviceAccountName ?? o.spec?.serviceAccount ?? 'default';
    if (typeof o.spec?.nodeName === 'string' && typeof sa === 'string')
      out.push({
        node: o.spec.nodeName,
        namespace,
        serviceAccount: sa,
        name: `Pod ${namespace}/${o.metadata.name}`,
      });
  }
  for (const kv of weps.items) {
    const o = decodeObject(kv) as ReturnType<typeof decodeObject> & {
      spec?: { node?: unknown; serviceAccountName?: unknown };
    };
    const sa = o.spec?.serviceAccountName ?? 'default';
    if (typeof o.spec?.node === 'string' && typeof sa === 'string')
      out.push({
        node: o.spec.node,
        namespace,
        serviceAccount: sa,
        name: `WorkloadEndpoint ${namespace}/${o.metadata.name}`,
      });
  }
  return out;
}

/**
 * The CA's Authorizer for a request from node `node`: attestIssuance over the endpoints the
 * store holds now for the identity's namespace (read at the moment of issuance).
 */
export function storeAuthorizer(store: Store, node: string, trustDomain: string): Authorizer {
  return async (id) => {
    const w = parseWorkloadId(id.uri);
    if (!w.ok) return w;
    const registeredEndpoints = await endpointsInNamespace(store, w.identity.namespace);
    const r = attestIssuance({
      requesterNode: node,
      spiffeId: id.uri,
      trustDomain,
      registeredEndpoints,
    });
    return r.ok ? { ok: true } : r;
  };
}

export interface IssuedServerCredentials extends ServerCredentials {
  readonly notAfter: Date;
  readonly renewAt: Date;
  readonly serial: string;
}

function isIpLiteral(host: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(host) || host.includes(':');
}

/**
 * The server's HTTPS credentials from the CA: a fresh key generated here (it never leaves the
 * process), a certificate for the listen host plus localhost, 127.0.0.1 and ::1, and the CA's
 * bundle as the client CA (client certificates issued by our CA authenticate).
 */
export async function issueServerCredentials(
  ca: Ca,
  host: string,
  now: Date = new Date(),
): Promise<IssuedServerCredentials> {
  const { keyPem, csrPem } = await createKeyAndCsr();
  const wildcard = host === '0.0.0.0' || host === '::';
  const ips = ['127.0.0.1', '::1'];
  const dnsNames = ['localhost'];
  if (!wildcard && isIpLiteral(host) && !ips.includes(host)) ips.push(host);
  if (!wildcard && !isIpLiteral(host) && host !== 'localhost') dnsNames.push(host.toLowerCase());
  const r = await ca.issueServerCert(csrPem, { dnsNames, ips, now, requester: 'server' });
  if (!r.ok) throw new PkiError(r.code, `the CA refused the server certificate: ${r.message}`);
  return {
    key: keyPem,
    certChain: r.svid.certPem + r.svid.chainPem,
    clientCa: ca.bundle(now),
    notAfter: r.svid.notAfter,
    renewAt: renewalTime(r.svid, Math.random),
    serial: r.svid.serial,
  };
}
