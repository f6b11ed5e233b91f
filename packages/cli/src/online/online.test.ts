// The online CLI end to end against a live `palisade server` in a child process (real HTTPS with
// the Palisade CA it makes): login contexts, apply and its dry run, get/describe/label/
// delete, tier refusals, audit and audit verify, token create, exit codes and messages.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { main } from '../main.js';

const BIN = new URL('../../bin/palisade.js', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), `palisade-cli-online-${process.pid}-`));
process.env.PALISADE_CONFIG = join(dir, 'config.json');
delete process.env.PALISADE_SERVER;
delete process.env.PALISADE_TOKEN;
delete process.env.PALISADE_CA_FILE;

async function run(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const code = await main(argv, {
    stdout: { write: (s: string) => (out += s) },
    stderr: { write: (s: string) => (err += s) },
    readStdin: () => Promise.resolve(''),
  });
  return { code, out, err };
}

function file(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

describe('online CLI against a live server', { timeout: 90_000 }, () => {
  let server: ChildProcess;
  let url = '';
  let serverErr = '';
  const data = join(dir, 'data');

  before(async () => {
    server = spawn(
      process.execPath,
      [BIN, 'server', '--listen', '127.0.0.1:0', '--data-dir', data, '--store', 'memory:'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    server.stderr?.on('data', (d: Buffer) => (serverErr += d.toString()));
    url = await new Promise<string>((resolve, reject) => {
      let out = '';
      const t = setTimeout(
        () => reject(new Error(`server did not start: ${out} ${serverErr}`)),
        30_000,
      );
      server.stdout?.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /listening on (https:\/\/[^\s]+)/.exec(out);
        if (m?.[1]) {
          clearTimeout(t);
          resolve(m[1]);
        }
      });
      server.on('exit', (c) => reject(new Error(`server exited ${String(c)}: ${serverErr}`)));
    });
  });

  after(async () => {
    if (server.exitCode === null) {
      server.kill('SIGTERM');
      await new Promise((r) => server.once('exit', r));
    }
    rmSync(dir, { recursive: true, force: true });
  });

  test('without a server the CLI says how to connect (exit 2)', async () => {
    const r = await run('get', 'tiers');
    assert.equal(r.code, 2);
    assert.match(r.err, /API_ERR_NO_SERVER/);
    assert.match(r.err, /palisade login/);
  });

  test('an untrusted server certificate is a connection error naming --ca-file', async () => {
    const r = await run('get', 'tiers', '--server', url, '--token-file', join(data, 'admin.token'));
    assert.equal(r.code, 2);
    assert.match(r.err, /--ca-file/);
  });

  test('a wrong token is 401 telling to run palisade login (exit 1)', async () => {
    const bad = file('bad.token', 'pal_' + 'x'.repeat(43));
    const r = await run(
      'get',
      'tiers',
      '--server',
      url,
      '--token-file',
      bad,
      '--ca-file',
      join(data, 'ca.pem'),
    );
    assert.equal(r.code, 1);
    assert.match(r.err, /401/);
    assert.match(r.err, /palisade login/);
  });

  test('login saves a context with mode 0600 and later commands use it', async () => {
    const r = await run(
      'login',
      '--server',
      url,
      '--token-file',
      join(data, 'admin.token'),
      '--ca-file',
      join(data, 'ca.pem'),
    );
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /as User admin/);
    assert.equal(statSync(join(dir, 'config.json')).mode & 0o777, 0o600);
    const g = await run('get', 'tiers');
    assert.equal(g.code, 0, g.err);
  });

  test('apply is validated locally with file, line and column (exit 1, nothing applied)', async () => {
    const f = file(
      'bad.yaml',
      'apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: t}\nspec: {ordr: 1}\n',
    );
    const r = await run('apply', '-f', f);
    assert.equal(r.code, 1);
    assert.match(
      r.err,
      new RegExp(`${f.replace(/[.]/g, '\\.')}:4:\\d+: error POLICY_ERR_UNKNOWN_FIELD`),
    );
  });

  test('apply, get -o wide/yaml/json, describe, label', async () => {
    const f = file(
      'ok.yaml',
      `apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: platform}
spec: {order: 200}
---
apiVersion: v1
kind: Namespace
metadata: {name: prod}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: prod, labels: {app: db}}
spec: {containers: [{name: c, ports: [{containerPort: 5432}]}]}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: prod, labels: {app: web}}
spec: {containers: [{name: c}]}
status: {podIP: 10.0.0.3}
`,
    );
    const a = await run('apply', '-f', f);
    assert.equal(a.code, 0, a.err);
    assert.match(a.out, /Tier\.projectcalico\.org\/security created/);
    const again = await run('apply', '-f', f);
    assert.match(again.out, /security unchanged/);
    const pods = await run('get', 'po', '-A', '-o', 'wide');
    assert.match(pods.out, /NAMESPACE\s+NAME/);
    assert.match(pods.out, /prod\s+db/);
    const y = await run('get', 'tier', 'security', '-o', 'yaml');
    assert.match(y.out, /order: 100/);
    const j = await run('get', 'tiers', '-o', 'json');
    assert.equal((JSON.parse(j.out) as { items: unknown[] }).items.length, 2);
    const l = await run('label', 'pod', 'web', 'team=shop', '-n', 'prod');
    assert.equal(l.code, 0, l.err);
    const d = await run('describe', 'pod', 'web', '-n', 'prod');
    assert.match(d.out, /team=shop/);
    assert.match(d.out, /History \(audit log\)/);
    const missing = await run('get', 'gnp', 'nope');
    assert.equal(missing.code, 1);
    assert.match(missing.err, /API_ERR_NOT_FOUND/);
  });

  test('apply takes a directory and applies its files as one change', async () => {
    const { mkdirSync } = await import('node:fs');
    const d = join(dir, 'bundle');
    mkdirSync(join(d, 'sub'), { recursive: true });
    writeFileSync(
      join(d, 'a.yaml'),
      'apiVersion: v1\nkind: Namespace\nmetadata: {name: bundle-a}\n',
    );
    writeFileSync(
      join(d, 'sub', 'b.json'),
      '{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"bundle-b"}}',
    );
    writeFileSync(join(d, 'notes.txt'), 'ignored');
    const r = await run('apply', '-f', d);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /bundle-a created/);
    assert.match(r.out, /bundle-b created/);
  });

  test('apply --dry-run prints the connectivity diff and writes nothing', async () => {
    const f = file(
      'policy.yaml',
      `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: security.db-from-web}
spec:
  tier: security
  selector: app == 'db'
  ingress:
    - {action: Allow, protocol: TCP, source: {selector: app == 'web'}, destination: {ports: [5432]}}
    - {action: Deny}
`,
    );
    const r = await run('apply', '-f', f, '--dry-run');
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /created \(dry run\)/);
    assert.match(r.out, /connectivity diff: \d+ change/);
    assert.match(
      r.out,
      /- prod\/db -> .* newly denied|- prod\/web -> prod\/db TCP\/\d+ newly denied/,
    );
    const g = await run('get', 'gnp', 'security.db-from-web');
    assert.equal(g.code, 1, 'the dry run wrote nothing');
  });

  test('a platform-team token cannot touch the security tier: refused, exit 1, audited', async () => {
    const role = file(
      'role.yaml',
      `apiVersion: palisade.dev/v1
kind: Role
metadata: {name: platform-team}
rules:
  - {verbs: ['*'], kinds: [GlobalNetworkPolicy], tiers: [platform]}
  - {verbs: [get, list], kinds: ['*']}
---
apiVersion: palisade.dev/v1
kind: RoleBinding
metadata: {name: platform-team}
subjects: [{kind: Group, name: team-platform}]
roleRef: {name: platform-team}
`,
    );
    assert.equal((await run('apply', '-f', role)).code, 0);
    const t = await run('token', 'create', '--user', 'pat', '--group', 'team-platform');
    assert.equal(t.code, 0, t.err);
    const token = t.out.trim();
    assert.match(token, /^pal_/);
    const tf = file('pat.token', token);
    const gnp = (tier: string) =>
      file(
        `${tier}.yaml`,
        `apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: ${tier}.p}\nspec: {tier: ${tier}, selector: all()}\n`,
      );
    const ok = await run('apply', '-f', gnp('platform'), '--token-file', tf);
    assert.equal(ok.code, 0, ok.err);
    const no = await run('apply', '-f', gnp('security'), '--token-file', tf);
    assert.equal(no.code, 1);
    assert.match(no.err, /AUTH_ERR_FORBIDDEN \(403\)/);
    assert.match(no.err, /tier "security"/);
    const audit = await run('audit', '--user', 'pat', '--refused', '-o', 'json');
    const entries = JSON.parse(audit.out) as {
      outcome: string;
      name: string;
      principal: { name: string };
    }[];
    assert.equal(entries.length, 1);
    assert.equal(entries[0]?.name, 'security.p');
  });

  test('audit filters and audit verify (exit 0 when intact)', async () => {
    const a = await run('audit', '--kind', 'gnp', '--since', '1h');
    assert.equal(a.code, 0, a.err);
    assert.match(a.out, /SEQ\s+TIME\s+WHO/);
    assert.match(a.out, /platform\.p/);
    const v = await run('audit', 'verify');
    assert.equal(v.code, 0);
    assert.match(v.out, /intact/);
  });

  test('delete, then a node token cannot read roles', async () => {
    const d = await run('delete', 'gnp', 'platform.p');
    assert.equal(d.code, 0, d.err);
    const n = await run('token', 'create', '--node', 'node-1');
    const nf = file('node.token', n.out.trim());
    const r = await run('get', 'roles', '--token-file', nf);
    assert.equal(r.code, 1);
    assert.match(r.err, /403/);
  });

  test('the real binary: usage errors exit 2, the server log holds no token', () => {
    const r = spawnSync(process.execPath, [BIN, 'get'], {
      encoding: 'utf8',
      env: { ...process.env },
    });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /CLI_ERR_USAGE/);
    const token = readFileSync(join(data, 'admin.token'), 'utf8').trim();
    assert.ok(serverErr.includes('"msg":"request"'));
    assert.ok(!serverErr.includes(token));
  });

  test('SIGTERM shuts the server down gracefully (exit 0)', async () => {
    const code = new Promise<number | null>((r) => server.once('exit', (c) => r(c)));
    server.kill('SIGTERM');
    assert.equal(await code, 0);
  });
});

