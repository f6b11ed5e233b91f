// A child process that speaks JSON lines: requests on stdin carry an `id`, replies on stdout carry
// it back; other lines go to `onLine`. Used for the pods' services and sidecars, run inside pod
// network namespaces with `ip netns exec` (which execs, so the pid is the child's own). Stopping
// closes stdin (the children exit on it), then SIGTERM, then SIGKILL.
// Owns: the protocol and the stop sequence. Must never: leave a process it started running.

import { spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import readline from 'node:readline';

export class LineChild {
  readonly #proc: ChildProcessWithoutNullStreams;
  readonly #waiting = new Map<number, (v: Record<string, unknown>) => void>();
  readonly #listeners: ((m: Record<string, unknown>) => void)[] = [];
  readonly #text: ((line: string) => void)[] = [];
  readonly #errText: ((line: string) => void)[] = [];
  #seq = 0;
  #exited = false;
  #stderr = '';
  readonly exited: Promise<number | null>;

  constructor(
    readonly name: string,
    command: string,
    args: readonly string[],
  ) {
    this.#proc = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    this.#proc.stdin.on('error', () => undefined);
    this.#proc.stderr.on('data', (d: Buffer) => {
      this.#stderr = (this.#stderr + d.toString('utf8')).slice(-4000);
    });
    readline.createInterface({ input: this.#proc.stderr }).on('line', (line) => {
      for (const l of this.#errText) l(line);
    });
    this.exited = new Promise((resolve) => {
      this.#proc.on('exit', (code) => {
        this.#exited = true;
        for (const w of this.#waiting.values()) w({ ok: false, error: 'process exited' });
        this.#waiting.clear();
        resolve(code);
      });
      this.#proc.on('error', () => {
        this.#exited = true;
        resolve(null);
      });
    });
    readline.createInterface({ input: this.#proc.stdout }).on('line', (line) => {
      for (const l of this.#text) l(line);
      let m: Record<string, unknown>;
      try {
        m = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      if (typeof m !== 'object' || m === null) return;
      if (typeof m.id === 'number' && this.#waiting.has(m.id)) {
        const w = this.#waiting.get(m.id);
        this.#waiting.delete(m.id);
        w?.(m);
        return;
      }
      for (const l of this.#listeners) l(m);
    });
  }

  get pid(): number | undefined {
    return this.#proc.pid;
  }

  get running(): boolean {
    return !this.#exited;
  }

  /** The end of the child's stderr, for error messages. */
  get stderrTail(): string {
    return this.#stderr.trim().split('\n').slice(-5).join('\n');
  }

  /** Every stdout line as text (processes that print for people, like the agent). */
  onText(l: (line: string) => void): void {
    this.#text.push(l);
  }

  /** Every stderr line as text (progress lines of processes that keep stdout for data). */
  onStderr(l: (line: string) => void): void {
    this.#errText.push(l);
  }

  onLine(l: (m: Record<string, unknown>) => void): void {
    this.#listeners.push(l);
  }

  /** Resolves with the first line `match` accepts; rejects on exit or after timeoutMs. */
  waitFor(
    match: (m: Record<string, unknown>) => boolean,
    timeoutMs: number,
    what: string,
  ): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(
        () => reject(new Error(`${this.name}: no ${what} within ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.#listeners.push((m) => {
        if (!match(m)) return;
        clearTimeout(t);
        resolve(m);
      });
      void this.exited.then((code) => {
        clearTimeout(t);
        reject(
          new Error(
            `${this.name} exited (${code ?? 'signal'}) before ${what}${this.stderrTail ? `: ${this.stderrTail}` : ''}`,
          ),
        );
      });
    });
  }

  request(req: Record<string, unknown>, timeoutMs = 15_000): Promise<Record<string, unknown>> {
    const id = ++this.#seq;
    return new Promise((resolve) => {
      if (this.#exited) return resolve({ ok: false, error: 'process exited' });
      const t = setTimeout(() => {
        this.#waiting.delete(id);
        resolve({ ok: false, error: 'no answer' });
      }, timeoutMs);
      this.#waiting.set(id, (v) => {
        clearTimeout(t);
        resolve(v);
      });
      this.#proc.stdin.write(`${JSON.stringify({ ...req, id })}\n`);
    });
  }

  send(line: unknown): void {
    if (!this.#exited) this.#proc.stdin.write(`${JSON.stringify(line)}\n`);
  }

  /** Closes stdin, then SIGTERM after graceMs, then SIGKILL; resolves once it has exited. */
  async stop(graceMs = 1500): Promise<void> {
    if (this.#exited) return;
    this.#proc.stdin.end();
    const wait = (ms: number) =>
      Promise.race([this.exited.then(() => true), new Promise((r) => setTimeout(r, ms, false))]);
    if (await wait(graceMs)) return;
    this.#proc.kill('SIGTERM');
    if (await wait(graceMs)) return;
    this.#proc.kill('SIGKILL');
    await wait(5000);
  }

  /** SIGKILL now (the demo's "the agent dies" step); resolves once it has exited. */
  async kill(): Promise<void> {
    if (this.#exited) return;
    this.#proc.kill('SIGKILL');
    await this.exited;
  }
}
