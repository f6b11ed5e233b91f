// TLS on the ext_authz listener, through a real gRPC client over real TLS with certificates from
// a real Palisade CA: the right client is answered, a client certificate from a foreign CA, an
// expired one or none at all is refused in the handshake, a server the client cannot verify is
// refused by the client, `clientIds` narrows who may ask, and the listener refuses to start on
// unusable material or in plaintext on TCP without an explicit choice.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { certificateChainPem } from '@palisade/pki';
import type { SvidMaterial } from '@palisade/pki';
import { bookinfo, issue, newCa, tempDir } from '../sidecar/test-fixtures.js';
import { listenerCredentials, uriSans } from './listener-tls.js';
import type { ListenerSecurity } from './listener-tls.js';
import { RPC_CODE } from './proto.js';
import { AuthzServer } from './server.js';
import { PushSource } from './source.js';
import { checkClient, checkRequest } from './test-client.js';

const TD = 'cluster.local';
const SA = (ns: string, sa: string): string => `spiffe://${TD}/ns/${ns}/sa/${sa}`;
const SERVER_ID = SA('palisade-system', 'authz-server');
const ENVOY_ID = SA('istio-system', 'istio-ingressgateway');
const OTHER_ID = SA('default', 'sleep');
const DAY = 24 * 3600 * 1000;

type Material = SvidMaterial & { readonly bundlePem: string };

const ALLOWED = checkRequest({
  sourceIp: '10.244.0.14',
  principal: SA('default', 'bookinfo-reviews'),
  destinationIp: '10.244.0.16',
  port: 9080,
  path: '/ratings/1',
});

/** A TLS client presenting `client` (or nothing) and trusting `trust`, checking the server's URI SAN. */
function tlsClient(port: number, trust: string, client: Material | undefined) {
  const creds = grpc.credentials.createSsl(
    Buffer.from(trust),
    client ? Buffer.from(client.keyPem) : null,
    client ? Buffer.from(certificateChainPem(client)) : null,
    {
      // An SVID names a SPIFFE ID, not a host name: secure naming checks the URI SAN.
      checkServerIdentity: (_host, cert) =>
        uriSans(cert.subjectaltname).includes(SERVER_ID)
          ? undefined
          : new Error(`server is not ${SERVER_ID}`),
    },
  );
  return checkClient(`127.0.0.1:${port}`, creds);
}

async function refused(p: Promise<unknown>, what: string): Promise<void> {
  await assert.rejects(
    p,
    (e: grpc.ServiceError) => e.code === grpc.status.UNAVAILABLE,
    `${what} must fail in the handshake`,
  );
}