describe('palisade server with an encrypted CA key', () => {
  test('refuses to start without the passphrase (exit 2, says which flag) and starts with it', async () => {
    const own = mkdtempSync(join(tmpdir(), `palisade-cli-locked-${process.pid}-`));
    const data = join(own, 'data');
    const pass = join(own, 'ca-pass');
    writeFileSync(pass, 'correct horse battery staple\n', { mode: 0o600 });
    const init = await run('ca', 'init', '--data-dir', data, '--passphrase-file', pass);
    assert.equal(init.code, 0, init.err);
    const common = ['server', '--listen', '127.0.0.1:0', '--data-dir', data, '--store', 'memory:'];
    const locked = await run(...common);
    assert.equal(locked.code, 2);
    assert.match(locked.err, /PKI_ERR_KEY_LOCKED/);
    assert.match(locked.err, /--ca-passphrase-file/);
    const s = spawn(process.execPath, [BIN, ...common, '--ca-passphrase-file', pass], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      const url = await new Promise<string>((resolveUrl, reject) => {
        let out = '';
        const t = setTimeout(() => reject(new Error(`no listening line: ${out}`)), 30_000);
        s.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          const m = /listening on (https:\/\/[^\s]+)/.exec(out);
          if (m?.[1] !== undefined) {
            clearTimeout(t);
            resolveUrl(m[1]);
          }
        });
      });
      assert.match(url, /^https:\/\/127\.0\.0\.1:\d+$/);
      assert.ok(!readFileSync(join(data, 'ca.pem'), 'utf8').includes('PRIVATE KEY'));
    } finally {
      s.kill('SIGTERM');
      rmSync(own, { recursive: true, force: true });
    }
  });
});
