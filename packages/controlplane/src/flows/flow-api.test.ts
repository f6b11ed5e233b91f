// The flow store and its routes through the API handler (inject, no socket) over a real SQLite
// file: node-only ingest stamped with the node's name, every field validated, queries by time,
// endpoint, namespace, policy, verdict and point, retention by age, count and size, shed counts
// recorded and shown, per-policy counters on /metrics, and the live follow stream.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { queryAudit } from '../audit/audit-log.js';
import { ApiServer } from '../server/api.js';
import { issueToken } from '../server/bootstrap.js';
import { MemoryStore } from '../store/memory-store.js';
import { FlowService } from './flow-api.js';
import { FlowMetrics } from './flow-metrics.js';
import type { FlowRecord, FlowRecordInput } from './flow-record.js';
import { FlowStore } from './flow-store.js';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDb(): string {
  const d = mkdtempSync(join(tmpdir(), `palisade-flows-${process.pid}-`));
  dirs.push(d);
  return join(d, 'flows.db');
}

const NOW = Date.parse('2026-03-01T12:00:00Z');

function rec(over: Partial<FlowRecordInput> = {}): FlowRecordInput {
  return {
    start: new Date(NOW - 10_000).toISOString(),
    end: new Date(NOW).toISOString(),
    source: { ip: '10.0.0.1', namespace: 'shop', name: 'web', labels: { app: 'web' } },
    destination: { ip: '10.0.0.2', port: 5432, namespace: 'db', name: 'pg', labels: { app: 'pg' } },
    protocol: 'TCP',
    verdict: 'deny',
    point: 'kernel',
    direction: 'ingress',
    provenance: { kind: 'tier-default', tier: 'security', reason: 'default deny of tier security' },
    packets: 3,
    bytes: 180,
    count: 3,
    ...over,
  };
}

async function fixture(retention?: ConstructorParameters<typeof FlowStore>[1]) {
  const store = new MemoryStore();
  let now = NOW;
  const flows = new FlowStore(tempDb(), { now: () => now, ...retention });
  const metrics = new FlowMetrics();
  const api = new ApiServer({
    store,
    rateLimit: false,
    now: () => new Date(now),
    flows: new FlowService({ store: flows, metrics, now: () => now, heartbeatMs: 200 }),
  });
  const admin = (await issueToken(store, { kind: 'User', name: 'admin' }, ['system:admins'])).token;
  const node = (await issueToken(store, { kind: 'Node', name: 'node-1' }, [])).token;
  const user = (await issueToken(store, { kind: 'User', name: 'nobody' }, [])).token;
  return {
    store,
    flows,
    api,
    admin,
    node,
    user,
    tick: (ms: number) => (now += ms),
    post: (body: unknown, token = node) =>
      api.inject({ method: 'POST', url: '/api/v1/flows', token, body: body as object }),
    get: async (q: string, token = admin) => {
      const r = await api.inject({ method: 'GET', url: `/api/v1/flows${q}`, token });
      return { status: r.status, body: r.json() as { records: FlowRecord[]; next?: string } };
    },
  };
}

