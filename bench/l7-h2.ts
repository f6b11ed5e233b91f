// `npm run bench -- l7-h2 [--quick]`: request latency through the inbound sidecar, HTTP/1.1
// against HTTP/2, each against the same application reached directly. One client, one
// keep-alive connection (or one HTTP/2 session), sequential requests (latency, not throughput),
// then the same with 16 requests in flight (throughput). Real mTLS with SVIDs from a real CA,
// bookinfo policies, reviews → ratings on loopback addresses; the application answers a small
// JSON body. All in this one process (client, sidecar and application share the CPU).

import { connect as h2connect, createServer as createH2Server } from 'node:http2';
import type { ClientHttp2Session } from 'node:http2';
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { certificateChainPem } from '@palisade/pki';
import { InboundSidecar } from '../packages/dataplane/src/sidecar/inbound.js';
import { PolicyView, PolicyViewHolder } from '../packages/dataplane/src/sidecar/policy-view.js';
import {
  bookinfo,
  echoApp,
  issue,
  loopbackPrefix,
  newCa,
  tempDir,
} from '../packages/dataplane/src/sidecar/test-fixtures.js';

const TD = 'cluster.local';
const id = (sa: string): string => `spiffe://${TD}/ns/default/sa/${sa}`;

type Send = () => Promise<number>;

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

async function measure(
  send: Send,
  n: number,
  warm: number,
  inflight: number,
): Promise<{ p50: number; p99: number; rps: number }> {
  for (let i = 0; i < warm; i++) await send();
  const lat: number[] = [];
  let next = 0;
  const t0 = performance.now();
  const worker = async (): Promise<void> => {
    while (next < n) {
      next++;
      const s = performance.now();
      const status = await send();
      if (status !== 200) throw new Error(`status ${status}`);
      lat.push(performance.now() - s);
    }
  };
  await Promise.all(Array.from({ length: inflight }, worker));
  const secs = (performance.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  const r = (x: number): number => Math.round(x * 1000) / 1000;
  return { p50: r(pct(lat, 50)), p99: r(pct(lat, 99)), rps: Math.round(n / secs) };
}

function h1(
  agent: HttpAgent | HttpsAgent,
  tls: boolean,
  host: string,
  port: number,
  from: string,
): Send {
  const req = tls ? httpsRequest : httpRequest;
  return () =>
    new Promise((resolve, reject) => {
      const r = req({ host, port, path: '/ratings/1', agent, localAddress: from }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      r.on('error', reject);
      r.end();
    });
}

function h2(session: ClientHttp2Session): Send {
  return () =>
    new Promise((resolve, reject) => {
      const s = session.request({ ':method': 'GET', ':path': '/ratings/1' });
      let status = 0;
      s.on('response', (h) => (status = Number(h[':status'])));
      s.on('error', reject);
      s.resume();
      s.on('end', () => resolve(status));
    });
}

export async function runL7H2Bench(
  quick: boolean,
  log: (s: string) => void,
): Promise<Record<string, unknown>> {
  const N = quick ? 1500 : 6000;
  const WARM = quick ? 200 : 500;
  const P = loopbackPrefix();
  const REVIEWS = `${P}.22`;
  const RATINGS = `${P}.24`;
  const dir = tempDir('bench-l7h2');
  const closers: (() => Promise<void> | void)[] = [];
  try {
    const ca = await newCa(join(dir.path, 'ca'), TD);
    const reviews = await issue(ca, id('bookinfo-reviews'));
    const ratings = await issue(ca, id('bookinfo-ratings'));
    const v = PolicyView.fromResources(
      bookinfo({ 'default/reviews-v2': REVIEWS, 'default/ratings-v1': RATINGS }),
      'default/ratings-v1',
      1,
    );
    if (!v.ok) throw new Error(v.reason);
    const holder = new PolicyViewHolder(v.view);
    const app1 = await echoApp();
    closers.push(() => new Promise<void>((r) => app1.server.close(() => r())));
    const app2 = createH2Server((req, res) => {
      req.resume();
      req.on('end', () => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ method: req.method, url: req.url }));
      });
    });
    await new Promise<void>((r) => app2.listen(0, '127.0.0.1', r));
    closers.push(() => new Promise<void>((r) => app2.close(() => r())));
    const app2Port = (app2.address() as AddressInfo).port;
    const common = {
      listenHost: RATINGS,
      listenPort: 0,
      podPort: 9080,
      svid: ratings,
      trustBundlePem: reviews.bundlePem,
      policy: holder,
    };
    const toH1 = new InboundSidecar({ ...common, appPort: app1.port });
    const toH2c = new InboundSidecar({ ...common, appPort: app2Port, appProtocol: 'h2c' });
    const pH1 = (await toH1.start()).port;
    const pH2c = (await toH2c.start()).port;
    closers.push(
      () => toH1.close(),
      () => toH2c.close(),
    );

    const tlsClient = {
      key: reviews.keyPem,
      cert: certificateChainPem(reviews),
      ca: reviews.bundlePem,
      servername: 'ratings',
      checkServerIdentity: () => undefined,
    };
    const plainAgent = new HttpAgent({ keepAlive: true, maxSockets: 1 });
    const tlsAgent = new HttpsAgent({ keepAlive: true, maxSockets: 1, ...tlsClient });
    closers.push(
      () => plainAgent.destroy(),
      () => tlsAgent.destroy(),
    );
    const session = async (url: string, tls: boolean): Promise<ClientHttp2Session> => {
      const s = h2connect(url, {
        ...(tls ? tlsClient : {}),
        ...({ localAddress: REVIEWS } as object),
      });
      closers.push(() => void s.close());
      await new Promise<void>((resolve, reject) => {
        s.once('connect', () => resolve());
        s.once('error', reject);
      });
      return s;
    };
    // Sessions are opened right before their mode runs (the sidecar closes idle sessions).
    const lazy = (url: string, tls: boolean): Send => {
      let s: Promise<ClientHttp2Session> | undefined;
      return async () => h2(await (s ??= session(url, tls)))();
    };
    const modes: Record<string, Send> = {
      'http1 direct': h1(plainAgent, false, '127.0.0.1', app1.port, '127.0.0.1'),
      'http1 via sidecar (mTLS)': h1(tlsAgent, true, RATINGS, pH1, REVIEWS),
      'h2c direct': lazy(`http://127.0.0.1:${app2Port}`, false),
      'h2 via sidecar (mTLS) -> http1 app': lazy(`https://${RATINGS}:${pH1}`, true),
      'h2 via sidecar (mTLS) -> h2c app': lazy(`https://${RATINGS}:${pH2c}`, true),
    };
    const results: Record<string, unknown> = {};
    log(`l7-h2: ${N} requests per mode after ${WARM} warm-up, latency in ms`);
    log(
      'mode                                   | seq p50 | seq p99 | 16-inflight p50 | p99    | rps',
    );
    for (const [name, send] of Object.entries(modes)) {
      const seq = await measure(send, N, WARM, 1);
      // HTTP/1.1 over one keep-alive socket serialises; 16 in flight queue on it.
      const par = await measure(send, N, 0, 16);
      results[name] = { sequential: seq, inflight16: par };
      log(
        `${name.padEnd(38)} | ${String(seq.p50).padStart(7)} | ${String(seq.p99).padStart(7)} | ${String(par.p50).padStart(15)} | ${String(par.p99).padStart(6)} | ${par.rps}`,
      );
    }
    return { requests: N, connections: 1, results };
  } finally {
    for (const c of closers.reverse()) await c();
    dir.cleanup();
  }
}
