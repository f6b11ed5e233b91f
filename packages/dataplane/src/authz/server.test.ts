import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadMany } from '@palisade/core';
import type { Resource } from '@palisade/core';
import { loadText } from '@palisade/core';
import { PolicyView } from '../sidecar/policy-view.js';
import { CALICO, DB_PORT, ISTIO_ALLOW, NS, spiffe, world } from '../sidecar/tcp-world.js';
import { AuthzServer } from './server.js';
import { FileSource, PushSource } from './source.js';
import { RPC_CODE } from './proto.js';
import { checkClient, checkRequest, headerValue, metadataField } from './test-client.js';
import type { CheckClient } from './test-client.js';

const BOOKINFO = join(import.meta.dirname, '..', '..', '..', '..', 'examples', 'bookinfo');
const IP = {
  productpage: '10.244.0.11',
  details: '10.244.0.12',
  reviewsV1: '10.244.0.13',
  reviewsV2: '10.244.0.14',
  ratings: '10.244.0.16',
  sleep: '10.244.0.17',
};
const SA = (sa: string): string => `spiffe://cluster.local/ns/default/sa/${sa}`;

function bookinfoResources(): Resource[] {
  const names = [
    'workloads.yaml',
    'policies-kubernetes.yaml',
    'policies-calico.yaml',
    'policies-istio.yaml',
  ];
  const r = loadMany(
    names.map((n) => ({ name: n, text: readFileSync(join(BOOKINFO, n), 'utf8') })),
  );
  assert.deepEqual(
    r.diagnostics.filter((d) => d.severity === 'error'),
    [],
  );
  return r.resources;
}