describe('flow ingest', () => {
  test("a node's batch is stored under the authenticated node's name, with every field read back", async () => {
    const f = await fixture();
    const r = rec({
      method: 'GET',
      path: '/api/orders',
      point: 'l7',
      verdict: 'allow',
      provenance: { kind: 'rule', tier: 'app', policy: 'shop/allow-web', rule: 2, reason: 'r' },
      staged: [{ policy: 'staged-lockdown', tier: 'security', verdict: 'deny', rule: 0 }],
      source: {
        ip: '10.0.0.1',
        namespace: 'shop',
        name: 'web',
        identity: 'spiffe://cluster.local/ns/shop/sa/web',
      },
    });
    const res = await f.post({ records: [r] });
    assert.equal(res.status, 200, res.body);
    const got = await f.get('');
    assert.equal(got.body.records.length, 1);
    const { id, node, ...rest } = got.body.records[0] as FlowRecord;
    assert.ok(id > 0);
    assert.equal(node, 'node-1');
    assert.deepEqual(rest, r);
    f.flows.close();
  });

  test('only node credentials may report flows: a user is refused 403 and the attempt is audited', async () => {
    const f = await fixture();
    for (const token of [f.admin, f.user]) {
      const res = await f.post({ records: [rec()] }, token);
      assert.equal(res.status, 403);
      assert.equal((res.json() as { code: string }).code, 'AUTH_ERR_FORBIDDEN');
    }
    assert.equal(f.flows.count, 0);
    const audit = await queryAudit(f.store, { outcome: 'refused', limit: 10 });
    assert.ok(audit.some((e) => e.verb === 'flows.report'));
    const anon = await f.api.inject({
      method: 'POST',
      url: '/api/v1/flows',
      body: { records: [] },
    });
    assert.equal(anon.status, 401);
    f.flows.close();
  });

  test('hostile batches are refused whole, naming the field, and nothing is stored', async () => {
    const f = await fixture();
    const bad: [string, unknown][] = [
      ['records[0].evil', { records: [{ ...rec(), evil: 1 }] }],
      ['records[1].source.ip', { records: [rec(), rec({ source: { ip: '10.0.0.300' } })] }],
      ['records[0].end', { records: [rec({ end: new Date(NOW + 3600_000).toISOString() })] }],
      ['records[0].end', { records: [rec({ end: new Date(NOW - 20_000).toISOString() })] }],
      [
        'records[0].provenance.kind',
        { records: [rec({ provenance: { kind: 'magic' as 'rule' } })] },
      ],
      [
        'records[0].destination.port',
        { records: [rec({ destination: { ip: '::1', port: 70000 } })] },
      ],
      ['records[0].count', { records: [rec({ count: 0 })] }],
      ['records[0].packets', { records: [rec({ packets: -1 })] }],
      ['records[0].method', { records: [rec({ method: 'get; drop' })] }],
      [
        'records[0].source.namespace',
        { records: [rec({ source: { ip: '1.2.3.4', namespace: '../x' } })] },
      ],
      [
        'records[0].source.labels',
        {
          records: [
            rec({
              source: {
                ip: '1.2.3.4',
                labels: Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`k${i}`, 'v'])),
              },
            }),
          ],
        },
      ],
      ['records[0].path', { records: [rec({ path: 'x'.repeat(5000) })] }],
      [
        'records[0].provenance.reason',
        { records: [rec({ provenance: { kind: 'rule', reason: 'a\u0000b' } })] },
      ],
      ['records: at most', { records: Array.from({ length: 5001 }, () => rec()) }],
      ['shed[0].reason', { records: [], shed: [{ reason: 'because', count: 1, point: 'kernel' }] }],
      ['body', [1, 2]],
    ];
    for (const [field, body] of bad) {
      const res = await f.post(body);
      assert.equal(res.status, 422, `${field}: ${res.body.slice(0, 200)}`);
      assert.match(
        (res.json() as { hint: string }).hint,
        new RegExp(field.replace(/[[\]]/g, '\\$&')),
      );
    }
    const notJson = await f.api.inject({
      method: 'POST',
      url: '/api/v1/flows',
      token: f.node,
      body: '{"records":',
    });
    assert.equal(notJson.status, 400);
    const huge = await f.api.inject({
      method: 'POST',
      url: '/api/v1/flows',
      token: f.node,
      body: Buffer.alloc(4 * 1024 * 1024 + 1, 0x20),
    });
    assert.equal(huge.status, 413);
    assert.equal(f.flows.count, 0);
    f.flows.close();
  });
});

