// Transparent interception installed by the agent, end to end with real parts: the API server
// (SQLite), the agent (its own table in a node namespace, the interception tables inside the
// pods), its per-endpoint sockets, and `palisade sidecar` processes running under the sidecar
// uid in the ratings and reviews pod namespaces. An unmodified client (curl) in reviews calls
// ratings' address and port; the sidecars announce their listeners and the agent redirects.
// Skipped where network namespaces are not available.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { TestNode, canUseNetns } from '../testing/netns.js';
import type { TestPod } from '../testing/netns.js';
import { endpointSocketPath } from '../agent-socket/protocol.js';
import { SyncWorld, until } from '../sidecar/test-sync-fixture.js';
import type { AccessRecord } from '../sidecar/access-log.js';

const BIN = fileURLToPath(new URL('../../../cli/bin/palisade.js', import.meta.url));
const APP = fileURLToPath(new URL('./test-app.mjs', import.meta.url));
const skip = canUseNetns() ? false : 'needs root and network namespaces';
const NODE = `ian${process.pid}`;
const UID = 1337;
const id = (sa: string): string => `spiffe://cluster.local/ns/default/sa/${sa}`;

/** A process in a pod namespace, its stdout JSON lines and its stderr text lines kept. */
class PodProcess {
  readonly json: Record<string, unknown>[] = [];
  readonly text: string[] = [];
  readonly proc: ChildProcessWithoutNullStreams;

  constructor(ns: string, argv: readonly string[]) {
    this.proc = spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: ['pipe', 'pipe', 'pipe'] });
    readline.createInterface({ input: this.proc.stdout }).on('line', (l) => {
      try {
        this.json.push(JSON.parse(l) as Record<string, unknown>);
      } catch {
        this.text.push(l);
      }
    });
    readline.createInterface({ input: this.proc.stderr }).on('line', (l) => this.text.push(l));
  }

  get alive(): boolean {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  async saw(re: RegExp, from = 0, ms = 30_000): Promise<void> {
    try {
      await until(
        String(re),
        () => {
          if (!this.alive) throw new Error('the process exited');
          return this.text.slice(from).some((l) => re.test(l));
        },
        ms,
      );
    } catch (e) {
      throw new Error(`${(e as Error).message}; it said:\n${this.text.slice(-8).join('\n')}`);
    }
  }

  records(requestId: string): AccessRecord[] {
    return this.json.filter((r) => r['requestId'] === requestId) as unknown as AccessRecord[];
  }

  async kill(): Promise<void> {
    if (!this.alive) return;
    const gone = new Promise((r) => this.proc.once('exit', r));
    this.proc.kill('SIGKILL');
    await gone;
  }
}

function curl(
  ns: string,
  args: readonly string[],
): Promise<{ code: number; body: string; exit: number }> {
  return new Promise((resolve) => {
    execFile(
      'ip',
      ['netns', 'exec', ns, 'curl', '-s', '--max-time', '8', '-w', '\n%{http_code}', ...args],
      { timeout: 20_000 },
      (err, stdout) => {
        const i = stdout.lastIndexOf('\n');
        const exit = err && typeof err.code === 'number' ? err.code : 0;
        resolve({ code: Number(stdout.slice(i + 1)), body: stdout.slice(0, i), exit });
      },
    );
  });
}

function nft(ns: string, args: readonly string[]): string {
  return execFileSync('ip', ['netns', 'exec', ns, 'nft', ...args], { encoding: 'utf8' });
}

