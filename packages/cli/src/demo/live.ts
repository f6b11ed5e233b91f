// `palisade demo` (what `npm start` runs): the source documents' scenarios played for real on
// this machine. A control plane on the embedded store, a node (a network namespace playing the
// host) with the agent programming its own nftables table, one network namespace per pod wired
// by the CNI plugin, a sidecar and a small service in each, then the checks of the story, each
// observed at the enforcement point that decided. Afterwards the control plane keeps running
// until Ctrl-C (or exits at once with --no-wait / --json); every resource is removed on exit,
// on SIGINT/SIGTERM and on any failure.
// Owns: the run's order, progress lines and the report. Must never: leave a resource behind it
// recorded, or report a check as passed that was not observed.

import { rmSync } from 'node:fs';
import type { Io } from '../input.js';
import { CleanupRegistry, sweepLeftovers } from './cleanup.js';
import { awaitStoryFlows, consoleAccess, formatFlowSummary } from './flows.js';
import type { ConsoleAccess, FlowSummary } from './flows.js';
import { KernelObserver } from './kernel.js';
import { Probes } from './probes.js';
import { formatReport } from './report.js';
import { playScenario, POLICY_FILES } from './scenario.js';
import type { Check } from './scenario.js';
import { requestSvid, SIDECAR_UID, sidecarReady, spawnSidecar } from './sidecars.js';
import type { Sidecar } from './sidecars.js';
import {
  demoPods,
  NODE,
  POD_PORT,
  readExample,
  settleRunningProcesses,
  Topology,
} from './topology.js';
import type { Pod } from './topology.js';
import { sidecarBundle } from '../../../../scripts/command-bundle.mjs';

export interface LiveOptions {
  readonly json: boolean;
  readonly wait: boolean;
}

/** The role each pod's service plays (pod-app.mjs), and which peers it calls. */
const ROLES: Readonly<Record<string, { role: string; peers: readonly string[] }>> = {
  'istio-ingress': { role: 'ingress', peers: ['productpage-v1'] },
  'productpage-v1': {
    role: 'productpage',
    peers: ['details-v1', 'reviews-v1', 'reviews-v2', 'reviews-v3'],
  },
  'productpage-rogue': {
    role: 'productpage',
    peers: ['details-v1', 'reviews-v1', 'reviews-v2', 'reviews-v3'],
  },
  'details-v1': { role: 'details', peers: [] },
  'reviews-v1': { role: 'reviews-v1', peers: [] },
  'reviews-v2': { role: 'reviews-v2', peers: ['ratings-v1'] },
  'reviews-v3': { role: 'reviews-v3', peers: ['ratings-v1'] },
  'ratings-v1': { role: 'ratings', peers: [] },
};

/** Pods without a sidecar: the attacker's is a compromised pod that would not use one. */
const NO_SIDECAR = new Set(['attacker']);

function peerRole(name: string): string {
  return ROLES[name]?.role ?? name;
}