async function waitFor(cond: () => boolean, what: string, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('authz-server over a real gRPC connection (bookinfo, by destination address)', () => {
  let server: AuthzServer;
  let client: CheckClient;
  const source = new PushSource();

  before(async () => {
    source.push({ version: 1, resources: bookinfoResources() });
    server = new AuthzServer({ source, listener: { kind: 'plaintext' } });
    const port = await server.start('127.0.0.1:0');
    client = checkClient(`127.0.0.1:${port}`);
  });
  after(async () => {
    client.close();
    await server.close(1000);
  });

  test('an allowed request answers OK with the provenance in dynamic metadata (ratings readers GET)', async () => {
    const res = await client.check(
      checkRequest({
        sourceIp: IP.reviewsV2,
        principal: SA('bookinfo-reviews'),
        destinationIp: IP.ratings,
        port: 9080,
        path: '/ratings/1',
        id: 'req-1',
      }),
    );
    assert.equal(res.status.code, RPC_CODE.OK);
    assert.ok(res.ok_response, 'ok_response');
    assert.equal(res.denied_response, undefined);
    assert.equal(metadataField(res, 'verdict'), 'allow');
    assert.equal(metadataField(res, 'policy'), 'default/ratings-readers-get-only');
    assert.equal(metadataField(res, 'request_id'), 'req-1');
    assert.equal(
      headerValue(res.ok_response.headers, 'x-palisade-peer-identity'),
      SA('bookinfo-reviews'),
    );
  });

  test('a request the policy refuses answers PERMISSION_DENIED with a 403 naming the policy and the request id', async () => {
    const res = await client.check(
      checkRequest({
        sourceIp: IP.reviewsV2,
        principal: SA('bookinfo-reviews'),
        destinationIp: IP.ratings,
        port: 9080,
        method: 'POST',
        path: '/ratings/1',
        id: 'req-2',
      }),
    );
    assert.equal(res.status.code, RPC_CODE.PERMISSION_DENIED);
    assert.ok(res.denied_response);
    assert.equal(
      Number(
        res.denied_response.status.code === 'Forbidden' ? 403 : res.denied_response.status.code,
      ),
      403,
    );
    assert.match(
      res.denied_response.body,
      /^RBAC: access denied \(rule default\/ratings-readers-get-only rule 1 tier default\) request-id req-2\n$/,
    );
    assert.equal(headerValue(res.denied_response.headers, 'x-request-id'), 'req-2');
    assert.equal(metadataField(res, 'verdict'), 'deny');
  });

  test('the ext_authz verdict is the sidecar decision: the same PolicyView.decideInbound on the same attributes', async () => {
    const view = PolicyView.fromResources(bookinfoResources(), 'default/ratings-v1', 1);
    assert.ok(view.ok);
    const cases = [
      { src: IP.reviewsV2, p: SA('bookinfo-reviews'), m: 'GET', path: '/ratings/7' },
      { src: IP.reviewsV1, p: SA('bookinfo-reviews-v1'), m: 'GET', path: '/ratings/7' },
      { src: IP.reviewsV2, p: SA('bookinfo-reviews'), m: 'GET', path: '/other' },
      { src: IP.reviewsV2, p: '', m: 'GET', path: '/ratings/7' },
      { src: IP.sleep, p: SA('sleep'), m: 'DELETE', path: '/ratings' },
    ];
    for (const c of cases) {
      const expected = view.view.decideInbound({
        sourceIp: c.src,
        principal: c.p === '' ? null : c.p,
        port: 9080,
        method: c.m,
        path: c.path,
        host: `${IP.ratings}:9080`,
        headers: { host: `${IP.ratings}:9080` },
      });
      const res = await client.check(
        checkRequest({
          sourceIp: c.src,
          principal: c.p,
          destinationIp: IP.ratings,
          port: 9080,
          method: c.m,
          path: c.path,
        }),
      );
      assert.equal(
        res.status.code === RPC_CODE.OK ? 'allow' : 'deny',
        expected.verdict,
        JSON.stringify(c),
      );
      assert.equal(metadataField(res, 'kind'), expected.provenance.kind, JSON.stringify(c));
    }
  });

  test("stolen certificate: a principal presented from another pod's address is denied as identity-mismatch", async () => {
    // reviews-v2's identity may read ratings; presented from the sleep pod's address it may not.
    const res = await client.check(
      checkRequest({
        sourceIp: IP.sleep,
        principal: SA('bookinfo-reviews'),
        destinationIp: IP.ratings,
        port: 9080,
        path: '/ratings/1',
      }),
    );
    assert.equal(res.status.code, RPC_CODE.PERMISSION_DENIED);
    assert.equal(metadataField(res, 'kind'), 'identity-mismatch');
    assert.match(res.denied_response?.body ?? '', /RBAC: access denied \(identity-mismatch\)/);
  });

  test("Istio layer: details answers only productpage's identity with GET (both layers must allow)", async () => {
    const ok = await client.check(
      checkRequest({
        sourceIp: IP.productpage,
        principal: SA('bookinfo-productpage'),
        destinationIp: IP.details,
        port: 9080,
        path: '/details/0',
      }),
    );
    const post = await client.check(
      checkRequest({
        sourceIp: IP.productpage,
        principal: SA('bookinfo-productpage'),
        destinationIp: IP.details,
        port: 9080,
        method: 'POST',
        path: '/details/0',
      }),
    );
    assert.equal(ok.status.code, RPC_CODE.OK);
    assert.equal(post.status.code, RPC_CODE.PERMISSION_DENIED);
    assert.match(String(metadataField(post, 'kind')), /^istio-/);
  });

  test('fail closed: a destination with no view, and a proxy presenting another identity, are denied', async () => {
    const none = await client.check(
      checkRequest({
        sourceIp: IP.reviewsV2,
        principal: SA('bookinfo-reviews'),
        destinationIp: '10.99.0.1',
        port: 9080,
        path: '/ratings/1',
      }),
    );
    assert.equal(none.status.code, RPC_CODE.PERMISSION_DENIED);
    assert.equal(metadataField(none, 'kind'), 'no-l7-point');
    const req = checkRequest({
      sourceIp: IP.reviewsV2,
      principal: SA('bookinfo-reviews'),
      destinationIp: IP.ratings,
      port: 9080,
      path: '/ratings/1',
    });
    const wrongProxy = await client.check({
      attributes: {
        ...req.attributes,
        destination: { ...req.attributes?.destination, principal: SA('sleep') },
      },
    });
    assert.equal(wrongProxy.status.code, RPC_CODE.PERMISSION_DENIED);
    assert.equal(metadataField(wrongProxy, 'kind'), 'identity-mismatch');
  });

  test('hostile attributes are denied inside a CheckResponse, never as an RPC error (failure_mode_allow cannot open them)', async () => {
    const good = checkRequest({
      sourceIp: IP.reviewsV2,
      principal: SA('bookinfo-reviews'),
      destinationIp: IP.ratings,
      port: 9080,
      path: '/ratings/1',
    });
    const http = good.attributes?.request?.http ?? {};
    const variants: { name: string; req: Parameters<CheckClient['check']>[0]; status: number }[] = [
      { name: 'empty request', req: {}, status: 403 },
      {
        name: 'no source address',
        req: { attributes: { ...good.attributes, source: { principal: SA('bookinfo-reviews') } } },
        status: 403,
      },
      {
        name: 'pipe source',
        req: { attributes: { ...good.attributes, source: { address: { pipe: { path: '/x' } } } } },
        status: 403,
      },
      {
        name: 'source not an IP',
        req: {
          attributes: {
            ...good.attributes,
            source: { address: { socket_address: { address: 'ratings', port_value: 1 } } },
          },
        },
        status: 403,
      },
      {
        name: 'no destination port',
        req: {
          attributes: {
            ...good.attributes,
            destination: { address: { socket_address: { address: IP.ratings } } },
          },
        },
        status: 403,
      },
      {
        name: 'dot segment',
        req: {
          attributes: {
            ...good.attributes,
            request: { http: { ...http, path: '/ratings/../admin' } },
          },
        },
        status: 400,
      },
      {
        name: 'encoded slash',
        req: {
          attributes: {
            ...good.attributes,
            request: { http: { ...http, path: '/ratings%2f..%2fadmin' } },
          },
        },
        status: 400,
      },
      {
        name: 'absolute form',
        req: {
          attributes: {
            ...good.attributes,
            request: { http: { ...http, path: 'http://x/ratings' } },
          },
        },
        status: 400,
      },
      {
        name: 'bad method',
        req: { attributes: { ...good.attributes, request: { http: { ...http, method: 'GE T' } } } },
        status: 400,
      },
      {
        name: 'too many headers',
        req: {
          attributes: {
            ...good.attributes,
            request: {
              http: {
                ...http,
                headers: Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`h${i}`, 'v'])),
              },
            },
          },
        },
        status: 400,
      },
    ];
    for (const v of variants) {
      const res = await client.check(v.req);
      assert.notEqual(res.status.code, RPC_CODE.OK, v.name);
      assert.ok(res.denied_response, v.name);
      assert.equal(
        Number(
          res.denied_response.status.code === 'Forbidden'
            ? 403
            : res.denied_response.status.code === 'BadRequest'
              ? 400
              : res.denied_response.status.code,
        ),
        v.status,
        v.name,
      );
    }
  });

  test('every decision is one access log line and counted', () => {
    const c = server.stats();
    assert.ok(c.checks >= 10);
    assert.equal(c.counters.allowed + c.counters.denied + c.counters.errors, c.checks);
  });
});

