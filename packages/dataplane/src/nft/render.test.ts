// Golden tests of the renderer (testdata/*.yaml → testdata/*.nft; PALISADE_UPDATE_GOLDEN=1
// rewrites them, review the diff), nft's own parser in check mode, and the renderer's invariants.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { compile, loadText } from '@palisade/core';
import type { Resource } from '@palisade/core';
import { Calculation } from '../calc/calculation.js';
import type { DesiredState, LocalEndpoint } from '../calc/types.js';
import { canUseNetns } from '../testing/netns.js';
import {
  commentText,
  DEFAULT_FAILSAFE_INBOUND,
  DEFAULT_FAILSAFE_OUTBOUND,
  render,
  skeletonParts,
  type RenderOptions,
} from './render.js';

const DIR = fileURLToPath(new URL('./testdata/', import.meta.url));
const UPDATE = process.env['PALISADE_UPDATE_GOLDEN'] === '1';

interface Case {
  readonly name: string;
  readonly resources: Resource[];
  readonly locals: LocalEndpoint[];
  readonly options: RenderOptions;
}

function readCase(file: string): Case {
  const text = readFileSync(DIR + file, 'utf8');
  const locals = (/^# locals: (.*)$/m.exec(text)?.[1] ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
    .map((s) => {
      const [ref, iface] = s.split('=');
      return { ref: ref ?? '', iface: iface ?? '' };
    });
  const options = JSON.parse(/^# render: (.*)$/m.exec(text)?.[1] ?? '{}') as RenderOptions;
  const r = loadText(text, file);
  assert.deepEqual(
    r.diagnostics.filter((d) => d.severity === 'error'),
    [],
  );
  return { name: file.replace(/\.yaml$/, ''), resources: r.resources, locals, options };
}

function renderCase(c: Case, resources = c.resources): string {
  const calc = new Calculation({ verifySharedSets: true });
  for (const r of resources) calc.upsert(r);
  calc.setLocalEndpoints(c.locals);
  return render(calc.desired(), c.options).script;
}

const cases = readdirSync(DIR)
  .filter((f) => f.endsWith('.yaml'))
  .sort()
  .map(readCase);

function inScratchNetns<T>(f: (ns: string) => T): T {
  const ns = `plchk${process.pid % 100000}`;
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    return f(ns);
  } finally {
    execFileSync('ip', ['netns', 'del', ns]);
  }
}

describe('golden rulesets', () => {
  for (const c of cases) {
    test(`${c.name}: the rendered table equals testdata/${c.name}.nft`, () => {
      const got = renderCase(c);
      const file = `${DIR}${c.name}.nft`;
      if (UPDATE) writeFileSync(file, got);
      assert.equal(got, readFileSync(file, 'utf8'));
    });
    test(
      `${c.name}: nft accepts the rendered table in check mode`,
      { skip: canUseNetns() ? false : 'needs root and network namespaces' },
      () => {
        const script = renderCase(c);
        inScratchNetns((ns) =>
          execFileSync('ip', ['netns', 'exec', ns, 'nft', '-c', '-f', '-'], { input: script }),
        );
      },
    );
    test(`${c.name}: the output does not depend on the order resources arrive in`, () => {
      const reversed = renderCase(c, [...c.resources].reverse());
      assert.equal(reversed, renderCase(c));
    });
  }
});

describe('renderer invariants', () => {
  const base = cases.find((c) => c.name === 'tiers');
  assert.ok(base);

  test('policies that select no local endpoint add nothing to the table', () => {
    const extra: Resource[] = [];
    for (let i = 0; i < 300; i++)
      extra.push({
        apiVersion: 'projectcalico.org/v3',
        kind: 'GlobalNetworkPolicy',
        metadata: { name: `elsewhere-${i}` },
        spec: {
          selector: `app == 'remote-${i}'`,
          ingress: [{ action: 'Allow', source: { selector: `app == 'x${i}'` } }],
        },
      });
    assert.equal(renderCase(base, [...base.resources, ...extra]), renderCase(base));
  });

  test('the base chains do not grow with the number of local endpoints or policies', () => {
    const baseChains = (script: string) =>
      script
        .split('\n\tchain ')
        .filter((c) => /^(forward_|input |output )/.test(c))
        .map((c) => c.slice(0, c.indexOf('\n\t}')))
        .join('\n');
    const one = render(
      { endpoints: [], sets: [], unknown: [] },
      { workloadInterfacePrefix: 'v' },
    ).script;
    assert.equal(baseChains(renderCase(base)), baseChains(one));
  });

  test('equal selectors, however they are spelled, share one set', () => {
    const calc = new Calculation({ verifySharedSets: true });
    for (const r of base.resources) calc.upsert(r);
    for (const [i, sel] of ["app == 'frontend'", 'app=="frontend"'].entries())
      calc.upsert({
        apiVersion: 'projectcalico.org/v3',
        kind: 'NetworkPolicy',
        metadata: { name: `same-${i}`, namespace: 'shop' },
        spec: {
          selector: "app == 'db'",
          ingress: [{ action: 'Allow', source: { selector: sel } }],
        },
      });
    calc.setLocalEndpoints(base.locals);
    const d = calc.desired();
    const frontendSets = d.sets.filter((s) => s.describe === "selector app == 'frontend'");
    assert.equal(frontendSets.length, 1);
  });

  test('in a single-stack world positive set matches of the absent family are not rendered, negations are', () => {
    const text = `apiVersion: v1
kind: Pod
metadata: {name: a, namespace: n, labels: {app: a}}
spec: {containers: [{name: c}]}
status: {podIP: 10.0.0.1}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: p}
spec:
  selector: all()
  ingress:
    - {action: Deny, source: {notSelector: "app == 'b'"}}
    - {action: Allow, source: {selector: "app == 'a'"}}
`;
    const calc = new Calculation({ verifySharedSets: true });
    for (const r of loadText(text, 'v4.yaml').resources) calc.upsert(r);
    calc.setLocalEndpoints([{ ref: 'n/a', iface: 'va' }]);
    const d = calc.desired();
    assert.deepEqual(d.families, { v4: true, v6: false });
    const script = render(d).script;
    assert.ok(script.includes('ip saddr @s_'));
    assert.ok(
      !script.includes('ip6 saddr @s_'),
      'no IPv6 endpoint: the positive v6 match is left out',
    );
    assert.ok(script.includes('ip6 saddr != @s_'), 'the negation still applies to IPv6 traffic');
  });

  test('comments are printable ASCII without quotes, bounded in length', () => {
    const c = commentText('x"y\\z\n\u0000é' + 'a'.repeat(300));
    assert.ok(/^[\x20-\x7e]*$/.test(c));
    assert.ok(!c.includes('"') && !c.includes('\\'));
    assert.ok(c.length <= 120);
  });

  test('an invalid table name or interface name is refused, not rendered', () => {
    assert.throws(() =>
      render({ endpoints: [], sets: [], unknown: [] }, { table: 'x; flush ruleset' }),
    );
    const calc = new Calculation({ verifySharedSets: true });
    for (const r of base.resources) calc.upsert(r);
    calc.setLocalEndpoints([{ ref: 'shop/api', iface: 'bad" name' }]);
    assert.throws(() => render(calc.desired()));
  });
});

describe('host endpoint fail-safe ports agree with the engine', () => {
  const e = compile(
    loadText(
      `apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: h1, labels: {role: node}}
spec: {node: n1, interfaceName: eth0, expectedIPs: [192.0.2.10]}
`,
      'hep.yaml',
    ).resources,
  );
  const list = (l: typeof DEFAULT_FAILSAFE_INBOUND) =>
    new Set(l.map((f) => `${f.protocol}/${f.port}`));
  const inbound = list(DEFAULT_FAILSAFE_INBOUND);
  const outbound = list(DEFAULT_FAILSAFE_OUTBOUND);
  test('inbound: the engine allows exactly the rendered fail-safe ports to a host endpoint no policy selects', () => {
    for (const proto of [6, 17]) {
      for (let port = 1; port <= 10000; port++) {
        const allowed = e.kernelAllows('198.51.100.1', 'h1', proto, port);
        assert.equal(allowed, inbound.has(`${proto}/${port}`), `${proto}/${port}`);
      }
    }
  });
  test('outbound: likewise from the host endpoint', () => {
    for (const proto of [6, 17]) {
      for (let port = 1; port <= 10000; port++) {
        const allowed = e.kernelAllows('h1', '198.51.100.1', proto, port);
        assert.equal(allowed, outbound.has(`${proto}/${port}`), `${proto}/${port}`);
      }
    }
  });
});

test('the objects recorded while rendering are exactly what the skeleton parses back to', () => {
  // The driver's deltas use Rendered.parts instead of parsing the text; they must never differ.
  for (const c of cases) {
    const calc = new Calculation({ verifySharedSets: true });
    for (const r of c.resources) calc.upsert(r);
    calc.setLocalEndpoints(c.locals);
    const r = render(calc.desired(), c.options);
    assert.ok(r.parts, c.name);
    assert.deepEqual(r.parts, skeletonParts(r.skeleton), c.name);
  }
});

test('a large tier is split into part chains of N policies, jumped to in order; a tier with Pass is not', () => {
  const pols = (n: number, pass: boolean): DesiredState['endpoints'][number]['ingress'] => ({
    tiers: [
      {
        name: 'default',
        defaultAction: 'Deny',
        policies: Array.from({ length: n }, (_, i) => `ns/p${i}`),
        rules: Array.from({ length: n }, (_, i) => ({
          provenance: { tier: 'default', policy: `ns/p${i}`, rule: 0 },
          action: pass && i === 1 ? ('Pass' as const) : ('Allow' as const),
          protocol: 6,
          src: {},
          dst: { ports: [{ from: 1000 + i, to: 1000 + i }] },
        })),
      },
    ],
    profiles: [],
    fallback: 'accept',
  });
  const state = (pass: boolean): DesiredState => ({
    endpoints: [
      {
        ref: 'ns/a',
        kind: 'workload',
        iface: 'va',
        ipv4: ['10.0.0.1'],
        ipv6: [],
        ingress: pols(5, pass),
        egress: { tiers: [], profiles: [], fallback: 'accept' },
      },
    ],
    sets: [],
    unknown: [],
  });
  const r = render(state(false), { tierPartPolicies: 2 });
  const parts = [...(r.parts?.chains.keys() ?? [])].filter((n) => /^tin-default\.\d-/.test(n));
  assert.equal(parts.length, 3, r.skeleton);
  const tier = [...(r.parts?.chains ?? [])].find(([n]) => /^tin-default-/.test(n))?.[1] ?? [];
  assert.deepEqual(
    tier.map((l) => /jump (\S+)/.exec(l)?.[1] ?? l.split(' comment')[0]),
    [
      ...parts.sort((a, b) => Number(/\.(\d)-/.exec(a)?.[1]) - Number(/\.(\d)-/.exec(b)?.[1])),
      'counter drop',
    ],
  );
  // Every policy rule is in exactly one part, in order.
  const ports = parts.flatMap((p) =>
    (r.parts?.chains.get(p) ?? []).map((l) => Number(/dport \{ (\d+) \}/.exec(l)?.[1])),
  );
  assert.deepEqual(ports, [1000, 1001, 1002, 1003, 1004]);
  const withPass = render(state(true), { tierPartPolicies: 2 });
  assert.ok(![...(withPass.parts?.chains.keys() ?? [])].some((n) => /^tin-default\.\d-/.test(n)));
  assert.equal(render(state(false)).skeleton.includes('tin-default.1-'), false, 'default: 16');
  assert.throws(() => render(state(false), { tierPartPolicies: -1 }), {
    code: 'DATAPLANE_ERR_INVALID_NAME',
  });
});