describe('flow queries', () => {
  test('filters by endpoint, namespace, policy, verdict, enforcement point and time select exactly the matching records', async () => {
    const f = await fixture();
    const batch = [
      rec(),
      rec({
        verdict: 'allow',
        provenance: { kind: 'rule', tier: 'app', policy: 'db/allow-web', rule: 0 },
      }),
      rec({
        point: 'l7',
        verdict: 'deny',
        method: 'DELETE',
        path: '/x',
        provenance: { kind: 'rule', tier: 'app', policy: 'db/allow-web', rule: 1 },
      }),
      rec({
        source: { ip: '10.0.0.9', namespace: 'ops', name: 'job' },
        destination: { ip: '10.0.0.8', namespace: 'ops', name: 'api' },
      }),
      rec({
        start: new Date(NOW - 7200_000).toISOString(),
        end: new Date(NOW - 7190_000).toISOString(),
      }),
    ];
    assert.equal((await f.post({ records: batch })).status, 200);
    const ids = async (q: string) =>
      (await f.get(q)).body.records.map((r) => r.id).sort((a, b) => a - b);
    assert.deepEqual(await ids('?endpoint=db/pg'), [1, 2, 3, 5]);
    assert.deepEqual(await ids('?endpoint=shop/web&since=1h'), [1, 2, 3]);
    assert.deepEqual(await ids('?namespace=ops'), [4]);
    assert.deepEqual(await ids('?policy=db/allow-web'), [2, 3]);
    assert.deepEqual(await ids('?policy=db/allow-web&point=kernel'), [2]);
    assert.deepEqual(await ids('?verdict=deny&since=1h'), [1, 3, 4]);
    assert.deepEqual(await ids(`?until=${new Date(NOW - 3600_000).toISOString()}`), [5]);
    // Pages: newest window first (ties by id), `next` continues below; record 5 ended 2 h ago.
    const p1 = await f.get('?limit=2');
    assert.deepEqual(
      p1.body.records.map((r) => r.id),
      [4, 3],
    );
    const p2 = await f.get(`?limit=2&before=${p1.body.next}`);
    assert.deepEqual(
      p2.body.records.map((r) => r.id),
      [2, 1],
    );
    const p3 = await f.get(`?limit=2&before=${p2.body.next}`);
    assert.deepEqual(
      p3.body.records.map((r) => r.id),
      [5],
    );
    assert.equal(p3.body.next, undefined);
    // A bare id (the cursor of earlier versions) still pages by id.
    const legacy = await f.get('?limit=2&before=5');
    assert.deepEqual(
      legacy.body.records.map((r) => r.id),
      [4, 3],
    );
    assert.equal(legacy.body.next, '3');
    assert.equal((await f.get('?before=1.2.3')).status, 400);
    for (const q of [
      '?verdict=maybe',
      '?endpoint=a/b/c',
      '?since=yesterday',
      '?limit=0',
      '?bogus=1',
      '?namespace=A_B',
    ])
      assert.equal((await f.get(q)).status, 400, q);
    f.flows.close();
  });

  test('the graph groups flows into edges by endpoint pair, verdict and deciding policy; policy hits count them', async () => {
    const f = await fixture();
    await f.post({
      records: [
        rec(),
        rec(),
        rec({
          verdict: 'allow',
          provenance: { kind: 'rule', policy: 'db/allow-web', tier: 'app', rule: 0 },
          count: 5,
        }),
      ],
    });
    const g = (
      await f.api.inject({ method: 'GET', url: '/api/v1/flows/graph', token: f.admin })
    ).json() as {
      edges: { verdict: string; count: number; policy: string | null }[];
      nodes: { name: string }[];
    };
    assert.deepEqual(g.edges.map((e) => [e.verdict, e.policy, e.count]).sort(), [
      ['allow', 'db/allow-web', 5],
      ['deny', null, 6],
    ]);
    assert.deepEqual(g.nodes.map((n) => n.name).sort(), ['pg', 'web']);
    const h = (
      await f.api.inject({ method: 'GET', url: '/api/v1/flows/policies', token: f.admin })
    ).json() as {
      hits: { policy: string | null; count: number }[];
    };
    assert.equal(h.hits.find((x) => x.policy === 'db/allow-web')?.count, 5);
    f.flows.close();
  });

  test('the graph with allowed=1 adds what policy allows, recomputed when the policies change', async () => {
    const f = await fixture();
    const yaml = `apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {containers: [{name: c}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: pg, namespace: db, labels: {app: pg}}
spec: {containers: [{name: c, ports: [{containerPort: 5432}]}]}
status: {podIP: 10.0.0.2}
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-web, namespace: db}
spec:
  selector: app == 'pg'
  ingress: [{action: Allow, protocol: TCP, source: {selector: app == 'web', namespaceSelector: all()}, destination: {ports: [5432]}}]
`;
    const applied = await f.api.inject({
      method: 'POST',
      url: '/api/v1/apply',
      token: f.admin,
      body: yaml,
      headers: { 'content-type': 'application/yaml' },
    });
    assert.equal(applied.status, 200, applied.body);
    await f.post({ records: [rec()] });
    type G = {
      edges: unknown[];
      allowed?: { edges: { ports: string[]; decision: { policy?: string } }[]; pairs: number };
    };
    const graph = async (q: string) =>
      (
        await f.api.inject({ method: 'GET', url: `/api/v1/flows/graph${q}`, token: f.admin })
      ).json() as G;
    const plain = await graph('');
    assert.equal(plain.allowed, undefined, 'without allowed=1 the answer is as before');
    const g = await graph('?allowed=1');
    assert.equal(g.edges.length, 1);
    assert.deepEqual(
      g.allowed?.edges.map((e) => [e.ports, e.decision.policy]),
      [[['TCP/5432'], 'db/allow-web']],
    );
    const del = await f.api.inject({
      method: 'DELETE',
      url: '/api/v1/projectcalico.org/NetworkPolicy/db/allow-web',
      token: f.admin,
    });
    assert.ok(del.status < 300, del.body);
    // No policy selects anything now: every pair is unrestricted, none is listed.
    assert.equal((await graph('?allowed=1')).allowed?.edges.length, 0);
    f.flows.close();
  });

  test('readers need the FlowRecord permission: a user without a role is refused, nodes may not read', async () => {
    const f = await fixture();
    assert.equal((await f.get('', f.user)).status, 403);
    assert.equal((await f.get('', f.node)).status, 403);
    f.flows.close();
  });
});

