// The policy corpus against `palisade export envoy-rbac`: for every case destination with an L7
// point, the exported RBAC filter chain, judged by an independent evaluator written from Envoy's
// RBAC matching rules, must let through exactly the requests the engine allows at that L7 point
// — the corpus' own probes and requests generated around them (every endpoint address with its
// own certificate, a stolen one and none, outside addresses, methods and paths from the case).
// Cases whose policy uses a construct the export refuses are counted, not failed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatIp } from '../packages/core/src/net/ip.js';
import { loadText } from '../packages/core/src/load/load.js';
import { compile } from '../packages/core/src/engine/engine.js';
import type { Probe } from '../packages/core/src/engine/types.js';
import { exportEnvoyRbac } from '../packages/dataplane/src/authz/envoy-rbac.js';
import { rbacChainAllows } from '../packages/dataplane/src/authz/rbac-reference.js';
import { inboundVerdict } from './l7-inbound.js';
import { loadPolicyCorpus } from './policy-corpus.js';

const corpus = loadPolicyCorpus();

test('policy corpus through export envoy-rbac: the exported filters allow exactly what the engine allows', (t) => {
  let exported = 0;
  let refused = 0;
  let judged = 0;
  const refusals = new Set<string>();
  const failures: string[] = [];
  for (const c of corpus) {
    if (c.knownEngineGap) continue;
    const loaded = loadText(c.resources, c.file);
    if (loaded.diagnostics.some((d) => d.severity === 'error')) continue;
    const engine = compile(loaded.resources);
    const endpoints = engine.workloadEndpoints();
    const destinations = new Map<string, Set<number>>();
    for (const p of c.probes) {
      const d = engine.describeEndpoint(p.to);
      if (!d || d.kind !== 'workload' || !d.l7 || !d.serviceAccount || p.port === undefined)
        continue;
      if (String(p.protocol ?? 'TCP').toUpperCase() !== 'TCP') continue;
      const ports = destinations.get(d.id) ?? new Set<number>();
      ports.add(p.port);
      destinations.set(d.id, ports);
    }
    const methods = new Set(['GET', 'POST']);
    const paths = new Set(['/', '/x', '/x?y=1']);
    const headerSets: Record<string, string>[] = [{}];
    for (const p of c.probes) {
      if (p.method) methods.add(p.method);
      if (p.path) {
        paths.add(p.path);
        paths.add(`${p.path}x`);
        paths.add(`${p.path}?q=1`);
      }
      if (p.headers)
        headerSets.push(
          Object.fromEntries(Object.entries(p.headers).map(([k, v]) => [k.toLowerCase(), v])),
        );
    }
    for (const [to, ports] of destinations) {
      const r = exportEnvoyRbac(loaded.resources, { endpoint: to, ports: [...ports] });
      if (!r.ok) {
        refused++;
        refusals.add(
          r.message
            .replace(/^cannot be expressed as Envoy RBAC: /, '')
            .replace(/ rule \d+.*?:/, ':'),
        );
        continue;
      }
      exported++;
      const sources: { ip: string; principal: string | null }[] = [];
      for (const id of endpoints) {
        const ep = engine.describeEndpoint(id);
        const ip = ep?.ips[0];
        if (!ep || !ip) continue;
        const own =
          ep.serviceAccount && ep.namespace
            ? `spiffe://${engine.trustDomain}/ns/${ep.namespace}/sa/${ep.serviceAccount}`
            : null;
        sources.push({ ip: formatIp(ip), principal: own }, { ip: formatIp(ip), principal: null });
        sources.push({
          ip: formatIp(ip),
          principal: `spiffe://${engine.trustDomain}/ns/other/sa/stolen`,
        });
      }
      for (const ip of ['192.0.2.9', '10.0.0.1', '172.16.3.4', '2001:db8::9'])
        sources.push({ ip, principal: null });
      for (const port of ports)
        for (const s of sources)
          for (const method of methods)
            for (const path of paths)
              for (const headers of headerSets) {
                const probe: Probe = {
                  from: s.ip,
                  to,
                  protocol: 'TCP',
                  port,
                  method,
                  path,
                  headers,
                  principal: s.principal,
                };
                const out = engine.check(probe, false);
                if (!out.ok) continue;
                const expected = inboundVerdict(out.result);
                const got = rbacChainAllows(r.filters, {
                  sourceIp: s.ip,
                  principal: s.principal,
                  destinationPort: port,
                  method,
                  path,
                  headers,
                })
                  ? 'allow'
                  : 'deny';
                judged++;
                if (got !== expected)
                  failures.push(
                    `${c.file}: ${c.name}: ${JSON.stringify(probe)}: engine ${expected}, RBAC ${got}`,
                  );
              }
    }
  }
  t.diagnostic(
    `${exported} exports checked on ${judged} requests; ${refused} refused: ${[...refusals].join('; ')}`,
  );
  assert.deepEqual(failures.slice(0, 10), [], `${failures.length} disagreement(s)`);
  assert.ok(exported >= 100 && judged >= 20_000, `${exported} exports, ${judged} requests`);
});
