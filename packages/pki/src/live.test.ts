// The CA wired into a live HTTPS server the way the API server is meant to wire it: node
// credentials (bearer tokens here), attestation against the endpoint registry, error codes
// mapped to HTTP statuses from the catalogue, audit and metrics, the trust-bundle endpoint.
// Then agents obtain, renew and rotate SVIDs over real HTTPS, and workloads use them for mTLS.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request } from 'node:https';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { connect, createServer as createTlsServer } from 'node:tls';
import type { TLSSocket } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { PKI_ERRORS } from '@palisade/core';
import { CertificateAuthority } from './ca.js';
import type { IssuanceEvent } from './ca.js';
import { attestingAuthorizer } from './attest.js';
import type { RegisteredEndpoint } from './attest.js';
import { renewalTime } from './renewal.js';
import { createKeyAndCsr } from './workload.js';
import { svidClientOptions, svidServerOptions, verifyPeer } from './tls.js';
import type { SvidMaterial } from './tls.js';
import { pemCertificates } from './crypto.js';
import { tempDir } from './test-helpers.js';

const TD = 'cluster.local';
const HOUR = 3600_000;
const TOKENS: Readonly<Record<string, string>> = { 'tok-a': 'node-a', 'tok-b': 'node-b' };

let dir: ReturnType<typeof tempDir>;
let ca: CertificateAuthority;
let server: Server;
let base: string;
let offsetMs = 0;
const clock = () => new Date(Date.now() + offsetMs);
const registry: RegisteredEndpoint[] = [];
const audit: IssuanceEvent[] = [];

function send(res: ServerResponse, status: number, body: unknown, type = 'application/json'): void {
  res.writeHead(status, { 'content-type': type });
  res.end(typeof body === 'string' ? body : JSON.stringify(body));
}

async function readBody(req: IncomingMessage): Promise<string> {
  let s = '';
  for await (const c of req) {
    s += (c as Buffer).toString();
    if (s.length > 100_000) throw new Error('too large');
  }
  return s;
}

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  if (req.method === 'GET' && req.url === '/v1/trust-bundle')
    return send(res, 200, ca.bundle(clock()), 'application/x-pem-file');
  if (req.method === 'GET' && req.url === '/metrics')
    return send(res, 200, ca.metrics.toPrometheus(), 'text/plain');
  if (req.method === 'POST' && req.url === '/v1/certificates') {
    const node = TOKENS[(req.headers.authorization ?? '').replace(/^Bearer /, '')];
    if (!node) return send(res, 401, { code: 'API_ERR_UNAUTHENTICATED' });
    const body = JSON.parse(await readBody(req)) as { csr?: unknown; spiffeId?: unknown };
    const r = await ca.issueFromCsr(String(body.csr), {
      spiffeId: String(body.spiffeId),
      requester: `node:${node}`,
      now: clock(),
      authorize: attestingAuthorizer(node, TD, registry),
    });
    if (!r.ok) return send(res, PKI_ERRORS[r.code].status, { code: r.code, message: r.message });
    const renewAt = renewalTime(r.svid, Math.random);
    return send(res, 201, { ...r.svid, renewAt });
  }
  send(res, 404, { code: 'NOT_FOUND' });
}

interface Reply {
  readonly status: number;
  readonly body: string;
  readonly serverId?: string;
}

