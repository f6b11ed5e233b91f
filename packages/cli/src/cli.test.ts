import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { main } from './main.js';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const BOOKINFO = join(ROOT, 'examples/bookinfo');
const BIN = join(ROOT, 'packages/cli/bin/palisade.js');

async function run(argv: string[], stdin = '') {
  let out = '';
  let err = '';
  const code = await main(argv, {
    stdout: { write: (s: string) => (out += s) },
    stderr: { write: (s: string) => (err += s) },
    readStdin: () => Promise.resolve(stdin),
  });
  return { code, out, err };
}

test('cli matrix: JSON has the shape of DESIGN §5 and the diagonal is allowed', async () => {
  const r = await run(['matrix', '-f', BOOKINFO, '--port', '9080', '-o', 'json']);
  assert.equal(r.code, 0, r.err);
  const m = JSON.parse(r.out) as {
    port: number;
    protocol: string;
    endpoints: string[];
    reachability: Record<string, Record<string, boolean>>;
  };
  assert.equal(m.port, 9080);
  assert.equal(m.protocol, 'TCP');
  assert.ok(m.endpoints.includes('default/productpage-v1'));
  for (const e of m.endpoints) assert.equal(m.reachability[e]?.[e], true);
  assert.equal(m.reachability['default/istio-ingress']?.['default/productpage-v1'], true);
  assert.equal(m.reachability['default/attacker']?.['default/productpage-v1'], false);
});

test('cli check: exit 0 on allow, 1 on deny, JSON result with kernel and l7 parts', async () => {
  const ok = await run([
    'check',
    '-f',
    BOOKINFO,
    '--from',
    'default/reviews-v2',
    '--to',
    'default/ratings-v1',
    '--port',
    '9080',
    '--method',
    'GET',
    '--path',
    '/ratings/0',
    '-o',
    'json',
  ]);
  assert.equal(ok.code, 0, ok.err);
  const j = JSON.parse(ok.out) as {
    verdict: string;
    kernel: { egress: unknown; ingress: unknown };
    l7: { verdict: string };
  };
  assert.equal(j.verdict, 'allow');
  assert.ok(j.kernel.egress && j.kernel.ingress);
  const post = await run([
    'check',
    '-f',
    BOOKINFO,
    '--from',
    'default/reviews-v2',
    '--to',
    'default/ratings-v1',
    '--port',
    '9080',
    '--method',
    'POST',
    '--path',
    '/ratings/0',
  ]);
  assert.equal(post.code, 1);
  assert.match(post.out, /^DENY/);
});

test('cli check: a stolen certificate given with --principal is refused', async () => {
  const r = await run([
    'check',
    '-f',
    BOOKINFO,
    '--from',
    'default/attacker',
    '--to',
    'default/reviews-v2',
    '--port',
    '9080',
    '--principal',
    'spiffe://cluster.local/ns/default/sa/bookinfo-productpage',
    '-o',
    'json',
  ]);
  assert.equal(r.code, 1);
  const j = JSON.parse(r.out) as { l7: { provenance: { kind: string } } };
  assert.equal(j.l7.provenance.kind, 'identity-mismatch');
});

test('cli check: unknown endpoints and bad flags exit 2 with a suggestion', async () => {
  const unknown = await run([
    'check',
    '-f',
    BOOKINFO,
    '--from',
    'default/reviews-v9',
    '--to',
    'default/ratings-v1',
    '--port',
    '9080',
  ]);
  assert.equal(unknown.code, 2);
  assert.match(unknown.err, /ENGINE_ERR_UNKNOWN_ENDPOINT.*did you mean/);
  const flag = await run(['check', '-f', BOOKINFO, '--form', 'x']);
  assert.equal(flag.code, 2);
  assert.match(flag.err, /did you mean --from/);
  const missing = await run([
    'check',
    '-f',
    join(ROOT, 'no-such-dir'),
    '--from',
    'a/b',
    '--to',
    'c/d',
  ]);
  assert.equal(missing.code, 2);
  assert.match(missing.err, /CLI_ERR_FILE/);
});

test('cli check --probes: one result line per probe, malformed lines reported with their line', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'palisade-cli-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'probes.jsonl');
  writeFileSync(
    file,
    [
      JSON.stringify({
        from: 'default/istio-ingress',
        to: 'default/productpage-v1',
        protocol: 'TCP',
        port: 9080,
      }),
      'not json',
      JSON.stringify({
        from: 'default/attacker',
        to: 'default/ratings-v1',
        protocol: 'TCP',
        port: 9080,
        principal: null,
      }),
      JSON.stringify({ from: 'default/sleep', port: 'x' }),
    ].join('\n') + '\n',
  );
  const r = await run(['check', '-f', BOOKINFO, '--probes', file, '-o', 'json']);
  assert.equal(r.code, 2);
  const lines = r.out
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { verdict?: string; error?: { line: number } });
  assert.equal(lines.length, 4);
  assert.equal(lines[0]?.verdict, 'allow');
  assert.equal(lines[1]?.error?.line, 2);
  assert.equal(lines[2]?.verdict, 'deny');
  assert.equal(lines[3]?.error?.line, 4);
});

