// Probe of the sidecar hops in one process (not part of `npm run bench`): the application, an
// InboundSidecar and an OutboundProxy with the bench's 20-rule policy, driven by the bench's load
// generator one connection at a time; prints wall time and this process's CPU per request for
// client → inbound (mTLS) → app and client → outbound → inbound → app.
// `node --import tsx bench/l7-probe.ts [--chunked]` (--chunked: the application answers with
// chunked encoding instead of a content-length).

import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { Session } from 'node:inspector/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Resource } from '@palisade/core';
import { InboundSidecar } from '../packages/dataplane/src/sidecar/inbound.js';
import { OutboundProxy } from '../packages/dataplane/src/sidecar/outbound.js';
import { PolicyView, PolicyViewHolder } from '../packages/dataplane/src/sidecar/policy-view.js';
import {
  bookinfo,
  issue,
  loopbackPrefix,
  newCa,
  tempDir,
} from '../packages/dataplane/src/sidecar/test-fixtures.js';
import { closedLoop } from './l7-load.js';
import { twentyRulePolicy } from './l7.js';

const CHUNKED = process.argv.includes('--chunked');
const PROFILE = process.argv.find((a) => a.startsWith('--profile='))?.slice(10);
const HEAP = process.argv.find((a) => a.startsWith('--heap-profile='))?.slice(15);

/** CPU ms per thread of this process (name → ms), from /proc. */
function threadCpu(): Map<string, number> {
  const out = new Map<string, number>();
  for (const t of readdirSync('/proc/self/task')) {
    try {
      const f = readFileSync(`/proc/self/task/${t}/stat`, 'utf8');
      const name = f.slice(f.indexOf('(') + 1, f.lastIndexOf(')'));
      const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
      const ms = (Number(rest[11]) + Number(rest[12])) * 10;
      out.set(`${name}#${t}`, ms);
    } catch {
      // thread gone
    }
  }
  return out;
}
const P = loopbackPrefix();
const REVIEWS = `${P}.32`;
const RATINGS = `${P}.34`;
const id = (sa: string): string => `spiffe://cluster.local/ns/default/sa/${sa}`;
const dir = tempDir('l7-probe');
try {
  const ca = await newCa(join(dir.path, 'ca'));
  const reviews = await issue(ca, id('bookinfo-reviews'));
  const ratings = await issue(ca, id('bookinfo-ratings'));
  const resources = [
    ...bookinfo({ 'default/reviews-v2': REVIEWS, 'default/ratings-v1': RATINGS }),
    twentyRulePolicy() as unknown as Resource,
  ];
  const view = (ep: string): PolicyViewHolder => {
    const v = PolicyView.fromResources(resources, ep, 1);
    if (!v.ok) throw new Error(v.reason);
    return new PolicyViewHolder(v.view);
  };
  const body = JSON.stringify({ id: 1, ratings: { Reviewer1: 5, Reviewer2: 4 } });
  const app = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, {
        'content-type': 'application/json',
        ...(CHUNKED ? {} : { 'content-length': Buffer.byteLength(body) }),
      });
      res.end(body);
    });
  });
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r));
  const appPort = (app.address() as AddressInfo).port;
  const inbound = new InboundSidecar({
    listenHost: RATINGS,
    listenPort: 0,
    appPort,
    podPort: 9080,
    svid: ratings,
    trustBundlePem: reviews.bundlePem,
    policy: view('default/ratings-v1'),
  });
  const inPort = (await inbound.start()).port;
  const proxy = new OutboundProxy({
    listenPort: 0,
    svid: reviews,
    trustBundlePem: reviews.bundlePem,
    policy: view('default/reviews-v2'),
    sourceAddress: REVIEWS,
    upstream: () => ({ host: RATINGS, port: inPort }),
  });
  const outPort = (await proxy.start()).port;
  const t = {
    host: '127.0.0.1',
    port: outPort,
    hostHeader: `${RATINGS}:9080`,
    path: '/ratings/1',
  };
  const direct = { host: '127.0.0.1', port: appPort, hostHeader: 'app', path: '/ratings/1' };
  const only = process.argv.find((a) => a.startsWith('--only='))?.slice(7);
  for (const [name, ka, target] of [
    ['direct keep-alive', true, direct],
    ['keep-alive', true, t],
    ['new connection', false, t],
  ] as const) {
    if (only && !name.startsWith(only)) continue;
    for (const conns of [1, 16]) {
      await closedLoop(target, conns, 500, ka);
      const profiling = PROFILE !== undefined && name === 'keep-alive' && conns === 16;
      const heap = HEAP !== undefined && name === 'keep-alive' && conns === 16;
      const session = new Session();
      if (profiling || heap) session.connect();
      if (profiling) {
        await session.post('Profiler.enable');
        await session.post('Profiler.start');
      }
      if (heap) {
        await session.post('HeapProfiler.enable');
        // Every 1 KiB allocated is sampled, and samples of collected objects are kept: the
        // profile shows where a request allocates, not what survives.
        await session.post('HeapProfiler.startSampling', {
          samplingInterval: 1024,
          includeObjectsCollectedByMajorGC: true,
          includeObjectsCollectedByMinorGC: true,
        });
      }
      const th0 = threadCpu();
      const c0 = process.cpuUsage();
      const s = await closedLoop(target, conns, 3000, ka);
      const c = process.cpuUsage(c0);
      const th1 = threadCpu();
      if (profiling && PROFILE) {
        const { profile } = await session.post('Profiler.stop');
        writeFileSync(PROFILE, JSON.stringify(profile));
      }
      if (heap && HEAP) {
        const { profile } = await session.post('HeapProfiler.stopSampling');
        writeFileSync(HEAP, JSON.stringify({ ...profile, requests: s.requests }));
      }
      if (profiling || heap) session.disconnect();
      const per = [...th1]
        .map(([k, v]) => [k, v - (th0.get(k) ?? 0)] as const)
        .filter(([, v]) => v > 0)
        .map(([k, v]) => `${k} ${Math.round((v * 1000) / Math.max(1, s.requests))}`)
        .join(', ');
      const us = Math.round((c.user + c.system) / Math.max(1, s.requests));
      console.log(
        `${name}, ${conns} conn: ${s.rps} req/s, p50 ${s.p50} p99 ${s.p99} ms, CPU ${us} µs/req (all in this process), errors ${s.errors}; per thread µs/req: ${per}; load ${(await import('node:fs')).readFileSync('/proc/loadavg', 'utf8').trim()}`,
      );
    }
  }
  await proxy.close();
  await inbound.close();
  await new Promise<void>((r) => app.close(() => r()));
} finally {
  dir.cleanup();
}
