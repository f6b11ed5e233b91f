// Calico's host endpoint policy stages in the engine. Each test names the rule of Calico's
// documentation it checks (docs.tigera.io, "Host endpoints" → "Pre-DNAT policy", "Apply on
// forwarded traffic", "Summary of host endpoint policies"; the HostEndpoint and
// GlobalNetworkPolicy resources).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadText } from '../load/load.js';
import { compile } from './engine.js';
import type { Engine } from './engine.js';
import type { CheckResult, Probe } from './types.js';

const BASE = `
apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: demo, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: c}]}
status: {podIP: 10.1.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: peer, namespace: demo, labels: {app: peer}}
spec: {nodeName: n1, containers: [{name: c}]}
status: {podIP: 10.1.0.6}
---
apiVersion: v1
kind: Pod
metadata: {name: far, namespace: demo, labels: {app: far}}
spec: {nodeName: n2, containers: [{name: c}]}
status: {podIP: 10.2.0.5}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: ext, labels: {role: edge}}
spec: {node: n1, interfaceName: eth0, expectedIPs: [192.168.9.1]}
`;

const OUTSIDE = '192.168.9.50';

function engine(extra: string): Engine {
  const { resources, diagnostics } = loadText(
    extra.trim() === '' ? BASE : `${BASE}\n---\n${extra}`,
    'hs.yaml',
  );
  assert.deepEqual(
    diagnostics.filter((d) => d.severity === 'error'),
    [],
  );
  return compile(resources);
}

function check(e: Engine, p: Probe): CheckResult {
  const r = e.check(p);
  assert.ok(r.ok, r.ok ? '' : r.message);
  // The kernel's yes/no and the full check agree.
  if (p.viaIn === undefined && p.viaOut === undefined && p.port !== undefined) {
    const k = r.result.kernel;
    const all =
      k.egress.verdict === 'allow' &&
      k.ingress.verdict === 'allow' &&
      (k.forward ?? []).every((f) => f.verdict === 'allow') &&
      (k.reply?.verdict ?? 'allow') === 'allow';
    const protocol = p.protocol ?? 'TCP';
    assert.equal(e.kernelAllows(p.from, p.to, protocol, p.port), all, 'kernelAllows');
    // Again (the names now come from the engine's name cache), and by handles.
    assert.equal(e.kernelAllows(p.from, p.to, protocol, p.port), all, 'kernelAllows, cached');
    const a = e.endpointHandle(p.from);
    const b = e.endpointHandle(p.to);
    if (a !== undefined && b !== undefined)
      assert.equal(e.kernelAllowsByHandle(a, b, protocol, p.port), all, 'kernelAllowsByHandle');
  }
  return r.result;
}

const gnp = (name: string, spec: string) => `
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: ${name}}
spec:
  selector: role == 'edge'
${spec
  .split('\n')
  .map((l) => `  ${l}`)
  .join('\n')}`;

test('Calico "Pre-DNAT policy" and "Summary of host endpoint policies": preDNAT and doNotTrack policies never apply to workload endpoints', () => {
  const e = engine(`
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: everything-predn}
spec:
  selector: all()
  preDNAT: true
  applyOnForward: true
  ingress: [{action: Deny}]
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: everything-untracked}
spec:
  selector: all()
  doNotTrack: true
  applyOnForward: true
  ingress: [{action: Deny}]
  egress: [{action: Deny}]
`);
  const r = check(e, { from: 'demo/peer', to: 'demo/web', port: 80 });
  assert.equal(r.verdict, 'allow');
  assert.equal(r.kernel.ingress.provenance.kind, 'no-policy');
  const tiers = e.activeTiers('demo/web');
  assert.deepEqual(
    tiers?.ingress.flatMap((t) => t.policies.map((p) => p.name)),
    [],
    'no preDNAT/doNotTrack policy is active on a workload',
  );
});