test('cli validate: diagnostics as file:line:col: error CODE, exit 1; stdin with -', async () => {
  const r = await run(
    ['validate', '-f', '-'],
    'apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: a}\nspec:\n  selecter: all()\n',
  );
  assert.equal(r.code, 1);
  assert.match(
    r.out,
    /^<stdin>:5:3: error POLICY_ERR_UNKNOWN_FIELD: .*\n {2}hint: did you mean "selector"\?/,
  );
  const ok = await run(['validate', '-f', BOOKINFO]);
  assert.equal(ok.code, 0, ok.out + ok.err);
});

test('cli validate: a file over the size limit is refused before it is read', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'palisade-cli-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const big = join(dir, 'big.yaml');
  writeFileSync(big, Buffer.alloc(17 * 1024 * 1024, 0x61));
  const r = await run(['validate', '-f', big]);
  assert.equal(r.code, 1);
  assert.match(r.out, /POLICY_ERR_LIMIT_EXCEEDED/);
});

test('cli selector: match, jsonl and fmt; invalid selectors exit 2 with the position', async () => {
  assert.equal(
    (await run(['selector', 'match', "app == 'web'", '--labels', '{"app":"web"}'])).out,
    'true\n',
  );
  assert.equal((await run(['selector', 'match', "app != 'web'", '--labels', '{}'])).out, 'true\n');
  const jl = await run(
    ['selector', 'match', '--jsonl'],
    '{"selector":"has(a)","labels":{"a":"x"}}\n{"selector":"a ==","labels":{}}\n',
  );
  assert.deepEqual(
    jl.out
      .trim()
      .split('\n')
      .map((l) => l.split(':')[0]),
    ['true', 'error'],
  );
  const bad = await run(['selector', 'fmt', 'a == ']);
  assert.equal(bad.code, 2);
  assert.match(bad.err, /\^/);
});

test('cli demo --simulate: every check of the demo story passes on the engine; --json ends with the checks', async () => {
  const r = await run(['demo', '--simulate', '--json']);
  assert.equal(r.code, 0, r.out);
  const last = r.out.trim().split('\n').at(-1) ?? '';
  const j = JSON.parse(last) as {
    checks: {
      name: string;
      pass: boolean;
      expected: string;
      observed: string;
      enforcedBy: string;
    }[];
  };
  assert.ok(j.checks.length >= 10);
  for (const c of j.checks)
    assert.ok(c.pass, `${c.name}: expected ${c.expected}, observed ${c.observed}`);
});

test('cli bin: npx palisade runs from the workspace bin and maps exit codes', () => {
  const help = spawnSync(process.execPath, [BIN, '--help'], { encoding: 'utf8' });
  assert.equal(help.status, 0);
  assert.match(help.stdout, /usage: palisade COMMAND/);
  const deny = spawnSync(
    process.execPath,
    [
      BIN,
      'check',
      '-f',
      BOOKINFO,
      '--from',
      'default/attacker',
      '--to',
      'default/productpage-v1',
      '--port',
      '9080',
    ],
    { encoding: 'utf8' },
  );
  assert.equal(deny.status, 1, deny.stderr);
});

test('cli check and explain: a host endpoint verdict names the Calico stage that decided, --via-in adds the forward hop', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'palisade-cli-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'hep.yaml');
  writeFileSync(
    file,
    `apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: c}]}
status: {podIP: 10.1.0.5}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: ext, labels: {role: edge}}
spec: {node: n1, interfaceName: eth0, expectedIPs: [192.168.9.1]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: edge-predn}
spec:
  selector: role == 'edge'
  preDNAT: true
  applyOnForward: true
  ingress: [{action: Deny, protocol: TCP, destination: {ports: [81]}}]
`,
  );
  const json = await run([
    'check',
    '-f',
    file,
    '--from',
    '192.168.9.50',
    '--to',
    'ext',
    '--port',
    '22',
    '-o',
    'json',
  ]);
  assert.equal(json.code, 0, json.err);
  const r = JSON.parse(json.out) as {
    kernel: { ingress: { provenance: { stage?: string; kind: string } } };
  };
  assert.equal(r.kernel.ingress.provenance.stage, 'normal');
  assert.equal(r.kernel.ingress.provenance.kind, 'failsafe');
  const fwd = await run([
    'explain',
    '-f',
    file,
    '--from',
    '192.168.9.50',
    '--to',
    'default/web',
    '--port',
    '81',
    '--via-in',
    'ext',
  ]);
  assert.equal(fwd.code, 1, fwd.err);
  assert.match(
    fwd.out,
    /forwarded in through host endpoint ext: DENY — pre-DNAT stage of host endpoint ext/,
  );
  const bad = await run([
    'check',
    '-f',
    file,
    '--from',
    '192.168.9.50',
    '--to',
    'default/web',
    '--port',
    '81',
    '--via-in',
    'nope',
  ]);
  assert.equal(bad.code, 2);
  assert.match(bad.err, /ENGINE_ERR_BAD_PROBE/);
});
