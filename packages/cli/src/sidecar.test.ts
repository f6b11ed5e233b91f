// `palisade sidecar` as a process: against a real agent (its per-endpoint socket, a real API
// server with SQLite) it gets a view and an SVID, prints its progress and answers requests;
// SIGTERM drains and exits 0. Without an agent it gives up after --start-timeout (exit 1, no
// listener started); bad flags are usage errors (exit 2).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeNft } from '../../dataplane/src/nft/fake.js';
import { endpointSocketPath } from '../../dataplane/src/agent-socket/protocol.js';
import { loopbackPrefix } from '../../dataplane/src/sidecar/test-fixtures.js';
import { SyncWorld, until } from '../../dataplane/src/sidecar/test-sync-fixture.js';

const BIN = new URL('../bin/palisade.js', import.meta.url).pathname;

function run(
  args: readonly string[],
  ms = 30_000,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const t = setTimeout(() => p.kill('SIGKILL'), ms);
    p.on('exit', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('palisade sidecar (the process)', { timeout: 90_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), `palisade-sccli-${process.pid}-`));
  const socketDir = join(dir, 'endpoints');
  const world = new SyncWorld(join(dir, 'server'), `scc${process.pid}`, socketDir);
  const ratingsIp = `${loopbackPrefix()}.12`;

  before(async () => {
    await world.startServer();
    await world.applyBookinfo([{ pod: 'default/ratings-v1', ip: ratingsIp, iface: 'lo9' }]);
    await world.startAgent({ runner: new FakeNft().runner });
    await until('the socket', () =>
      existsSync(endpointSocketPath(socketDir, 'default', 'ratings-v1')),
    );
  });

  after(async () => {
    await world.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('bad flags are usage errors (exit 2)', async () => {
    for (const args of [
      ['sidecar', '--endpoint', 'not an endpoint', '--app-port', '9080'],
      ['sidecar', '--endpoint', 'default/x', '--app-port', '70000'],
    ]) {
      const r = await run(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /CLI_ERR_USAGE/);
    }
  });

  test('without an agent it gives up after --start-timeout and starts nothing (exit 1)', async () => {
    const r = await run([
      'sidecar',
      '--endpoint',
      'default/ratings-v1',
      '--app-port',
      '9080',
      '--agent-socket',
      join(dir, 'nothing-here.sock'),
      '--start-timeout',
      '1',
    ]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /error DATAPLANE_ERR_SIDECAR_START/);
    assert.doesNotMatch(r.stderr, /inbound /);
  });

  test('with the agent it starts, serves the admin endpoint, and SIGTERM drains and exits 0', async () => {
    const p = spawn(
      process.execPath,
      [
        BIN,
        'sidecar',
        '--endpoint',
        'default/ratings-v1',
        '--app-port',
        '9080',
        '--agent-socket',
        endpointSocketPath(socketDir, 'default', 'ratings-v1'),
        '--inbound-host',
        ratingsIp,
        '--inbound-port',
        '0',
        '--outbound-port',
        '0',
        '--admin-port',
        '0',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stderr = '';
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => p.on('exit', resolve));
    try {
      await until(`ready (${stderr})`, () => /; ready/.test(stderr), 40_000);
      assert.match(
        stderr,
        /policy view \d+ for spiffe:\/\/cluster.local\/ns\/default\/sa\/bookinfo-ratings/,
      );
      assert.match(stderr, /SVID for spiffe:\/\/cluster.local\/ns\/default\/sa\/bookinfo-ratings/);
      const admin = Number(/admin 127\.0\.0\.1:(\d+)/.exec(stderr)?.[1]);
      const stats = await new Promise<string>((resolve, reject) => {
        request({ host: '127.0.0.1', port: admin, path: '/stats' }, (res) => {
          let b = '';
          res.on('data', (c: Buffer) => (b += c.toString()));
          res.on('end', () => resolve(b));
        })
          .on('error', reject)
          .end();
      });
      const s = JSON.parse(stats) as {
        policy: { endpoint: string };
        agent: { connected: boolean };
      };
      assert.equal(s.policy.endpoint, 'default/ratings-v1');
      assert.equal(s.agent.connected, true);
      assert.doesNotMatch(stats, /PRIVATE KEY/);
      p.kill('SIGTERM');
      assert.equal(await exited, 0, stderr);
      assert.match(stderr, /SIGTERM: draining[\s\S]*stopped/);
    } finally {
      p.kill('SIGKILL');
    }
  });
});
