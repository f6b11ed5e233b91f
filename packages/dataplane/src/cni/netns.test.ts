// The plugin against the real kernel: real network namespaces (a "node" namespace plays the host),
// the real `ip` commands, the real SQLite file and the real agent socket.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { SqliteIpam } from './ipam.js';
import { hostVethName } from './netlink.js';
import { canUseNetns, must, NetnsFixture, pod, sh } from './test-fixture.js';
import type { CniResult } from './config.js';

const skip = canUseNetns() ? false : 'needs root and ip netns';

const nsPath = (name: string): string => `/run/netns/${name}`;
const podArgs = (ns: string, name: string): string =>
  `IgnoreUnknown=1;K8S_POD_NAMESPACE=${ns};K8S_POD_NAME=${name}`;

function errorOf(stdout: string): {
  cniVersion: string;
  code: number;
  msg: string;
  details: string;
} {
  return JSON.parse(stdout) as { cniVersion: string; code: number; msg: string; details: string };
}

/** Runs `node -e script` inside a network namespace. */
function inNetns(ns: string, script: string): ChildProcess {
  return spawn('ip', ['netns', 'exec', ns, process.execPath, '-e', script], {
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 20_000,
  });
}

function output(child: ChildProcess, until?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => {
      text += d;
      if (until !== undefined && text.includes(until)) resolve(text);
    });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (text += d));
    child.on('error', reject);
    child.on('close', () => resolve(text));
  });
}

