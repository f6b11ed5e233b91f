// `npm run bench -- authz [--quick]`: Envoy ext_authz decisions over a real gRPC connection on
// loopback — Check RPCs per second and p50/p99 latency, with 32 calls in flight and one at a time,
// for the Palisade server (bookinfo policy; a mix of allowed, denied and stolen-certificate
// requests) side by side with a no-op server on the same proto and gRPC stack. Each server runs
// in its own process; the load generator in this one.

import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { AuthzServer } from '../packages/dataplane/src/authz/server.js';
import { PushSource, readResourceFiles } from '../packages/dataplane/src/authz/source.js';
import { checkClient, checkRequest } from '../packages/dataplane/src/authz/test-client.js';
import type { CheckClient } from '../packages/dataplane/src/authz/test-client.js';
import type { CheckRequestMsg } from '../packages/dataplane/src/authz/proto.js';

const SA = (s: string): string => `spiffe://cluster.local/ns/default/sa/${s}`;
const REQUESTS: CheckRequestMsg[] = [
  checkRequest({
    sourceIp: '10.244.0.14',
    principal: SA('bookinfo-reviews'),
    destinationIp: '10.244.0.16',
    port: 9080,
    path: '/ratings/1',
  }),
  checkRequest({
    sourceIp: '10.244.0.14',
    principal: SA('bookinfo-reviews'),
    destinationIp: '10.244.0.16',
    port: 9080,
    method: 'POST',
    path: '/ratings/1',
  }),
  checkRequest({
    sourceIp: '10.244.0.11',
    principal: SA('bookinfo-productpage'),
    destinationIp: '10.244.0.12',
    port: 9080,
    path: '/details/0',
  }),
  checkRequest({
    sourceIp: '10.244.0.17',
    principal: SA('bookinfo-reviews'),
    destinationIp: '10.244.0.16',
    port: 9080,
    path: '/ratings/1',
  }),
];

interface Run {
  readonly rate: number;
  readonly p50: number;
  readonly p99: number;
  readonly calls: number;
}

function pct(sorted: readonly number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))] ?? NaN;
}

async function load(client: CheckClient, concurrency: number, ms: number): Promise<Run> {
  const lat: number[] = [];
  let i = 0;
  const end = Date.now() + ms;
  const t0 = process.hrtime.bigint();
  const worker = async (): Promise<void> => {
    while (Date.now() < end) {
      const req = REQUESTS[i++ % REQUESTS.length] as CheckRequestMsg;
      const s = process.hrtime.bigint();
      await client.check(req);
      lat.push(Number(process.hrtime.bigint() - s) / 1e6);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, () => worker()));
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  lat.sort((a, b) => a - b);
  return { rate: lat.length / secs, p50: pct(lat, 50), p99: pct(lat, 99), calls: lat.length };
}

async function server(
  mode: 'palisade' | 'noop',
): Promise<{ port: number; stop: () => Promise<void> }> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', join(import.meta.dirname, 'authz-child.ts'), mode],
    {
      stdio: ['pipe', 'pipe', 'inherit'],
    },
  );
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    const t = setTimeout(() => reject(new Error(`${mode} server did not start`)), 60_000);
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /PORT (\d+)/.exec(out);
      if (m) {
        clearTimeout(t);
        resolve(Number(m[1]));
      }
    });
    child.on('exit', (c) => reject(new Error(`${mode} server exited with ${String(c)}`)));
  });
  return {
    port,
    stop: () =>
      new Promise<void>((resolve) => {
        const t = setTimeout(() => child.kill('SIGKILL'), 5000);
        child.on('exit', () => {
          clearTimeout(t);
          resolve();
        });
        child.stdin.end();
      }),
  };
}

/**
 * CPU time of one decision in this process, without gRPC (process.cpuUsage counts only the CPU
 * this process used, so a busy machine skews it far less than wall-clock figures).
 */