describe('retention and shedding', () => {
  test('records older than the age bound and beyond the count bound are deleted, oldest first, and counted', async () => {
    const f = await fixture({ retention: { maxRecords: 10, maxAgeMs: 3600_000 } });
    await f.post({ records: Array.from({ length: 8 }, () => rec()) });
    f.tick(1000);
    await f.post({
      records: Array.from({ length: 8 }, () => rec({ end: new Date(NOW + 1000).toISOString() })),
    });
    assert.equal(f.flows.count, 10);
    const left = (await f.get('?limit=100')).body.records.map((r) => r.id);
    assert.deepEqual(
      left.sort((a, b) => a - b),
      [7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
    );
    f.tick(3600_000 - 500);
    f.flows.prune();
    // The first batch's two survivors ended before the cutoff, the second batch's did not.
    assert.equal(f.flows.count, 8);
    assert.equal(f.flows.stats().evicted, 8);
    f.flows.close();
  });

  test('the size bound deletes the oldest records until the used pages fit', async () => {
    const f = await fixture({ retention: { maxBytes: 256 * 1024 } });
    for (let i = 0; i < 10; i++)
      await f.post({
        records: Array.from({ length: 500 }, () =>
          rec({ path: `/${'p'.repeat(400)}`, point: 'l7' }),
        ),
      });
    f.flows.prune();
    assert.ok(f.flows.count < 5000 && f.flows.count > 0, `count ${f.flows.count}`);
    assert.ok(f.flows.stats().evicted > 0);
    f.flows.close();
  });

  test('shed counts a node reports are stored, summed in stats and on /metrics beside per-policy counters', async () => {
    const f = await fixture();
    await f.post({
      records: [
        rec(),
        rec({
          point: 'l7',
          verdict: 'allow',
          provenance: { kind: 'rule', policy: 'p"q', rule: 0 },
        }),
      ],
      shed: [{ reason: 'buffer-full', count: 40, point: 'kernel' }],
    });
    await f.post({ records: [], shed: [{ reason: 'send-failed', count: 2, point: 'l7' }] });
    const s = (
      await f.api.inject({ method: 'GET', url: '/api/v1/flows/stats', token: f.admin })
    ).json() as {
      shedTotal: number;
      shed: { reason: string; count: number; node: string }[];
    };
    assert.equal(s.shedTotal, 42);
    assert.deepEqual(
      s.shed.map((x) => [x.node, x.reason, x.count]),
      [
        ['node-1', 'buffer-full', 40],
        ['node-1', 'send-failed', 2],
      ],
    );
    const m = (await f.api.inject({ method: 'GET', url: '/metrics' })).body;
    assert.match(
      m,
      /palisade_flows_total\{point="kernel",verdict="deny",policy="\(tier-default\)"\} 3/,
    );
    assert.match(m, /palisade_flows_total\{point="l7",verdict="allow",policy="p\\"q"\} 3/);
    assert.match(
      m,
      /palisade_flows_shed_total\{node="node-1",point="kernel",reason="buffer-full"\} 40/,
    );
    f.flows.close();
  });
});

describe('follow', () => {
  test('a follow stream delivers matching records as they are stored, and ends with the client', async () => {
    const f = await fixture();
    await f.post({ records: [rec()] });
    const ac = new AbortController();
    const res = await f.api.handle({
      method: 'GET',
      url: '/api/v1/flows?follow=1&verdict=allow',
      headers: { authorization: `Bearer ${f.admin}` },
      body: Buffer.alloc(0),
      remoteAddress: '127.0.0.1',
      signal: ac.signal,
    });
    assert.ok('stream' in res);
    const it = res.stream[Symbol.asyncIterator]();
    const first = JSON.parse((await it.next()).value as string) as { type: string };
    assert.equal(first.type, 'BOOKMARK');
    setTimeout(() => {
      void f.post({
        records: [rec(), rec({ verdict: 'allow', provenance: { kind: 'no-policy' } })],
      });
    }, 50);
    let line: { type: string; record?: FlowRecord };
    do line = JSON.parse((await it.next()).value as string) as typeof line;
    while (line.type !== 'FLOW');
    assert.equal(line.record?.verdict, 'allow');
    assert.equal(line.record?.provenance.kind, 'no-policy');
    ac.abort();
    for (;;) if ((await it.next()).done) break;
    f.flows.close();
  });
});
