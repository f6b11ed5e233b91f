// `palisade flows` against a live server (real HTTPS, the server's CA, its flow database): filters
// reach the server and the table shows the rule that decided each flow; `--follow` as a process
// prints records a node reports after it started, and stops on SIGTERM.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { RunningServer } from '@palisade/controlplane';
import { runServer } from '@palisade/controlplane';
import { issueNodeToken } from './flows-test-support.js';
import { main } from './main.js';

const BIN = new URL('../bin/palisade.js', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), `palisade-cli-flows-${process.pid}-`));

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

function record(over: Record<string, unknown>) {
  const now = Date.now();
  return {
    start: new Date(now - 5000).toISOString(),
    end: new Date(now).toISOString(),
    source: { ip: '10.1.0.1', namespace: 'shop', name: 'web' },
    destination: { ip: '10.1.0.2', port: 5432, namespace: 'db', name: 'pg' },
    protocol: 'TCP',
    verdict: 'deny',
    point: 'kernel',
    provenance: { kind: 'tier-default', tier: 'security' },
    packets: 2,
    bytes: 120,
    count: 2,
    ...over,
  };
}

describe('palisade flows against a live server', { timeout: 90_000 }, () => {
  let server: RunningServer;
  let conn: string[];
  let nodeToken: string;
  const ingest = async (records: unknown[]) => {
    const r = await fetchJson(server, nodeToken, { records });
    assert.equal(r, 200);
  };

  before(async () => {
    server = await runServer({
      listen: '127.0.0.1:0',
      dataDir: join(dir, 'data'),
      store: 'memory:',
      insecurePlaintext: false,
      log: () => undefined,
      say: () => undefined,
    });
    conn = [
      '--server',
      server.url,
      '--token-file',
      join(dir, 'data', 'admin.token'),
      '--ca-file',
      join(dir, 'data', 'ca.pem'),
    ];
    nodeToken = await issueNodeToken(server, join(dir, 'data', 'admin.token'), 'node-a');
  });
  after(async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('the table names the deciding rule of each flow, and filters select on the server', async () => {
    await ingest([
      record({}),
      record({
        verdict: 'allow',
        point: 'l7',
        method: 'GET',
        path: '/orders',
        provenance: { kind: 'rule', tier: 'app', policy: 'db/allow-web', rule: 1 },
        staged: [{ policy: 'lockdown', verdict: 'deny' }],
      }),
    ]);
    const all = await run('flows', ...conn);
    assert.equal(all.code, 0, all.err);
    assert.match(
      all.out,
      /shop\/web\s+db\/pg:5432\s+TCP\s+kernel\s+DENY\s+default deny of tier security/,
    );
    assert.match(
      all.out,
      /GET \/orders\s+l7\s+ALLOW\s+db\/allow-web rule 1 \(tier app\)\s+2\s+lockdown=deny/,
    );
    const denied = await run('flows', ...conn, '--verdict', 'deny', '-o', 'json');
    const lines = denied.out
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { verdict: string; node: string });
    assert.equal(lines.length, 1);
    assert.equal(lines[0]?.verdict, 'deny');
    assert.equal(lines[0]?.node, 'node-a');
    const none = await run('flows', ...conn, '--policy', 'nope');
    assert.match(none.out, /no flow records match/);
    const bad = await run('flows', ...conn, '--verdict', 'maybe');
    assert.equal(bad.code, 2);
    const stats = await run('flows', 'stats', ...conn);
    assert.match(stats.out, /^2 flow records/);
  });

  test('--follow prints records reported after it started and exits 0 on SIGTERM', async () => {
    const child = spawn(
      process.execPath,
      [BIN, 'flows', ...conn, '--follow', '--verdict', 'deny', '-o', 'json'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    try {
      // Keep reporting until the follower (still starting under load) has printed one.
      const deadline = Date.now() + 45_000;
      while (!out.includes('follow-me') && Date.now() < deadline) {
        await ingest([
          record({ destination: { ip: '10.1.0.3', namespace: 'db', name: 'follow-me' } }),
          record({ verdict: 'allow', provenance: { kind: 'no-policy' } }),
        ]);
        await new Promise((r) => setTimeout(r, 500));
      }
      assert.match(out, /"name":"follow-me"/, err);
      assert.doesNotMatch(out, /"verdict":"allow"/);
    } finally {
      child.kill('SIGTERM');
    }
    assert.equal(await exited, 0);
  });
});

async function fetchJson(server: RunningServer, token: string, body: unknown): Promise<number> {
  const r = await server.api.inject({
    method: 'POST',
    url: '/api/v1/flows',
    token,
    body: body as object,
  });
  return r.status;
}
