import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parseCniRequest } from './config.js';
import { runCniPlugin } from './plugin.js';
import type { PluginDeps } from './plugin.js';

/** Ports that fail the test if touched: invalid input must have no side effect. */
const untouched: PluginDeps = {
  netlink: {
    attach: () => Promise.reject(new Error('netlink touched')),
    detach: () => Promise.reject(new Error('netlink touched')),
    inspect: () => Promise.reject(new Error('netlink touched')),
  },
  openIpam: () => {
    throw new Error('ipam touched');
  },
  agent: () => {
    throw new Error('agent touched');
  },
};

const ENV = {
  CNI_COMMAND: 'ADD',
  CNI_CONTAINERID: 'abc123',
  CNI_NETNS: '/run/netns/pod',
  CNI_IFNAME: 'eth0',
  CNI_ARGS: 'K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p',
  CNI_PATH: '/opt/cni/bin',
};
const CONF = {
  cniVersion: '1.0.0',
  name: 'palisade',
  type: 'palisade',
  ipam: { subnet: '10.244.0.0/16' },
};

interface ErrorJson {
  cniVersion: string;
  code: number;
  msg: string;
  details: string;
}

async function fails(env: Record<string, string | undefined>, stdin: string): Promise<ErrorJson> {
  const out = await runCniPlugin(env, stdin, untouched);
  assert.equal(out.exitCode, 1, 'non-zero exit on failure (spec §2 "Errors")');
  const e = JSON.parse(out.stdout) as ErrorJson;
  assert.deepEqual(Object.keys(e).sort(), ['cniVersion', 'code', 'details', 'msg']);
  return e;
}

const conf = (over: Record<string, unknown>): string => JSON.stringify({ ...CONF, ...over });

