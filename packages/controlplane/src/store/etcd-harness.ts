// Test and benchmark harness: starts a real etcd (Debian's etcd-server 3.4 at /usr/bin/etcd, or
// $PALISADE_ETCD) on free loopback ports in a temporary data directory — one member or a
// cluster — with the transaction limits raised so a 10 000-operation apply fits in one txn
// (STORE_LIMITS). It waits until every member is healthy and `stop()` kills every member and
// removes the directory; members are also killed if the test process exits without stopping.
// It never touches an etcd it did not start.

import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const ETCD_BIN = process.env.PALISADE_ETCD ?? '/usr/bin/etcd';
/** Above STORE_LIMITS.maxOpsPerTxn: etcd counts compares, success and failure separately. */
export const ETCD_MAX_TXN_OPS = 20_000;
/** Above STORE_LIMITS.maxTxnBytes (32 MiB) plus request overhead. */
export const ETCD_MAX_REQUEST_BYTES = 48 * 1024 * 1024;

export interface EtcdMember {
  readonly name: string;
  readonly clientPort: number;
  readonly peerPort: number;
  readonly dataDir: string;
  process: ChildProcess | undefined;
  log: string;
}

const running = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Last resort when a test file dies without its after hook: never leave an etcd behind.
  process.on('exit', () => {
    for (const p of running) p.kill('SIGKILL');
  });
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export class EtcdCluster {
  readonly members: EtcdMember[];
  private readonly root: string;
  private readonly token: string;
  private stopped = false;

  private constructor(root: string, members: EtcdMember[], token: string) {
    this.root = root;
    this.members = members;
    this.token = token;
  }

  /** Starts `size` members and waits until all are healthy (throws with their logs if not). */
  static async start(size = 1, options: { timeoutMs?: number } = {}): Promise<EtcdCluster> {
    if (!existsSync(ETCD_BIN)) {
      throw new Error(
        `etcd not found at ${ETCD_BIN}: the etcd store tests need a real etcd 3.4+ ` +
          `(Debian/Ubuntu: apt-get install etcd-server; or set PALISADE_ETCD to the binary)`,
      );
    }
    installExitHook();
    const root = mkdtempSync(join(tmpdir(), `palisade-etcd-${process.pid}-`));
    const members: EtcdMember[] = [];
    for (let i = 0; i < size; i++) {
      members.push({
        name: `m${i}-${process.pid}`,
        clientPort: await freePort(),
        peerPort: await freePort(),
        dataDir: join(root, `m${i}`),
        process: undefined,
        log: '',
      });
    }
    const cluster = new EtcdCluster(root, members, `palisade-${process.pid}-${Date.now()}`);
    try {
      for (let i = 0; i < size; i++) cluster.spawnMember(i, 'new');
      await cluster.waitHealthy(options.timeoutMs ?? 30_000);
    } catch (e) {
      await cluster.stop();
      throw e;
    }
    return cluster;
  }

  /** `host:port` of every member's client URL. */
  get endpoints(): string[] {
    return this.members.map((m) => `127.0.0.1:${m.clientPort}`);
  }

  /** The store URL for openStore: `etcd://127.0.0.1:p1,127.0.0.1:p2,...`. */
  get url(): string {
    return `etcd://${this.endpoints.join(',')}`;
  }

  private spawnMember(i: number, state: 'new' | 'existing'): void {
    const m = this.members[i] as EtcdMember;
    const initialCluster = this.members
      .map((x) => `${x.name}=http://127.0.0.1:${x.peerPort}`)
      .join(',');
    const args = [
      `--name=${m.name}`,
      `--data-dir=${m.dataDir}`,
      `--listen-client-urls=http://127.0.0.1:${m.clientPort}`,
      `--advertise-client-urls=http://127.0.0.1:${m.clientPort}`,
      `--listen-peer-urls=http://127.0.0.1:${m.peerPort}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${m.peerPort}`,
      `--initial-cluster=${initialCluster}`,
      `--initial-cluster-state=${state}`,
      `--initial-cluster-token=${this.token}`,
      `--max-txn-ops=${ETCD_MAX_TXN_OPS}`,
      `--max-request-bytes=${ETCD_MAX_REQUEST_BYTES}`,
      '--quota-backend-bytes=8589934592',
      '--heartbeat-interval=100',
      '--election-timeout=1000',
      '--logger=zap',
      '--log-level=error',
    ];
    const p = spawn(ETCD_BIN, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    m.process = p;
    m.log = '';
    running.add(p);
    p.stderr?.on('data', (d: Buffer) => {
      m.log = (m.log + d.toString()).slice(-4000);
    });
    p.on('exit', () => running.delete(p));
    p.on('error', (e) => {
      m.log += `\nspawn failed: ${e.message}`;
    });
  }

  private async healthy(m: EtcdMember): Promise<boolean> {
    try {
      const r = await fetch(`http://127.0.0.1:${m.clientPort}/health`, {
        signal: AbortSignal.timeout(1000),
      });
      const body = (await r.json()) as { health?: string };
      return body.health === 'true';
    } catch {
      return false;
    }
  }

  /** Waits until every running member reports healthy. */
  async waitHealthy(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const live = this.members.filter((m) => m.process !== undefined);
      for (const m of live) {
        if (m.process?.exitCode !== null || m.process.signalCode !== null) {
          throw new Error(`etcd member ${m.name} exited during start:\n${m.log}`);
        }
      }
      const ok = await Promise.all(live.map((m) => this.healthy(m)));
      if (ok.every(Boolean)) return;
      if (Date.now() > deadline) {
        throw new Error(
          `etcd cluster not healthy within ${timeoutMs} ms:\n${live.map((m) => `${m.name}: ${m.log}`).join('\n')}`,
        );
      }
      await sleep(100);
    }
  }

  /** Index of the current raft leader, asked of the first running member (-1 if none). */
  async leaderIndex(): Promise<number> {
    for (const m of this.members) {
      if (m.process === undefined) continue;
      try {
        const r = await fetch(`http://127.0.0.1:${m.clientPort}/v3/maintenance/status`, {
          method: 'POST',
          body: '{}',
          signal: AbortSignal.timeout(2000),
        });
        const body = (await r.json()) as { leader?: string; header?: { member_id?: string } };
        if (body.leader === undefined) continue;
        // Map member ids to indexes by asking each member its own id.
        for (const [i, x] of this.members.entries()) {
          if (x.process === undefined) continue;
          const r2 = await fetch(`http://127.0.0.1:${x.clientPort}/v3/maintenance/status`, {
            method: 'POST',
            body: '{}',
            signal: AbortSignal.timeout(2000),
          });
          const b2 = (await r2.json()) as { header?: { member_id?: string } };
          if (b2.header?.member_id === body.leader) return i;
        }
      } catch {
        // try the next member
      }
    }
    return -1;
  }

  /** SIGKILLs member i (its data directory stays, so it can be restarted). */
  async kill(i: number): Promise<void> {
    const m = this.members[i];
    const p = m?.process;
    if (m === undefined || p === undefined) return;
    m.process = undefined;
    if (p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise<void>((r) => p.once('exit', () => r()));
    p.kill('SIGKILL');
    await exited;
  }

  /** Restarts a killed member from its data directory and waits for the cluster to be healthy. */
  async restart(i: number, timeoutMs = 30_000): Promise<void> {
    if (this.members[i]?.process !== undefined) return;
    this.spawnMember(i, 'existing');
    await this.waitHealthy(timeoutMs);
  }

  /** Kills every member and removes the data directories. Safe to call more than once. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await Promise.all(this.members.map((_, i) => this.kill(i)));
    rmSync(this.root, { recursive: true, force: true });
  }
}
