// The CNI 1.0 commands (ADD, DEL, CHECK, VERSION) over three ports: the address database, the
// kernel and the agent. Owns: the order of side effects and their rollback, and the results and
// errors in the spec's JSON. Must never: leave an ADD half applied (a failed ADD removes the veth
// and releases the address it took), release an address the agent may still hold registered, or
// fail a DEL because the container or its namespace is already gone.

import { AgentCallError } from './agent-client.js';
import type { AgentClient } from './agent-client.js';
import { CniError, cniErrorResult } from './cni-error.js';
import { parseCniRequest, SUPPORTED_VERSIONS } from './config.js';
import type { Attachment, CniResult, Env, NetConf } from './config.js';
import type { Ipam, IpamPool } from './ipam.js';
import { formatIpv4 } from './ipv4.js';
import { hostVethName, NODE_VETH_MAC, POD_GATEWAY, podMacFor } from './netlink.js';
import type { Netlink, PodLink } from './netlink.js';

export interface PluginDeps {
  readonly netlink: Netlink;
  readonly openIpam: (dataDir: string) => Ipam;
  readonly agent: (socketPath: string) => AgentClient;
}

export interface PluginOutput {
  /** 0 on success; the spec only asks for non-zero on failure, we use 1. */
  readonly exitCode: number;
  /** The Success, Version or Error result; empty for a successful DEL or CHECK. */
  readonly stdout: string;
  /** A human line for logs. */
  readonly stderr: string;
}

function poolOf(conf: NetConf): IpamPool {
  return { network: conf.name, subnet: conf.subnet, reserved: conf.reserved };
}

function withIpam<T>(deps: PluginDeps, conf: NetConf, fn: (ipam: Ipam) => Promise<T>): Promise<T> {
  const ipam = deps.openIpam(conf.dataDir);
  return fn(ipam).finally(() => ipam.close());
}

function podLink(conf: NetConf, a: Attachment, netns: string, address: number): PodLink {
  return {
    netns,
    podIfname: a.ifname,
    hostIfname: hostVethName(a.containerId, a.ifname),
    address: formatIpv4(address),
    podMac: podMacFor(a.containerId, a.ifname),
    mtu: conf.mtu,
  };
}

async function add(conf: NetConf, a: Attachment, deps: PluginDeps): Promise<CniResult> {
  const { podNamespace, podName } = a.args;
  if (podNamespace === undefined || podName === undefined)
    throw new CniError(
      'CNI_ERR_ENV',
      'CNI_ARGS must name the pod: K8S_POD_NAMESPACE=...;K8S_POD_NAME=...',
    );
  const netns = a.netns ?? '';
  const agent = deps.agent(conf.agentSocket);
  return withIpam(deps, conf, async (ipam) => {
    const alloc = ipam.allocate(
      poolOf(conf),
      a.containerId,
      a.ifname,
      a.args.ip ?? conf.runtimeIps[0],
    );
    const link = podLink(conf, a, netns, alloc.address);
    const releaseIfFresh = (): void => {
      if (alloc.fresh) ipam.release(conf.name, a.containerId, a.ifname);
    };
    try {
      await deps.netlink.attach(link);
    } catch (e) {
      releaseIfFresh();
      throw e;
    }
    try {
      await agent.register({
        network: conf.name,
        containerId: a.containerId,
        ifname: a.ifname,
        hostIfname: link.hostIfname,
        netns,
        namespace: podNamespace,
        pod: podName,
        ...(a.args.podUid !== undefined ? { podUid: a.args.podUid } : {}),
        ips: [`${link.address}/32`],
        mac: link.podMac,
        labels: a.args.labels,
        ...(a.args.serviceAccount !== undefined ? { serviceAccount: a.args.serviceAccount } : {}),
      });
    } catch (e) {
      const notes: string[] = [];
      await deps.netlink
        .detach(link)
        .catch((d: unknown) => notes.push(`removing the veth failed too: ${(d as Error).message}`));
      let released = false;
      let certain = !(e instanceof AgentCallError && e.mayHaveApplied);
      if (!certain)
        certain = await agent.deregister(a.containerId, a.ifname).then(
          () => true,
          () => false,
        );
      if (certain) {
        releaseIfFresh();
        released = alloc.fresh;
      } else {
        notes.push(
          `${link.address} stays reserved until DEL: the agent may have registered it before the connection broke`,
        );
      }
      if (e instanceof CniError) {
        const extra = notes.length > 0 ? `; ${notes.join('; ')}` : '';
        const rolled = released
          ? '; the veth and the address were rolled back'
          : '; the veth was rolled back';
        throw new CniError(
          e.code,
          `registering the endpoint failed: ${e.message}${rolled}${extra}`,
          { cause: e },
        );
      }
      throw e;
    }
    const prev = conf.prevResult;
    const base = prev?.interfaces.length ?? 0;
    return {
      cniVersion: conf.cniVersion,
      interfaces: [
        ...(prev?.interfaces ?? []),
        { name: link.hostIfname, mac: NODE_VETH_MAC },
        { name: a.ifname, mac: link.podMac, sandbox: netns },
      ],
      ips: [
        ...(prev?.ips ?? []),
        { address: `${link.address}/32`, gateway: POD_GATEWAY, interface: base + 1 },
      ],
      routes: [...(prev?.routes ?? []), { dst: '0.0.0.0/0', gw: POD_GATEWAY }],
      dns: Object.keys(conf.dns).length > 0 ? conf.dns : (prev?.dns ?? {}),
    };
  });
}