describe('authz-server with --endpoint and a watched policy directory', () => {
  let dir: string;
  let server: AuthzServer;
  let client: CheckClient;
  const lines: string[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), `palisade-authz-${process.pid}-`));
    cpSync(BOOKINFO, dir, { recursive: true });
    server = new AuthzServer({
      source: new FileSource({ paths: [dir], intervalMs: 50 }),
      endpoint: 'default/ratings-v1',
      notify: (l) => lines.push(l),
      listener: { kind: 'plaintext' },
    });
    const port = await server.start('127.0.0.1:0');
    client = checkClient(`127.0.0.1:${port}`);
  });
  after(async () => {
    client.close();
    await server.close(1000);
    rmSync(dir, { recursive: true, force: true });
  });

  const ratingsGet = (path = '/ratings/1') =>
    client.check(
      checkRequest({
        sourceIp: IP.reviewsV2,
        principal: SA('bookinfo-reviews'),
        destinationIp: IP.ratings,
        port: 9080,
        path,
      }),
    );

  test("a request to another known endpoint's address is refused by the server of one endpoint", async () => {
    const res = await client.check(
      checkRequest({
        sourceIp: IP.productpage,
        principal: SA('bookinfo-productpage'),
        destinationIp: IP.details,
        port: 9080,
        path: '/details/0',
      }),
    );
    assert.equal(res.status.code, RPC_CODE.PERMISSION_DENIED);
    assert.equal(metadataField(res, 'kind'), 'no-l7-point');
  });

  test('a changed policy file is picked up; a file with errors keeps the last good view (fail static)', async () => {
    assert.equal((await ratingsGet('/stars')).status.code, RPC_CODE.PERMISSION_DENIED);
    const file = join(dir, 'policies-calico.yaml');
    const text = readFileSync(file, 'utf8');
    writeFileSync(file, text.replace('prefix: /ratings', 'prefix: /'));
    await waitFor(() => server.views.status().lastSnapshot === 2, 'the second snapshot');
    assert.equal((await ratingsGet('/stars')).status.code, RPC_CODE.OK);
    writeFileSync(file, `${text}\n---\nkind: NoSuchKind\n`);
    await waitFor(() => lines.some((l) => l.includes('error(s) in the inputs')), 'the error line');
    assert.equal(server.views.status().lastSnapshot, 2);
    assert.equal(
      (await ratingsGet('/stars')).status.code,
      RPC_CODE.OK,
      'the last good view still judges',
    );
  });
});

