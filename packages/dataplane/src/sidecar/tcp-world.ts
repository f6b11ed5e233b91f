// Test support (not part of the public surface): the worlds of the L4 (tcp) sidecar tests — a
// database pod whose port is declared non-HTTP, a client running under the right identity, one
// under a wrong identity and an intruder — with the policies of each system whose TCP semantics
// the tests check, and a raw non-HTTP application (a line protocol, client-first or
// server-first) counting the connections it was handed.

import { createServer } from 'node:net';
import type { AddressInfo, Server } from 'node:net';

export const NS = 'shop';
export const DB_PORT = 5432;
export const spiffe = (sa: string): string => `spiffe://cluster.local/ns/${NS}/sa/${sa}`;

export interface WorldIps {
  readonly db: string;
  readonly api: string;
  readonly web: string;
  readonly intruder: string;
}

function pod(name: string, sa: string, ip: string, ports: string): string {
  return `apiVersion: v1
kind: Pod
metadata: {name: ${name}, namespace: ${NS}, labels: {app: ${name}}}
spec:
  serviceAccountName: ${sa}
  containers: [{name: c${ports}}]
status: {podIP: ${ip}}
`;
}

/** The pods and service accounts every world shares. */
export function pods(ips: WorldIps): string {
  return [
    `apiVersion: v1\nkind: Namespace\nmetadata: {name: ${NS}}\n`,
    ...['db', 'api', 'web', 'intruder'].map(
      (sa) => `apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: ${sa}, namespace: ${NS}}\n`,
    ),
    pod('db', 'db', ips.db, `, ports: [{name: tcp-postgres, containerPort: ${DB_PORT}}]`),
    pod('api', 'api', ips.api, ''),
    pod('web', 'web', ips.web, ''),
    pod('intruder', 'intruder', ips.intruder, ''),
  ].join('---\n');
}

/**
 * Calico: the db admits TCP from the `api` service account; a rule that would admit `web` has an
 * `http` match, which a non-HTTP connection cannot satisfy (DESIGN §4.6), so `web` falls to the
 * tier's default deny.
 */
export const CALICO = `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: db-ingress, namespace: ${NS}}
spec:
  selector: app == 'db'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source: {serviceAccounts: {names: [web]}}
    http: {methods: [GET]}
  - action: Allow
    protocol: TCP
    source: {serviceAccounts: {names: [api]}}
    destination: {ports: [${DB_PORT}]}
`;

/**
 * Istio ALLOW on TCP: the rule naming `web` also names a method, an HTTP-only field, so Istio
 * ignores the whole rule for TCP traffic; the rule naming `api` and a port is L4 only.
 */
export const ISTIO_ALLOW = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-allow, namespace: ${NS}}
spec:
  selector: {matchLabels: {app: db}}
  action: ALLOW
  rules:
  - from: [{source: {principals: [cluster.local/ns/${NS}/sa/web]}}]
    to: [{operation: {methods: [GET], ports: ["${DB_PORT}"]}}]
  - from: [{source: {principals: [cluster.local/ns/${NS}/sa/api]}}]
    to: [{operation: {ports: ["${DB_PORT}"]}}]
`;

/**
 * Istio DENY on TCP: the rule naming `web` restricts itself to POST /admin, HTTP-only fields that
 * Istio drops for TCP traffic, so it denies every connection from `web` (more restrictive).
 */
export const ISTIO_DENY = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: db-deny, namespace: ${NS}}
spec:
  selector: {matchLabels: {app: db}}
  action: DENY
  rules:
  - from: [{source: {principals: [cluster.local/ns/${NS}/sa/web]}}]
    to: [{operation: {methods: [POST], paths: [/admin]}}]
`;

export const STRICT = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: ${NS}}
spec: {mtls: {mode: STRICT}}
`;

export const PERMISSIVE = `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: permissive, namespace: ${NS}}
spec: {mtls: {mode: PERMISSIVE}}
`;

/** Calico egress of `api`: its connections to the db are denied (the source side's L4 check). */
export const API_EGRESS_DENY = `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: api-egress, namespace: ${NS}}
spec:
  selector: app == 'api'
  types: [Egress]
  egress:
  - action: Deny
    protocol: TCP
    destination: {ports: [${DB_PORT}]}
`;

export function world(ips: WorldIps, ...policies: readonly string[]): string {
  return [pods(ips), ...policies].join('---\n');
}

/**
 * A line protocol that is not HTTP: the server answers each line `x` with `hello x`; with
 * `banner` it speaks first (a server-first protocol such as SMTP or MySQL). When the client
 * half-closes, the server answers `bye` and closes.
 */
export async function lineApp(
  host = '127.0.0.1',
  banner?: string,
): Promise<{ readonly port: number; readonly server: Server; readonly connections: number[] }> {
  const connections: number[] = [];
  const server = createServer({ allowHalfOpen: true }, (s) => {
    connections.push(1);
    s.on('error', () => s.destroy());
    if (banner !== undefined) s.write(`${banner}\n`);
    let buf = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      buf += d;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        s.write(`hello ${buf.slice(0, i)}\n`);
        buf = buf.slice(i + 1);
      }
    });
    s.on('end', () => s.end('bye\n'));
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return { port: (server.address() as AddressInfo).port, server, connections };
}
