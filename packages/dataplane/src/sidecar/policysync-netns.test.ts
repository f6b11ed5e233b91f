// Policy sync end to end with real parts: the API server (SQLite file), the agent (real nftables
// in a node namespace), its per-endpoint unix sockets, and `runSidecar` processes inside the
// ratings and reviews pod namespaces, reached over veths. reviews' application calls ratings
// through its outbound proxy (mTLS with an SVID obtained through the agent); a policy change made
// through the API reaches ratings' sidecar; with the agent stopped the sidecar keeps enforcing
// its last view, and a change made meanwhile arrives when the agent returns (DESIGN §2, §6).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { TestNode, canUseNetns } from '../testing/netns.js';
import type { TestPod } from '../testing/netns.js';
import { endpointSocketPath } from '../agent-socket/protocol.js';
import { SyncWorld, until } from './test-sync-fixture.js';

const CHILD = fileURLToPath(new URL('./test-sidecar-child.ts', import.meta.url));
const skip = canUseNetns() ? false : 'needs root and network namespaces';
const NODE = `psn${process.pid}`;

interface Line {
  readonly say?: string;
  readonly t?: number;
  readonly ready?: boolean;
}

class SidecarChild {
  readonly lines: Line[] = [];
  private proc: ChildProcessWithoutNullStreams | undefined;
  private stderr = '';

  constructor(
    readonly pod: TestPod,
    readonly cfgPath: string,
  ) {}