describe('authz-server with no policy yet', () => {
  test('fails closed: every Check is denied until a view exists', async () => {
    const source = new PushSource();
    const server = new AuthzServer({
      source,
      endpoint: 'default/ratings-v1',
      listener: { kind: 'plaintext' },
    });
    const port = await server.start('127.0.0.1:0');
    const client = checkClient(`127.0.0.1:${port}`);
    try {
      const req = checkRequest({
        sourceIp: IP.reviewsV2,
        principal: SA('bookinfo-reviews'),
        destinationIp: IP.ratings,
        port: 9080,
        path: '/ratings/1',
      });
      assert.equal((await client.check(req)).status.code, RPC_CODE.PERMISSION_DENIED);
      source.push({ version: 1, resources: bookinfoResources() });
      assert.equal((await client.check(req)).status.code, RPC_CODE.OK);
    } finally {
      client.close();
      await server.close(1000);
    }
  });
});

describe('authz-server on a unix socket', () => {
  test('Check over unix:PATH answers as over TCP', async () => {
    const dir = mkdtempSync(join(tmpdir(), `palisade-authz-uds-${process.pid}-`));
    const sock = join(dir, 'authz.sock');
    const source = new PushSource();
    source.push({ version: 1, resources: bookinfoResources() });
    const server = new AuthzServer({ source });
    await server.start(`unix:${sock}`);
    const client = checkClient(`unix:${sock}`);
    try {
      const res = await client.check(
        checkRequest({
          sourceIp: IP.reviewsV2,
          principal: SA('bookinfo-reviews'),
          destinationIp: IP.ratings,
          port: 9080,
          path: '/ratings/1',
        }),
      );
      assert.equal(res.status.code, RPC_CODE.OK);
    } finally {
      client.close();
      await server.close(1000);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("authz-server: Checks of Envoy's network filter (no HTTP attributes) are judged once at L4", () => {
  const ips = {
    db: '10.245.0.10',
    api: '10.245.0.11',
    web: '10.245.0.12',
    intruder: '10.245.0.13',
  };
  let server: AuthzServer;
  let client: CheckClient;
  const source = new PushSource();
  const resources = (yaml: string): Resource[] => {
    const r = loadText(yaml, 'tcp-world.yaml');
    assert.deepEqual(
      r.diagnostics.filter((d) => d.severity === 'error'),
      [],
    );
    return r.resources;
  };
  const network = (sourceIp: string, principal: string): Parameters<CheckClient['check']>[0] => ({
    attributes: {
      source: { address: { socket_address: { address: sourceIp, port_value: 40000 } }, principal },
      destination: { address: { socket_address: { address: ips.db, port_value: DB_PORT } } },
    },
  });

  before(async () => {
    source.push({ version: 1, resources: resources(world(ips, CALICO)) });
    server = new AuthzServer({ source, listener: { kind: 'plaintext' } });
    const port = await server.start('127.0.0.1:0');
    client = checkClient(`127.0.0.1:${port}`);
  });
  after(async () => {
    client.close();
    await server.close(1000);
  });

  test('Calico (DESIGN §4.6): the serviceAccounts rule admits api; the Allow rule with an http match cannot match a TCP connection (web: default deny of the tier); a stolen certificate is identity-mismatch; each exactly PolicyView.decideInboundConnection', async () => {
    const view = PolicyView.fromResources(resources(world(ips, CALICO)), `${NS}/db`, 1);
    assert.ok(view.ok);
    const cases = [
      { src: ips.api, p: spiffe('api'), ok: true, kind: 'rule' },
      { src: ips.web, p: spiffe('web'), ok: false, kind: 'tier-default' },
      { src: ips.intruder, p: spiffe('api'), ok: false, kind: 'identity-mismatch' },
    ];
    for (const c of cases) {
      const expected = view.view.decideInboundConnection({
        sourceIp: c.src,
        principal: c.p,
        port: DB_PORT,
      });
      assert.equal(expected.verdict, c.ok ? 'allow' : 'deny');
      assert.equal(expected.provenance.kind, c.kind);
      const res = await client.check(network(c.src, c.p));
      assert.equal(res.status.code, c.ok ? RPC_CODE.OK : RPC_CODE.PERMISSION_DENIED, c.src);
      assert.equal(
        metadataField(res, 'kind'),
        c.kind,
        `${c.src}: ${String(metadataField(res, 'reason'))}`,
      );
    }
  });

  test('Istio "Authorization policy for TCP traffic": an ALLOW rule with an HTTP-only field (methods) is ignored for a network Check, the L4-only rule allows', async () => {
    source.push({ version: 2, resources: resources(world(ips, ISTIO_ALLOW)) });
    await waitFor(() => server.stats().views.lastSnapshot === 2, 'view 2');
    const api = await client.check(network(ips.api, spiffe('api')));
    assert.equal(api.status.code, RPC_CODE.OK);
    assert.equal(metadataField(api, 'kind'), 'istio-allow');
    const web = await client.check(network(ips.web, spiffe('web')));
    assert.equal(web.status.code, RPC_CODE.PERMISSION_DENIED);
    assert.equal(metadataField(web, 'kind'), 'istio-no-allow-match');
  });
});