export async function runLive(o: LiveOptions, io: Io): Promise<number> {
  const started = Date.now();
  const progress = o.json ? io.stderr : io.stdout;
  const say = (line: string) => {
    const s = ((Date.now() - started) / 1000).toFixed(1).padStart(5);
    progress.write(`[${s}s] ${line}\n`);
  };
  const cleanup = new CleanupRegistry();
  let finishing: Promise<void> | undefined;
  const finish = (why: string): Promise<void> =>
    (finishing ??= (async () => {
      say(
        `${why}: removing ${cleanup.size} recorded resources (processes, namespaces, veths, table, files)`,
      );
      const failed = await cleanup.runAll(say);
      say(
        failed.length === 0
          ? 'everything the demo created is gone'
          : `could not remove: ${failed.join(', ')}`,
      );
    })());
  let mainSettled: () => void = () => undefined;
  const settledMain = new Promise<void>((r) => (mainSettled = r));
  const onSignal = (sig: NodeJS.Signals) => {
    void (async () => {
      await finish(sig);
      // The run may still be creating something (it fails fast once its processes are gone);
      // whatever it records from now on is removed at once, and waited for here.
      await Promise.race([settledMain, new Promise((r) => setTimeout(r, 15_000))]);
      const late = await cleanup.drain();
      if (late.length > 0) say(`could not remove: ${late.join(', ')}`);
      // A plugin process that was running when the signal came may write into the work
      // directory after it was removed (its IPAM file): wait for (or kill) every such process,
      // then remove the directory again, now that nothing can write into it.
      await settleRunningProcesses();
      if (topo) rmSync(topo.dir, { recursive: true, force: true });
      process.exit(sig === 'SIGINT' ? 130 : 143);
    })();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const checks: Check[] = [];
  let flows: FlowSummary | undefined;
  let topo: Topology | undefined;
  let crashed = false;
  try {
    sweepLeftovers(say);
    topo = new Topology(cleanup, say);
    const t = topo;
    say(`Palisade live demo (pid ${process.pid}); work directory ${t.dir}`);
    await t.createNode();
    say(`node ${NODE}: network namespace ${t.nodeNs} plays the host (forwarding on)`);
    await t.startServer();
    say(`control plane on ${t.server?.url ?? '?'} (SQLite store, CA for cluster.local, audit log)`);
    await (t.admin as NonNullable<typeof t.admin>).apply(
      readExample('workloads.yaml'),
      'workloads.yaml',
    );
    say(
      'applied examples/demo/workloads.yaml: 3 namespaces, service accounts, 15 pods (the orchestrator view)',
    );
    await t.startAgent();
    say(
      `agent running (pid ${t.agent?.pid ?? '?'}): nftables table inet ${t.table} in ${t.nodeNs}`,
    );

    // Pods through the CNI plugin, three at a time (each ADD is a process of its own).
    const specs = demoPods();
    const queue = [...specs];
    await Promise.all(
      [0, 1, 2].map(async () => {
        for (let s = queue.shift(); s; s = queue.shift()) await t.addPod(s);
      }),
    );
    say(
      `${t.pods.length} pods wired by the CNI plugin: ${t.pods.map((p) => `${p.spec.name} ${p.ip}`).join(', ')}`,
    );
    await t.kernelAt(await t.revision(), 30_000);
    const kernel = new KernelObserver(t.nodeNs, t.table);
    say(
      `the agent programmed ${t.pods.length} workload endpoints (${await kernel.ruleCount()} rules)`,
    );

    // Sidecars: each gets its view and its SVID from the agent's socket for its endpoint. They
    // run from the bundled build, made here (the sidecar uid cannot write its cache).
    const bundle = await sidecarBundle();
    if (!bundle.path) say(`the sidecars run from the TypeScript sources: ${bundle.reason}`);
    const sidecars = new Map<string, Sidecar>();
    for (const p of t.pods) {
      if (NO_SIDECAR.has(p.spec.name)) continue;
      const s = spawnSidecar({
        netns: p.netns,
        config: {
          endpoint: p.ref,
          agentSocket: t.endpointSocket(p),
          podPort: POD_PORT,
          adminPort: 15000,
        },
      });
      cleanup.add(`sidecar process of ${p.ref}`, () => s.child.stop(), 'processes');
      sidecars.set(p.ref, s);
    }
    // Ready means listening, with the redirects installed by the agent.
    await Promise.all([...sidecars.values()].map((s) => sidecarReady(s, 150_000)));
    say(
      `${sidecars.size} sidecars running as \`palisade sidecar\` under uid ${SIDECAR_UID}, each with its policy view and X.509-SVID from the agent; the agent redirects each pod's port ${POD_PORT} and its calls to the peers it may reach through them (transparent interception)`,
    );
    const byName = new Map(t.pods.map((p) => [p.spec.name, p]));
    await Promise.all(
      t.pods.map((p) => {
        const r = ROLES[p.spec.name];
        const peers: Record<string, string> = {};
        for (const n of r?.peers ?? []) peers[peerRole(n)] = (byName.get(n) as Pod).ip;
        return t.startApp(p, r?.role ?? p.spec.name, peers);
      }),
    );
    say(
      `${t.pods.length} services running (one small Node process per pod, on the pod's loopback; they call each other by address and port, with no proxy settings)`,
    );

    // What the attacker exfiltrated: an SVID of reviews v2's identity (key and certificate).
    const stolen = await requestSvid(
      t.nodeApi as NonNullable<typeof t.nodeApi>,
      t.pod('reviews-v2').identity,
    );
    await playScenario(
      {
        topo: t,
        probes: new Probes(kernel, sidecars),
        sidecars: [...sidecars.values()],
        stolen,
        say,
        restartAgent: () => t.startAgent(),
      },
      (k) => {
        checks.push(k);
        say(`${k.pass ? 'PASS' : 'FAIL'}  ${k.name}`);
      },
    );
    // The story's traffic, as the agent shipped it (kernel traces, the sidecars' decisions).
    flows = await awaitStoryFlows(t.admin as NonNullable<typeof t.admin>);
    say(formatFlowSummary(flows));
  } catch (e) {
    crashed = true;
    say(`the demo failed: ${e instanceof Error ? e.message : String(e)}`);
    checks.push({
      name: 'the demo ran to its end',
      expected: 'allow',
      observed: 'error',
      enforcedBy: '-',
      provenance: { kernel: [] },
      detail: e instanceof Error ? e.message : String(e),
      pass: false,
    });
  }

  mainSettled();
  if (finishing) {
    // A signal is being handled: it cleans up and exits.
    await new Promise<void>(() => undefined);
  }
  const failed = checks.filter((k) => !k.pass).length;
  if (o.json) io.stdout.write(`${JSON.stringify({ checks, ...(flows ? { flows } : {}) })}\n`);
  else io.stdout.write(formatReport(checks, Date.now() - started));

  if (o.wait && !crashed && topo?.server) {
    const t = topo;
    // Leave the cluster secured for the user to explore.
    try {
      for (const f of POLICY_FILES)
        await (t.admin as NonNullable<typeof t.admin>).apply(readExample(f), f);
    } catch {
      // the report above stands; exploring starts from whatever state there is
    }
    let access: ConsoleAccess | undefined;
    try {
      access = await consoleAccess(t.admin as NonNullable<typeof t.admin>, t.server?.url ?? '');
    } catch (e) {
      say(`no console token: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (o.json) {
      io.stdout.write(`${JSON.stringify({ console: access ?? null })}\n`);
      // The token travels on stdout only (the JSON line); the human text names where it is.
      io.stderr.write(explore(t, access, true));
    } else io.stdout.write(explore(t, access, false));
    await new Promise<void>(() => undefined); // until a signal: onSignal cleans up and exits
  }
  await finish(crashed ? 'the demo failed' : 'done');
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  return failed === 0 ? 0 : 1;
}

function explore(t: Topology, access: ConsoleAccess | undefined, tokenElsewhere: boolean): string {
  const url = t.server?.url ?? '?';
  const p = (n: string) => t.pods.find((x) => x.spec.name === n);
  const att = p('attacker');
  const rat = p('ratings-v1');
  return `
The control plane keeps running, with the seeds' policies applied again:
  server   ${url}
${
  access
    ? `  console  ${access.url}
  sign in  ${tokenElsewhere ? 'the token of the {"console"} line on stdout' : access.token}   (read-only; the admin token for the editor: ${t.adminTokenFile})
`
    : ''
}  log in   palisade login --server ${url} --token-file ${t.adminTokenFile} --ca-file ${t.caFile}
  then     palisade get globalnetworkpolicies; palisade audit; palisade flows --follow
${t.agentMetrics ? `  metrics  ${t.agentMetrics}   (the agent's flow counters per policy and enforcement point)\n` : ''}  rules    ip netns exec ${t.nodeNs} nft list table inet ${t.table}
${att && rat ? `  attack   ip netns exec ${att.netns} curl -m 2 http://${rat.ip}:${POD_PORT}/ratings/0   (times out: dropped in the kernel)\n` : ''}
Press Ctrl-C to stop: every namespace, veth, nftables table and process the demo created is removed.
`;
}
