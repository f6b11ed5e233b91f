// A long-lived nft session instead of one `nft` process per change. In the agent's own network
// namespace: libnftables in this process (libnft.ts), its calls on a pool thread. For another
// namespace (a Node process cannot setns): one worker process started once inside it
// (session-worker.ts, framed requests on stdin/stdout), restarted when it dies. When the library
// cannot be loaded, or the worker cannot start, the session falls back to one `nft` process per
// command and says so once. Every shape keeps nft's semantics: a script is one atomic batch, a
// failure returns nft's error text (with the failing line) and changes nothing.
// Owns: where nft commands run. Must never: build commands (driver.ts), or hide a restart (the
// generation counter tells the driver to reconcile in full).

import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { DataplaneError } from '../errors.js';
import { DEFAULT_LIBNFT, LibNft, libraryRequest } from './libnft.js';
import type { LibraryRequest } from './libnft.js';
import { FrameReader, encodeFrame } from './frames.js';

export interface NftResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  /** CPU time nft spent on the command, where the session can tell (the worker does). */
  readonly cpuMs?: number;
}

/** Runs nft with arguments and optional stdin (the port a fake replaces in unit tests). */
export type NftRunner = (args: readonly string[], stdin?: string) => Promise<NftResult>;

export function processRunner(options: {
  netns?: string;
  nft?: string;
  timeoutMs?: number;
}): NftRunner {
  const nft = options.nft ?? 'nft';
  if (options.netns !== undefined && !/^[A-Za-z0-9_.-]{1,64}$/.test(options.netns))
    throw new DataplaneError(
      'DATAPLANE_ERR_INVALID_NAME',
      `invalid network namespace name ${JSON.stringify(options.netns)}`,
    );
  return (args, stdin) =>
    new Promise((resolve) => {
      const [cmd, argv] =
        options.netns !== undefined
          ? ['ip', ['netns', 'exec', options.netns, nft, ...args]]
          : [nft, [...args]];
      const child = spawn(cmd, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 30_000);
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.on('error', (e) => {
        clearTimeout(timer);
        resolve({ code: 127, stdout, stderr: stderr + String(e) });
      });
      child.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code: code ?? 1, stdout, stderr });
      });
      child.stdin.on('error', () => undefined);
      child.stdin.end(stdin ?? '');
    });
}

export type SessionKind = 'library' | 'worker' | 'process';

export interface NftSession {
  readonly run: NftRunner;
  /**
   * Counts (re)starts of the kernel-facing session: it changes when a worker died and a new one
   * took over, so the driver knows its idea of the kernel may be stale and applies in full.
   */
  generation(): number;
  /** What runs the commands now (`process` after a fallback). */
  kind(): SessionKind;
  /** Ends the worker or frees the context; a later command starts a new one. */
  close(): void;
}

export interface SessionOptions {
  readonly netns?: string;
  readonly nft?: string;
  readonly timeoutMs?: number;
  /** The libnftables file (default DEFAULT_LIBNFT); false: always one `nft` process per command. */
  readonly library?: string | false;
  /** Where the fallback and restart lines go (default: standard error, once per reason). */
  readonly log?: (line: string) => void;
  /** Listings through the worker too (tests of that path); default: a separate `nft` process. */
  readonly listingsInSession?: boolean;
}

const said = new Set<string>();
function defaultLog(line: string): void {
  if (said.has(line)) return;
  said.add(line);
  process.stderr.write(`palisade: ${line}\n`);
}

/** The session the driver uses by default: library or worker, `nft` processes as the fallback. */
export function openSession(options: SessionOptions = {}): NftSession {
  const processOptions = {
    ...(options.netns !== undefined ? { netns: options.netns } : {}),
    ...(options.nft !== undefined ? { nft: options.nft } : {}),
    ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
  };
  // Validates the namespace name for every shape.
  const fallback = processRunner(processOptions);
  if (options.library === false || process.env['PALISADE_NFT_SESSION'] === 'process')
    return {
      run: fallback,
      generation: () => 0,
      kind: () => 'process',
      close: () => undefined,
    };
  const log = options.log ?? defaultLog;
  const path = options.library ?? DEFAULT_LIBNFT;
  return options.netns === undefined
    ? new LibrarySession(path, fallback, log, options.timeoutMs ?? 30_000)
    : new WorkerSession(
        options.netns,
        path,
        fallback,
        log,
        options.timeoutMs ?? 30_000,
        options.listingsInSession === true,
      );
}

