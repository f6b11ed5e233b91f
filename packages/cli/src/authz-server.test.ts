import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkClient, checkRequest } from '../../dataplane/src/authz/test-client.js';
import { RPC_CODE } from '../../dataplane/src/authz/proto.js';
import { main } from './main.js';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const BOOKINFO = join(ROOT, 'examples/bookinfo');
const BIN = join(ROOT, 'packages/cli/bin/palisade.js');

test('palisade authz-server: serves Check on the port it prints, logs one JSON line per decision, and drains on SIGTERM', async () => {
  const child = spawn(
    process.execPath,
    [BIN, 'authz-server', '--listen', '127.0.0.1:0', '--plaintext', '-f', BOOKINFO],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  try {
    const end = Date.now() + 45_000;
    let m: RegExpExecArray | null = null;
    while (!(m = /listening on 127\.0\.0\.1:(\d+)/.exec(err))) {
      if (Date.now() > end || child.exitCode !== null) throw new Error(`no listening line: ${err}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.match(err, /chosen by destination address/);
    assert.match(err, /PLAINTEXT \(chosen explicitly\)/);
    const client = checkClient(`127.0.0.1:${m[1]}`);
    try {
      const res = await client.check(
        checkRequest({
          sourceIp: '10.244.0.14',
          principal: 'spiffe://cluster.local/ns/default/sa/bookinfo-reviews',
          destinationIp: '10.244.0.16',
          port: 9080,
          path: '/ratings/1',
          id: 'cli-1',
        }),
      );
      assert.equal(res.status.code, RPC_CODE.OK);
    } finally {
      client.close();
    }
    const until = Date.now() + 10_000;
    while (!out.includes('cli-1') && Date.now() < until)
      await new Promise((r) => setTimeout(r, 25));
    const line = JSON.parse(out.trim().split('\n')[0] ?? '{}') as Record<string, unknown>;
    assert.equal(line['requestId'], 'cli-1');
    assert.equal(line['verdict'], 'allow');
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
    assert.match(err, /SIGTERM: draining/);
    assert.match(err, /stopped: 1 check\(s\), 1 allowed, 0 denied/);
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
  }
});

test('palisade authz-server: usage errors exit 2 before anything listens', async () => {
  const io = () => {
    let err = '';
    return {
      io: {
        stdout: { write: () => true },
        stderr: { write: (s: string) => (err += s) },
        readStdin: () => Promise.resolve(''),
      },
      err: () => err,
    };
  };
  for (const [argv, msg] of [
    [['authz-server'], /needs -f/],
    [['authz-server', '-f', BOOKINFO, '--listen', 'nonsense'], /HOST:PORT or unix:PATH/],
    [['authz-server', '-f', BOOKINFO, '--endpoint', 'ratings'], /NAMESPACE\/NAME/],
    [['authz-server', '-f', BOOKINFO, '--agent-socket', '/tmp/x'], /not both/],
    [['authz-server', '--agent-socket', '/tmp/x', '--port', '9080'], /needs --endpoint/],
    [
      ['authz-server', '--agent-socket', '/tmp/x', '--endpoint', 'default/ratings-v1'],
      /needs --port/,
    ],
    [['authz-server', '--plaintext', '-f', BOOKINFO, '--port', '9080'], /goes with --agent-socket/],
    // Secure by default: TCP needs TLS material or an explicit --plaintext.
    [['authz-server', '-f', BOOKINFO], /is TCP: give --tls-cert FILE --tls-key FILE/],
    [['authz-server', '-f', BOOKINFO, '--tls-cert', '/nonexistent/c.pem'], /go together/],
    [
      ['authz-server', '-f', BOOKINFO, '--plaintext', '--client-ca', '/tmp/ca.pem'],
      /--plaintext excludes/,
    ],
    [['authz-server', '-f', BOOKINFO, '--client-ca', '/tmp/ca.pem'], /need --tls-cert/],
    [
      [
        'authz-server',
        '-f',
        BOOKINFO,
        '--tls-cert',
        '/nonexistent/c',
        '--tls-key',
        '/nonexistent/k',
      ],
      /--tls-cert "\/nonexistent\/c": ENOENT/,
    ],
  ] as const) {
    const x = io();
    assert.equal(await main([...argv], x.io), 2, argv.join(' '));
    assert.match(x.err(), msg);
  }
});

test('authz-flags.ts imports nothing but types (the CLI stays light for every other command)', async () => {
  const { readFileSync } = await import('node:fs');
  const text = readFileSync(new URL('./authz-flags.ts', import.meta.url), 'utf8');
  const statics = text
    .split('\n')
    .filter((l) => /^import /.test(l) && !l.startsWith('import type'));
  assert.deepEqual(statics, []);
});
