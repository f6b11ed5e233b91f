// libnftables in this process through an FFI (koffi): one nft context that lives as long as the
// session, so a change costs no process start, no `ip netns exec`, no library load. A script is
// run with `nft_run_cmd_from_filename` (from a private file, so errors carry line numbers): parsed,
// evaluated and sent as ONE netlink batch (the kernel commits all of it or nothing), exactly as
// `nft -f` does; output and errors are buffered in the context and read back after each call.
// Owns: the binding. Must never: build nft commands (driver.ts does), or be used concurrently
// (calls are queued here: one context, one command at a time).

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { NftResult } from './session.js';

/** Debian's libnftables (package libnftables1, installed with nftables). */
export const DEFAULT_LIBNFT = '/usr/lib/x86_64-linux-gnu/libnftables.so.1';

/** `NFT_CTX_OUTPUT_JSON` of libnftables.h. */
const OUTPUT_JSON = 1 << 4;

type Ctx = object;
type Callback<T> = (err: unknown, result: T) => void;
interface Bound {
  ctxNew(flags: number): Ctx | null;
  ctxFree(ctx: Ctx): void;
  bufferOutput(ctx: Ctx): number;
  bufferError(ctx: Ctx): number;
  getOutput(ctx: Ctx): string | null;
  getError(ctx: Ctx): string | null;
  getFlags(ctx: Ctx): number;
  setFlags(ctx: Ctx, flags: number): void;
  run(ctx: Ctx, buffer: string): number;
  runAsync(ctx: Ctx, buffer: string, cb: Callback<number>): void;
  runFile(ctx: Ctx, file: string): number;
  runFileAsync(ctx: Ctx, file: string, cb: Callback<number>): void;
}

let loaded: Promise<Bound> | undefined;
let loadedPath: string | undefined;

type KoffiFn = ((...args: unknown[]) => unknown) & {
  async: (...args: unknown[]) => void;
};
interface KoffiLib {
  func(definition: string): KoffiFn;
}
interface Koffi {
  load(path: string): KoffiLib;
}

async function bind(path: string): Promise<Bound> {
  if (!path.startsWith('/'))
    throw new Error(`the libnftables path must be absolute, not ${JSON.stringify(path)}`);
  const mod = (await import('koffi')) as unknown as { default?: Koffi } & Koffi;
  const koffi: Koffi = mod.default ?? mod;
  const lib = koffi.load(path);
  const f = (d: string) => lib.func(d);
  const ctxNew = f('void *nft_ctx_new(uint32_t flags)');
  const ctxFree = f('void nft_ctx_free(void *ctx)');
  const bufferOutput = f('int nft_ctx_buffer_output(void *ctx)');
  const bufferError = f('int nft_ctx_buffer_error(void *ctx)');
  const getOutput = f('const char *nft_ctx_get_output_buffer(void *ctx)');
  const getError = f('const char *nft_ctx_get_error_buffer(void *ctx)');
  const getFlags = f('uint32_t nft_ctx_output_get_flags(void *ctx)');
  const setFlags = f('void nft_ctx_output_set_flags(void *ctx, uint32_t flags)');
  const run = f('int nft_run_cmd_from_buffer(void *ctx, const char *buf)');
  const runFile = f('int nft_run_cmd_from_filename(void *ctx, const char *filename)');
  return {
    ctxNew: (flags) => ctxNew(flags) as Ctx | null,
    ctxFree: (ctx) => void ctxFree(ctx),
    bufferOutput: (ctx) => bufferOutput(ctx) as number,
    bufferError: (ctx) => bufferError(ctx) as number,
    getOutput: (ctx) => getOutput(ctx) as string | null,
    getError: (ctx) => getError(ctx) as string | null,
    getFlags: (ctx) => getFlags(ctx) as number,
    setFlags: (ctx, flags) => void setFlags(ctx, flags),
    run: (ctx, buffer) => run(ctx, buffer) as number,
    runAsync: (ctx, buffer, cb) => run.async(ctx, buffer, cb),
    runFile: (ctx, file) => runFile(ctx, file) as number,
    runFileAsync: (ctx, file, cb) => runFile.async(ctx, file, cb),
  };
}

