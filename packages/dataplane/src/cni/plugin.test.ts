// The plugin's ordering and rollback rules, with a recording Netlink and agent (the real kernel
// and socket are exercised by netns.test.ts) and the real SQLite IPAM.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { RegisterRequest, RegisteredEndpoint } from '../agent-socket/protocol.js';
import { AgentCallError } from './agent-client.js';
import type { AgentClient } from './agent-client.js';
import { CniError } from './cni-error.js';
import { SqliteIpam } from './ipam.js';
import type { Netlink, PodLink, PodLinkRef } from './netlink.js';
import { runCniPlugin } from './plugin.js';
import type { PluginDeps } from './plugin.js';

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

class RecordingNetlink implements Netlink {
  readonly calls: string[] = [];
  attachError: CniError | undefined;
  attach(link: PodLink): Promise<void> {
    this.calls.push(`attach ${link.hostIfname} ${link.address}`);
    return this.attachError ? Promise.reject(this.attachError) : Promise.resolve();
  }
  detach(link: PodLinkRef): Promise<void> {
    this.calls.push(`detach ${link.hostIfname}`);
    return Promise.resolve();
  }
  inspect(): Promise<readonly string[]> {
    return Promise.resolve([]);
  }
}

type AgentMode = 'ok' | 'refuse' | 'down' | 'timeout' | 'timeout-then-down';

class ScriptedAgent implements AgentClient {
  mode: AgentMode = 'ok';
  readonly calls: string[] = [];
  register(req: RegisterRequest): Promise<RegisteredEndpoint> {
    this.calls.push(`register ${req.containerId}`);
    switch (this.mode) {
      case 'ok':
        return Promise.resolve({} as RegisteredEndpoint);
      case 'refuse':
        return Promise.reject(new AgentCallError('CNI_ERR_REGISTRATION', 'refused', false));
      case 'down':
        return Promise.reject(new AgentCallError('CNI_ERR_AGENT_UNAVAILABLE', 'ENOENT', false));
      case 'timeout':
      case 'timeout-then-down':
        return Promise.reject(new AgentCallError('CNI_ERR_AGENT_UNAVAILABLE', 'no answer', true));
    }
  }
  deregister(containerId: string): Promise<void> {
    this.calls.push(`deregister ${containerId}`);
    return this.mode === 'down' || this.mode === 'timeout-then-down'
      ? Promise.reject(new AgentCallError('CNI_ERR_AGENT_UNAVAILABLE', 'ENOENT', false))
      : Promise.resolve();
  }
  get(): Promise<RegisteredEndpoint | undefined> {
    return Promise.resolve(undefined);
  }
}

function setup(): {
  deps: PluginDeps;
  netlink: RecordingNetlink;
  agent: ScriptedAgent;
  dataDir: string;
  held: (cid: string) => boolean;
} {
  const dataDir = mkdtempSync(join(tmpdir(), `palisade-plugin-${process.pid}-`));
  dirs.push(dataDir);
  const netlink = new RecordingNetlink();
  const agent = new ScriptedAgent();
  const deps: PluginDeps = { netlink, openIpam: (d) => SqliteIpam.open(d), agent: () => agent };
  const held = (cid: string): boolean => {
    const ipam = SqliteIpam.open(dataDir);
    try {
      return ipam.get('palisade', cid, 'eth0') !== undefined;
    } finally {
      ipam.close();
    }
  };
  return { deps, netlink, agent, dataDir, held };
}

function env(command: string, cid: string): Record<string, string> {
  return {
    CNI_COMMAND: command,
    CNI_CONTAINERID: cid,
    CNI_NETNS: '/run/netns/x',
    CNI_IFNAME: 'eth0',
    CNI_ARGS: 'K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p',
  };
}

const conf = (dataDir: string, subnet = '10.7.0.0/24'): string =>
  JSON.stringify({
    cniVersion: '1.0.0',
    name: 'palisade',
    type: 'palisade',
    ipam: { subnet, dataDir },
    agentSocket: '/unused',
  });

const codeOf = (stdout: string): number => (JSON.parse(stdout) as { code: number }).code;