/**
 * Listings (`list table`, the driver's read-back and resync) go to a separate `nft` process, not
 * into the session: one context runs one command at a time, and listing a 10k-policy table takes
 * seconds to tens of seconds under load — an apply queued behind it would wait that long. Off the
 * apply path a process start does not matter.
 */
function isListing(req: LibraryRequest): boolean {
  return req.script === undefined;
}

function unsupported(args: readonly string[]): NftResult {
  return { code: 2, stdout: '', stderr: `unsupported nft request ${JSON.stringify(args)}` };
}

/** libnftables in this process (the agent in its own namespace). */
class LibrarySession implements NftSession {
  private lib: Promise<LibNft | undefined> | undefined;
  private fellBack = false;
  private gen = 0;

  constructor(
    private readonly path: string,
    private readonly fallback: NftRunner,
    private readonly log: (line: string) => void,
    private readonly timeoutMs: number,
  ) {}

  generation(): number {
    return this.gen;
  }

  kind(): SessionKind {
    return this.fellBack ? 'process' : 'library';
  }

  private open(): Promise<LibNft | undefined> {
    this.lib ??= LibNft.open(this.path).then(
      (l) => {
        this.gen++;
        return l;
      },
      (e: unknown) => {
        this.fellBack = true;
        this.log(
          `nft: libnftables could not be loaded from ${this.path} (${e instanceof Error ? e.message : String(e)}); falling back to one nft process per change`,
        );
        return undefined;
      },
    );
    return this.lib;
  }

  readonly run: NftRunner = async (args, stdin) => {
    const req = libraryRequest(args, stdin);
    if (!req) return unsupported(args);
    // A listing runs beside the session, never in its queue (see isListing).
    if (isListing(req)) return this.fallback(args, stdin);
    const lib = await this.open();
    if (!lib) return this.fallback(args, stdin);
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<NftResult>((resolve) => {
      timer = setTimeout(() => {
        // The call cannot be interrupted: its context is abandoned, the next command gets a new
        // one (and the driver a new generation: full reconcile).
        this.lib = undefined;
        this.gen++;
        resolve({ code: 124, stdout: '', stderr: `nft: no answer in ${this.timeoutMs} ms` });
      }, this.timeoutMs);
    });
    try {
      return await Promise.race([lib.run(req), timedOut]);
    } catch (e) {
      return { code: 1, stdout: '', stderr: `nft: ${e instanceof Error ? e.message : String(e)}` };
    } finally {
      clearTimeout(timer);
    }
  };

  close(): void {
    const lib = this.lib;
    this.lib = undefined;
    void lib?.then((l) => l?.close());
  }
}

interface Pending {
  readonly resolve: (r: NftResult) => void;
  readonly timer: NodeJS.Timeout;
}

type Refable = { ref?: () => void; unref?: () => void } | null;

/** A worker process inside the namespace, started on first use and after it died. */
class WorkerSession implements NftSession {
  private child: ChildProcess | undefined;
  private ready: Promise<boolean> | undefined;
  private pending = new Map<number, Pending>();
  private nextId = 1;
  private gen = 0;
  private fellBack = false;
  private stderrTail = '';

  constructor(
    private readonly netns: string,
    private readonly path: string,
    private readonly fallback: NftRunner,
    private readonly log: (line: string) => void,
    private readonly timeoutMs: number,
    private readonly listingsInSession: boolean,
  ) {}

  generation(): number {
    return this.gen;
  }

  kind(): SessionKind {
    return this.fellBack ? 'process' : 'worker';
  }

  /** The worker and its pipes keep the event loop alive only while a command is in flight. */
  private hold(on: boolean, c: ChildProcess | undefined = this.child): void {
    if (!c) return;
    for (const h of [c, c.stdin, c.stdout, c.stderr] as Refable[])
      if (on) h?.ref?.();
      else h?.unref?.();
  }