/** One libnftables context (its cache lives as long as it does). */
export class LibNft {
  private ctx: Ctx | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly b: Bound,
    ctx: Ctx,
  ) {
    this.ctx = ctx;
  }

  /**
   * Loads the library (once per process and path) and makes a context with buffered output and
   * errors. Throws with the reason when koffi or the library cannot be loaded.
   */
  static async open(path: string = DEFAULT_LIBNFT): Promise<LibNft> {
    if (loaded === undefined || loadedPath !== path) {
      loadedPath = path;
      loaded = bind(path);
      loaded.catch(() => {
        loaded = undefined;
      });
    }
    const b = await loaded;
    const ctx = b.ctxNew(0);
    if (!ctx) throw new Error('nft_ctx_new failed');
    if (b.bufferOutput(ctx) !== 0 || b.bufferError(ctx) !== 0) {
      b.ctxFree(ctx);
      throw new Error('nft_ctx_buffer_output/error failed');
    }
    return new LibNft(b, ctx);
  }

  private prepare(json: boolean): Ctx {
    const ctx = this.ctx;
    if (!ctx) throw new Error('the nft context is closed');
    const flags = this.b.getFlags(ctx);
    this.b.setFlags(ctx, json ? flags | OUTPUT_JSON : flags & ~OUTPUT_JSON);
    return ctx;
  }

  /**
   * A script goes through a private file, not a buffer: nft then reports an error with its line
   * number and that line's text (from a buffer, libnftables 1.0.6 prints the first line instead).
   */
  private scriptFile(script: string): string | undefined {
    try {
      // A directory per call, removed right after it: nothing is left when the process ends.
      const dir = mkdtempSync(join(tmpdir(), 'palisade-nft-'));
      const file = join(dir, 'batch');
      writeFileSync(file, script, { mode: 0o600 });
      return file;
    } catch {
      // No writable temporary directory: the buffer works the same, with poorer error lines.
      return undefined;
    }
  }

  private result(ctx: Ctx, rc: number, file: string | undefined): NftResult {
    // Reading a buffer also rewinds it for the next command.
    const stdout = this.b.getOutput(ctx) ?? '';
    let stderr = this.b.getError(ctx) ?? '';
    if (file !== undefined) {
      stderr = stderr.split(file).join('batch');
      rmSync(dirname(file), { recursive: true, force: true });
    }
    return { code: rc === 0 ? 0 : 1, stdout, stderr };
  }

  /** Runs a request in this thread (the worker process, which does nothing else meanwhile). */
  runSync(req: LibraryRequest): NftResult {
    const ctx = this.prepare(req.json);
    if (req.script === undefined) return this.result(ctx, this.b.run(ctx, req.command), undefined);
    const file = this.scriptFile(req.script);
    if (file === undefined) return this.result(ctx, this.b.run(ctx, req.script), undefined);
    return this.result(ctx, this.b.runFile(ctx, file), file);
  }

  /** Runs a request on a thread of the pool, so the event loop stays free; queued. */
  run(req: LibraryRequest): Promise<NftResult> {
    const p = this.queue.then(
      () =>
        new Promise<NftResult>((resolve, reject) => {
          const ctx = this.prepare(req.json);
          const file = req.script === undefined ? undefined : this.scriptFile(req.script);
          const done = (err: unknown, rc: number) => {
            if (err) reject(err instanceof Error ? err : new Error('the nft call failed'));
            else resolve(this.result(ctx, rc, file));
          };
          if (file !== undefined) this.b.runFileAsync(ctx, file, done);
          else this.b.runAsync(ctx, req.script ?? req.command, done);
        }),
    );
    this.queue = p.catch(() => undefined);
    return p;
  }

  /** Frees the context after the queued commands. */
  close(): void {
    void this.queue.then(() => {
      if (this.ctx) this.b.ctxFree(this.ctx);
      this.ctx = undefined;
    });
  }
}

/**
 * The driver speaks nft's command line (`-f -` with a script on stdin, `[-j] list table inet T`);
 * this is the same request as a buffer for the library. Undefined for anything else, so nothing
 * but those two shapes reaches the context.
 */
export interface LibraryRequest {
  /** A script (`-f -`): one batch. */
  readonly script?: string;
  /** Otherwise one command line. */
  readonly command: string;
  readonly json: boolean;
}

export function libraryRequest(
  args: readonly string[],
  stdin?: string,
): LibraryRequest | undefined {
  let rest = [...args];
  let json = false;
  if (rest[0] === '-j') {
    json = true;
    rest = rest.slice(1);
  }
  if (rest.length === 2 && rest[0] === '-f' && rest[1] === '-')
    return { script: stdin ?? '', command: '', json };
  // The only other command the driver sends: a listing of one table, by a validated name.
  if (
    rest.length !== 4 ||
    rest[0] !== 'list' ||
    rest[1] !== 'table' ||
    rest[2] !== 'inet' ||
    !/^[A-Za-z][A-Za-z0-9_]{0,31}$/.test(rest[3] ?? '')
  )
    return undefined;
  return { command: rest.join(' ') + '\n', json };
}