describe('ext_authz listener over TLS (real CA, real gRPC client)', () => {
  const dir = tempDir('authz-tls');
  let server: Material;
  let envoy: Material;
  let other: Material;
  let expired: Material;
  let foreign: Material;
  let caPem: string;

  before(async () => {
    // The CA exists since three days, so it can have issued a certificate that has expired.
    const ca = await newCa(join(dir.path, 'ca'), TD, new Date(Date.now() - 3 * DAY));
    server = await issue(ca, SERVER_ID);
    envoy = await issue(ca, ENVOY_ID);
    other = await issue(ca, OTHER_ID);
    expired = await issue(ca, ENVOY_ID, { now: new Date(Date.now() - 2 * DAY), ttl: '1h' });
    const foreignCa = await newCa(join(dir.path, 'foreign'), TD);
    foreign = await issue(foreignCa, ENVOY_ID);
    caPem = server.bundlePem;
  });
  after(() => dir.cleanup());

  async function serve(listener: ListenerSecurity | undefined, address = '127.0.0.1:0') {
    const source = new PushSource();
    source.push({ version: 1, resources: bookinfo({}) });
    const s = new AuthzServer({ source, ...(listener ? { listener } : {}) });
    const port = await s.start(address);
    return { s, port };
  }

  const mtls = (extra: Partial<ListenerSecurity & { kind: 'tls' }> = {}): ListenerSecurity => ({
    kind: 'tls',
    keyPem: server.keyPem,
    certChainPem: certificateChainPem(server),
    clientCaPem: caPem,
    ...extra,
  });

  test('mutual TLS: a client certificate from the CA is answered; foreign, expired or none is refused', async () => {
    const { s, port } = await serve(mtls());
    try {
      assert.match(s.listenerDescription, /client certificates required/);
      const good = tlsClient(port, caPem, envoy);
      try {
        const res = await good.check(ALLOWED);
        assert.equal(res.status.code, RPC_CODE.OK, 'the decision itself is made as usual');
      } finally {
        good.close();
      }
      const before = s.stats().checks;
      for (const [what, c] of [
        ['a certificate from a foreign CA', foreign],
        ['an expired certificate from the right CA', expired],
        ['no client certificate', undefined],
      ] as const) {
        const client = tlsClient(port, caPem, c);
        try {
          await refused(client.check(ALLOWED, 5000), what);
        } finally {
          client.close();
        }
      }
      // Plaintext to a TLS listener does not get an answer either.
      const plain = checkClient(`127.0.0.1:${port}`);
      try {
        await assert.rejects(plain.check(ALLOWED, 5000));
      } finally {
        plain.close();
      }
      assert.equal(s.stats().checks, before, 'no refused client reached the Check handler');
    } finally {
      await s.close(1000);
    }
  });

  test('the client refuses a server it cannot verify (client trusts a foreign CA)', async () => {
    const { s, port } = await serve(mtls());
    try {
      const client = tlsClient(port, foreign.bundlePem, envoy);
      try {
        await refused(client.check(ALLOWED, 5000), 'a server signed by an untrusted CA');
      } finally {
        client.close();
      }
      assert.equal(s.stats().checks, 0);
    } finally {
      await s.close(1000);
    }
  });

  test('clientIds: only the named SPIFFE IDs are answered; others get a denial, never an error', async () => {
    const { s, port } = await serve(mtls({ clientIds: [ENVOY_ID] }));
    try {
      const good = tlsClient(port, caPem, envoy);
      const bad = tlsClient(port, caPem, other);
      try {
        assert.equal((await good.check(ALLOWED)).status.code, RPC_CODE.OK);
        const res = await bad.check(ALLOWED);
        assert.equal(res.status.code, RPC_CODE.PERMISSION_DENIED);
        // The enum arrives by name over the wire (HttpStatus 403 is `Forbidden`).
        assert.ok([403, 'Forbidden'].includes(res.denied_response?.status.code as number));
        assert.match(res.status.message ?? '', /not among the 1 client identity allowed/);
      } finally {
        good.close();
        bad.close();
      }
    } finally {
      await s.close(1000);
    }
  });

  test('server-only TLS: a client without a certificate is answered', async () => {
    const { s, port } = await serve({
      kind: 'tls',
      keyPem: server.keyPem,
      certChainPem: certificateChainPem(server),
    });
    try {
      assert.match(s.listenerDescription, /no client certificate/);
      const c = tlsClient(port, caPem, undefined);
      try {
        assert.equal((await c.check(ALLOWED)).status.code, RPC_CODE.OK);
      } finally {
        c.close();
      }
    } finally {
      await s.close(1000);
    }
  });

  test('secure by default: TCP without TLS or an explicit plaintext choice does not start', async () => {
    const source = new PushSource();
    const s = new AuthzServer({ source });
    await assert.rejects(s.start('127.0.0.1:0'), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'AUTHZ_ERR_TLS');
      assert.match(e.message, /refusing a plaintext ext_authz listener/);
      return true;
    });
    await s.close(0);
    // A unix socket is plaintext by default, and an explicit choice is honoured on TCP.
    assert.ok(listenerCredentials('unix:/tmp/x.sock', undefined).ok);
    const r = listenerCredentials('127.0.0.1:1', { kind: 'plaintext' });
    assert.ok(r.ok && /PLAINTEXT/.test(r.describe));
  });

  test('unusable material is refused before listening: expired, foreign key, not a CA, garbage', () => {
    const cases: [string, ListenerSecurity, RegExp][] = [
      [
        'an expired server certificate',
        { kind: 'tls', keyPem: expired.keyPem, certChainPem: certificateChainPem(expired) },
        /expired at/,
      ],
      [
        "another certificate's key",
        { kind: 'tls', keyPem: other.keyPem, certChainPem: certificateChainPem(server) },
        /does not belong/,
      ],
      ['a leaf as client CA', mtls({ clientCaPem: server.certPem }), /not a CA certificate/],
      ['garbage certificate', { kind: 'tls', keyPem: server.keyPem, certChainPem: 'x' }, /no PEM/],
      [
        'garbage key',
        { kind: 'tls', keyPem: 'nope', certChainPem: certificateChainPem(server) },
        /key does not parse/,
      ],
      [
        'a corrupted certificate',
        {
          kind: 'tls',
          keyPem: server.keyPem,
          certChainPem: '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n',
        },
        /does not parse/,
      ],
      ['client ids that are not SPIFFE IDs', mtls({ clientIds: ['envoy'] }), /not a SPIFFE ID/],
      [
        'client ids without a client CA',
        {
          kind: 'tls',
          keyPem: server.keyPem,
          certChainPem: certificateChainPem(server),
          clientIds: [ENVOY_ID],
        },
        /need a client CA/,
      ],
    ];
    for (const [what, sec, msg] of cases) {
      const r = listenerCredentials('127.0.0.1:0', sec);
      assert.equal(r.ok, false, what);
      if (!r.ok) assert.match(r.message, msg, what);
    }
    // The expired one really is expired, so the refusal is about time, not a fixture accident.
    assert.ok(Date.parse(new X509Certificate(expired.certPem).validTo) < Date.now());
    // ...and the same certificate was good while it was valid.
    const r = listenerCredentials(
      '127.0.0.1:0',
      { kind: 'tls', keyPem: expired.keyPem, certChainPem: certificateChainPem(expired) },
      new Date(Date.parse(new X509Certificate(expired.certPem).validFrom) + 60_000),
    );
    assert.ok(r.ok);
  });
});
