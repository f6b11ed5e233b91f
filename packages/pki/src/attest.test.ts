import { test } from 'node:test';
import assert from 'node:assert/strict';
import { attestIssuance } from './attest.js';
import type { RegisteredEndpoint } from './attest.js';

const TD = 'cluster.local';
const endpoints: RegisteredEndpoint[] = [
  { node: 'node-a', namespace: 'prod', serviceAccount: 'api', name: 'prod/api-1' },
  { node: 'node-b', namespace: 'prod', serviceAccount: 'api', name: 'prod/api-2' },
  { node: 'node-b', namespace: 'prod', serviceAccount: 'db', name: 'prod/db-0' },
];

test('attestation: a node gets N/S while an endpoint running as N/S is registered on it', () => {
  const r = attestIssuance({
    requesterNode: 'node-a',
    spiffeId: 'spiffe://cluster.local/ns/prod/sa/api',
    trustDomain: TD,
    registeredEndpoints: endpoints,
  });
  assert.ok(r.ok);
  assert.deepEqual(r.endpoints, ['prod/api-1']);
  assert.equal(r.identity.serviceAccount, 'api');
});

test('attestation: an identity that runs only on other nodes is refused (PKI_ERR_NOT_ATTESTED)', () => {
  const r = attestIssuance({
    requesterNode: 'node-a',
    spiffeId: 'spiffe://cluster.local/ns/prod/sa/db',
    trustDomain: TD,
    registeredEndpoints: endpoints,
  });
  assert.equal(r.ok, false);
  if (!r.ok) {
    assert.equal(r.code, 'PKI_ERR_NOT_ATTESTED');
    assert.match(r.message, /node-a runs no endpoint as prod\/db \(1 registered on other nodes\)/);
  }
});

test('attestation: no certificate for an identity whose endpoints are gone', () => {
  const r = attestIssuance({
    requesterNode: 'node-b',
    spiffeId: 'spiffe://cluster.local/ns/prod/sa/db',
    trustDomain: TD,
    registeredEndpoints: endpoints.filter((e) => e.serviceAccount !== 'db'),
  });
  assert.equal(r.ok, false);
  if (!r.ok) assert.match(r.message, /no endpoint runs as prod\/db anywhere/);
});

test('attestation: namespace and service account must both match (no cross-namespace borrowing)', () => {
  for (const id of [
    'spiffe://cluster.local/ns/staging/sa/api',
    'spiffe://cluster.local/ns/prod/sa/api2',
    'spiffe://cluster.local/ns/api/sa/prod',
  ]) {
    const r = attestIssuance({
      requesterNode: 'node-a',
      spiffeId: id,
      trustDomain: TD,
      registeredEndpoints: endpoints,
    });
    assert.equal(r.ok, false, id);
  }
});

test('attestation: foreign trust domain, non-workload IDs, malformed IDs and anonymous requesters are refused', () => {
  const cases: [string, string, string][] = [
    ['node-a', 'spiffe://other.org/ns/prod/sa/api', 'PKI_ERR_WRONG_TRUST_DOMAIN'],
    ['node-a', 'spiffe://cluster.local/palisade/server', 'PKI_ERR_BAD_SPIFFE_ID'],
    ['node-a', 'spiffe://cluster.local/ns/prod/sa/api/', 'PKI_ERR_BAD_SPIFFE_ID'],
    ['node-a', 'spiffe://cluster.local/ns/prod/sa/../sa/api', 'PKI_ERR_BAD_SPIFFE_ID'],
    ['', 'spiffe://cluster.local/ns/prod/sa/api', 'PKI_ERR_NOT_ATTESTED'],
  ];
  for (const [node, id, code] of cases) {
    const r = attestIssuance({
      requesterNode: node,
      spiffeId: id,
      trustDomain: TD,
      registeredEndpoints: endpoints,
    });
    assert.equal(r.ok, false, id);
    if (!r.ok) assert.equal(r.code, code, id);
  }
});
