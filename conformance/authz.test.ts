// The policy corpus against the Envoy ext_authz server: every probe whose destination has an L7
// point is sent as a CheckRequest over a real gRPC connection on loopback, built from the
// repository's proto, to one authz-server that holds the case's policy (each case is a new
// snapshot, so the update path is exercised too). The answer must be the engine's inbound L7
// verdict for the same request, and must agree with the corpus expectations.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { formatIp } from '../packages/core/src/net/ip.js';
import { loadText } from '../packages/core/src/load/load.js';
import { compile } from '../packages/core/src/engine/engine.js';
import { AuthzServer } from '../packages/dataplane/src/authz/server.js';
import { PushSource } from '../packages/dataplane/src/authz/source.js';
import { RPC_CODE } from '../packages/dataplane/src/authz/proto.js';
import {
  checkClient,
  checkRequest,
  metadataField,
} from '../packages/dataplane/src/authz/test-client.js';
import type { CheckClient } from '../packages/dataplane/src/authz/test-client.js';
import { inboundVerdict } from './l7-inbound.js';
import { loadPolicyCorpus } from './policy-corpus.js';

const corpus = loadPolicyCorpus();
const source = new PushSource();
let server: AuthzServer;
let client: CheckClient;
let version = 0;

before(async () => {
  server = new AuthzServer({ source, listener: { kind: 'plaintext' } });
  const port = await server.start('127.0.0.1:0');
  client = checkClient(`127.0.0.1:${port}`);
});
after(async () => {
  client.close();
  await server.close(1000);
});

test('policy corpus through ext_authz: every L7 probe answered over gRPC as the engine and the corpus say', async (t) => {
  let sent = 0;
  let http = 0;
  let skipped = 0;
  const failures: string[] = [];
  for (const c of corpus) {
    if (c.knownEngineGap) continue;
    const loaded = loadText(c.resources, c.file);
    if (loaded.diagnostics.some((d) => d.severity === 'error')) continue;
    const engine = compile(loaded.resources);
    source.push({ version: ++version, resources: loaded.resources });
    for (const p of c.probes) {
      const { expect, l7: l7expect, decidedBy, ...rest } = p;
      const { kernel, ...probe } = rest;
      void kernel;
      const dst = engine.describeEndpoint(probe.to);
      const proto = String(probe.protocol ?? 'TCP').toUpperCase();
      const src = engine.describeEndpoint(probe.from)?.ips[0];
      const srcIp = src
        ? formatIp(src)
        : /^[0-9a-f:.]+$/i.test(probe.from)
          ? probe.from
          : undefined;
      if (
        !dst ||
        dst.kind !== 'workload' ||
        !dst.l7 ||
        dst.serviceAccount === undefined ||
        dst.ips.length === 0 ||
        proto !== 'TCP' ||
        probe.port === undefined ||
        srcIp === undefined ||
        probe.sni !== undefined ||
        probe.remoteIp !== undefined ||
        probe.http2 === true
      ) {
        skipped++;
        continue;
      }
      const isHttp =
        probe.method !== undefined ||
        probe.path !== undefined ||
        probe.host !== undefined ||
        probe.headers !== undefined;
      // Envoy only asks about HTTP requests: a plain connection is asked as GET /.
      const asked = { ...probe, method: probe.method ?? 'GET', path: probe.path ?? '/' };
      const r = engine.check(asked, false);
      assert.ok(r.ok, `${c.name}: ${r.ok ? '' : r.message}`);
      const expected = inboundVerdict(r.result);
      const dstIp = formatIp(dst.ips[0] ?? { family: 4, value: 0n });
      const res = await client.check(
        checkRequest({
          sourceIp: srcIp,
          principal: r.result.l7.principal ?? '',
          destinationIp: dstIp,
          port: probe.port,
          method: asked.method,
          path: asked.path,
          ...(probe.host !== undefined ? { host: probe.host } : {}),
          ...(probe.headers !== undefined
            ? {
                headers: Object.fromEntries(
                  Object.entries(probe.headers).map(([k, v]) => [k.toLowerCase(), v]),
                ),
              }
            : {}),
        }),
      );
      sent++;
      const got = res.status.code === RPC_CODE.OK ? 'allow' : 'deny';
      const where = `${c.file}: ${c.name}: ${JSON.stringify(probe)}`;
      if (got !== expected)
        failures.push(
          `${where}: engine ${expected}, ext_authz ${got} (${String(metadataField(res, 'reason'))})`,
        );
      if (!isHttp) continue;
      http++;
      // The corpus' own expectations: an allowed request passed every L7 check; an L7 refusal
      // at the destination (not at the source's egress) is a refusal here.
      if (expect === 'allow' && got !== 'allow')
        failures.push(`${where}: corpus allows, ext_authz denies`);
      const egressOk = r.result.l7.egress === undefined || r.result.l7.egress.verdict === 'allow';
      if (
        l7expect === 'deny' &&
        egressOk &&
        r.result.kernel.ingress.verdict === 'allow' &&
        got !== 'deny'
      )
        failures.push(`${where}: corpus denies at L7, ext_authz allows`);
      if (decidedBy?.point === 'l7' && decidedBy.policy && got === 'deny' && egressOk) {
        const pol = metadataField(res, 'policy');
        if (pol !== decidedBy.policy)
          failures.push(`${where}: decided by ${String(pol)}, corpus says ${decidedBy.policy}`);
      }
    }
  }
  t.diagnostic(
    `${sent} probes sent over gRPC (${http} HTTP), ${skipped} without an L7 destination`,
  );
  assert.deepEqual(failures.slice(0, 10), [], `${failures.length} disagreement(s)`);
  assert.ok(
    sent >= 150 && http >= 40,
    `only ${sent} probes (${http} HTTP) reached ext_authz; ${skipped} skipped`,
  );
});