test('Calico "Summary of host endpoint policies": an untracked Deny decides before normal policy, and doNotTrack policy is not normal policy', () => {
  const e = engine(`${gnp(
    'untracked-deny',
    `doNotTrack: true
applyOnForward: true
types: [Ingress]
ingress: [{action: Deny, protocol: TCP, destination: {ports: [80]}}]`,
  )}
---
${gnp(
  'local',
  `types: [Ingress]
ingress: [{action: Allow, protocol: TCP, destination: {ports: [80, 8080]}}]`,
)}`);
  const denied = check(e, { from: OUTSIDE, to: 'ext', port: 80 });
  assert.equal(denied.verdict, 'deny');
  assert.equal(denied.kernel.ingress.provenance.stage, 'untracked');
  assert.equal(denied.kernel.ingress.provenance.policy, 'untracked-deny');
  assert.equal(denied.kernel.ingress.provenance.hostEndpoint, 'ext');
  const allowed = check(e, { from: OUTSIDE, to: 'ext', port: 8080 });
  assert.equal(allowed.verdict, 'allow');
  assert.equal(allowed.kernel.ingress.provenance.stage, 'normal');
  assert.equal(allowed.kernel.ingress.provenance.policy, 'local');
  assert.equal(allowed.kernel.reply, undefined, 'no untracked egress policy: the reply is tracked');
  // The normal stage alone never lists the doNotTrack policy.
  assert.deepEqual(
    e.activeTiers('ext')?.ingress.flatMap((t) => t.policies.map((p) => p.name)),
    ['local'],
  );
});

test('Calico "Summary of host endpoint policies": untracked Allow skips later host endpoint policy, and the reply needs an untracked Allow of its own (no connection tracking)', () => {
  const both = engine(
    gnp(
      'untracked',
      `doNotTrack: true
applyOnForward: true
ingress: [{action: Allow, protocol: UDP, destination: {ports: [9999]}}, {action: Allow, protocol: TCP, destination: {ports: [7777]}}]
egress: [{action: Allow, protocol: UDP, source: {ports: [9999]}}]`,
    ),
  );
  const udp = check(both, { from: OUTSIDE, to: 'ext', protocol: 'UDP', port: 9999 });
  assert.equal(udp.verdict, 'allow', 'no normal policy would allow it: the untracked Allow did');
  assert.equal(udp.kernel.ingress.provenance.stage, 'untracked');
  assert.equal(udp.kernel.reply?.verdict, 'allow');
  assert.equal(udp.kernel.reply?.provenance.stage, 'untracked');
  // TCP 7777 is let in untracked but nothing lets the reply out untracked: a SYN-ACK of no
  // known connection is invalid.
  const tcp = check(both, { from: OUTSIDE, to: 'ext', protocol: 'TCP', port: 7777 });
  assert.equal(tcp.verdict, 'deny');
  assert.equal(tcp.kernel.ingress.verdict, 'allow');
  assert.equal(tcp.kernel.reply?.provenance.kind, 'untracked-reply');
  // UDP without the reply rule: the reply is a new flow for conntrack, and the host endpoint's
  // normal egress (no policy selects it: denied by default) drops it.
  const inOnly = engine(
    gnp(
      'untracked-in',
      `doNotTrack: true
applyOnForward: true
ingress: [{action: Allow, protocol: UDP, destination: {ports: [9999]}}]`,
    ),
  );
  const lost = check(inOnly, { from: OUTSIDE, to: 'ext', protocol: 'UDP', port: 9999 });
  assert.equal(lost.verdict, 'deny');
  assert.equal(lost.kernel.reply?.provenance.stage, 'normal');
  assert.equal(lost.kernel.reply?.verdict, 'deny');
});

test('Calico "Summary of host endpoint policies": untracked policy judges the replies of tracked connections too', () => {
  const e = engine(`${gnp(
    'local',
    `types: [Ingress]
ingress: [{action: Allow, protocol: TCP, destination: {ports: [8080]}}]`,
  )}
---
${gnp(
  'untracked-out',
  `doNotTrack: true
applyOnForward: true
types: [Egress]
egress: [{action: Deny, protocol: TCP, source: {ports: [8080]}}]`,
)}`);
  const r = check(e, { from: OUTSIDE, to: 'ext', port: 8080 });
  assert.equal(r.kernel.ingress.verdict, 'allow');
  assert.equal(r.kernel.reply?.verdict, 'deny');
  assert.equal(r.kernel.reply?.provenance.policy, 'untracked-out');
  assert.equal(r.verdict, 'deny');
});

