// Transparent interception in real network namespaces: an unmodified client (curl) in one pod
// calls `http://<server-ip>:9080/` and an unmodified server in another pod answers; the rules the
// agent installs inside each pod's namespace send the call through the client's outbound proxy
// and the server's inbound sidecar with mTLS. Skipped where network namespaces are not available.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { TestNode, canUseNetns } from '../testing/netns.js';
import type { TestPod } from '../testing/netns.js';
import { issue, newCa, tempDir } from '../sidecar/test-fixtures.js';
import type { AccessRecord } from '../sidecar/access-log.js';
import { Interception, removeInterception } from './install.js';

const CHILD = fileURLToPath(new URL('./test-child.ts', import.meta.url));
const id = (sa: string): string => `spiffe://cluster.local/ns/default/sa/${sa}`;
const SIDECAR_UID = 1337;
const APP_PORT = 9080;
const INBOUND_PORT = 15006;
const OUT_PORT = 15101;

function curl(
  ns: string,
  args: readonly string[],
): Promise<{ code: number; body: string; exit: number }> {
  return new Promise((resolve) => {
    execFile(
      'ip',
      ['netns', 'exec', ns, 'curl', '-s', '--max-time', '10', '-w', '\n%{http_code}', ...args],
      { timeout: 20_000 },
      (err, stdout) => {
        const i = stdout.lastIndexOf('\n');
        const exit = err && typeof err.code === 'number' ? err.code : 0;
        resolve({ code: Number(stdout.slice(i + 1)), body: stdout.slice(0, i), exit });
      },
    );
  });
}

/** An unmodified cleartext HTTP/2 client (prior knowledge, as gRPC connects) inside a namespace. */
function h2c(
  ns: string,
  url: string,
  headers: Record<string, string>,
): Promise<{ status: number; grpcStatus: string | null; body: string }> {
  const script = `
    const h2 = require('node:http2');
    const s = h2.connect(process.argv[1]);
    s.on('error', (e) => { console.log(JSON.stringify({ error: String(e) })); process.exit(0); });
    const headers = JSON.parse(process.argv[2]);
    const st = s.request(headers, { endStream: headers[':method'] !== 'POST' });
    let out = { status: 0, grpcStatus: null, body: '' };
    st.on('response', (h) => { out.status = h[':status']; out.grpcStatus = h['grpc-status'] ?? null; });
    st.on('trailers', (t) => { out.grpcStatus = t['grpc-status'] ?? out.grpcStatus; });
    st.on('data', (c) => (out.body += c));
    st.on('end', () => { console.log(JSON.stringify(out)); s.close(); });
    if (headers[':method'] === 'POST') st.end(Buffer.alloc(5));
  `;
  return new Promise((resolve, reject) => {
    execFile(
      'ip',
      ['netns', 'exec', ns, process.execPath, '-e', script, url, JSON.stringify(headers)],
      { timeout: 20_000 },
      (err, stdout) => {
        if (err) return reject(new Error(err.message));
        resolve(JSON.parse(stdout) as { status: number; grpcStatus: string | null; body: string });
      },
    );
  });
}

function nft(ns: string, args: readonly string[]): string {
  return execFileSync('ip', ['netns', 'exec', ns, 'nft', ...args], { encoding: 'utf8' });
}

class Child {
  readonly records: AccessRecord[] = [];
  constructor(readonly proc: ChildProcessWithoutNullStreams) {}

  static async start(ns: string, cfgPath: string): Promise<Child> {
    const p = spawn(
      'ip',
      ['netns', 'exec', ns, process.execPath, '--import', 'tsx', CHILD, cfgPath],
      {
        stdio: ['pipe', 'pipe', 'pipe'],
      },
    );
    const c = new Child(p);
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('child did not start')), 30_000);
      let err = '';
      p.stderr.on('data', (d: Buffer) => (err += d.toString()));
      p.on('exit', (code) => reject(new Error(`child exited ${code}: ${err}`)));
      readline.createInterface({ input: p.stdout }).on('line', (line) => {
        const m = JSON.parse(line) as { ready?: boolean; uid?: number } & Partial<AccessRecord>;
        if (m.ready) {
          clearTimeout(t);
          if (m.uid !== SIDECAR_UID) reject(new Error(`child runs as uid ${m.uid}`));
          resolve();
        } else c.records.push(m as AccessRecord);
      });
    });
    return c;
  }

  /** The records of one request id, waiting briefly for the line (written when the response closes). */
  async recordsOf(requestId: string): Promise<AccessRecord[]> {
    for (let i = 0; i < 100; i++) {
      const r = this.records.filter((x) => x.requestId === requestId);
      if (r.length > 0) return r;
      await new Promise((res) => setTimeout(res, 50));
    }
    return [];
  }

  stop(): void {
    this.proc.stdin.end();
    this.proc.kill();
  }
}

