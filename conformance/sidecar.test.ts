// The policy conformance corpus judged by the sidecar's own decision path instead of the engine's
// `check`: for every HTTP probe whose destination has an L7 enforcement point, the destination's
// PolicyView is built as the sidecar builds it and the request goes through the steps
// InboundSidecar takes per request (PeerAuthentication for plaintext, the request target check,
// decideInbound); the source's own sidecar (decideOutbound) judges its egress when the source
// has one. The kernel is not the sidecar's: its verdict comes from the engine and is only
// combined with the sidecar's, never compared. Probes the sidecar cannot see (no HTTP, no L7
// point at the destination, attributes a sidecar does not take from the wire) are counted as not
// applicable, each with its reason, and reported.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { loadText } from '../packages/core/src/load/load.js';
import { compile } from '../packages/core/src/engine/engine.js';
import type { Engine } from '../packages/core/src/engine/engine.js';
import { formatIp } from '../packages/core/src/net/ip.js';
import type { Resource } from '../packages/core/src/model/resources.js';
import { PolicyView } from '../packages/dataplane/src/sidecar/policy-view.js';
import type { SidecarDecision } from '../packages/dataplane/src/sidecar/policy-view.js';
import { checkRequestPath } from '../packages/dataplane/src/sidecar/request.js';
import { loadPolicyCorpus } from './policy-corpus.js';
import type { CorpusProbe } from './policy-corpus.js';

const corpus = loadPolicyCorpus();

const stats = {
  probes: 0,
  judged: 0,
  /** Judged, and the kernel let it through: the sidecars alone decided the corpus verdict. */
  decidedBySidecar: 0,
  notApplicable: new Map<string, number>(),
};

function notApplicable(reason: string): void {
  stats.notApplicable.set(reason, (stats.notApplicable.get(reason) ?? 0) + 1);
}

/** The address a probe's source connects from, as the destination sidecar sees it. */
function sourceAddress(engine: Engine, from: string): string | undefined {
  const ep = engine.describeEndpoint(from);
  if (ep) {
    const ip = ep.ips[0];
    return ip ? formatIp(ip) : undefined;
  }
  // An address outside every endpoint is still an address a connection can come from.
  return /^[0-9.]+$|:/.test(from) ? from : undefined;
}

function deny(reason: string): SidecarDecision {
  return { verdict: 'deny', provenance: { point: 'l7', kind: 'unmanaged', reason } };
}

/**
 * The L7 outcome of one probe through the sidecars, or why they cannot judge it. Mirrors
 * InboundSidecar#onPlaintext / #onRequest and OutboundProxy's egress decision step by step.
 */
function throughSidecars(
  resources: readonly Resource[],
  engine: Engine,
  probe: CorpusProbe,
): { ok: true; decision: SidecarDecision } | { ok: false; reason: string } {
  const isHttp =
    probe.method !== undefined ||
    probe.path !== undefined ||
    probe.host !== undefined ||
    (probe.headers !== undefined && Object.keys(probe.headers).length > 0) ||
    probe.http2 === true;
  if (!isHttp) return { ok: false, reason: 'not an HTTP request (kernel-only probe)' };
  if (probe.protocol !== undefined && String(probe.protocol).toUpperCase() !== 'TCP')
    return { ok: false, reason: 'not TCP' };
  if (probe.port === undefined) return { ok: false, reason: 'no destination port' };
  const dst = engine.describeEndpoint(probe.to);
  if (!dst) return { ok: false, reason: 'destination is not an endpoint' };
  if (dst.kind !== 'workload') return { ok: false, reason: 'destination is a host endpoint' };
  if (!dst.l7) return { ok: false, reason: 'destination has no L7 enforcement point' };
  if (probe.remoteIp !== undefined)
    return { ok: false, reason: 'remoteIp: the sidecar does not trust X-Forwarded-For' };
  if (probe.sni !== undefined)
    return { ok: false, reason: 'sni: the inbound sidecar does not pass the SNI to the policy' };
  const view = PolicyView.fromResources(resources, dst.id, 1);
  if (!view.ok) return { ok: false, reason: `no sidecar view: ${view.reason}` };
  const sourceIp = sourceAddress(engine, probe.from);
  if (!sourceIp) return { ok: false, reason: 'source has no address' };
  const dstIp = dst.ips[0];
  if (!dstIp) return { ok: false, reason: 'destination has no address' };

  // The source's own sidecar: it judges egress and presents the source's SVID.
  const src = engine.describeEndpoint(probe.from);
  let principal: string | null = null;
  let egress: SidecarDecision | undefined;
  if (src?.kind === 'workload' && src.l7) {
    const sv = PolicyView.fromResources(resources, src.id, 1);
    if (sv.ok) {
      principal = sv.view.identity;
      egress = sv.view.decideOutbound({
        destinationIp: formatIp(dstIp),
        port: probe.port,
        method: probe.method ?? 'GET',
        path: probe.path ?? '/',
        host: probe.host,
        headers: probe.headers ?? {},
      });
    }
  }
  // A probe's explicit principal is the certificate the client presents (null: plaintext).
  if (probe.principal !== undefined) principal = probe.principal;

  const v = view.view;
  let inbound: SidecarDecision;
  const plaintext = principal === null ? v.plaintextAllowed(sourceIp, probe.port) : undefined;
  const target = checkRequestPath(probe.path ?? '/');
  if (plaintext?.verdict === 'deny') inbound = plaintext;
  else if (!target.ok) inbound = deny(`request refused (400): ${target.reason}`);
  else {
    const headers: Record<string, string> = {};
    for (const [k, x] of Object.entries(probe.headers ?? {})) headers[k.toLowerCase()] = x;
    inbound = v.decideInbound({
      sourceIp,
      principal,
      port: probe.port,
      method: probe.method ?? 'GET',
      path: target.path,
      host: probe.host ?? headers['host'],
      headers,
    });
  }
  const decision = egress?.verdict === 'deny' ? egress : inbound;
  return { ok: true, decision };
}