  private start(): Promise<boolean> {
    let tsx: string;
    try {
      tsx = import.meta.resolve('tsx');
    } catch (e) {
      this.log(
        `nft: the session worker cannot be started (tsx not found: ${e instanceof Error ? e.message : String(e)}); falling back to one nft process per change`,
      );
      this.fellBack = true;
      return Promise.resolve(false);
    }
    const worker = fileURLToPath(new URL('./session-worker.ts', import.meta.url));
    const child = spawn(
      'ip',
      ['netns', 'exec', this.netns, process.execPath, '--import', tsx, worker, this.path],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    this.child = child;
    this.stderrTail = '';
    const ready = new Promise<boolean>((resolve) => {
      let hello = false;
      const startTimer = setTimeout(
        () => {
          if (!hello) child.kill('SIGKILL');
        },
        Math.max(this.timeoutMs, 60_000),
      );
      const reader = new FrameReader(
        (msg) => {
          const m = msg as {
            hello?: unknown;
            error?: unknown;
            id?: unknown;
            code?: unknown;
            stdout?: unknown;
            stderr?: unknown;
          };
          if (!hello) {
            hello = true;
            clearTimeout(startTimer);
            if (m.hello === 'library') {
              this.gen++;
              return resolve(true);
            }
            this.log(
              `nft: libnftables is not usable in network namespace ${this.netns} (${typeof m.error === 'string' ? m.error : 'no reason given'}); falling back to one nft process per change`,
            );
            child.kill('SIGKILL');
            return resolve(false);
          }
          const p = typeof m.id === 'number' ? this.pending.get(m.id) : undefined;
          if (!p || typeof m.code !== 'number') return;
          this.pending.delete(m.id as number);
          clearTimeout(p.timer);
          if (this.pending.size === 0) this.hold(false);
          const cpu = (m as { cpuMs?: unknown }).cpuMs;
          p.resolve({
            code: m.code,
            stdout: typeof m.stdout === 'string' ? m.stdout : '',
            stderr: typeof m.stderr === 'string' ? m.stderr : '',
            ...(typeof cpu === 'number' && Number.isFinite(cpu) ? { cpuMs: cpu } : {}),
          });
        },
        (why) => {
          this.log(`nft: session worker in ${this.netns} sent a bad frame (${why}); restarting it`);
          child.kill('SIGKILL');
        },
      );
      child.stdout?.on('data', (d: Buffer) => reader.push(d));
      child.stderr?.setEncoding('utf8').on('data', (d: string) => {
        this.stderrTail = (this.stderrTail + d).slice(-2000);
      });
      child.stdin?.on('error', () => undefined);
      const gone = (why: string) => {
        clearTimeout(startTimer);
        if (this.child === child) {
          this.child = undefined;
          this.ready = undefined;
        }
        // Whatever the dead worker knew is gone: the driver reconciles in full.
        if (hello) this.gen++;
        for (const [id, p] of this.pending) {
          this.pending.delete(id);
          clearTimeout(p.timer);
          p.resolve({
            code: 1,
            stdout: '',
            stderr: `nft session worker in ${this.netns} ended (${why}) ${this.stderrTail.trim()}`,
          });
        }
        if (!hello) {
          this.log(
            `nft: the session worker could not start in network namespace ${this.netns} (${why}: ${this.stderrTail.trim().slice(-300)}); falling back to one nft process per change`,
          );
          resolve(false);
        }
      };
      child.on('error', (e) => gone(String(e)));
      child.on('exit', (code, signal) => gone(signal ?? `exit ${code ?? '?'}`));
    });
    return ready.then((ok) => {
      if (!ok) this.fellBack = true;
      else this.hold(this.pending.size > 0);
      return ok;
    });
  }

  readonly run: NftRunner = async (args, stdin) => {
    if (this.fellBack) return this.fallback(args, stdin);
    const req = libraryRequest(args, stdin);
    if (!req) return unsupported(args);
    if (isListing(req) && !this.listingsInSession) return this.fallback(args, stdin);
    this.ready ??= this.start();
    this.hold(true);
    const ok = await this.ready;
    if (!ok) return this.fallback(args, stdin);
    const child = this.child;
    if (!child?.stdin || child.exitCode !== null || child.signalCode !== null)
      return { code: 1, stdout: '', stderr: 'nft session worker is gone' };
    const id = this.nextId++;
    return new Promise<NftResult>((resolve) => {
      const timer = setTimeout(() => {
        // Hung: killed; its exit answers every command in flight and the next one starts anew.
        this.log(`nft: session worker in ${this.netns} gave no answer in ${this.timeoutMs} ms`);
        child.kill('SIGKILL');
        if (this.pending.delete(id))
          resolve({ code: 124, stdout: '', stderr: `nft: no answer in ${this.timeoutMs} ms` });
      }, this.timeoutMs);
      this.pending.set(id, { resolve, timer });
      this.hold(true);
      child.stdin?.write(encodeFrame({ id, args, ...(stdin !== undefined ? { stdin } : {}) }));
    });
  };

  close(): void {
    const child = this.child;
    this.child = undefined;
    this.ready = undefined;
    if (child) {
      child.stdin?.end();
      // Not waited for: it exits on end of input; a stuck one is killed shortly after.
      const t = setTimeout(() => child.kill('SIGKILL'), 2_000);
      t.unref();
      child.once('exit', () => clearTimeout(t));
      this.hold(false, child);
    }
  }
}
