// The node role's certificate rule: only identities running on the node.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ApiServer } from '../server/api.js';
import { issueToken } from '../server/bootstrap.js';
import { MemoryStore } from '../store/memory-store.js';
import { nodeMayRequestIdentity } from './node-identity.js';

async function seeded(): Promise<MemoryStore> {
  const store = new MemoryStore();
  const api = new ApiServer({ store, rateLimit: false });
  const admin = (await issueToken(store, { kind: 'User', name: 'admin' }, ['system:admins'])).token;
  const r = await api.inject({
    method: 'POST',
    url: '/api/v1/apply',
    token: admin,
    body: `apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop}
spec: {nodeName: node-1, serviceAccountName: web, containers: [{name: c}]}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: db, namespace: shop}
spec: {node: node-2, pod: db, serviceAccountName: db}
`,
  });
  assert.equal(r.status, 200, r.body);
  return store;
}

test('a node may request the identity of a pod running on it', async () => {
  const store = await seeded();
  const d = await nodeMayRequestIdentity(store, 'node-1', 'spiffe://cluster.local/ns/shop/sa/web');
  assert.equal(d.allowed, true);
  const w = await nodeMayRequestIdentity(store, 'node-2', 'spiffe://cluster.local/ns/shop/sa/db');
  assert.equal(w.allowed, true);
});

test('a node may not request an identity running elsewhere, malformed, or of another trust domain', async () => {
  const store = await seeded();
  for (const [node, id] of [
    ['node-2', 'spiffe://cluster.local/ns/shop/sa/web'],
    ['node-1', 'spiffe://cluster.local/ns/shop/sa/db'],
    ['node-1', 'spiffe://other.domain/ns/shop/sa/web'],
    ['node-1', 'spiffe://cluster.local/ns/shop/sa/web/extra'],
    ['node-1', 'spiffe://cluster.local/ns/../sa/web'],
    ['node-1', 'https://cluster.local/ns/shop/sa/web'],
  ] as const) {
    const d = await nodeMayRequestIdentity(store, node, id);
    assert.equal(d.allowed, false, `${node} ${id}`);
  }
});