describe(
  'transparent interception in network namespaces',
  { timeout: 90_000, skip: !canUseNetns() },
  () => {
    const dir = tempDir('intercept-netns');
    let node: TestNode | undefined;
    let client: TestPod;
    let server: TestPod;
    let outsider: TestPod;
    let serverChild: Child | undefined;
    let clientChild: Child | undefined;
    let clientIc: Interception | undefined;
    let serverIc: Interception | undefined;
    let nodeRulesBefore = '';
    let seq = 0;
    const rid = (): string => `ic-${process.pid}-${++seq}`;

    before(async () => {
      node = new TestNode('ic');
      client = node.addPod(1);
      server = node.addPod(2);
      outsider = node.addPod(3);
      await outsider.start(['t7000']);
      await client.start([]);
      const ca = await newCa(join(dir.path, 'ca'));
      const rv = await issue(ca, id('bookinfo-reviews'));
      const rt = await issue(ca, id('bookinfo-ratings'));
      const ips = {
        'default/reviews-v2': client.ip,
        'default/ratings-v1': server.ip,
        'default/attacker': outsider.ip,
      };
      const write = (name: string, o: Record<string, unknown>): string => {
        const p = join(dir.path, `${name}.json`);
        writeFileSync(p, JSON.stringify(o), { mode: 0o600 });
        return p;
      };
      const common = { uid: SIDECAR_UID, ips, appPort: APP_PORT, sidecarPort: INBOUND_PORT };
      serverChild = await Child.start(
        server.ns,
        write('server', {
          ...common,
          role: 'server',
          endpoint: 'default/ratings-v1',
          destinations: [],
          keyPem: rt.keyPem,
          certPem: rt.certPem,
          chainPem: rt.chainPem,
          bundlePem: rt.bundlePem,
        }),
      );
      clientChild = await Child.start(
        client.ns,
        write('client', {
          ...common,
          role: 'client',
          endpoint: 'default/reviews-v2',
          destinations: [{ ip: server.ip, port: APP_PORT, listenPort: OUT_PORT }],
          keyPem: rv.keyPem,
          certPem: rv.certPem,
          chainPem: rv.chainPem,
          bundlePem: rv.bundlePem,
        }),
      );
      nodeRulesBefore = nft(node.ns, ['list', 'ruleset']);
    });

    after(async () => {
      clientChild?.stop();
      serverChild?.stop();
      await clientIc?.remove().catch(() => undefined);
      await serverIc?.remove().catch(() => undefined);
      node?.destroy();
      dir.cleanup();
    });

    test('without interception the plain call reaches the application directly', async () => {
      const r = await curl(client.ns, [`http://${server.ip}:${APP_PORT}/ratings/1`]);
      assert.equal(r.code, 200, r.body);
      assert.match(r.body, /"xfcc":null/);
      const direct = await client.tcp(outsider.ip, 7000);
      assert.ok(direct.ok, direct.why);
    });

    test('installing touches only the interception table inside each pod', async () => {
      assert.equal(nft(client.ns, ['list', 'ruleset']), '');
      serverIc = await Interception.install(
        { netns: server.ns },
        {
          inbound: [{ appPort: APP_PORT, sidecarPort: INBOUND_PORT }],
          outbound: [],
          sidecarUid: SIDECAR_UID,
          otherOutbound: 'pass',
        },
      );
      clientIc = await Interception.install(
        { netns: client.ns },
        {
          inbound: [],
          outbound: [{ ip: server.ip, port: APP_PORT, sidecarPort: OUT_PORT }],
          sidecarUid: SIDECAR_UID,
          otherOutbound: 'reject',
        },
      );
      for (const ns of [client.ns, server.ns])
        assert.equal(nft(ns, ['list', 'tables']).trim(), 'table inet palisade_intercept');
      assert.equal(nft(node?.ns ?? '', ['list', 'ruleset']), nodeRulesBefore);
      assert.equal(nft(outsider.ns, ['list', 'ruleset']), '');
    });

    test("the client's plain http:// call goes through both sidecars with mTLS: the server sidecar sees the client's SPIFFE identity", async () => {
      const req = rid();
      const r = await curl(client.ns, [
        '-H',
        `x-request-id: ${req}`,
        `http://${server.ip}:${APP_PORT}/ratings/1`,
      ]);
      assert.equal(r.code, 200, r.body);
      assert.match(r.body, /"app":true/);
      assert.match(
        r.body,
        /"xfcc":"URI=spiffe:\/\/cluster.local\/ns\/default\/sa\/bookinfo-reviews"/,
      );
      // The application is reached from loopback (the sidecar), not from the client pod.
      assert.match(r.body, /"from":"(::ffff:)?127\.0\.0\.1"/);
      const [inb] = await serverChild!.recordsOf(req);
      assert.equal(inb?.side, 'inbound');
      assert.equal(inb?.verdict, 'allow');
      assert.equal(inb?.source.identity, id('bookinfo-reviews'));
      assert.equal(inb?.source.ip, client.ip);
      const outb = await clientChild!.recordsOf(req);
      assert.equal(outb.length, 1, 'the outbound proxy judged the request exactly once (no loop)');
      assert.equal(outb[0]?.destination.endpoint, 'default/ratings-v1');
    });

    test('a path the policy denies is answered 403 by the server sidecar', async () => {
      const req = rid();
      const r = await curl(client.ns, [
        '-X',
        'POST',
        '-H',
        `x-request-id: ${req}`,
        `http://${server.ip}:${APP_PORT}/ratings/1`,
      ]);
      assert.equal(r.code, 403, r.body);
      assert.match(r.body, /ratings-readers-get-only rule 1/);
      const [inb] = await serverChild!.recordsOf(req);
      assert.equal(inb?.verdict, 'deny');
      assert.equal(inb?.source.identity, id('bookinfo-reviews'));
    });

    test("the sidecar's own connections pass the uid exemption and are not redirected again", () => {
      const out = nft(client.ns, ['list', 'chain', 'inet', 'palisade_intercept', 'output']);
      const m = /meta skuid 1337 counter packets (\d+)/.exec(out);
      assert.ok(m && Number(m[1]) > 0, out);
      // Every outbound record is one request the client made; none is the proxy calling itself.
      const ids = clientChild!.records.map((x) => x.requestId);
      assert.equal(new Set(ids).size, ids.length);
    });

    test('an unmodified cleartext HTTP/2 client goes through both sidecars too (h2c → HTTP/2 over mTLS → HTTP/1.1 application)', async () => {
      const req = rid();
      const r = await h2c(client.ns, `http://${server.ip}:${APP_PORT}`, {
        ':method': 'GET',
        ':path': '/ratings/1',
        'x-request-id': req,
      });
      assert.equal(r.status, 200, r.body);
      assert.match(
        r.body,
        /"xfcc":"URI=spiffe:\/\/cluster.local\/ns\/default\/sa\/bookinfo-reviews"/,
      );
      const [inb] = await serverChild!.recordsOf(req);
      assert.equal(inb?.source.identity, id('bookinfo-reviews'));
    });

    test('a gRPC call the server policy denies comes back to the unmodified client as grpc-status 7', async () => {
      const r = await h2c(client.ns, `http://${server.ip}:${APP_PORT}`, {
        ':method': 'POST',
        ':path': '/palisade.test.Ratings/Delete',
        'content-type': 'application/grpc',
        te: 'trailers',
      });
      assert.equal(r.status, 200);
      assert.equal(r.grpcStatus, '7');
    });

    test('a plaintext caller from a pod without a sidecar is redirected into the inbound sidecar and judged', async () => {
      const req = rid();
      const r = await curl(outsider.ns, [
        '-H',
        `x-request-id: ${req}`,
        `http://${server.ip}:${APP_PORT}/ratings/1`,
      ]);
      assert.equal(r.code, 403, r.body);
      const [inb] = await serverChild!.recordsOf(req);
      assert.equal(inb?.source.ip, outsider.ip);
      assert.equal(inb?.source.identity, null);
    });

    test('outbound TCP to a destination not in the map is reset (otherOutbound: reject)', async () => {
      const r = await client.tcp(outsider.ip, 7000);
      assert.equal(r.ok, false);
      const out = nft(client.ns, ['list', 'chain', 'inet', 'palisade_intercept', 'output']);
      assert.match(out, /reject with tcp reset comment "not a known destination"/);
      assert.ok(Number(/counter packets (\d+) bytes \d+ reject/.exec(out)?.[1] ?? 0) > 0, out);
    });

    test('resync repairs a table deleted by hand', async () => {
      nft(client.ns, ['delete', 'table', 'inet', 'palisade_intercept']);
      const rep = await clientIc!.resync();
      assert.deepEqual(rep, { drift: true, repaired: true });
      const r = await curl(client.ns, [`http://${server.ip}:${APP_PORT}/ratings/1`]);
      assert.match(r.body, /"xfcc":"URI=spiffe/);
    });

    test('removing interception restores direct traffic and leaves the pods without rules', async () => {
      await clientIc!.remove();
      await removeInterception({ netns: server.ns });
      const before = serverChild!.records.length;
      const r = await curl(client.ns, [`http://${server.ip}:${APP_PORT}/ratings/1`]);
      assert.equal(r.code, 200, r.body);
      assert.match(r.body, /"xfcc":null/);
      assert.match(r.body, new RegExp(`"from":"(::ffff:)?${client.ip.replace(/\./g, '\\.')}"`));
      assert.equal(serverChild!.records.length, before);
      const direct = await client.tcp(outsider.ip, 7000);
      assert.ok(direct.ok, direct.why);
      for (const ns of [client.ns, server.ns]) assert.equal(nft(ns, ['list', 'ruleset']), '');
      assert.equal(nft(node?.ns ?? '', ['list', 'ruleset']), nodeRulesBefore);
    });
  },
);
