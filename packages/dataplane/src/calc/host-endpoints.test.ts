// Host endpoint ⇄ interface resolution as Felix does it (Calico HostEndpoint resource and Felix's
// endpoint manager: one active host endpoint per interface, the first by name).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { HostEndpoint } from '@palisade/core';
import { resolveHostEndpoints } from './host-endpoints.js';
import type { HostInterface } from './host-endpoints.js';

const hep = (name: string, spec: HostEndpoint['spec']): HostEndpoint => ({
  apiVersion: 'projectcalico.org/v3',
  kind: 'HostEndpoint',
  metadata: { name },
  spec: { node: 'n1', ...spec },
});

const IFACES: HostInterface[] = [
  { name: 'lo', addresses: ['127.0.0.1', '::1'] },
  { name: 'eth0', addresses: ['10.0.0.5', 'fe80::1'] },
  { name: 'eth1', addresses: ['172.16.0.5', '2001:db8::5'] },
  { name: 'cali123', addresses: ['169.254.1.1'] },
];

test('Calico HostEndpoint expectedIPs: a host endpoint without interfaceName governs the interface carrying one of its addresses (IPv4 or IPv6, any spelling)', () => {
  const r = resolveHostEndpoints(
    [hep('v4', { expectedIPs: ['10.0.0.5'] }), hep('v6', { expectedIPs: ['2001:DB8:0::5'] })],
    'n1',
    IFACES,
    'cali',
  );
  assert.deepEqual(r.locals, [
    { ref: 'v4', iface: 'eth0' },
    { ref: 'v6', iface: 'eth1' },
  ]);
  assert.deepEqual(r.inactive, []);
});

test('Calico HostEndpoint: interfaceName wins over nothing, expectedIPs then only describe it; other nodes and workload interfaces are never host endpoints here', () => {
  const r = resolveHostEndpoints(
    [
      hep('named', { interfaceName: 'eth1', expectedIPs: ['10.0.0.5'] }),
      hep('elsewhere', { node: 'n2', interfaceName: 'eth0' }),
      hep('wl', { interfaceName: 'cali123' }),
      hep('wl-ip', { expectedIPs: ['169.254.1.1'] }),
      hep('lo-ip', { expectedIPs: ['127.0.0.1'] }),
    ],
    'n1',
    IFACES,
    'cali',
  );
  assert.deepEqual(r.locals, [{ ref: 'named', iface: 'eth1' }]);
  assert.deepEqual(
    r.inactive.map((x) => x.ref),
    ['lo-ip', 'wl', 'wl-ip'],
  );
});

test('Felix host endpoint resolution: of several host endpoints claiming one interface the alphabetically first governs it', () => {
  const r = resolveHostEndpoints(
    [
      hep('b-named', { interfaceName: 'eth0' }),
      hep('a-by-ip', { expectedIPs: ['10.0.0.5'] }),
      hep('c-by-ip', { expectedIPs: ['10.0.0.5', '172.16.0.5'] }),
    ],
    'n1',
    IFACES,
  );
  assert.deepEqual(r.locals, [
    { ref: 'a-by-ip', iface: 'eth0' },
    { ref: 'c-by-ip', iface: 'eth1' },
  ]);
  assert.deepEqual(
    r.inactive.map((x) => [x.ref, x.why]),
    [['b-named', 'interface eth0 is governed by host endpoint a-by-ip']],
  );
});

test("Calico HostEndpoint interfaceName '*': the first all-interfaces host endpoint by name governs the rest of the node; unknown interfaces leave address-only endpoints inactive", () => {
  const r = resolveHostEndpoints(
    [
      hep('z-all', { interfaceName: '*' }),
      hep('all', { interfaceName: '*' }),
      hep('eth', { interfaceName: 'eth0' }),
      hep('by-ip', { expectedIPs: ['172.16.0.5'] }),
    ],
    'n1',
    undefined,
  );
  assert.deepEqual(r.locals, [
    { ref: 'all', iface: '*' },
    { ref: 'eth', iface: 'eth0' },
  ]);
  assert.deepEqual(
    r.inactive.map((x) => x.ref),
    ['by-ip', 'z-all'],
  );
});

test('host endpoint resolution ignores hostile interface data: unparseable addresses match nothing', () => {
  const r = resolveHostEndpoints([hep('x', { expectedIPs: ['10.0.0.9'] })], 'n1', [
    { name: 'eth0', addresses: ['not-an-ip', '10.0.0.9/24x', ''] },
  ]);
  assert.deepEqual(r.locals, []);
});