  async start(): Promise<void> {
    const c = spawn(
      'ip',
      ['netns', 'exec', this.pod.ns, process.execPath, '--import', 'tsx', CHILD, this.cfgPath],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    this.proc = c;
    c.stderr.on('data', (d: Buffer) => (this.stderr += d.toString()));
    readline.createInterface({ input: c.stdout }).on('line', (l) => {
      try {
        this.lines.push(JSON.parse(l) as Line);
      } catch {
        this.lines.push({ say: `unparsed: ${l}` });
      }
    });
    await until(
      `sidecar in ${this.pod.ns} ready (${this.stderr.slice(0, 300)})`,
      () => {
        if (c.exitCode !== null) throw new Error(`sidecar child exited: ${this.stderr}`);
        return this.lines.some((l) => l.ready);
      },
      40_000,
    );
  }

  /** The first progress line at or after index `from` matching `re`. */
  async waitFor(re: RegExp, from = 0, ms = 15_000): Promise<Line> {
    let hit: Line | undefined;
    await until(
      `a line matching ${re}`,
      () =>
        (hit = this.lines.slice(from).find((l) => l.say !== undefined && re.test(l.say))) !==
        undefined,
      ms,
    );
    return hit as Line;
  }

  /** Resolves when a view with version ≥ rv is installed; returns when (child clock). */
  async viewAtLeast(rv: number, ms = 15_000): Promise<number> {
    let t = 0;
    await until(
      `view ≥ ${rv}`,
      () => {
        for (const l of this.lines) {
          const m = /^policy view (\d+) installed/.exec(l.say ?? '');
          if (m && Number(m[1]) >= rv) {
            t = l.t ?? 0;
            return true;
          }
        }
        return false;
      },
      ms,
    );
    return t;
  }

  stop(): void {
    this.proc?.stdin.end();
    const p = this.proc;
    setTimeout(() => p?.kill('SIGKILL'), 3_000).unref();
  }
}

/** curl inside a namespace through reviews' outbound proxy. */
function viaProxy(
  ns: string,
  method: string,
  url: string,
): Promise<{ code: number; body: string }> {
  return new Promise((resolve, reject) => {
    execFile(
      'ip',
      [
        'netns',
        'exec',
        ns,
        'curl',
        '-s',
        '--max-time',
        '10',
        '-x',
        'http://127.0.0.1:15001',
        '-X',
        method,
        '-w',
        '\n%{http_code}',
        url,
      ],
      { timeout: 20_000 },
      (err, stdout) => {
        if (err && !stdout) return reject(new Error(err.message));
        const i = stdout.lastIndexOf('\n');
        resolve({ code: Number(stdout.slice(i + 1)), body: stdout.slice(0, i) });
      },
    );
  });
}

describe('policy sync to sidecars in network namespaces', { skip, timeout: 150_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), `palisade-psn-${process.pid}-`));
  const socketDir = join(dir, 'endpoints');
  const world = new SyncWorld(join(dir, 'server'), NODE, socketDir);
  const table = `palisade_s${process.pid % 100000}`;
  let node: TestNode | undefined;
  let ratings: TestPod;
  let reviews: TestPod;
  let ratingsSc: SidecarChild | undefined;
  let reviewsSc: SidecarChild | undefined;
  let ratingsUrl = '';
  const agentOptions = () => ({
    table,
    ...(node ? { netns: node.ns, workloadInterfacePrefix: node.ifacePrefix } : {}),
  });

  before(async () => {
    node = new TestNode('ps');
    ratings = node.addPod(1);
    reviews = node.addPod(2);
    ratingsUrl = `http://${ratings.ip}:9080`;
    await world.startServer();
    await world.applyBookinfo([
      { pod: 'default/ratings-v1', ip: ratings.ip, iface: ratings.hostIface },
      { pod: 'default/reviews-v2', ip: reviews.ip, iface: reviews.hostIface },
    ]);
    await world.startAgent(agentOptions());
    const sock = (name: string) => endpointSocketPath(socketDir, 'default', name);
    await until(
      'the endpoint sockets',
      () => existsSync(sock('ratings-v1')) && existsSync(sock('reviews-v2')),
    );
    const children: SidecarChild[] = [];
    for (const [pod, name] of [
      [ratings, 'ratings-v1'],
      [reviews, 'reviews-v2'],
    ] as const) {
      const cfgPath = join(dir, `${name}.json`);
      writeFileSync(
        cfgPath,
        JSON.stringify({
          endpoint: `default/${name}`,
          agentSocket: sock(name),
          podIp: pod.ip,
          appPort: 9080,
          upstreamPort: 9080,
        }),
      );
      children.push(new SidecarChild(pod, cfgPath));
    }
    [ratingsSc, reviewsSc] = children;
    await Promise.all(children.map((c) => c.start()));
  });

  after(async () => {
    ratingsSc?.stop();
    reviewsSc?.stop();
    await new Promise((r) => setTimeout(r, 300));
    await world.stop();
    node?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  test('reviews → ratings: GET /ratings is allowed, POST answers 403 (the view came through the agent)', async () => {
    const get = await viaProxy(reviews.ns, 'GET', `${ratingsUrl}/ratings/1`);
    assert.equal(get.code, 200, get.body);
    const body = JSON.parse(get.body) as { app: string; xfcc: string };
    assert.equal(body.app, 'default/ratings-v1');
    assert.equal(body.xfcc, 'URI=spiffe://cluster.local/ns/default/sa/bookinfo-reviews');
    const post = await viaProxy(reviews.ns, 'POST', `${ratingsUrl}/ratings/1`);
    assert.equal(post.code, 403, post.body);
    assert.match(post.body, /ratings-readers-get-only rule 1/);
  });

  test('a policy change made through the API reaches the sidecar (timed) and changes the verdict', async () => {
    const t0 = Date.now();
    const rv = await world.apply([world.ratingsPolicy(['GET', 'POST'])]);
    const tView = await ratingsSc!.viewAtLeast(rv);
    const ms = tView - t0;
    process.stdout.write(`# policy write → sidecar view installed: ${ms} ms\n`);
    assert.ok(ms < 10_000, `took ${ms} ms`);
    const post = await viaProxy(reviews.ns, 'POST', `${ratingsUrl}/ratings/1`);
    assert.equal(post.code, 200, post.body);
  });

  test('agent stopped: the sidecar keeps enforcing its last view; agent back: the change made meanwhile arrives', async () => {
    const mark = ratingsSc!.lines.length;
    await world.stopAgent();
    await ratingsSc!.waitFor(/policy sync: (the agent closed the stream|agent unreachable)/, mark);
    // The last view (GET and POST allowed) stays in force; other methods are still refused.
    assert.equal((await viaProxy(reviews.ns, 'POST', `${ratingsUrl}/ratings/1`)).code, 200);
    assert.equal((await viaProxy(reviews.ns, 'DELETE', `${ratingsUrl}/ratings/1`)).code, 403);
    const rv = await world.apply([world.ratingsPolicy(['GET'])]);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(
      (await viaProxy(reviews.ns, 'POST', `${ratingsUrl}/ratings/1`)).code,
      200,
      'no agent: nothing can have changed the view',
    );
    const t0 = Date.now();
    await world.startAgent(agentOptions());
    const tView = await ratingsSc!.viewAtLeast(rv, 20_000);
    process.stdout.write(`# agent restart → sidecar resynced: ${tView - t0} ms\n`);
    const post = await viaProxy(reviews.ns, 'POST', `${ratingsUrl}/ratings/1`);
    assert.equal(post.code, 403, post.body);
    assert.equal((await viaProxy(reviews.ns, 'GET', `${ratingsUrl}/ratings/1`)).code, 200);
  });
});