describe('plugin ordering and rollback', () => {
  test('ADD: address, then interfaces, then registration', async () => {
    const s = setup();
    const out = await runCniPlugin(env('ADD', 'a'), conf(s.dataDir), s.deps);
    assert.equal(out.exitCode, 0, out.stdout);
    assert.deepEqual(
      s.netlink.calls.map((c) => c.split(' ')[0]),
      ['attach'],
    );
    assert.deepEqual(s.agent.calls, ['register a']);
    assert.ok(s.held('a'));
  });

  test('ADD refused by the agent: the veth is removed and the address released', async () => {
    const s = setup();
    s.agent.mode = 'refuse';
    const out = await runCniPlugin(env('ADD', 'a'), conf(s.dataDir), s.deps);
    assert.equal(codeOf(out.stdout), 103);
    assert.deepEqual(
      s.netlink.calls.map((c) => c.split(' ')[0]),
      ['attach', 'detach'],
    );
    assert.equal(s.held('a'), false);
  });

  test('ADD with the agent unreachable: code 11, rolled back', async () => {
    const s = setup();
    s.agent.mode = 'down';
    const out = await runCniPlugin(env('ADD', 'a'), conf(s.dataDir), s.deps);
    assert.equal(codeOf(out.stdout), 11);
    assert.equal(s.held('a'), false);
  });

  test('ADD whose registration may have applied: deregistered, then released', async () => {
    const s = setup();
    s.agent.mode = 'timeout';
    const out = await runCniPlugin(env('ADD', 'a'), conf(s.dataDir), s.deps);
    assert.equal(codeOf(out.stdout), 11);
    assert.deepEqual(s.agent.calls, ['register a', 'deregister a']);
    assert.equal(s.held('a'), false);
  });

  test('ADD whose registration may have applied and cannot be undone keeps the address until DEL', async () => {
    const s = setup();
    s.agent.mode = 'timeout-then-down';
    const out = await runCniPlugin(env('ADD', 'a'), conf(s.dataDir), s.deps);
    assert.match(
      (JSON.parse(out.stdout) as { details: string }).details,
      /stays reserved until DEL/,
    );
    assert.ok(s.held('a'), 'an address the agent may hold registered is not handed to another pod');
    s.agent.mode = 'ok';
    const del = await runCniPlugin(env('DEL', 'a'), conf(s.dataDir), s.deps);
    assert.equal(del.exitCode, 0);
    assert.equal(s.held('a'), false);
  });

  test('ADD whose interfaces fail releases the address and never registers', async () => {
    const s = setup();
    s.netlink.attachError = new CniError('CNI_ERR_NETLINK', 'boom');
    const out = await runCniPlugin(env('ADD', 'a'), conf(s.dataDir), s.deps);
    assert.equal(codeOf(out.stdout), 100);
    assert.deepEqual(s.agent.calls, []);
    assert.equal(s.held('a'), false);
  });

  test('ADD with an exhausted pool is code 102 and touches no interface', async () => {
    const s = setup();
    assert.equal(
      (await runCniPlugin(env('ADD', 'a'), conf(s.dataDir, '10.7.1.0/30'), s.deps)).exitCode,
      0,
    );
    assert.equal(
      (await runCniPlugin(env('ADD', 'b'), conf(s.dataDir, '10.7.1.0/30'), s.deps)).exitCode,
      0,
    );
    const out = await runCniPlugin(env('ADD', 'c'), conf(s.dataDir, '10.7.1.0/30'), s.deps);
    assert.equal(codeOf(out.stdout), 102);
    assert.match(out.stdout, /no free address in 10\.7\.1\.0\/30/);
    assert.equal(s.netlink.calls.length, 2);
  });

  test('DEL with the agent down fails with code 11 and keeps the address (policy may still follow it)', async () => {
    const s = setup();
    await runCniPlugin(env('ADD', 'a'), conf(s.dataDir), s.deps);
    s.agent.mode = 'down';
    const out = await runCniPlugin(env('DEL', 'a'), conf(s.dataDir), s.deps);
    assert.equal(codeOf(out.stdout), 11);
    assert.ok(s.held('a'));
  });

  test('DEL after a completed DEL succeeds even with the agent down (spec §2: DEL is idempotent)', async () => {
    const s = setup();
    await runCniPlugin(env('ADD', 'a'), conf(s.dataDir), s.deps);
    assert.equal((await runCniPlugin(env('DEL', 'a'), conf(s.dataDir), s.deps)).exitCode, 0);
    s.agent.mode = 'down';
    const again = await runCniPlugin(env('DEL', 'a'), conf(s.dataDir), s.deps);
    assert.equal(again.exitCode, 0, again.stdout);
    assert.equal(again.stdout, '');
  });

  test('ADD honours IP= and the ips capability, and refuses one held by another container', async () => {
    const s = setup();
    const withIp = {
      ...env('ADD', 'a'),
      CNI_ARGS: 'K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;IP=10.7.0.42',
    };
    const out = await runCniPlugin(withIp, conf(s.dataDir), s.deps);
    assert.match(out.stdout, /"address":"10\.7\.0\.42\/32"/);
    const rc = JSON.stringify({
      ...(JSON.parse(conf(s.dataDir)) as object),
      runtimeConfig: { ips: ['10.7.0.42/24'] },
    });
    const taken = await runCniPlugin(env('ADD', 'b'), rc, s.deps);
    assert.equal(codeOf(taken.stdout), 101);
    assert.match(taken.stdout, /held by container a/);
  });
});
