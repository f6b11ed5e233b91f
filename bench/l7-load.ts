// The load generator of `npm run bench -- l7`: one small HTTP/1.1 client on raw sockets, the same
// for every target (the application directly, the Palisade sidecars, HAProxy), so the figures
// differ only by what stands between it and the application. Closed loop (N connections, each
// sending its next request when the last answered: maximum throughput) and open loop (requests
// started on a fixed schedule whatever the answers do, so a slow answer does not slow the offered
// load). Keep-alive, or a new connection per request. Latency is from the start of the request
// (the connection's opening included, without keep-alive) to the last byte of the answer.

import { connect } from 'node:net';
import type { Socket } from 'node:net';

export interface Target {
  readonly host: string;
  readonly port: number;
  /** The Host header (the outbound sidecar routes by it). */
  readonly hostHeader: string;
  readonly path: string;
  /** Source address of the client's connections. */
  readonly localAddress?: string;
}

export interface LoadStats {
  readonly requests: number;
  readonly errors: number;
  readonly rps: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  /** Connections opened during the run. */
  readonly connections: number;
}

function pct(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

function stats(lat: number[], errors: number, secs: number, connections: number): LoadStats {
  lat.sort((a, b) => a - b);
  const r = (x: number): number => Math.round(x * 1000) / 1000;
  return {
    requests: lat.length,
    errors,
    rps: Math.round(lat.length / secs),
    p50: r(pct(lat, 50)),
    p90: r(pct(lat, 90)),
    p99: r(pct(lat, 99)),
    connections,
  };
}

/** Whether `buf` holds one whole response; its status then (0: not yet complete). */
function complete(buf: Buffer): number {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return 0;
  const head = buf.subarray(0, end).toString('latin1');
  const status = Number(head.slice(9, 12));
  const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
  if (cl) return buf.length >= end + 4 + Number(cl[1]) ? status : 0;
  if (/\r\ntransfer-encoding:\s*chunked/i.test(head))
    return buf.indexOf('\r\n0\r\n\r\n', end) >= 0 ||
      buf.subarray(end + 4).indexOf('0\r\n\r\n') === 0
      ? status
      : 0;
  return status; // no body (e.g. 204)
}

/** One client connection sending one request at a time. */
class Conn {
  private sock: Socket | undefined;
  private buf: Buffer = Buffer.alloc(0);
  private done: ((status: number) => void) | undefined;
  private fail: ((e: Error) => void) | undefined;
  private ready: Promise<void> | undefined;
  opened = 0;

  constructor(
    private readonly t: Target,
    private readonly keepAlive: boolean,
  ) {}

  private open(): Promise<void> {
    this.opened++;
    return new Promise<void>((resolve, reject) => {
      const s = connect({
        host: this.t.host,
        port: this.t.port,
        ...(this.t.localAddress ? { localAddress: this.t.localAddress } : {}),
        noDelay: true,
      });
      this.sock = s;
      this.buf = Buffer.alloc(0);
      s.once('connect', () => resolve());
      s.on('data', (d: Buffer) => {
        this.buf = this.buf.length === 0 ? d : Buffer.concat([this.buf, d]);
        const st = complete(this.buf);
        if (st !== 0 && this.done) {
          const f = this.done;
          this.done = undefined;
          this.fail = undefined;
          this.buf = Buffer.alloc(0);
          f(st);
        }
      });
      const broken = (e: Error): void => {
        if (this.sock === s) {
          this.sock = undefined;
          this.ready = undefined;
        }
        reject(e);
        const f = this.fail;
        this.done = undefined;
        this.fail = undefined;
        f?.(e);
      };
      s.on('error', broken);
      s.on('close', () => broken(new Error('connection closed')));
    });
  }

  /** Sends one request; resolves with the status code. */
  async send(): Promise<number> {
    if (!this.sock || !this.keepAlive) {
      this.sock?.destroy();
      this.sock = undefined;
      this.ready = this.open();
    }
    await this.ready;
    const s = this.sock;
    if (!s) throw new Error('no connection');
    const p = new Promise<number>((resolve, reject) => {
      this.done = resolve;
      this.fail = reject;
    });
    s.write(
      `GET ${this.t.path} HTTP/1.1\r\nHost: ${this.t.hostHeader}\r\nUser-Agent: palisade-bench\r\n${this.keepAlive ? '' : 'Connection: close\r\n'}\r\n`,
    );
    const status = await p;
    if (!this.keepAlive) {
      this.sock = undefined;
      s.destroy();
    }
    return status;
  }

  close(): void {
    this.sock?.destroy();
    this.sock = undefined;
  }
}

/** `conns` connections, each sending back to back for `ms`: maximum throughput. */
export async function closedLoop(
  t: Target,
  conns: number,
  ms: number,
  keepAlive: boolean,
): Promise<LoadStats> {
  const lat: number[] = [];
  let errors = 0;
  const pool = Array.from({ length: conns }, () => new Conn(t, keepAlive));
  const t0 = performance.now();
  const end = t0 + ms;
  await Promise.all(
    pool.map(async (c) => {
      while (performance.now() < end) {
        const s = performance.now();
        try {
          const st = await c.send();
          if (st === 200) lat.push(performance.now() - s);
          else errors++;
        } catch {
          errors++;
          await new Promise((r) => setTimeout(r, 5));
        }
      }
    }),
  );
  const secs = (performance.now() - t0) / 1000;
  for (const c of pool) c.close();
  return stats(
    lat,
    errors,
    secs,
    pool.reduce((a, c) => a + c.opened, 0),
  );
}

/**
 * Requests started at `rate` per second for `ms` (open loop). Each request takes an idle
 * connection (a new one when none is idle, or always without keep-alive), at most `maxInFlight`
 * at a time: a request due when that many are outstanding is not sent and counts as an error
 * (the target did not sustain the rate). The schedule is kept with a 1 ms timer: requests due in
 * the same tick start together.
 */
export async function openLoop(
  t: Target,
  rate: number,
  ms: number,
  keepAlive: boolean,
  maxInFlight = 128,
): Promise<LoadStats> {
  const lat: number[] = [];
  let errors = 0;
  const idle: Conn[] = [];
  const all: Conn[] = [];
  const inflight = new Set<Promise<void>>();
  const t0 = performance.now();
  const total = Math.floor((rate * ms) / 1000);
  let sent = 0;
  const fire = (): void => {
    if (inflight.size >= maxInFlight) {
      errors++;
      return;
    }
    const c = idle.pop() ?? new Conn(t, keepAlive);
    if (!all.includes(c)) all.push(c);
    const started = performance.now();
    const p = c
      .send()
      .then((st) => {
        if (st === 200) lat.push(performance.now() - started);
        else errors++;
      })
      .catch(() => void errors++)
      .finally(() => {
        idle.push(c);
        inflight.delete(p);
      });
    inflight.add(p);
  };
  while (sent < total) {
    const now = performance.now();
    while (sent < total && t0 + (sent * 1000) / rate <= now) {
      fire();
      sent++;
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  await Promise.all([...inflight]);
  const secs = (performance.now() - t0) / 1000;
  for (const c of all) c.close();
  return stats(
    lat,
    errors,
    secs,
    all.reduce((a, c) => a + c.opened, 0),
  );
}
