// The live demo's cleanup registry: every resource the demo creates on the machine (network
// namespaces, veths, the nftables table, processes, the temporary directory) is recorded here
// the moment it exists, with the action that removes it. `runAll` undoes them newest first, each
// bounded in time, and carries on past failures, so Ctrl-C, SIGTERM or a failure half-way
// through leave nothing behind. Also: the sweep of what an earlier demo run left behind when it
// was killed outright (names carry the pid, so only resources of dead demo processes are taken).
// Owns: the order and the bounds of removal. Must never: remove anything it did not record, or
// anything whose name does not carry a dead demo's pid.

import { execFileSync } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface CleanupStep {
  readonly label: string;
  readonly undo: () => Promise<void> | void;
  /** Consecutive steps of one batch are undone together (e.g. stopping many processes). */
  readonly batch: string | undefined;
}

export class CleanupRegistry {
  readonly #steps: CleanupStep[] = [];
  readonly #late: Promise<void>[] = [];
  readonly #lateFailed: string[] = [];
  #running: Promise<readonly string[]> | undefined;

  /**
   * Records a resource that now exists. Once cleaning has started (a signal arrived while the
   * demo was still creating things), the resource is removed at once instead.
   */
  add(label: string, undo: () => Promise<void> | void, batch?: string): void {
    if (this.#running === undefined) {
      this.#steps.push({ label, undo, batch });
      return;
    }
    this.#late.push(
      Promise.resolve()
        .then(undo)
        .catch(() => void this.#lateFailed.push(label)),
    );
  }

  /** Waits for the removals of resources recorded after cleaning started; their failures. */
  async drain(): Promise<readonly string[]> {
    await Promise.all(this.#late);
    return this.#lateFailed;
  }

  get size(): number {
    return this.#steps.length;
  }

  labels(): readonly string[] {
    return this.#steps.map((s) => s.label);
  }

  /** Undoes every step, newest first; resolves with the labels whose undo failed. Idempotent. */
  runAll(
    say: (line: string) => void = () => undefined,
    stepTimeoutMs = 10_000,
  ): Promise<readonly string[]> {
    this.#running ??= (async () => {
      const failed: string[] = [];
      const one = async (s: CleanupStep): Promise<void> => {
        let timer: NodeJS.Timeout | undefined;
        try {
          await Promise.race([
            Promise.resolve().then(s.undo),
            new Promise<never>((_, reject) => {
              timer = setTimeout(() => reject(new Error('timed out')), stepTimeoutMs);
            }),
          ]);
        } catch (e) {
          failed.push(s.label);
          say(`cleanup: ${s.label}: ${e instanceof Error ? e.message : String(e)}`);
        } finally {
          clearTimeout(timer);
        }
      };
      while (this.#steps.length > 0) {
        const s = this.#steps.pop();
        if (!s) break;
        const group = [s];
        while (s.batch !== undefined && this.#steps.at(-1)?.batch === s.batch)
          group.push(this.#steps.pop() as CleanupStep);
        await Promise.all(group.map(one));
      }
      return failed;
    })();
    return this.#running;
  }
}

/** The prefix of every name the demo gives (netns, table): `pd<pid>`. */
export function demoPrefix(pid = process.pid): string {
  return `pd${pid}`;
}

export const TABLE_PREFIX = 'palisade_demo_';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Network namespaces named by demo runs, with the pid in the name. */
export function demoNamespaces(): { name: string; pid: number }[] {
  let text = '';
  try {
    text = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  } catch {
    return [];
  }
  const out: { name: string; pid: number }[] = [];
  for (const line of text.split('\n')) {
    const name = line.split(' ')[0] ?? '';
    const m = /^pd(\d{1,10})-[a-z0-9-]+$/.exec(name);
    if (m) out.push({ name, pid: Number(m[1]) });
  }
  return out;
}

/**
 * Removes namespaces left by demo processes that no longer run (a demo killed with SIGKILL cannot
 * clean up; its pods' veths and its node's table live inside these namespaces and go with them).
 */
export function sweepLeftovers(say: (line: string) => void): number {
  let n = 0;
  for (const ns of demoNamespaces()) {
    if (ns.pid === process.pid || alive(ns.pid)) continue;
    try {
      execFileSync('ip', ['netns', 'del', ns.name], { stdio: 'ignore' });
      n += 1;
    } catch {
      // gone meanwhile
    }
  }
  if (n > 0) say(`removed ${n} network namespace(s) left by an earlier demo run that was killed`);
  // Work directories of demo processes that no longer run (`palisade-demo-<pid>-XXXXXX`).
  let dirs = 0;
  for (const f of readdirSync(tmpdir())) {
    const m = /^palisade-demo-(\d{1,10})-[A-Za-z0-9]{6}$/.exec(f);
    if (!m || Number(m[1]) === process.pid || alive(Number(m[1]))) continue;
    rmSync(join(tmpdir(), f), { recursive: true, force: true });
    dirs += 1;
  }
  if (dirs > 0) say(`removed ${dirs} work directory(ies) left by an earlier demo run`);
  return n + dirs;
}