test('Calico "Failsafe rules": fail-safe ports stay open; the untracked and pre-DNAT stages leave them to the normal stage', () => {
  const e = engine(`${gnp(
    'untracked-ssh-deny',
    `doNotTrack: true
applyOnForward: true
types: [Ingress]
ingress: [{action: Deny, protocol: TCP, destination: {ports: [22]}}]`,
  )}
---
${gnp(
  'predn-deny',
  `preDNAT: true
applyOnForward: true
ingress: [{action: Deny}]`,
)}`);
  const r = check(e, { from: OUTSIDE, to: 'ext', port: 22 });
  assert.equal(r.verdict, 'allow');
  assert.equal(r.kernel.ingress.provenance.kind, 'failsafe');
  assert.equal(r.kernel.ingress.provenance.stage, 'normal');
  assert.equal(
    check(e, { from: OUTSIDE, to: 'ext', port: 23 }).kernel.ingress.provenance.stage,
    'preDNAT',
  );
});

test('Calico "Pre-DNAT policy": its Allow skips normal host endpoint policy, what it does not match goes on (no default deny), and it applies to traffic forwarded to local workloads', () => {
  const e = engine(
    gnp(
      'predn',
      `preDNAT: true
applyOnForward: true
ingress:
  - {action: Deny, protocol: TCP, destination: {ports: [81]}}
  - {action: Allow, protocol: TCP, destination: {ports: [8082]}}`,
    ),
  );
  const allowed = check(e, { from: OUTSIDE, to: 'ext', port: 8082 });
  assert.equal(allowed.verdict, 'allow');
  assert.equal(allowed.kernel.ingress.provenance.stage, 'preDNAT');
  const unmatched = check(e, { from: OUTSIDE, to: 'ext', port: 8080 });
  assert.equal(unmatched.verdict, 'deny');
  assert.equal(unmatched.kernel.ingress.provenance.stage, 'normal');
  const fwdDenied = check(e, { from: OUTSIDE, to: 'demo/web', port: 81, viaIn: 'ext' });
  assert.equal(fwdDenied.verdict, 'deny');
  assert.equal(fwdDenied.kernel.forward?.[0]?.provenance.stage, 'preDNAT');
  const fwd = check(e, { from: OUTSIDE, to: 'demo/web', port: 80, viaIn: 'ext' });
  assert.equal(fwd.verdict, 'allow');
  assert.equal(fwd.kernel.forward?.[0]?.provenance.stage, 'forward');
});

test('Calico "Apply on forwarded traffic": forwarded traffic is allowed when no applyOnForward policy selects the host endpoint for the direction, denied by the tier when one does and none allows', () => {
  const normalOnly = engine(
    gnp(
      'local',
      `types: [Ingress]
ingress: [{action: Allow, protocol: TCP, destination: {ports: [8080]}}]`,
    ),
  );
  const r = check(normalOnly, { from: OUTSIDE, to: 'demo/web', port: 81, viaIn: 'ext' });
  assert.equal(r.verdict, 'allow');
  assert.equal(r.kernel.forward?.[0]?.provenance.kind, 'no-policy');
  assert.equal(r.kernel.forward?.[0]?.provenance.stage, 'forward');
  const fwd = engine(
    gnp(
      'fwd',
      `applyOnForward: true
types: [Ingress]
ingress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}]`,
    ),
  );
  assert.equal(
    check(fwd, { from: OUTSIDE, to: 'demo/web', port: 80, viaIn: 'ext' }).verdict,
    'allow',
  );
  const denied = check(fwd, { from: OUTSIDE, to: 'demo/web', port: 81, viaIn: 'ext' });
  assert.equal(denied.verdict, 'deny');
  assert.equal(denied.kernel.forward?.[0]?.provenance.kind, 'tier-default');
  // An applyOnForward policy is normal policy too: it applies to the host's own traffic.
  assert.equal(
    check(fwd, { from: OUTSIDE, to: 'ext', port: 80 }).kernel.ingress.provenance.policy,
    'fwd',
  );
  // Egress direction: no applyOnForward egress policy, so a workload's traffic out is allowed.
  const out = check(fwd, { from: 'demo/web', to: OUTSIDE, port: 443, viaOut: 'ext' });
  assert.equal(out.verdict, 'allow');
  assert.equal(out.kernel.forward?.[0]?.provenance.direction, 'egress');
});