async function del(conf: NetConf, a: Attachment, deps: PluginDeps): Promise<void> {
  await withIpam(deps, conf, async (ipam) => {
    const held = ipam.get(conf.name, a.containerId, a.ifname);
    const hostIfname = hostVethName(a.containerId, a.ifname);
    // Interfaces first (traffic stops), then the registration (policy for the address goes),
    // then the address (only now may another pod get it).
    await deps.netlink.detach({ netns: a.netns, podIfname: a.ifname, hostIfname });
    if (held === undefined) return; // a DEL already completed, or ADD never allocated
    await deps.agent(conf.agentSocket).deregister(a.containerId, a.ifname);
    ipam.release(conf.name, a.containerId, a.ifname);
  });
}

async function check(conf: NetConf, a: Attachment, deps: PluginDeps): Promise<void> {
  const prev = conf.prevResult;
  if (!prev) throw new CniError('CNI_ERR_CONFIG', 'CHECK needs prevResult');
  const netns = a.netns ?? '';
  await withIpam(deps, conf, async (ipam) => {
    const problems: string[] = [];
    const held = ipam.get(conf.name, a.containerId, a.ifname);
    if (!held)
      throw new CniError(
        'CNI_ERR_CHECK_FAILED',
        `no address is reserved for ${a.containerId} (${a.ifname})`,
      );
    const address = formatIpv4(held.address);
    const sandbox = prev.interfaces.findIndex((i) => i.name === a.ifname && i.sandbox === netns);
    if (sandbox < 0) problems.push(`prevResult lists no interface ${a.ifname} in ${netns}`);
    if (!prev.ips.some((ip) => ip.address === `${address}/32`))
      problems.push(
        `prevResult does not list ${address}/32, the address reserved for this attachment`,
      );
    const link = podLink(conf, a, netns, held.address);
    problems.push(...(await deps.netlink.inspect(link)));
    const ep = await deps.agent(conf.agentSocket).get(a.containerId, a.ifname);
    if (!ep) problems.push('the agent has no endpoint registered for this attachment');
    else if (!(ep.workloadEndpoint.spec.ipNetworks ?? []).includes(`${address}/32`))
      problems.push(`the agent's endpoint does not hold ${address}/32`);
    if (problems.length > 0) throw new CniError('CNI_ERR_CHECK_FAILED', problems.join('; '));
  });
}

function errorOutput(e: CniError, cniVersion: string): PluginOutput {
  return {
    exitCode: 1,
    stdout: JSON.stringify(cniErrorResult(e, cniVersion)) + '\n',
    stderr: `palisade cni: ${e.code}: ${e.message}\n`,
  };
}

/** One plugin invocation: the environment and stdin in, what to print and the exit status out. */
export async function runCniPlugin(
  env: Env,
  stdin: string,
  deps: PluginDeps,
): Promise<PluginOutput> {
  const parsed = parseCniRequest(env, stdin);
  if (!parsed.ok) return errorOutput(parsed.error, parsed.cniVersion);
  const req = parsed.request;
  const version = req.command === 'VERSION' ? req.cniVersion : req.conf.cniVersion;
  try {
    switch (req.command) {
      case 'VERSION':
        return {
          exitCode: 0,
          stdout:
            JSON.stringify({ cniVersion: req.cniVersion, supportedVersions: SUPPORTED_VERSIONS }) +
            '\n',
          stderr: '',
        };
      case 'ADD': {
        const result = await add(req.conf, req.attachment, deps);
        return { exitCode: 0, stdout: JSON.stringify(result) + '\n', stderr: '' };
      }
      case 'DEL':
        await del(req.conf, req.attachment, deps);
        return { exitCode: 0, stdout: '', stderr: '' };
      case 'CHECK':
        await check(req.conf, req.attachment, deps);
        return { exitCode: 0, stdout: '', stderr: '' };
    }
  } catch (e) {
    if (e instanceof CniError) return errorOutput(e, version);
    return errorOutput(
      new CniError('CNI_ERR_INTERNAL', (e as Error).message ?? String(e)),
      version,
    );
  }
}