/** The agent's HTTPS client: trusts the CA bundle and checks the server's SPIFFE ID. */
function call(method: string, path: string, token?: string, body?: unknown): Promise<Reply> {
  const bundle = ca.bundle(clock());
  return new Promise((resolve, reject) => {
    const req = request(
      `${base}${path}`,
      {
        method,
        ca: bundle,
        headers: {
          ...(token ? { authorization: `Bearer ${token}` } : {}),
          'content-type': 'application/json',
        },
        checkServerIdentity: () => undefined,
        timeout: 5000,
      },
      (res) => {
        const peer = verifyPeer(res.socket as TLSSocket, {
          trustBundlePem: bundle,
          trustDomain: TD,
          expect: { kind: 'exact', ids: [`spiffe://${TD}/palisade/server`] },
        });
        let s = '';
        res.on('data', (d: Buffer) => (s += d.toString()));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            body: s,
            ...(peer.ok ? { serverId: peer.spiffeId } : {}),
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

interface Issued {
  readonly certPem: string;
  readonly chainPem: string;
  readonly notBefore: string;
  readonly notAfter: string;
  readonly renewAt: string;
}

async function agentRequest(
  token: string,
  spiffeId: string,
): Promise<{ status: number; svid?: SvidMaterial & Issued; code?: string }> {
  const { keyPem, csrPem } = await createKeyAndCsr();
  const r = await call('POST', '/v1/certificates', token, { csr: csrPem, spiffeId });
  const j = JSON.parse(r.body) as Issued & { code?: string };
  return r.status === 201
    ? { status: r.status, svid: { ...j, keyPem } }
    : { status: r.status, ...(j.code ? { code: j.code } : {}) };
}

before(async () => {
  dir = tempDir('live');
  ca = await CertificateAuthority.init(dir.path, { audit: (e) => void audit.push(e) });
  const { keyPem, csrPem } = await createKeyAndCsr();
  const cert = await ca.issueServerCert(csrPem, { ips: ['127.0.0.1'], dnsNames: ['localhost'] });
  assert.ok(cert.ok);
  server = createServer({ key: keyPem, cert: cert.svid.certPem }, (req, res) => {
    handle(req, res).catch(() => send(res, 500, { code: 'INTERNAL' }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(async () => {
  await new Promise<void>((r) => server.close(() => r()));
  dir.cleanup();
});

async function mtls(
  serverSvid: SvidMaterial,
  clientSvid: SvidMaterial,
  bundle: string,
): Promise<[string, string]> {
  const srv = createTlsServer(svidServerOptions(serverSvid, bundle));
  let seenByServer = '';
  srv.on('secureConnection', (s) => {
    const r = verifyPeer(s, {
      trustBundlePem: bundle,
      trustDomain: TD,
      expect: { kind: 'any-in-trust-domain' },
    });
    seenByServer = r.ok ? r.spiffeId : r.code;
    s.end('ok');
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  try {
    return await new Promise<[string, string]>((resolve, reject) => {
      const c = connect({
        ...svidClientOptions(clientSvid, {
          trustBundlePem: bundle,
          trustDomain: TD,
          expect: { kind: 'any-in-trust-domain' },
        }),
        host: '127.0.0.1',
        port: (srv.address() as AddressInfo).port,
        timeout: 5000,
      });
      c.on('secureConnect', () => {
        const r = verifyPeer(c, {
          trustBundlePem: bundle,
          trustDomain: TD,
          expect: { kind: 'any-in-trust-domain' },
        });
        c.on('data', () => undefined);
        c.on('end', () => resolve([seenByServer, r.ok ? r.spiffeId : r.code]));
      });
      c.on('error', reject);
    });
  } finally {
    await new Promise<void>((r) => srv.close(() => r()));
  }
}

test('live server: issuance only for identities attested on the requesting node; refusals answered with the catalogue status and audited', async () => {
  registry.push(
    { node: 'node-a', namespace: 'prod', serviceAccount: 'reviews', name: 'prod/reviews-1' },
    { node: 'node-b', namespace: 'prod', serviceAccount: 'ratings', name: 'prod/ratings-1' },
  );
  const bundle = await call('GET', '/v1/trust-bundle');
  assert.equal(bundle.status, 200);
  assert.equal(
    bundle.serverId,
    'spiffe://cluster.local/palisade/server',
    'the agent authenticated the server by SPIFFE ID',
  );
  assert.equal(bundle.body, ca.bundle());

  const a = await agentRequest('tok-a', 'spiffe://cluster.local/ns/prod/sa/reviews');
  assert.equal(a.status, 201);
  const b = await agentRequest('tok-b', 'spiffe://cluster.local/ns/prod/sa/ratings');
  assert.equal(b.status, 201);
  const stolen = await agentRequest('tok-b', 'spiffe://cluster.local/ns/prod/sa/reviews');
  assert.deepEqual([stolen.status, stolen.code], [403, 'PKI_ERR_NOT_ATTESTED']);
  const foreign = await agentRequest('tok-a', 'spiffe://evil.org/ns/prod/sa/reviews');
  assert.deepEqual([foreign.status, foreign.code], [403, 'PKI_ERR_WRONG_TRUST_DOMAIN']);
  const anon = await agentRequest('nope', 'spiffe://cluster.local/ns/prod/sa/reviews');
  assert.equal(anon.status, 401);
  const refusals = audit.filter((e) => e.outcome === 'refused');
  assert.deepEqual(
    refusals.map((e) => [e.requester, e.code]),
    [
      ['node:node-b', 'PKI_ERR_NOT_ATTESTED'],
      ['node:node-a', 'PKI_ERR_WRONG_TRUST_DOMAIN'],
    ],
  );
  const metrics = await call('GET', '/metrics');
  assert.match(
    metrics.body,
    /^palisade_ca_certificates_issued_total 3$/m,
    'two workloads and the server itself',
  );
  assert.match(metrics.body, /refused_total\{code="PKI_ERR_NOT_ATTESTED"\} 1/);

  // The two workloads talk mTLS and read each other's SPIFFE ID.
  assert.ok(a.svid && b.svid);
  assert.deepEqual(await mtls(a.svid, b.svid, bundle.body), [
    'spiffe://cluster.local/ns/prod/sa/ratings',
    'spiffe://cluster.local/ns/prod/sa/reviews',
  ]);
});

test('live server: a root rotation keeps every workload talking (old-root and new-root SVIDs, one bundle)', async () => {
  const before = await agentRequest('tok-a', 'spiffe://cluster.local/ns/prod/sa/reviews');
  assert.ok(before.svid);
  await ca.rotate({ overlapMs: 2 * HOUR, activateAfterMs: 0, now: clock() });
  const bundle = (await call('GET', '/v1/trust-bundle')).body;
  assert.equal(pemCertificates(bundle).length, 2, 'both roots served during the overlap');
  const renewed = await agentRequest('tok-b', 'spiffe://cluster.local/ns/prod/sa/ratings');
  assert.ok(renewed.svid);
  assert.notEqual(
    new X509Certificate(renewed.svid.certPem).issuer,
    new X509Certificate(before.svid.certPem).issuer,
  );
  assert.deepEqual(await mtls(before.svid, renewed.svid, bundle), [
    'spiffe://cluster.local/ns/prod/sa/ratings',
    'spiffe://cluster.local/ns/prod/sa/reviews',
  ]);
  assert.deepEqual(await mtls(renewed.svid, before.svid, bundle), [
    'spiffe://cluster.local/ns/prod/sa/reviews',
    'spiffe://cluster.local/ns/prod/sa/ratings',
  ]);
});

test('live server: renewal at half the lifetime with jitter, and no new certificate once the endpoints are gone', async () => {
  const first = await agentRequest('tok-a', 'spiffe://cluster.local/ns/prod/sa/reviews');
  assert.ok(first.svid);
  const nb = Date.parse(first.svid.notBefore);
  const na = Date.parse(first.svid.notAfter);
  const renewAt = Date.parse(first.svid.renewAt);
  const f = (renewAt - nb) / (na - nb);
  assert.ok(f >= 0.4 && f <= 0.6, `renewal at ${f} of the lifetime`);
  // The agent sleeps until renewAt (simulated), then renews with a fresh key.
  offsetMs = renewAt - Date.now();
  const second = await agentRequest('tok-a', 'spiffe://cluster.local/ns/prod/sa/reviews');
  assert.ok(second.svid);
  assert.ok(Date.parse(second.svid.notAfter) > na, 'the renewed certificate lives longer');
  assert.ok(Date.parse(second.svid.notBefore) < na, 'renewed before the old one expired');
  // The pod goes away: its identity can no longer be renewed.
  registry.splice(
    registry.findIndex((e) => e.serviceAccount === 'reviews'),
    1,
  );
  const gone = await agentRequest('tok-a', 'spiffe://cluster.local/ns/prod/sa/reviews');
  assert.deepEqual([gone.status, gone.code], [403, 'PKI_ERR_NOT_ATTESTED']);
  assert.match(audit.at(-1)?.reason ?? '', /no endpoint runs as prod\/reviews anywhere/);
  offsetMs = 0;
});