test("Calico HostEndpoint interfaceName '*': the all-interfaces endpoint carries traffic between its node's workloads and anything off the node, and does not support untracked policy", () => {
  const star = `
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: n2-all, labels: {role: edge}}
spec: {node: n2, interfaceName: '*'}
---
${gnp(
  'fwd',
  `applyOnForward: true
types: [Ingress]
ingress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}]`,
)}
---
${gnp(
  'untracked',
  `doNotTrack: true
applyOnForward: true
types: [Ingress]
ingress: [{action: Deny}]`,
)}`;
  const e = engine(star);
  const allowed = check(e, { from: 'demo/web', to: 'demo/far', port: 80 });
  assert.equal(allowed.verdict, 'allow');
  assert.equal(allowed.kernel.forward?.[0]?.provenance.hostEndpoint, 'n2-all');
  const denied = check(e, { from: OUTSIDE, to: 'demo/far', port: 81 });
  assert.equal(denied.verdict, 'deny', 'applyOnForward policy of the all-interfaces endpoint');
  assert.equal(denied.kernel.forward?.[0]?.provenance.stage, 'forward');
  // Workloads of n1 (whose host endpoint names one interface) are not inferred to pass any.
  assert.equal(check(e, { from: OUTSIDE, to: 'demo/web', port: 81 }).kernel.forward, undefined);
  // The untracked Deny does not apply to the all-interfaces endpoint.
  assert.equal(
    check(e, { from: OUTSIDE, to: 'n2-all', port: 80 }).kernel.ingress.provenance.stage,
    'normal',
  );
});

test('Calico "Host endpoints": traffic between a host and its own workloads does not pass through the host endpoint, so its policy does not apply', () => {
  const e = engine(
    gnp(
      'local',
      `types: [Ingress, Egress]
ingress: [{action: Allow, protocol: TCP, destination: {ports: [8080]}}]`,
    ),
  );
  const toHost = check(e, { from: 'demo/web', to: 'ext', port: 80 });
  assert.equal(toHost.verdict, 'allow');
  assert.equal(toHost.kernel.ingress.provenance.kind, 'unmanaged');
  const fromHost = check(e, { from: 'ext', to: 'demo/web', port: 80 });
  assert.equal(fromHost.verdict, 'allow');
  // A workload of another node reaches the host through its interface.
  assert.equal(check(e, { from: 'demo/far', to: 'ext', port: 80 }).verdict, 'deny');
  assert.equal(check(e, { from: 'demo/far', to: 'ext', port: 8080 }).verdict, 'allow');
});

test('probes naming a host endpoint to pass through are checked: unknown names and impossible directions are errors', () => {
  const e = engine('');
  const unknown = e.check({ from: OUTSIDE, to: 'demo/web', port: 80, viaIn: 'exx' });
  assert.equal(unknown.ok, false);
  assert.ok(
    !unknown.ok &&
      unknown.code === 'ENGINE_ERR_BAD_PROBE' &&
      /did you mean "ext"/.test(unknown.message),
  );
  const toHost = e.check({ from: OUTSIDE, to: 'ext', port: 80, viaIn: 'ext' });
  assert.equal(toHost.ok, false);
});

test('host endpoint stages follow policy changes incrementally: flipping a policy between modes gives the from-scratch verdicts', () => {
  const modes = [
    'types: [Ingress]\ningress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}]',
    'preDNAT: true\napplyOnForward: true\ningress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}]',
    'doNotTrack: true\napplyOnForward: true\ningress: [{action: Allow, protocol: TCP, destination: {ports: [80]}}]\negress: [{action: Allow, protocol: TCP, source: {ports: [80]}}]',
    'applyOnForward: true\ntypes: [Ingress]\ningress: [{action: Deny, protocol: TCP, destination: {ports: [80]}}]',
  ];
  const live = engine('');
  const probes: Probe[] = [
    { from: OUTSIDE, to: 'ext', port: 80 },
    { from: OUTSIDE, to: 'demo/web', port: 80, viaIn: 'ext' },
    { from: 'demo/web', to: OUTSIDE, port: 80, viaOut: 'ext' },
  ];
  for (const m of [...modes, ...[...modes].reverse()]) {
    const text = gnp('p', m);
    for (const r of loadText(text, 'p.yaml').resources) live.upsert(r);
    const fresh = engine(text);
    for (const p of probes) {
      const a = live.check(p);
      const b = fresh.check(p);
      assert.deepEqual(a, b, `${m} / ${JSON.stringify(p)}`);
    }
  }
});