for (const c of corpus) {
  test(`sidecar: ${c.file}: ${c.name}`, c.knownEngineGap ? { todo: c.knownEngineGap } : {}, () => {
    const loaded = loadText(c.resources, c.file);
    assert.deepEqual(
      loaded.diagnostics.filter((d) => d.severity === 'error'),
      [],
      'the case resources must load',
    );
    const engine = compile(loaded.resources);
    for (const p of c.probes) {
      stats.probes++;
      const r = throughSidecars(loaded.resources, engine, p);
      if (!r.ok) {
        notApplicable(r.reason);
        continue;
      }
      stats.judged++;
      const { expect, kernel: kernelExpect, l7, decidedBy, ...probe } = p;
      const checked = engine.check(probe);
      assert.ok(checked.ok, checked.ok ? '' : checked.code);
      const k = checked.result.kernel;
      const kernel = k.egress.verdict === 'allow' && k.ingress.verdict === 'allow';
      if (kernel) stats.decidedBySidecar++;
      const why = `probe ${JSON.stringify(probe)}\n  sidecar: ${r.decision.verdict} — ${r.decision.provenance.reason}\n  engine l7: ${checked.result.l7.verdict} — ${checked.result.l7.provenance.reason}\n  rule: ${c.rule}`;
      // The kernel half is the engine's; it must be the one the corpus states, or the
      // combination below would not test the sidecars.
      if (kernelExpect) assert.equal(kernel ? 'allow' : 'deny', kernelExpect, `kernel\n${why}`);
      // The corpus verdict is the kernel's and the sidecars' together.
      assert.equal(
        kernel && r.decision.verdict === 'allow' ? 'allow' : 'deny',
        expect,
        `verdict\n${why}`,
      );
      if (l7) assert.equal(r.decision.verdict, l7, `l7\n${why}`);
      // The same question asked of `check` at L7: the sidecars answer as the engine does.
      assert.equal(r.decision.verdict, checked.result.l7.verdict, `agreement with check\n${why}`);
      if (decidedBy?.point === 'l7' && kernel && decidedBy.kind)
        assert.equal(r.decision.provenance.kind, decidedBy.kind, `kind\n${why}`);
    }
  });
}

after(() => {
  const na = [...stats.notApplicable.entries()].map(([k, n]) => `${n} ${k}`).join('; ');
  process.stdout.write(
    `# sidecar conformance: ${corpus.length} cases, ${stats.probes} probes: ${stats.judged} judged by the sidecar path (${stats.decidedBySidecar} with the kernel allowing, so decided by the sidecars alone), ${stats.probes - stats.judged} not applicable (${na})\n`,
  );
});

test('sidecar conformance: the corpus reaches the sidecar path (at least 60 HTTP probes judged, every probe counted)', () => {
  assert.ok(stats.judged >= 60, `${stats.judged} judged`);
  const na = [...stats.notApplicable.values()].reduce((a, b) => a + b, 0);
  assert.equal(stats.judged + na, stats.probes);
});
