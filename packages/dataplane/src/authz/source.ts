// Where the authorization server's policy comes from. Owns: the `PolicySource` port (complete,
// versioned snapshots pushed to a handler) and `FileSource`, which reads resource files and
// directories and re-reads them when they change. The agent's per-endpoint policy-sync stream is
// the second implementation. Must never: deliver a partial snapshot (a set with load errors is
// reported as an error and not delivered, so the last good views stay: fail static).

import { readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { DEFAULT_LOAD_LIMITS, loadMany } from '@palisade/core';
import type { Resource } from '@palisade/core';
import type { PolicyView } from '../sidecar/policy-view.js';

/** A set of resources, compiled by the receiver. */
export interface ResourceSnapshot {
  /** Strictly increasing per source. */
  readonly version: number;
  readonly resources: readonly Resource[];
  /**
   * Set when the snapshot holds only what one endpoint needs: only that endpoint's view is
   * rebuilt from it. Absent: the whole set, for every endpoint in it.
   */
  readonly endpoint?: string;
}

/** A view some other component already built and validated (the agent link's). */
export interface ViewSnapshot {
  readonly version: number;
  readonly view: PolicyView;
}

export type PolicySnapshot = ResourceSnapshot | ViewSnapshot;

export interface PolicySourceHandlers {
  readonly onSnapshot: (s: PolicySnapshot) => void;
  readonly onError: (reason: string) => void;
}

export interface PolicySource {
  /** Resolves once the first snapshot (or the first error) has been handed over. */
  start(h: PolicySourceHandlers): Promise<void>;
  close(): Promise<void>;
}

const EXTENSIONS = new Set(['.yaml', '.yml', '.json']);

function walk(p: string, out: string[]): void {
  const st = statSync(p);
  if (!st.isDirectory()) {
    out.push(p);
    return;
  }
  for (const name of readdirSync(p).sort()) {
    if (name.startsWith('.')) continue;
    const q = join(p, name);
    if (statSync(q).isDirectory()) walk(q, out);
    else if (EXTENSIONS.has(extname(name).toLowerCase())) out.push(q);
  }
}

/** Every file the paths name, with size and modification time: equal strings, equal inputs. */
export function filesSignature(paths: readonly string[]): string {
  const files: string[] = [];
  for (const p of paths) walk(p, files);
  return files
    .map((f) => {
      const st = statSync(f);
      return `${f}\0${st.size}\0${st.mtimeMs}`;
    })
    .join('\n');
}

/** Reads resource files and directories as one set; errors as `file:line:col: CODE message`. */
export function readResourceFiles(paths: readonly string[]): {
  readonly resources: Resource[];
  readonly errors: string[];
} {
  const files: string[] = [];
  try {
    for (const p of paths) walk(p, files);
  } catch (e) {
    return { resources: [], errors: [`cannot read the inputs: ${(e as Error).message}`] };
  }
  if (files.length === 0) return { resources: [], errors: ['no .yaml, .yml or .json file'] };
  const texts: { name: string; text: string }[] = [];
  for (const f of files) {
    try {
      if (statSync(f).size > DEFAULT_LOAD_LIMITS.maxBytes)
        return {
          resources: [],
          errors: [`${f}: larger than ${DEFAULT_LOAD_LIMITS.maxBytes} bytes`],
        };
      texts.push({ name: f, text: readFileSync(f, 'utf8') });
    } catch (e) {
      return { resources: [], errors: [`cannot read ${f}: ${(e as Error).message}`] };
    }
  }
  const r = loadMany(texts);
  const errors = r.diagnostics
    .filter((d) => d.severity === 'error')
    .map((d) => `${d.file}:${d.line}:${d.column}: ${d.code} ${d.message}`);
  return { resources: r.resources, errors };
}

export interface FileSourceOptions {
  readonly paths: readonly string[];
  /** How often to look for changes (default 1000 ms; 0 = read once, never watch). */
  readonly intervalMs?: number;
}

/**
 * Resource files, watched by polling their sizes and modification times (no inotify limits, works
 * on every file system, and a burst of writes is read once it settles for one interval).
 */
export class FileSource implements PolicySource {
  readonly #paths: readonly string[];
  readonly #interval: number;
  #timer: NodeJS.Timeout | undefined;
  #signature: string | undefined;
  #version = 0;

  constructor(opts: FileSourceOptions) {
    this.#paths = opts.paths;
    this.#interval = opts.intervalMs ?? 1000;
  }

  start(h: PolicySourceHandlers): Promise<void> {
    this.#poll(h, true);
    if (this.#interval > 0) {
      this.#timer = setInterval(() => this.#poll(h, false), this.#interval);
      this.#timer.unref();
    }
    return Promise.resolve();
  }

  close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    return Promise.resolve();
  }

  #poll(h: PolicySourceHandlers, first: boolean): void {
    let sig: string;
    try {
      sig = filesSignature(this.#paths);
    } catch (e) {
      if (this.#signature !== 'unreadable' || first)
        h.onError(`cannot read the inputs: ${(e as Error).message}`);
      this.#signature = 'unreadable';
      return;
    }
    if (!first && sig === this.#signature) return;
    this.#signature = sig;
    const r = readResourceFiles(this.#paths);
    if (r.errors.length > 0) {
      h.onError(`${r.errors.length} error(s) in the inputs, first: ${r.errors[0] ?? ''}`);
      return;
    }
    this.#version++;
    h.onSnapshot({ version: this.#version, resources: r.resources });
  }
}

/** A source whose snapshots the caller pushes (tests, and wiring other feeds in-process). */
export class PushSource implements PolicySource {
  #h: PolicySourceHandlers | undefined;
  readonly #pending: PolicySnapshot[] = [];

  start(h: PolicySourceHandlers): Promise<void> {
    this.#h = h;
    for (const s of this.#pending.splice(0)) h.onSnapshot(s);
    return Promise.resolve();
  }

  push(s: PolicySnapshot): void {
    if (this.#h) this.#h.onSnapshot(s);
    else this.#pending.push(s);
  }

  close(): Promise<void> {
    this.#h = undefined;
    return Promise.resolve();
  }
}