function cpuPerDecisionUs(n: number): number {
  const files = readResourceFiles([join(import.meta.dirname, '..', 'examples', 'bookinfo')]);
  if (files.errors.length > 0) throw new Error(files.errors[0]);
  const server = new AuthzServer({ source: new PushSource() });
  server.views.apply({ version: 1, resources: files.resources });
  for (let i = 0; i < 200; i++) server.check(REQUESTS[i % REQUESTS.length] as CheckRequestMsg);
  const c0 = process.cpuUsage();
  for (let i = 0; i < n; i++) server.check(REQUESTS[i % REQUESTS.length] as CheckRequestMsg);
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / n;
}

const f = (n: number, d = 2): string => (Number.isFinite(n) ? n.toFixed(d) : '-');

export async function runAuthzBench(
  quick: boolean,
  log: (s: string) => void,
): Promise<Record<string, unknown>> {
  const ms = quick ? 4000 : 15_000;
  const cpuUs = cpuPerDecisionUs(quick ? 2000 : 10_000);
  log(`  one decision in process (no gRPC): ${cpuUs.toFixed(0)} µs of CPU`);
  const results: Record<string, { conc: Run; seq: Run }> = {};
  for (const mode of ['noop', 'palisade'] as const) {
    const s = await server(mode);
    const client = checkClient(`127.0.0.1:${s.port}`);
    try {
      await load(client, 8, quick ? 800 : 2000); // warm-up: connection, JIT, views
      const conc = await load(client, 32, ms);
      const seq = await load(client, 1, Math.round(ms / 2));
      results[mode] = { conc, seq };
      log(`  ${mode}: ${conc.calls} calls with 32 in flight, ${seq.calls} one at a time`);
    } finally {
      client.close();
      await s.stop();
    }
  }
  const p = results['palisade'];
  const n = results['noop'];
  if (!p || !n) throw new Error('a run is missing');
  log('');
  log(
    `${'ext_authz Check over gRPC (loopback)'.padEnd(40)}${'no-op'.padStart(12)}${'palisade'.padStart(12)}`,
  );
  log(
    `${'decisions/s, 32 in flight'.padEnd(40)}${f(n.conc.rate, 0).padStart(12)}${f(p.conc.rate, 0).padStart(12)}`,
  );
  log(
    `${'p50 ms, 32 in flight'.padEnd(40)}${f(n.conc.p50).padStart(12)}${f(p.conc.p50).padStart(12)}`,
  );
  log(
    `${'p99 ms, 32 in flight'.padEnd(40)}${f(n.conc.p99).padStart(12)}${f(p.conc.p99).padStart(12)}`,
  );
  log(
    `${'decisions/s, 1 in flight'.padEnd(40)}${f(n.seq.rate, 0).padStart(12)}${f(p.seq.rate, 0).padStart(12)}`,
  );
  log(
    `${'p50 ms, 1 in flight'.padEnd(40)}${f(n.seq.p50).padStart(12)}${f(p.seq.p50).padStart(12)}`,
  );
  log(
    `${'p99 ms, 1 in flight'.padEnd(40)}${f(n.seq.p99).padStart(12)}${f(p.seq.p99).padStart(12)}`,
  );
  const r3 = (x: number): number => Math.round(x * 1000) / 1000;
  return {
    extauthz_decisions_per_s: Math.round(p.conc.rate),
    extauthz_p50_ms: r3(p.conc.p50),
    extauthz_p99_ms: r3(p.conc.p99),
    extauthz_seq_p50_ms: r3(p.seq.p50),
    extauthz_seq_p99_ms: r3(p.seq.p99),
    noop_decisions_per_s: Math.round(n.conc.rate),
    noop_p50_ms: r3(n.conc.p50),
    noop_p99_ms: r3(n.conc.p99),
    noop_seq_p50_ms: r3(n.seq.p50),
    noop_seq_p99_ms: r3(n.seq.p99),
    in_flight: 32,
    extauthz_cpu_us_per_decision: Math.round(cpuUs),
  };
}