describe('palisade cni in network namespaces', { skip, timeout: 55_000 }, () => {
  const fx = new NetnsFixture('10.250.0.0/24');
  const timings: number[] = [];
  let podA = '';
  let podB = '';
  let resultA: CniResult | undefined;
  let resultB: CniResult | undefined;
  const servers: ChildProcess[] = [];

  before(async () => {
    await fx.start();
    fx.pods.upsert(
      pod(
        'shop',
        'web',
        {
          serviceAccountName: 'web-sa',
          containers: [{ name: 'app', ports: [{ name: 'http', containerPort: 8080 }] }],
        },
        { app: 'web' },
      ),
    );
    fx.pods.upsert(pod('shop', 'db', { serviceAccountName: 'db-sa' }, { app: 'db' }));
    for (const n of ['c', 'd', 'e', 'f', 'proc']) fx.pods.upsert(pod('shop', n));
    fx.pods.upsert(pod('shop', 'elsewhere', { nodeName: 'another-node' }));
    podA = fx.addPodNs('a');
    podB = fx.addPodNs('b');
  });

  after(async () => {
    for (const s of servers) s.kill();
    await fx.cleanup();
  });

  test('ADD (spec §2) through the palisade executable returns the Success result (§5) and wires both pods', async () => {
    const a = await fx.exec({
      command: 'ADD',
      containerId: 'ctr-a',
      netns: nsPath(podA),
      args: podArgs('shop', 'web'),
    });
    assert.equal(a.exitCode, 0, a.stdout + a.stderr);
    timings.push(a.ms);
    // The runtime runs the plugin by its type with no arguments at all.
    const b = await fx.exec(
      { command: 'ADD', containerId: 'ctr-b', netns: nsPath(podB), args: podArgs('shop', 'db') },
      [],
    );
    assert.equal(b.exitCode, 0, b.stdout + b.stderr);
    timings.push(b.ms);
    resultA = JSON.parse(a.stdout) as CniResult;
    resultB = JSON.parse(b.stdout) as CniResult;
    assert.equal(resultA.cniVersion, '1.0.0');
    assert.deepEqual(resultA.interfaces[0], {
      name: hostVethName('ctr-a', 'eth0'),
      mac: 'ee:ee:ee:ee:ee:ee',
    });
    assert.equal(resultA.interfaces[1]?.name, 'eth0');
    assert.equal(resultA.interfaces[1]?.sandbox, nsPath(podA), 'sandbox is the CNI_NETNS value');
    assert.equal(resultA.ips.length, 1);
    assert.match(resultA.ips[0]?.address ?? '', /^10\.250\.0\.\d+\/32$/);
    assert.equal(resultA.ips[0]?.gateway, '169.254.1.1');
    assert.equal(resultA.ips[0]?.interface, 1, 'ips[].interface indexes the sandbox interface');
    assert.deepEqual(resultA.routes, [{ dst: '0.0.0.0/0', gw: '169.254.1.1' }]);
    assert.notEqual(resultA.ips[0]?.address, resultB.ips[0]?.address);
    const addr = must('ip', ['-n', podA, '-j', 'addr', 'show', 'dev', 'eth0']);
    assert.match(
      addr,
      new RegExp(`"local":"${(resultA.ips[0]?.address ?? '').split('/')[0]}","prefixlen":32`),
    );
  });

  test('the registered WorkloadEndpoint carries the pod labels, namespace, service account and named ports', async () => {
    const ep = await fx.registry.get('ctr-a', 'eth0');
    assert.ok(ep);
    const wep = ep.workloadEndpoint;
    assert.equal(ep.source, 'pod');
    assert.equal(wep.metadata.namespace, 'shop');
    assert.equal(wep.metadata.labels?.['app'], 'web');
    assert.equal(wep.metadata.labels?.['projectcalico.org/serviceaccount'], 'web-sa');
    assert.equal(wep.spec.serviceAccountName, 'web-sa');
    assert.equal(wep.spec.node, 'node-test');
    assert.equal(wep.spec.interfaceName, hostVethName('ctr-a', 'eth0'));
    assert.deepEqual(wep.spec.ipNetworks, [resultA?.ips[0]?.address]);
    assert.deepEqual(wep.spec.ports, [{ name: 'http', protocol: 'TCP', port: 8080 }]);
  });

  test('ADD creates a working pod: a TCP connection from pod A to pod B crosses the node namespace', async () => {
    const ipA = (resultA?.ips[0]?.address ?? '').split('/')[0] ?? '';
    const ipB = (resultB?.ips[0]?.address ?? '').split('/')[0] ?? '';
    const server = inNetns(
      podB,
      `require('net').createServer((s) => { s.end('pong from ' + s.localAddress + ' to ' + s.remoteAddress); }).listen(8080, '${ipB}', () => console.log('ready'));`,
    );
    servers.push(server);
    await output(server, 'ready');
    const client = inNetns(
      podA,
      `const s = require('net').connect(8080, '${ipB}'); let d = ''; s.on('data', (x) => (d += x)); s.on('end', () => { console.log(d); process.exit(0); }); s.on('error', (e) => console.log('error ' + e.message)); setTimeout(() => { console.log('timeout'); process.exit(1); }, 5000);`,
    );
    const text = await output(client);
    assert.equal(text.trim(), `pong from ${ipB} to ${ipA}`);
  });

  test('CHECK (spec §2) succeeds right after ADD with prevResult, printing nothing', async () => {
    const r = await fx.run({
      command: 'CHECK',
      containerId: 'ctr-a',
      netns: nsPath(podA),
      args: podArgs('shop', 'web'),
      conf: { prevResult: resultA },
    });
    assert.equal(r.exitCode, 0, r.stdout);
    assert.equal(r.stdout, '');
  });

  test('CHECK (spec §2) reports a missing address, then a missing interface, listed in prevResult', async () => {
    const ns = fx.addPodNs('c');
    const add = await fx.run({
      command: 'ADD',
      containerId: 'ctr-c',
      netns: nsPath(ns),
      args: podArgs('shop', 'c'),
    });
    assert.equal(add.exitCode, 0, add.stdout);
    const prevResult = JSON.parse(add.stdout) as CniResult;
    const address = prevResult.ips[0]?.address ?? '';
    must('ip', ['-n', ns, 'addr', 'del', address, 'dev', 'eth0']);
    const noAddr = await fx.run({
      command: 'CHECK',
      containerId: 'ctr-c',
      netns: nsPath(ns),
      args: podArgs('shop', 'c'),
      conf: { prevResult },
    });
    assert.equal(noAddr.exitCode, 1);
    const e1 = errorOf(noAddr.stdout);
    assert.equal(e1.code, 104);
    assert.match(
      e1.details,
      new RegExp(`address ${address.replace(/\./g, '\\.')} is missing on eth0`),
    );
    must('ip', ['-n', ns, 'link', 'del', 'eth0']);
    const noIf = await fx.run({
      command: 'CHECK',
      containerId: 'ctr-c',
      netns: nsPath(ns),
      args: podArgs('shop', 'c'),
      conf: { prevResult },
    });
    const e2 = errorOf(noIf.stdout);
    assert.equal(e2.code, 104);
    assert.match(e2.details, /interface eth0 is missing/);
    assert.match(e2.details, /node-side interface pl[0-9a-f]{13} is missing/);
    const del = await fx.run({
      command: 'DEL',
      containerId: 'ctr-c',
      netns: nsPath(ns),
      args: podArgs('shop', 'c'),
    });
    assert.equal(del.exitCode, 0, del.stdout);
  });

  test('DEL (spec §2) removes the veth, the node route, the registration and the address; a second DEL succeeds', async () => {
    const hostIf = hostVethName('ctr-a', 'eth0');
    const address = resultA?.ips[0]?.address ?? '';
    const del = await fx.exec({
      command: 'DEL',
      containerId: 'ctr-a',
      netns: nsPath(podA),
      args: podArgs('shop', 'web'),
    });
    assert.equal(del.exitCode, 0, del.stdout + del.stderr);
    assert.equal(del.stdout, '');
    assert.ok(!fx.nodeLinks().includes(hostIf));
    assert.equal(must('ip', ['-n', fx.nodeNs, 'route', 'show', 'exact', address]).trim(), '');
    assert.equal(
      sh('ip', ['-n', podA, 'link', 'show', 'dev', 'eth0']).code,
      1,
      'the pod side went with the pair',
    );
    assert.equal(await fx.registry.get('ctr-a', 'eth0'), undefined);
    const ipam = SqliteIpam.open(fx.dataDir);
    assert.equal(ipam.get('palisade', 'ctr-a', 'eth0'), undefined);
    ipam.close();
    const again = await fx.run({
      command: 'DEL',
      containerId: 'ctr-a',
      netns: nsPath(podA),
      args: podArgs('shop', 'web'),
    });
    assert.equal(again.exitCode, 0, again.stdout);
  });

  test('DEL (spec §2) succeeds when the network namespace is already gone, and without CNI_NETNS', async () => {
    const ns = fx.addPodNs('d');
    const add = await fx.run({
      command: 'ADD',
      containerId: 'ctr-d',
      netns: nsPath(ns),
      args: podArgs('shop', 'd'),
    });
    assert.equal(add.exitCode, 0, add.stdout);
    fx.delPodNs(ns);
    const del = await fx.run({
      command: 'DEL',
      containerId: 'ctr-d',
      netns: nsPath(ns),
      args: podArgs('shop', 'd'),
    });
    assert.equal(del.exitCode, 0, del.stdout);
    assert.ok(!fx.nodeLinks().includes(hostVethName('ctr-d', 'eth0')));
    assert.equal(await fx.registry.get('ctr-d', 'eth0'), undefined);
    const noNetns = await fx.run({
      command: 'DEL',
      containerId: 'ctr-d',
      args: podArgs('shop', 'd'),
    });
    assert.equal(noNetns.exitCode, 0, noNetns.stdout);
  });

  test('CNI_NETNS may be /proc/PID/ns/net (a namespace without a name)', async () => {
    const holder = spawn('unshare', ['-n', 'sleep', '30'], { stdio: 'ignore' });
    servers.push(holder);
    await new Promise((r) => setTimeout(r, 300));
    const netns = `/proc/${holder.pid}/ns/net`;
    const add = await fx.run({
      command: 'ADD',
      containerId: 'ctr-proc',
      netns,
      args: podArgs('shop', 'proc'),
    });
    assert.equal(add.exitCode, 0, add.stdout);
    const inside = must('nsenter', [`--net=${netns}`, 'ip', '-j', 'addr', 'show', 'dev', 'eth0']);
    assert.match(inside, /"prefixlen":32/);
    const del = await fx.run({
      command: 'DEL',
      containerId: 'ctr-proc',
      netns,
      args: podArgs('shop', 'proc'),
    });
    assert.equal(del.exitCode, 0, del.stdout);
    assert.equal(sh('nsenter', [`--net=${netns}`, 'ip', 'link', 'show', 'dev', 'eth0']).code, 1);
    holder.kill();
  });

  test('ADD (spec §2) fails when CNI_IFNAME already exists in the container, and leaves nothing behind', async () => {
    const ns = fx.addPodNs('e');
    must('ip', ['-n', ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'other0']);
    const r = await fx.run({
      command: 'ADD',
      containerId: 'ctr-e',
      netns: nsPath(ns),
      args: podArgs('shop', 'e'),
    });
    assert.equal(r.exitCode, 1);
    const e = errorOf(r.stdout);
    assert.equal(e.code, 100);
    assert.match(e.details, /eth0 already exists/);
    assert.ok(!fx.nodeLinks().includes(hostVethName('ctr-e', 'eth0')));
    const ipam = SqliteIpam.open(fx.dataDir);
    assert.equal(ipam.get('palisade', 'ctr-e', 'eth0'), undefined, 'the address was released');
    ipam.close();
  });

  test('a repeated ADD of the same attachment (a retried runtime call) gets the same address and MAC', async () => {
    const ns = fx.addPodNs('r');
    const inv = {
      command: 'ADD' as const,
      containerId: 'ctr-r',
      netns: nsPath(ns),
      args: podArgs('shop', 'c'),
    };
    const first = await fx.run(inv);
    const second = await fx.run(inv);
    assert.equal(second.exitCode, 0, second.stdout);
    const a = JSON.parse(first.stdout) as CniResult;
    const b = JSON.parse(second.stdout) as CniResult;
    assert.deepEqual(b.ips, a.ips);
    assert.deepEqual(b.interfaces, a.interfaces);
    const check = await fx.run({ ...inv, command: 'CHECK', conf: { prevResult: b } });
    assert.equal(check.exitCode, 0, check.stdout);
    assert.equal((await fx.run({ ...inv, command: 'DEL' })).exitCode, 0);
  });

  test('a registration failure fails the ADD and rolls back the veth and the address', async () => {
    const ns = fx.addPodNs('f');
    const cases = [
      {
        args: podArgs('shop', 'nobody'),
        code: 11,
        details: /CNI_ERR_POD_UNKNOWN: .*no pod shop\/nobody/,
      },
      { args: podArgs('shop', 'elsewhere'), code: 103, details: /scheduled to node another-node/ },
    ];
    for (const c of cases) {
      const r = await fx.run({
        command: 'ADD',
        containerId: 'ctr-f',
        netns: nsPath(ns),
        args: c.args,
      });
      assert.equal(r.exitCode, 1);
      const e = errorOf(r.stdout);
      assert.equal(e.code, c.code, r.stdout);
      assert.match(e.details, c.details);
      assert.match(e.details, /the veth and the address were rolled back/);
      assert.ok(!fx.nodeLinks().includes(hostVethName('ctr-f', 'eth0')), 'no node-side veth');
      assert.equal(
        sh('ip', ['-n', ns, 'link', 'show', 'dev', 'eth0']).code,
        1,
        'no pod-side interface',
      );
      const ipam = SqliteIpam.open(fx.dataDir);
      assert.equal(ipam.get('palisade', 'ctr-f', 'eth0'), undefined, 'no address held');
      ipam.close();
    }
  });

  test('an unreachable agent fails the ADD with code 11 (try again later) and leaves nothing behind', async () => {
    const ns = fx.addPodNs('g');
    const r = await fx.run({
      command: 'ADD',
      containerId: 'ctr-g',
      netns: nsPath(ns),
      args: podArgs('shop', 'web'),
      conf: { agentSocket: `${fx.dir}/no-agent.sock` },
    });
    assert.equal(r.exitCode, 1);
    const e = errorOf(r.stdout);
    assert.equal(e.code, 11);
    assert.match(e.details, /CNI_ERR_AGENT_UNAVAILABLE/);
    assert.ok(!fx.nodeLinks().includes(hostVethName('ctr-g', 'eth0')));
    const ipam = SqliteIpam.open(fx.dataDir);
    assert.equal(ipam.get('palisade', 'ctr-g', 'eth0'), undefined);
    ipam.close();
  });

  test('a missing network namespace on ADD is code 3 (container unknown)', async () => {
    const r = await fx.run({
      command: 'ADD',
      containerId: 'ctr-h',
      netns: '/run/netns/palisade-none-here',
      args: podArgs('shop', 'web'),
    });
    assert.equal(errorOf(r.stdout).code, 3);
  });

  test('timing: an ADD through the palisade executable, tsx start-up included', (t) => {
    t.diagnostic(`ADD via palisade cni: ${timings.map((ms) => `${ms} ms`).join(', ')}`);
    assert.ok(timings.length > 0);
  });
});