describe(
  'interception installed by the agent, in network namespaces',
  { skip, timeout: 170_000 },
  () => {
    const dir = mkdtempSync(join(tmpdir(), `palisade-ian-${process.pid}-`));
    const socketDir = join(dir, 'endpoints');
    const world = new SyncWorld(join(dir, 'server'), NODE, socketDir);
    const table = `palisade_i${process.pid % 100000}`;
    let node: TestNode | undefined;
    let ratings: TestPod;
    let reviews: TestPod;
    let app: PodProcess | undefined;
    let ratingsSc: PodProcess | undefined;
    let reviewsSc: PodProcess | undefined;
    let url = '';
    let seq = 0;
    const rid = (): string => `ian-${process.pid}-${++seq}`;

    const sidecar = (pod: TestPod, name: string): PodProcess =>
      new PodProcess(pod.ns, [
        'setpriv',
        `--reuid=${UID}`,
        `--regid=${UID}`,
        '--clear-groups',
        process.execPath,
        BIN,
        'sidecar',
        '--endpoint',
        `default/${name}`,
        '--agent-socket',
        endpointSocketPath(socketDir, 'default', name),
        '--app-port',
        '9080',
        '--start-timeout',
        '60',
      ]);

    before(async () => {
      // The sidecars run as uid 1337: they must be able to traverse to their sockets.
      chmodSync(dir, 0o711);
      node = new TestNode('ia');
      ratings = node.addPod(1);
      reviews = node.addPod(2);
      url = `http://${ratings.ip}:9080`;
      await world.startServer();
      await world.applyBookinfo([
        { pod: 'default/ratings-v1', ip: ratings.ip, iface: ratings.hostIface, netns: ratings.ns },
        { pod: 'default/reviews-v2', ip: reviews.ip, iface: reviews.hostIface, netns: reviews.ns },
      ]);
      await world.startAgent(
        { table, netns: node.ns, workloadInterfacePrefix: node.ifacePrefix },
        { sidecarUid: UID, resyncMs: 500 },
      );
      const sock = (name: string) => endpointSocketPath(socketDir, 'default', name);
      await until(
        'the endpoint sockets',
        () => existsSync(sock('ratings-v1')) && existsSync(sock('reviews-v2')),
      );
      app = new PodProcess(ratings.ns, [process.execPath, APP, '9080']);
      await until('the application', () => app?.json.some((l) => l['ready'] === true) ?? false);
      ratingsSc = sidecar(ratings, 'ratings-v1');
      reviewsSc = sidecar(reviews, 'reviews-v2');
      await Promise.all([
        ratingsSc.saw(/interception installed by the agent/, 0, 90_000),
        reviewsSc.saw(/interception installed by the agent .*1 outbound/, 0, 90_000),
      ]);
    });

    after(async () => {
      await ratingsSc?.kill();
      await reviewsSc?.kill();
      app?.proc.stdin.end();
      await app?.kill();
      await world.stop();
      node?.destroy();
      rmSync(dir, { recursive: true, force: true });
    });

    test("an unmodified client calling ratings' address reaches its application through both sidecars with mTLS", async () => {
      const req = rid();
      const r = await curl(reviews.ns, ['-H', `x-request-id: ${req}`, `${url}/ratings/1`]);
      assert.equal(r.code, 200, r.body);
      const body = JSON.parse(r.body) as { app: boolean; xfcc: string | null; from: string };
      assert.equal(body.xfcc, `URI=${id('bookinfo-reviews')}`);
      // The application is reached from its own sidecar over loopback, not from the client pod.
      assert.match(body.from, /^(::ffff:)?127\.0\.0\.1$/);
      await until('the access records', () => (ratingsSc?.records(req).length ?? 0) > 0);
      const [inb] = ratingsSc!.records(req);
      assert.equal(inb?.side, 'inbound');
      assert.equal(inb?.verdict, 'allow');
      assert.equal(inb?.source.identity, id('bookinfo-reviews'));
      assert.equal(inb?.source.ip, reviews.ip);
      await until('the outbound record', () => (reviewsSc?.records(req).length ?? 0) > 0);
      const outb = reviewsSc!.records(req);
      assert.equal(outb.length, 1, 'judged once by the outbound proxy (no loop)');
      assert.equal(outb[0]?.destination.endpoint, 'default/ratings-v1');
    });

    test('a request the L7 policy forbids is answered 403', async () => {
      const req = rid();
      const r = await curl(reviews.ns, [
        '-X',
        'POST',
        '-H',
        `x-request-id: ${req}`,
        `${url}/ratings/1`,
      ]);
      assert.equal(r.code, 403, r.body);
      assert.match(r.body, /ratings-readers-get-only rule 1/);
      await until('the deny record', () => (ratingsSc?.records(req).length ?? 0) > 0);
      assert.equal(ratingsSc!.records(req)[0]?.verdict, 'deny');
    });

    test('the agent keeps its own table in each pod, with the announced ports and uid', () => {
      for (const ns of [ratings.ns, reviews.ns])
        assert.equal(nft(ns, ['list', 'tables']).trim(), 'table inet palisade_intercept');
      const inb = nft(ratings.ns, ['list', 'map', 'inet', 'palisade_intercept', 'inbound_ports']);
      assert.match(inb, /9080 : 15006/);
      const out = nft(reviews.ns, ['list', 'map', 'inet', 'palisade_intercept', 'outbound4']);
      assert.match(out, new RegExp(`${ratings.ip.replace(/\./g, '\\.')} \\. 9080 : 151\\d\\d`));
      const chain = nft(reviews.ns, ['list', 'chain', 'inet', 'palisade_intercept', 'output']);
      assert.match(
        chain,
        /meta skuid 1337 counter packets [1-9]/,
        world.lines.filter((l) => /interception/.test(l)).join('\n'),
      );
      // The resync (every 500 ms here) found nothing to repair in untouched tables.
      assert.ok(!world.lines.some((l) => /repaired/.test(l)), 'a false drift was repaired');
      const st = world.intercept?.status() ?? [];
      assert.deepEqual(st.map((s) => s.endpoint).sort(), [
        'default/ratings-v1',
        'default/reviews-v2',
      ]);
    });

    test('a policy change removes the outbound redirect and brings it back', async () => {
      const deny = {
        apiVersion: 'projectcalico.org/v3',
        kind: 'GlobalNetworkPolicy',
        metadata: { name: `ian-deny-${process.pid}` },
        spec: {
          order: 1,
          selector: "app == 'reviews'",
          types: ['Egress'],
          egress: [
            { action: 'Deny', protocol: 'TCP', destination: { selector: "app == 'ratings'" } },
          ],
        },
      };
      const outMap = () =>
        nft(reviews.ns, ['list', 'map', 'inet', 'palisade_intercept', 'outbound4']);
      await world.apply([deny]);
      await until('the redirect removed', () => !outMap().includes(ratings.ip), 20_000);
      const del = await world.admin.call(
        'DELETE',
        `/api/v1/projectcalico.org/GlobalNetworkPolicy/${deny.metadata.name}`,
      );
      assert.ok(del.status === 200 || del.status === 204, JSON.stringify(del.body));
      await until('the redirect back', () => outMap().includes(ratings.ip), 20_000);
      const r = await curl(reviews.ns, [`${url}/ratings/1`]);
      assert.equal(r.code, 200, r.body);
    });

    test('tampered interception rules are repaired by the agent', async () => {
      const repairedBefore = world.lines.filter((l) => /repaired/.test(l)).length;
      nft(ratings.ns, ['delete', 'table', 'inet', 'palisade_intercept']);
      nft(reviews.ns, ['flush', 'chain', 'inet', 'palisade_intercept', 'output']);
      await until(
        'the tables repaired',
        () =>
          nft(ratings.ns, ['list', 'tables']).includes('palisade_intercept') &&
          nft(reviews.ns, ['list', 'chain', 'inet', 'palisade_intercept', 'output']).includes(
            'skuid',
          ),
        20_000,
      );
      const r = await curl(reviews.ns, [`${url}/ratings/1`]);
      assert.equal(r.code, 200, r.body);
      assert.match(r.body, /"xfcc":"URI=spiffe/);
      // The agent logs each repair after its transaction: the kernel may show it first.
      await until(
        'the drift and both repairs logged',
        () =>
          world.lines.some((l) => /interception of default\/ratings-v1 was changed/.test(l)) &&
          world.lines.filter((l) => /repaired/.test(l)).length >= repairedBefore + 2,
        10_000,
      );
    });

    test("with ratings' sidecar killed a new connection fails: nothing reaches the application around it", async () => {
      const served = app!.json.length;
      await ratingsSc!.kill();
      const r = await curl(reviews.ns, [`${url}/ratings/1`]);
      assert.equal(r.code, 502, r.body);
      assert.match(r.body, /upstream unavailable \(ECONNREFUSED\)/);
      // The table stays (a dead sidecar removes nothing), and the application saw no request.
      assert.match(nft(ratings.ns, ['list', 'tables']), /palisade_intercept/);
      await new Promise((res) => setTimeout(res, 300));
      assert.equal(app!.json.length, served);
    });

    test("the endpoint's deletion (CNI DEL) removes its interception rules", async () => {
      const name = `${NODE}-k8s-ratings-v1-eth0`;
      const del = await world.admin.call(
        'DELETE',
        `/api/v1/projectcalico.org/WorkloadEndpoint/default/${name}`,
      );
      assert.ok(del.status === 200 || del.status === 204, JSON.stringify(del.body));
      await until('the table removed', () => nft(ratings.ns, ['list', 'ruleset']) === '', 20_000);
      assert.match(nft(reviews.ns, ['list', 'tables']), /palisade_intercept/);
    });
  },
);
