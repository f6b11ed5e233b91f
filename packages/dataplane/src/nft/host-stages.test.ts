// Host endpoints beyond the host's own traffic, in real namespaces with real traffic: the node
// namespace plays the host, an "outside" namespace sits on a host interface (the host endpoint),
// and a pod hangs off the node. Each case follows a rule of Calico's host endpoint reference
// (docs.tigera.io, "Host endpoints" → "Apply on forwarded traffic", "Pre-DNAT policy",
// "Summary of host endpoint policies", and the HostEndpoint resource for `interfaceName: '*'`).
// The expected outcomes are the documented ones; `../host-stages-differential.test.ts` holds the
// engine's model of every stage (core `engine/host-stages.ts`) to the kernel with real traffic.
// (`calc.engine` here is the normal stage's engine, fed only normal policy.)
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Resource } from '@palisade/core';
import { Calculation } from '../calc/calculation.js';
import { HostModes, withHostModes } from '../calc/host-modes.js';
import { canUseNetns, inNs, TestNode } from '../testing/netns.js';
import type { TestPod } from '../testing/netns.js';
import { NftDriver } from './driver.js';
import { render, skeletonParts } from './render.js';

const skip = canUseNetns() ? false : 'needs root and network namespaces';

describe('host endpoint stages in network namespaces', { skip, timeout: 90_000 }, () => {
  let node: TestNode;
  let outside: TestPod;
  let host: TestPod;
  let pod: TestPod;
  let iface = '';
  let driver: NftDriver;
  let calc: Calculation;
  const table = `palisade_s${process.pid % 100000}`;

  const base = (ifaceName: string): Resource[] =>
    [
      { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'demo' } },
      {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'web', namespace: 'demo', labels: { app: 'web' } },
        spec: { nodeName: 'n1', containers: [{ name: 'c' }] },
        status: { podIP: pod.ip },
      },
      {
        apiVersion: 'projectcalico.org/v3',
        kind: 'HostEndpoint',
        metadata: { name: 'ext', labels: { role: 'edge' } },
        spec: { node: 'n1', interfaceName: ifaceName, expectedIPs: [host.ip] },
      },
    ] as Resource[];

  const gnp = (name: string, spec: Record<string, unknown>): Resource => ({
    apiVersion: 'projectcalico.org/v3',
    kind: 'GlobalNetworkPolicy',
    metadata: { name },
    spec: { selector: "role == 'edge'", ...spec },
  });

  /** Programs the node with these resources (the agent's path: normal + host stages). */
  async function program(resources: Resource[], hepIface = iface): Promise<string> {
    calc = new Calculation({ verifySharedSets: true });
    const modes = new HostModes({ verifySharedSets: true });
    for (const r of resources) {
      if (HostModes.acceptsNormal(r)) calc.upsert(r);
      modes.upsert(r);
    }
    const heps = [{ ref: 'ext', iface: hepIface }];
    calc.setLocalEndpoints([{ ref: 'demo/web', iface: pod.hostIface }, ...heps]);
    modes.setLocalHostEndpoints(heps);
    const r = render(withHostModes(calc.desired(), modes.desired()), {
      table,
      workloadInterfacePrefix: node.ifacePrefix,
    });
    // The objects recorded while rendering (the driver's deltas) equal the parsed skeleton.
    assert.deepEqual(r.parts, skeletonParts(r.skeleton));
    await driver.apply(r);
    return r.script;
  }

  before(async () => {
    node = new TestNode('s');
    pod = node.addPod(1);
    const o = node.addOutside();
    outside = o.outside;
    host = o.host;
    iface = o.iface;
    inNs(outside.ns, ['ip', 'route', 'add', `${node.subnet}.0/24`, 'via', host.ip]);
    await Promise.all([
      outside.start([]),
      host.start(['t22', 't80', 't8080', 't8082', 'u9999']),
      pod.start(['t80', 't81']),
    ]);
    driver = new NftDriver({ table, netns: node.ns });
  });

  after(() => node?.destroy());

  test('Calico "Apply on forwarded traffic": without applyOnForward policy forwarded traffic is allowed, host traffic default-denied (fail-safe open)', async () => {
    await program([
      ...base(iface),
      gnp('edge-local', {
        types: ['Ingress'],
        ingress: [{ action: 'Allow', protocol: 'TCP', destination: { ports: [8080] } }],
      }),
    ]);
    assert.equal((await outside.tcp(pod.ip, 80)).ok, true, 'forwarded to the pod: allowed');
    assert.equal((await outside.tcp(pod.ip, 81)).ok, true, 'forwarded to the pod: allowed');
    assert.equal((await outside.tcp(host.ip, 8080)).ok, true, 'host 8080: policy');
    assert.equal((await outside.tcp(host.ip, 22)).ok, true, 'host 22: fail-safe');
    assert.equal((await outside.tcp(host.ip, 80, 300)).ok, false, 'host 80: default deny');
    assert.equal(calc.engine.kernelAllows(outside.ip, 'ext', 'TCP', 8080), true);
    assert.equal(calc.engine.kernelAllows(outside.ip, 'ext', 'TCP', 80), false);
  });

  test('Calico "Apply on forwarded traffic": an applyOnForward policy applies to forwarded traffic too, and what it does not allow is denied', async () => {
    const script = await program([
      ...base(iface),
      gnp('edge-fwd', {
        applyOnForward: true,
        types: ['Ingress'],
        ingress: [{ action: 'Allow', protocol: 'TCP', destination: { ports: [80] } }],
      }),
    ]);
    assert.match(script, /host_fwd_in/);
    assert.equal((await outside.tcp(pod.ip, 80)).ok, true, 'forwarded port 80: allowed');
    assert.equal((await outside.tcp(pod.ip, 81, 300)).ok, false, 'forwarded 81: tier default deny');
    assert.equal((await outside.tcp(host.ip, 80)).ok, true, 'also applies to the host');
    assert.equal((await outside.tcp(host.ip, 8080, 300)).ok, false);
    // Egress direction has no applyOnForward policy: the pod's replies and its own connections
    // out through the host endpoint are allowed.
    assert.equal(calc.engine.kernelAllows(outside.ip, 'ext', 'TCP', 80), true);
  });

  test('Calico "Pre-DNAT policy": it applies to traffic to local workloads, its Allow skips normal host endpoint policy, and there is no default deny', async () => {
    const script = await program([
      ...base(iface),
      gnp('edge-predn', {
        preDNAT: true,
        applyOnForward: true,
        types: ['Ingress'],
        ingress: [
          { action: 'Deny', protocol: 'TCP', destination: { ports: [81] } },
          { action: 'Allow', protocol: 'TCP', destination: { ports: [8082] } },
        ],
      }),
    ]);
    assert.match(script, /hook prerouting priority -110/);
    assert.equal((await outside.tcp(pod.ip, 81, 300)).ok, false, 'denied before reaching the pod');
    assert.equal((await outside.tcp(pod.ip, 80)).ok, true, 'unmatched: goes on (no default deny)');
    assert.equal(
      (await outside.tcp(host.ip, 8082)).ok,
      true,
      'allowed by pre-DNAT: the normal default deny of the host endpoint is skipped',
    );
    assert.equal((await outside.tcp(host.ip, 8080, 300)).ok, false, 'normal policy still applies');
    assert.equal((await outside.tcp(host.ip, 22)).ok, true, 'fail-safe');
    // The engine leaves pre-DNAT policy out of host endpoints' normal evaluation, as we do.
    assert.equal(calc.engine.kernelAllows(outside.ip, 'ext', 'TCP', 8082), false);
  });

  test('Calico "Summary of host endpoint policies": an untracked Allow is not connection-tracked and skips later policy; fail-safe ports stay open', async () => {
    const script = await program([
      ...base(iface),
      gnp('edge-untracked', {
        doNotTrack: true,
        applyOnForward: true,
        ingress: [
          { action: 'Allow', protocol: 'UDP', destination: { ports: [9999] } },
          { action: 'Deny', protocol: 'TCP', destination: { ports: [22] } },
        ],
        // Untracked traffic has no conntrack entry: the reply must be allowed explicitly.
        egress: [{ action: 'Allow', protocol: 'UDP', source: { ports: [9999] } }],
      }),
    ]);
    assert.match(script, /hook prerouting priority -300/);
    assert.match(script, /notrack/);
    assert.equal((await outside.udp(host.ip, 9999)).ok, true, 'untracked allow both ways');
    assert.equal(
      (await outside.tcp(host.ip, 22, 300)).ok,
      true,
      'fail-safe ports stay open: the untracked stage leaves them to the normal stage',
    );
    assert.equal((await outside.tcp(host.ip, 8080, 300)).ok, false, 'normal default deny');
    const listing = node.nft(['list', 'table', 'inet', table]);
    const notrack = /counter packets (\d+) bytes \d+ notrack .*edge-untracked\/rule 0/.exec(
      listing,
    );
    assert.ok(notrack && Number(notrack[1]) >= 1, 'the notrack rule counted the datagram');
    const marked = /meta mark & 0x01000000 == 0x01000000 counter packets (\d+)/.exec(listing);
    assert.ok(marked && Number(marked[1]) >= 1, 'the normal chain accepted it by the mark');
  });

  test('Calico "Summary of host endpoint policies": untracked Deny applies even to a fail-safe-free port, before conntrack', async () => {
    await program([
      ...base(iface),
      gnp('edge-untracked-deny', {
        doNotTrack: true,
        applyOnForward: true,
        types: ['Ingress'],
        ingress: [{ action: 'Deny', protocol: 'TCP', destination: { ports: [80] } }],
      }),
      gnp('edge-local', {
        types: ['Ingress'],
        ingress: [{ action: 'Allow', protocol: 'TCP', destination: { ports: [80, 8080] } }],
      }),
    ]);
    assert.equal((await outside.tcp(host.ip, 80, 300)).ok, false, 'untracked deny wins');
    assert.equal((await outside.tcp(host.ip, 8080)).ok, true, 'unmatched: on to normal policy');
    // doNotTrack policy is not normal policy: the engine's normal view allows 80 (edge-local),
    // the untracked stage in front of it denies.
    assert.equal(calc.engine.kernelAllows(outside.ip, 'ext', 'TCP', 8080), true);
  });

  test("HostEndpoint interfaceName '*': every host interface but loopback and workloads is the endpoint", async () => {
    const script = await program(
      [
        ...base('*'),
        gnp('edge-local', {
          types: ['Ingress'],
          ingress: [{ action: 'Allow', protocol: 'TCP', destination: { ports: [8080] } }],
        }),
      ],
      '*',
    );
    assert.match(script, /iifname != "lo" iifname != "pl\d+sh\*" counter goto/);
    assert.equal((await outside.tcp(host.ip, 8080)).ok, true, 'policy');
    assert.equal((await outside.tcp(host.ip, 22)).ok, true, 'fail-safe');
    assert.equal((await outside.tcp(host.ip, 80, 300)).ok, false, 'default deny');
    assert.equal((await outside.udp(host.ip, 9999, 300)).ok, false, 'default deny (UDP)');
    assert.equal((await pod.tcp(host.ip, 80)).ok, true, 'workload to host: not the host endpoint');
    assert.equal(calc.engine.kernelAllows(outside.ip, 'ext', 'TCP', 80), false);
  });
});
