// Issue 3: "several servers on one etcd serve the same data and the same watches". Two API
// servers, each with its own connection to a real 3-member etcd cluster started for this file:
// a write through one is read and watched through the other, optimistic concurrency holds across
// them, both extend one audit chain, and they keep serving with one member of three killed.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { verifyAudit } from '../audit/audit-log.js';
import { EtcdCluster } from '../store/etcd-harness.js';
import { openStore } from '../store/open-store.js';
import type { Store } from '../store/store.js';
import { ApiServer } from './api.js';
import { issueToken } from './bootstrap.js';

interface Line {
  readonly type: string;
  readonly object: { readonly metadata: { readonly name?: string } };
}

async function watchLines(api: ApiServer, url: string, token: string, n: number): Promise<Line[]> {
  const ac = new AbortController();
  const res = await api.handle({
    method: 'GET',
    url,
    headers: { authorization: `Bearer ${token}` },
    body: Buffer.alloc(0),
    remoteAddress: '127.0.0.1',
    signal: ac.signal,
  });
  assert.equal(res.status, 200);
  assert.ok('stream' in res);
  const lines: Line[] = [];
  const it = res.stream[Symbol.asyncIterator]();
  try {
    while (lines.length < n) {
      const r = await it.next();
      if (r.done) break;
      const line = JSON.parse(r.value) as Line;
      if (line.type !== 'BOOKMARK') lines.push(line);
    }
  } finally {
    ac.abort();
    await it.return?.();
  }
  return lines;
}

function gnp(name: string, order: number): string {
  return `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: ${name}}
spec:
  order: ${order}
  selector: app == 'web'
  ingress: [{action: Allow}]
`;
}

describe('two API servers on one real etcd cluster (3 members)', { timeout: 120_000 }, () => {
  let cluster: EtcdCluster;
  let storeA: Store;
  let storeB: Store;
  let a: ApiServer;
  let b: ApiServer;
  let admin: string;

  before(async () => {
    cluster = await EtcdCluster.start(3);
    storeA = await openStore(cluster.url);
    storeB = await openStore(cluster.url);
    a = new ApiServer({ store: storeA, rateLimit: false });
    b = new ApiServer({ store: storeB, rateLimit: false });
    admin = (await issueToken(storeA, { kind: 'User', name: 'admin' }, ['system:admins'])).token;
  });

  after(async () => {
    await storeA?.close();
    await storeB?.close();
    await cluster?.stop();
  });

  test('a write through one server is watched and read through the other', async () => {
    const rv = (await storeB.status()).revision;
    const watching = watchLines(
      b,
      `/api/v1/projectcalico.org/GlobalNetworkPolicy?watch=1&resourceVersion=${rv}`,
      admin,
      2,
    );
    for (const [name, order] of [
      ['shared-1', 10],
      ['shared-2', 20],
    ] as const) {
      const w = await a.inject({
        method: 'POST',
        url: '/api/v1/apply',
        token: admin,
        body: gnp(name, order),
        headers: { 'content-type': 'application/yaml' },
      });
      assert.equal(w.status, 200, w.body);
    }
    const lines = await watching;
    assert.deepEqual(
      lines.map((l) => [l.type, l.object.metadata.name]),
      [
        ['ADDED', 'shared-1'],
        ['ADDED', 'shared-2'],
      ],
    );
    const r = await b.inject({
      method: 'GET',
      url: '/api/v1/projectcalico.org/GlobalNetworkPolicy/shared-1',
      token: admin,
    });
    assert.equal(r.status, 200, r.body);
  });

  test('optimistic concurrency holds across servers: a stale resourceVersion is 409', async () => {
    const url = '/api/v1/projectcalico.org/GlobalNetworkPolicy/shared-1';
    const read = await a.inject({ method: 'GET', url, token: admin });
    const rv = (read.json() as { metadata: { resourceVersion: string } }).metadata.resourceVersion;
    const first = await b.inject({
      method: 'PATCH',
      url,
      token: admin,
      body: { metadata: { labels: { by: 'b' }, resourceVersion: rv } },
    });
    assert.equal(first.status, 200, first.body);
    const stale = await a.inject({
      method: 'PATCH',
      url,
      token: admin,
      body: { metadata: { labels: { by: 'a' }, resourceVersion: rv } },
    });
    assert.equal(stale.status, 409, stale.body);
    const v = await verifyAudit(storeB);
    assert.ok(v.ok, 'both servers extend one audit chain');
  });

  test('with one member of three killed, both servers keep reading and writing', async () => {
    await cluster.kill(0);
    const w = await b.inject({
      method: 'POST',
      url: '/api/v1/apply',
      token: admin,
      body: gnp('after-failure', 30),
      headers: { 'content-type': 'application/yaml' },
    });
    assert.equal(w.status, 200, w.body);
    const r = await a.inject({
      method: 'GET',
      url: '/api/v1/projectcalico.org/GlobalNetworkPolicy/after-failure',
      token: admin,
    });
    assert.equal(r.status, 200, r.body);
    assert.ok((await verifyAudit(storeA)).ok);
  });
});
