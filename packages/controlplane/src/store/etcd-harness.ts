// Test and benchmark harness: starts a real etcd (Debian's etcd-server 3.4 at /usr/bin/etcd, or
// $PALISADE_ETCD) on free loopback ports in a temporary data directory — one member or a
// cluster — with the transaction limits raised so a 10 000-operation apply fits in one txn
// (STORE_LIMITS). It waits until every member is healthy and `stop()` kills every member and
// removes the directory; members are also killed if the test process exits without stopping.
// It never touches an etcd it did not start.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
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

/** PEM files of a throw-away CA, a server certificate for 127.0.0.1 and a client certificate. */
export interface EtcdTlsFiles {
  readonly ca: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly cert: string;
  readonly key: string;
}

function makeTls(dir: string): EtcdTlsFiles {
  mkdirSync(dir, { mode: 0o700 });
  const f = (n: string): string => join(dir, n);
  const ossl = (...args: string[]): void => {
    execFileSync('openssl', args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: 10_000 });
  };
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  ossl(
    'req',
    '-x509',
    ...ec,
    '-keyout',
    f('ca.key'),
    '-out',
    f('ca.pem'),
    '-days',
    '1',
    '-subj',
    `/CN=palisade-test-etcd-ca-${process.pid}`,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign',
  );
  for (const [name, usage] of [
    ['server', 'serverAuth'],
    ['client', 'clientAuth'],
  ] as const) {
    ossl(
      'req',
      ...ec,
      '-keyout',
      f(`${name}.key`),
      '-out',
      f(`${name}.csr`),
      '-subj',
      `/CN=palisade-test-${name}`,
    );
    writeFileSync(f(`${name}.ext`), `subjectAltName=IP:127.0.0.1\nextendedKeyUsage=${usage}\n`);
    ossl(
      'x509',
      '-req',
      '-in',
      f(`${name}.csr`),
      '-CA',
      f('ca.pem'),
      '-CAkey',
      f('ca.key'),
      '-CAcreateserial',
      '-out',
      f(`${name}.pem`),
      '-days',
      '1',
      '-extfile',
      f(`${name}.ext`),
    );
  }
  return {
    ca: f('ca.pem'),
    serverCert: f('server.pem'),
    serverKey: f('server.key'),
    cert: f('client.pem'),
    key: f('client.key'),
  };
}

export class EtcdCluster {
  readonly members: EtcdMember[];
  /** Set when started with `tls: true`: members then require client certificates. */
  readonly tls: EtcdTlsFiles | undefined;
  private readonly root: string;
  private readonly token: string;
  private stopped = false;

  private constructor(
    root: string,
    members: EtcdMember[],
    token: string,
    tls: EtcdTlsFiles | undefined,
  ) {
    this.root = root;
    this.members = members;
    this.token = token;
    this.tls = tls;
  }

  /** Starts `size` members and waits until all are healthy (throws with their logs if not). */
  static async start(
    size = 1,
    options: { timeoutMs?: number; tls?: boolean } = {},
  ): Promise<EtcdCluster> {
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
    let cluster: EtcdCluster | undefined;
    try {
      const tls = options.tls === true ? makeTls(join(root, 'tls')) : undefined;
      cluster = new EtcdCluster(root, members, `palisade-${process.pid}-${Date.now()}`, tls);
      for (let i = 0; i < size; i++) cluster.spawnMember(i, 'new');
      await cluster.waitHealthy(options.timeoutMs ?? 30_000);
    } catch (e) {
      if (cluster !== undefined) await cluster.stop();
      else rmSync(root, { recursive: true, force: true });
      throw e;
    }
    return cluster;
  }

  /** `host:port` of every member's client URL. */
  get endpoints(): string[] {
    return this.members.map((m) => `127.0.0.1:${m.clientPort}`);
  }

  /** The store URL for openStore: `etcd://127.0.0.1:p1,...` (`etcds://...?ca=&cert=&key=`). */
  get url(): string {
    if (this.tls === undefined) return `etcd://${this.endpoints.join(',')}`;
    const q = new URLSearchParams({ ca: this.tls.ca, cert: this.tls.cert, key: this.tls.key });
    return `etcds://${this.endpoints.join(',')}?${q.toString()}`;
  }

  private spawnMember(i: number, state: 'new' | 'existing'): void {
    const m = this.members[i] as EtcdMember;
    const initialCluster = this.members
      .map((x) => `${x.name}=http://127.0.0.1:${x.peerPort}`)
      .join(',');
    const scheme = this.tls === undefined ? 'http' : 'https';
    const args = [
      `--name=${m.name}`,
      `--data-dir=${m.dataDir}`,
      `--listen-client-urls=${scheme}://127.0.0.1:${m.clientPort}`,
      `--advertise-client-urls=${scheme}://127.0.0.1:${m.clientPort}`,
      ...(this.tls === undefined
        ? []
        : [
            `--cert-file=${this.tls.serverCert}`,
            `--key-file=${this.tls.serverKey}`,
            `--trusted-ca-file=${this.tls.ca}`,
            '--client-cert-auth',
          ]),
      `--listen-peer-urls=http://127.0.0.1:${m.peerPort}`,
      `--initial-advertise-peer-urls=http://127.0.0.1:${m.peerPort}`,
      `--initial-cluster=${initialCluster}`,
      `--initial-cluster-state=${state}`,
      `--initial-cluster-token=${this.token}`,
      `--max-txn-ops=${ETCD_MAX_TXN_OPS}`,
      `--max-request-bytes=${ETCD_MAX_REQUEST_BYTES}`,
      '--quota-backend-bytes=8589934592',
      // Lets tests use short client keepalives to notice a frozen member quickly.
      '--grpc-keepalive-min-time=1s',
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
    if (this.tls !== undefined) return this.healthyTls(m, this.tls);
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

  private healthyTls(m: EtcdMember, tls: EtcdTlsFiles): Promise<boolean> {
    return new Promise((resolve) => {
      const req = request(
        {
          host: '127.0.0.1',
          port: m.clientPort,
          path: '/health',
          ca: readFileSync(tls.ca),
          cert: readFileSync(tls.cert),
          key: readFileSync(tls.key),
          timeout: 1000,
        },
        (res) => {
          let body = '';
          res.on('data', (d: Buffer) => (body += d.toString()));
          res.on('end', () => resolve(body.includes('"health":"true"')));
        },
      );
      req.on('error', () => resolve(false));
      req.on('timeout', () => req.destroy());
      req.end();
    });
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

  /** Freezes member i (SIGSTOP): its connections stay open but nothing answers. */
  pause(i: number): void {
    this.members[i]?.process?.kill('SIGSTOP');
  }

  /** Thaws a member frozen by pause(). */
  resume(i: number): void {
    this.members[i]?.process?.kill('SIGCONT');
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