describe('CNI configuration and environment (spec §1, §2)', () => {
  test('the default network configuration of DESIGN §6 parses with the documented defaults', () => {
    const r = parseCniRequest(ENV, JSON.stringify(CONF));
    assert.ok(r.ok);
    if (r.request.command !== 'ADD') return assert.fail('expected ADD');
    assert.equal(r.request.conf.dataDir, '/var/lib/palisade/cni');
    assert.equal(r.request.conf.agentSocket, '/run/palisade/agent.sock');
    assert.deepEqual(r.request.conf.subnet, { network: 10 * 2 ** 24 + 244 * 2 ** 16, prefix: 16 });
    assert.equal(r.request.attachment.args.podNamespace, 'ns');
  });

  test('VERSION (spec §5 "Version") answers supportedVersions with the input cniVersion', async () => {
    const out = await runCniPlugin({ CNI_COMMAND: 'VERSION' }, '{"cniVersion":"1.0.0"}', untouched);
    assert.equal(out.exitCode, 0);
    assert.deepEqual(JSON.parse(out.stdout), { cniVersion: '1.0.0', supportedVersions: ['1.0.0'] });
    const noInput = await runCniPlugin({ CNI_COMMAND: 'VERSION' }, '', untouched);
    assert.equal((JSON.parse(noInput.stdout) as { cniVersion: string }).cniVersion, '1.0.0');
  });

  test('code 6: a configuration that is not JSON, or not an object', async () => {
    for (const bad of ['{"cniVersion":', 'null', '[1]', '"x"', '']) {
      const e = await fails(ENV, bad);
      assert.equal(e.code, 6, bad);
      assert.equal(e.msg, 'Failed to decode content');
      assert.match(e.details, /^CNI_ERR_DECODE: /);
    }
  });

  test('code 1: a cniVersion the plugin does not support, answered in that version', async () => {
    const e = await fails(ENV, conf({ cniVersion: '0.4.0' }));
    assert.equal(e.code, 1);
    assert.equal(
      e.cniVersion,
      '0.4.0',
      'spec §5 "Error": the same cniVersion as the configuration',
    );
    assert.match(e.details, /"0\.4\.0" is not supported; this plugin supports 1\.0\.0/);
  });

  test('code 7: missing or mistyped required fields, each named', async () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ cniVersion: undefined }, /cniVersion is required/],
      [{ name: undefined }, /name is required/],
      [{ name: '-bad' }, /name is required/],
      [{ type: 7 }, /type is required/],
      [{ ipam: undefined }, /ipam is required/],
      [{ ipam: {} }, /ipam\.subnet is required/],
      [{ mtu: 20 }, /mtu must be an integer 68\.\.65535/],
      [
        { ipam: { subnet: '10.244.0.0/16', dataDir: 'relative' } },
        /ipam\.dataDir must be an absolute path/,
      ],
      [{ agentSocket: '' }, /agentSocket must be an absolute path/],
      [{ runtimeConfig: { ips: ['nope'] } }, /runtimeConfig\.ips: "nope" is not an IPv4 address/],
      [
        { ipam: { subnet: '10.244.0.0/16', gateway: '10.245.0.1' } },
        /ipam\.gateway "10\.245\.0\.1" must be an IPv4 address inside/,
      ],
    ];
    for (const [over, re] of cases) {
      const e = await fails(ENV, conf(over));
      assert.equal(e.code, 7, JSON.stringify(over));
      assert.match(e.details, re);
    }
  });

  test('code 7: a bad subnet says what is wrong with it', async () => {
    const cases: [string, RegExp][] = [
      ['10.244.0.1/16', /host bits are set; the network is 10\.244\.0\.0\/16/],
      ['10.244.0.0/31', /too small to allocate from/],
      ['10.244.0.0', /expected a CIDR/],
      ['10.244.0.0/33', /prefix "33" is not 0\.\.32/],
      ['fd00::/64', /IPv6 pools are not supported yet/],
      ['010.1.0.0/16', /is not an IPv4 address/],
      ['16.0.0.0/4', /larger than a \/8/],
    ];
    for (const [subnet, re] of cases) {
      const e = await fails(ENV, conf({ ipam: { subnet } }));
      assert.equal(e.code, 7, subnet);
      assert.match(e.details, re, subnet);
    }
  });

  test('code 2: an unsupported field, with its key and value in the message', async () => {
    const e = await fails(ENV, conf({ ipMasq: true }));
    assert.equal(e.code, 2);
    assert.match(e.details, /unsupported field ipMasq=true/);
    const ipam = await fails(ENV, conf({ ipam: { type: 'host-local', subnet: '10.1.0.0/16' } }));
    assert.equal(ipam.code, 2);
    assert.match(ipam.details, /ipam\.type="host-local"/);
    const r = parseCniRequest(ENV, conf({ 'cni.dev/extra': 1, capabilities: { ips: true } }));
    assert.ok(r.ok, 'reserved cni.dev/ keys are accepted');
  });

  test('code 4: missing or malformed CNI_* variables, each named', async () => {
    const cases: [Record<string, string | undefined>, RegExp][] = [
      [{ CNI_COMMAND: undefined }, /CNI_COMMAND is not set/],
      [{ CNI_COMMAND: 'GC' }, /CNI_COMMAND="GC" is not ADD, DEL, CHECK or VERSION/],
      [{ CNI_CONTAINERID: '' }, /CNI_CONTAINERID is not set/],
      [{ CNI_CONTAINERID: '-x' }, /CNI_CONTAINERID must start with a letter or digit/],
      [{ CNI_IFNAME: undefined }, /CNI_IFNAME is not set/],
      [{ CNI_IFNAME: 'a-very-long-ifname' }, /is not a Linux interface name/],
      [{ CNI_IFNAME: 'eth:0' }, /is not a Linux interface name/],
      [{ CNI_IFNAME: '..' }, /is not a Linux interface name/],
      [{ CNI_NETNS: undefined }, /CNI_NETNS is not set \(required for ADD\)/],
      [{ CNI_NETNS: 'relative/ns' }, /CNI_NETNS="relative\/ns" must be an absolute path/],
      [{ CNI_ARGS: 'K8S_POD_NAME' }, /CNI_ARGS: "K8S_POD_NAME" is not KEY=VALUE/],
      [{ CNI_ARGS: 'FOO=1' }, /unknown argument FOO \(set IgnoreUnknown=1/],
      [{ CNI_ARGS: 'IP=10.0.0.300' }, /IP="10\.0\.0\.300" is not an IPv4 address/],
      [{ CNI_ARGS: 'K8S_POD_NAME=Bad_Name' }, /K8S_POD_NAME="Bad_Name" is not a valid name/],
      [{ CNI_ARGS: 'K8S_POD_LABEL_app=no spaces' }, /is not a valid label/],
      [{ CNI_ARGS: 'IP=10.0.0.1;IP=10.0.0.2' }, /IP is given twice/],
    ];
    for (const [over, re] of cases) {
      const e = await fails({ ...ENV, ...over }, JSON.stringify(CONF));
      assert.equal(e.code, 4, JSON.stringify(over));
      assert.equal(e.msg, 'Invalid necessary environment variables');
      assert.match(e.details, re);
    }
  });

  test('ADD without the pod named in CNI_ARGS is code 4, before anything is touched', async () => {
    const e = await fails({ ...ENV, CNI_ARGS: 'IgnoreUnknown=1' }, JSON.stringify(CONF));
    assert.equal(e.code, 4);
    assert.match(e.details, /K8S_POD_NAMESPACE=\.\.\.;K8S_POD_NAME=/);
  });

  test('DEL (spec §2): CNI_NETNS is optional', () => {
    const r = parseCniRequest(
      { ...ENV, CNI_COMMAND: 'DEL', CNI_NETNS: undefined },
      JSON.stringify(CONF),
    );
    assert.ok(r.ok);
  });

  test('CHECK (spec §2) without prevResult is code 7', async () => {
    const e = await fails({ ...ENV, CNI_COMMAND: 'CHECK' }, JSON.stringify(CONF));
    assert.equal(e.code, 7);
    assert.match(e.details, /CHECK needs prevResult/);
  });

  test('CNI_ARGS: Kubernetes keys, IgnoreUnknown, IP= and Palisade label arguments', () => {
    const r = parseCniRequest(
      {
        ...ENV,
        CNI_ARGS:
          'IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=0f3c-11;IP=10.244.3.4;K8S_POD_LABEL_app=web;K8S_POD_LABEL_example.com/tier=front;Other=x',
      },
      JSON.stringify(CONF),
    );
    assert.ok(r.ok);
    if (r.request.command === 'VERSION') return;
    const a = r.request.attachment.args;
    assert.equal(a.podUid, '0f3c-11');
    assert.equal(a.ip, 10 * 2 ** 24 + 244 * 2 ** 16 + 3 * 256 + 4);
    assert.deepEqual(a.labels, { app: 'web', 'example.com/tier': 'front' });
  });

  test('a requested address by IP= and by runtimeConfig.ips must agree', async () => {
    const e = await fails(
      { ...ENV, CNI_ARGS: `${ENV.CNI_ARGS};IP=10.244.0.5` },
      conf({ runtimeConfig: { ips: ['10.244.0.6/16'] } }),
    );
    assert.equal(e.code, 7);
    assert.match(e.details, /disagree/);
  });

  test('hostile input never throws: every outcome is a request or a spec error JSON', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          CNI_COMMAND: fc.constantFrom('ADD', 'DEL', 'CHECK', 'VERSION', '', 'x'),
          CNI_CONTAINERID: fc.string(),
          CNI_NETNS: fc.string(),
          CNI_IFNAME: fc.string(),
          CNI_ARGS: fc.string(),
        }),
        fc.oneof(
          fc.string(),
          fc.json(),
          fc.jsonValue().map((v) => JSON.stringify({ ...CONF, ipam: v })),
        ),
        async (env, stdin) => {
          const r = parseCniRequest(env, stdin);
          if (r.ok) return;
          const out = await runCniPlugin(env, stdin, untouched);
          const e = JSON.parse(out.stdout) as ErrorJson;
          assert.ok(Number.isInteger(e.code) && e.code > 0);
          assert.equal(typeof e.details, 'string');
        },
      ),
      { numRuns: 300 },
    );
  });
});
