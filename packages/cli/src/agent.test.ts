// `palisade agent` as a process: started against a real server on loopback, it programs the
// node namespace's table; SIGTERM stops it with exit code 0 and the rules stay in the kernel.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runServer } from '@palisade/controlplane';
import type { RunningServer } from '@palisade/controlplane';
import { canUseNetns, TestNode } from '../../dataplane/src/testing/netns.js';

const skip = canUseNetns() ? false : 'needs root and network namespaces';
const BIN = new URL('../bin/palisade.js', import.meta.url).pathname;

describe('palisade agent (the process)', { skip, timeout: 60_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), `palisade-agentcli-${process.pid}-`));
  const nodeName = `cli${process.pid}`;
  const table = `palisade_c${process.pid % 100000}`;
  let server: RunningServer | undefined;
  let node: TestNode | undefined;
  let child: ChildProcess | undefined;

  before(async () => {
    server = await runServer({
      listen: '127.0.0.1:0',
      dataDir: dir,
      store: 'memory:',
      insecurePlaintext: true,
      rateLimit: false,
      log: () => undefined,
      say: () => undefined,
    });
    node = new TestNode('c');
  });

  after(async () => {
    child?.kill('SIGKILL');
    await server?.stop().catch(() => undefined);
    node?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  test('SIGTERM stops the agent and leaves its rules in place', async () => {
    assert.ok(server && node);
    const admin = readFileSync(join(dir, 'admin.token'), 'utf8').trim();
    const r = await fetch(`${server.url}/api/v1/tokens`, {
      method: 'POST',
      headers: { authorization: `Bearer ${admin}`, 'content-type': 'application/json' },
      body: JSON.stringify({ node: nodeName }),
    });
    assert.equal(r.status, 201);
    const tokenFile = join(dir, 'node.token');
    writeFileSync(tokenFile, `${((await r.json()) as { token: string }).token}\n`, {
      mode: 0o600,
    });
    const p = spawn(
      process.execPath,
      [
        BIN,
        'agent',
        '--node',
        nodeName,
        '--server',
        server.url,
        '--token-file',
        tokenFile,
        '--table',
        table,
        '--netns',
        node.ns,
        '--socket',
        join(dir, 'agent.sock'),
        '--endpoint-sockets',
        join(dir, 'endpoints'),
        '--admin-socket',
        join(dir, 'agent-admin.sock'),
        '--endpoint-record',
        join(dir, 'endpoints.json'),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, PALISADE_TOKEN: '' } },
    );
    child = p;
    let out = '';
    p.stdout.on('data', (c: Buffer) => (out += c.toString()));
    p.stderr.on('data', (c: Buffer) => (out += c.toString()));
    const end = Date.now() + 20_000;
    while (!/applied revision/.test(out)) {
      if (Date.now() > end || p.exitCode !== null) assert.fail(`agent did not apply:\n${out}`);
      await new Promise((res) => setTimeout(res, 50));
    }
    assert.match(out, /CNI socket at /);
    assert.doesNotMatch(
      out,
      new RegExp(readFileSync(tokenFile, 'utf8').trim()),
      'no token in output',
    );
    const code = await new Promise<number | null>((res) => {
      p.on('exit', (c) => res(c));
      p.kill('SIGTERM');
    });
    child = undefined;
    assert.equal(code, 0, out);
    assert.match(out, /SIGTERM: stopping; the rules in table inet .* stay in place/);
    assert.match(node.nft(['list', 'tables']), new RegExp(`table inet ${table}\\b`));
  });
});
