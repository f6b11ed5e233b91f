// The L7 reporter a sidecar runs: decisions go to the agent's unix socket in reports; while the
// agent is away they are kept (bounded) and the overflow is counted, the counts ride with the
// next report and are cleared only once the agent took them; a report the agent refuses as
// malformed is counted, not retried forever; with reporting off it only counts for /metrics.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { AccessRecord } from '../sidecar/access-log.js';
import type { L7Report } from './l7-report.js';
import { L7FlowReporter } from './l7-reporter.js';

let dir: string;
let server: Server;
let socketPath: string;
let answer = 200;
const got: { path: string; report: L7Report }[] = [];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), `palisade-l7rep-${process.pid}-`));
  socketPath = join(dir, 'agent.sock');
  server = createServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d.toString()));
    req.on('end', () => {
      if (answer === 200) got.push({ path: req.url ?? '', report: JSON.parse(body) as L7Report });
      res.writeHead(answer, { 'content-type': 'application/json' });
      res.end('{}');
    });
  });
  await new Promise<void>((r) => server.listen(socketPath, r));
});
after(async () => {
  await new Promise<void>((r) => server.close(() => r()));
  rmSync(dir, { recursive: true, force: true });
});

function rec(i: number, over: Partial<AccessRecord> = {}): AccessRecord {
  return {
    time: new Date().toISOString(),
    requestId: `r${i}`,
    side: 'inbound',
    stage: 'request',
    source: { ip: '10.3.0.2', identity: null },
    destination: { endpoint: 'shop/web', port: 8080 },
    method: 'GET',
    path: `/item/${i}`,
    verdict: i % 2 === 0 ? 'allow' : 'deny',
    status: i % 2 === 0 ? 200 : 403,
    provenance: { kind: 'rule', policy: 'shop/web-readers', rule: 0, reason: 'r' },
    policyVersion: 1,
    latencyMs: 0,
    ...over,
  };
}

test('decisions go to the endpoint route of the agent socket; while the agent is away they are kept and the overflow is counted', async () => {
  got.length = 0;
  const r = new L7FlowReporter({ socketPath, endpoint: 'shop/web', maxQueued: 5 });
  answer = 503;
  for (let i = 0; i < 8; i++) r.record(rec(i));
  r.record(rec(99, { source: { ip: 'unknown', identity: null } }));
  await r.flush();
  assert.equal(r.status().queued, 5);
  assert.deepEqual(r.status().shed, { 'buffer-full': 3, parse: 1 });
  assert.ok(r.status().failures >= 1);
  answer = 200;
  await r.flush();
  assert.equal(got.length, 1);
  assert.equal(got[0]?.path, '/v1/flows/endpoints/shop/web');
  assert.equal(got[0]?.report.records.length, 5);
  assert.deepEqual(
    [...(got[0]?.report.shed ?? [])].sort((a, b) => a.reason.localeCompare(b.reason)),
    [
      { reason: 'buffer-full', count: 3 },
      { reason: 'parse', count: 1 },
    ],
  );
  // Taken: the counts are not sent again.
  r.record(rec(10));
  await r.flush();
  assert.equal(got.length, 2);
  assert.equal(got[1]?.report.shed, undefined);
  const m = r.metricsText();
  assert.match(
    m,
    /palisade_sidecar_flows_total\{point="l7",verdict="deny",policy="shop\/web-readers"\} 5/,
  );
  assert.match(m, /palisade_sidecar_flows_shed_total\{point="l7",reason="buffer-full"\} 3/);
  assert.match(m, /palisade_sidecar_flow_records_reported_total 6/);
});

test('a report the agent refuses as malformed is counted and dropped, not retried forever', async () => {
  got.length = 0;
  const r = new L7FlowReporter({ socketPath, endpoint: 'shop/web' });
  answer = 422;
  r.record(rec(1));
  r.record(rec(2));
  await r.flush();
  assert.equal(r.status().queued, 0);
  assert.equal(r.status().shed['parse'], 2);
  answer = 200;
  await r.flush();
  assert.deepEqual(got[0]?.report, { records: [], shed: [{ reason: 'parse', count: 2 }] });
});

test('with reporting off, decisions are only counted', async () => {
  got.length = 0;
  const r = new L7FlowReporter({ socketPath, endpoint: 'shop/web', report: false });
  r.start();
  for (let i = 0; i < 4; i++) r.record(rec(i));
  await r.stop();
  assert.equal(got.length, 0);
  assert.equal(r.status().queued, 0);
  assert.match(r.metricsText(), /verdict="allow",policy="shop\/web-readers"\} 2/);
});
