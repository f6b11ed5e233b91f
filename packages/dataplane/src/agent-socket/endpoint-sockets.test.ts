// The per-endpoint sockets' life cycle and file modes against a scripted source (the real
// PolicySync behind them is tested end to end in sidecar/policysync*.test.ts): root-only modes,
// sockets following the local endpoints, stale socket files replaced, a live one or a symbolic
// link refused, heartbeats on an open stream.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { createServer, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EndpointSockets } from './endpoint-sockets.js';
import type { PolicySyncSource } from './endpoint-sockets.js';
import { endpointSocketPath } from './protocol.js';
import type { PolicySyncMessage } from './protocol.js';

class ScriptedSource implements PolicySyncSource {
  locals: string[] = [];
  private readonly listeners = new Set<() => void>();
  localEndpoints(): string[] {
    return [...this.locals];
  }
  onLocalEndpointsChanged(f: () => void): () => void {
    this.listeners.add(f);
    return () => this.listeners.delete(f);
  }
  set(list: string[]): void {
    this.locals = list;
    for (const f of this.listeners) f();
  }
  subscribe(
    endpoint: string,
    _ports: readonly number[],
    send: (m: PolicySyncMessage) => void,
  ): { unsubscribe: () => void; version: () => number | undefined } {
    send({
      type: 'snapshot',
      version: 7,
      view: {
        endpoint,
        identity: 'spiffe://cluster.local/ns/a/sa/b',
        trustDomain: 'cluster.local',
        istioRootNamespace: 'istio-system',
        resources: [],
      },
    });
    return { unsubscribe: () => undefined, version: () => 7 };
  }
  issue(): Promise<{ status: number; body: unknown }> {
    return Promise.resolve({ status: 201, body: {} });
  }
}

const mode = (p: string): number => statSync(p).mode & 0o777;

test('endpoint sockets are root-only and follow the local endpoints', async () => {
  const dir = mkdtempSync(join(tmpdir(), `palisade-eps-${process.pid}-`));
  const src = new ScriptedSource();
  src.locals = ['a/one'];
  const s = new EndpointSockets({ source: src, dir: join(dir, 'eps') });
  try {
    await s.start();
    const one = endpointSocketPath(join(dir, 'eps'), 'a', 'one');
    assert.ok(existsSync(one));
    assert.ok(statSync(one).isSocket());
    assert.equal(mode(one), 0o600);
    assert.equal(mode(join(dir, 'eps')), 0o700);
    assert.equal(mode(join(dir, 'eps', 'a')), 0o700);
    assert.equal(mode(join(dir, 'eps', 'a', 'one')), 0o700);
    src.set(['a/two']);
    await s.reconcile();
    assert.ok(!existsSync(one), 'the socket of an endpoint that left is removed');
    assert.ok(existsSync(endpointSocketPath(join(dir, 'eps'), 'a', 'two')));
  } finally {
    await s.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a stale socket file is replaced; a served one and a symbolic link are refused', async () => {
  const dir = mkdtempSync(join(tmpdir(), `palisade-eps2-${process.pid}-`));
  const root = join(dir, 'eps');
  const lines: string[] = [];
  // A live server on b/live's path, and a symbolic link where b/link's directory would be.
  mkdirSync(join(root, 'b', 'live'), { recursive: true, mode: 0o700 });
  const other = createServer(() => undefined);
  await new Promise<void>((r) => other.listen(endpointSocketPath(root, 'b', 'live'), r));
  mkdirSync(join(dir, 'elsewhere'));
  symlinkSync(join(dir, 'elsewhere'), join(root, 'b', 'link'));
  // A stale socket: a process that was killed and left its file behind.
  mkdirSync(join(root, 'b', 'stale'), { mode: 0o700 });
  const stalePath = endpointSocketPath(root, 'b', 'stale');
  spawnSync(process.execPath, [
    '-e',
    `require('net').createServer().listen(${JSON.stringify(stalePath)}, () => process.kill(process.pid, 'SIGKILL'))`,
  ]);
  assert.ok(statSync(stalePath).isSocket(), 'the stale socket file is there');
  const src = new ScriptedSource();
  src.locals = ['b/live', 'b/link', 'b/stale'];
  const s = new EndpointSockets({ source: src, dir: root, say: (l) => lines.push(l) });
  try {
    await s.start();
    const paths = s.paths();
    assert.ok(paths.has('b/stale'), lines.join('\n'));
    assert.ok(!paths.has('b/live'));
    assert.ok(!paths.has('b/link'));
    assert.ok(lines.some((l) => /b\/live.*served by another process/.test(l)));
    assert.ok(lines.some((l) => /b\/link.*not a directory/.test(l)));
    assert.ok(
      !existsSync(join(dir, 'elsewhere', 'agent.sock')),
      'nothing created through the link',
    );
  } finally {
    await s.close();
    await new Promise((r) => other.close(r));
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an open stream gets heartbeats with the version of its last view', async () => {
  const dir = mkdtempSync(join(tmpdir(), `palisade-eps3-${process.pid}-`));
  const src = new ScriptedSource();
  src.locals = ['c/x'];
  const s = new EndpointSockets({ source: src, dir: join(dir, 'eps'), heartbeatMs: 50 });
  try {
    await s.start();
    const lines = await new Promise<string[]>((resolve, reject) => {
      const got: string[] = [];
      const req = request(
        {
          socketPath: endpointSocketPath(join(dir, 'eps'), 'c', 'x'),
          path: '/v1/policysync/endpoints/c/x?ports=80',
        },
        (res) => {
          let buf = '';
          res.on('data', (c: Buffer) => {
            buf += c.toString();
            const parts = buf.split('\n');
            buf = parts.pop() ?? '';
            got.push(...parts);
            if (got.length >= 3) {
              req.destroy();
              resolve(got);
            }
          });
        },
      );
      req.on('error', reject);
      req.end();
    });
    assert.equal((JSON.parse(lines[0] ?? '{}') as { type: string }).type, 'snapshot');
    assert.deepEqual(JSON.parse(lines[1] ?? '{}'), { type: 'heartbeat', version: 7 });
  } finally {
    await s.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
