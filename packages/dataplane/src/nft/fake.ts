// A fake nft for unit tests of the driver's callers (STYLE 8): it keeps the owned table as the
// last full script plus set elements, answers `-j list table` from that state, records every
// command, and can fail on request or be "tampered" with. It does not parse rules: semantics are
// proven against the real nft in network namespaces (driver.test.ts, differential.test.ts).
// Owns: nothing in production. Must never: be used outside tests.

import type { NftResult, NftRunner } from './driver.js';
import { skeletonParts } from './render.js';

export class FakeNft {
  readonly commands: { args: readonly string[]; stdin: string }[] = [];
  /** table name → { script, elements by set } */
  private readonly tables = new Map<
    string,
    { script: string; elements: Map<string, Set<string>> }
  >();
  failNext = 0;

  readonly runner: NftRunner = (args, stdin) => Promise.resolve(this.handle(args, stdin ?? ''));

  private handle(args: readonly string[], stdin: string): NftResult {
    this.commands.push({ args, stdin });
    if (this.failNext > 0) {
      this.failNext--;
      return { code: 1, stdout: '', stderr: 'Error: fake failure' };
    }
    if (args[0] === '-j' && args[1] === 'list' && args[2] === 'table') {
      const t = this.tables.get(`${args[3] ?? ''} ${args[4] ?? ''}`);
      if (!t) return { code: 1, stdout: '', stderr: 'Error: No such file or directory' };
      const sets = [...t.elements.entries()]
        .sort()
        .map(([name, els]) => ({ set: { name, elem: [...els].sort() } }));
      // Chains and rules as nft -j lists them: name, chain, comment (the text stands in for expr).
      const parts = skeletonParts(t.script);
      const chains: unknown[] = [];
      for (const [name, body] of [...parts.baseChains, ...parts.chains]) {
        chains.push({ chain: { name } });
        for (const r of parts.baseChains.has(name) ? body.slice(1) : body)
          chains.push({
            rule: { chain: name, comment: /comment "([^"]*)"$/.exec(r)?.[1], expr: [r] },
          });
      }
      return {
        code: 0,
        stdout: JSON.stringify({
          nftables: [{ table: { script: t.script } }, ...chains, ...sets],
        }),
        stderr: '',
      };
    }
    if (args[0] === '-f' && args[1] === '-') return this.batch(stdin);
    return { code: 1, stdout: '', stderr: `Error: fake nft does not know ${args.join(' ')}` };
  }

  /** Applies a batch all-or-nothing, like the kernel. */
  private batch(text: string): NftResult {
    const next = new Map(
      [...this.tables].map(([k, v]) => [
        k,
        { script: v.script, elements: new Map([...v.elements].map(([s, e]) => [s, new Set(e)])) },
      ]),
    );
    const lines = text.split('\n');
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i] ?? '';
      let m: RegExpExecArray | null;
      if ((m = /^add table (\w+) (\w+)$/.exec(line))) {
        const k = `${m[1]} ${m[2]}`;
        if (!next.has(k)) next.set(k, { script: '', elements: new Map() });
      } else if ((m = /^delete table (\w+) (\w+)$/.exec(line))) {
        if (!next.delete(`${m[1]} ${m[2]}`))
          return { code: 1, stdout: '', stderr: 'Error: No such file or directory' };
      } else if ((m = /^table (\w+) (\w+) \{$/.exec(line))) {
        const k = `${m[1]} ${m[2]}`;
        const body: string[] = [line];
        while (i + 1 < lines.length && lines[i] !== '}') body.push(lines[++i] ?? '');
        const elements = new Map<string, Set<string>>();
        for (const b of body) {
          const s = /^\tset (\S+) \{$/.exec(b);
          if (s?.[1]) elements.set(s[1], new Set());
        }
        next.set(k, { script: body.join('\n'), elements });
      } else if ((m = /^(add|delete) element (\w+) (\w+) (\S+) \{ (.*) \}$/.exec(line))) {
        const t = next.get(`${m[2]} ${m[3]}`);
        const set = t?.elements.get(m[4] ?? '');
        if (!set) return { code: 1, stdout: '', stderr: 'Error: No such file or directory' };
        for (const e of (m[5] ?? '').split(', ')) {
          if (m[1] === 'add') set.add(e);
          else if (!set.delete(e))
            return { code: 1, stdout: '', stderr: 'Error: element does not exist' };
        }
      } else if (line.trim() !== '') {
        return { code: 1, stdout: '', stderr: `Error: syntax error: ${line}` };
      }
    }
    this.tables.clear();
    for (const [k, v] of next) this.tables.set(k, v);
    return { code: 0, stdout: '', stderr: '' };
  }

  /** Someone else changes the table behind the driver's back. */
  tamper(table: string, set: string, element: string): void {
    this.tables.get(`inet ${table}`)?.elements.get(set)?.add(element);
  }

  addForeignTable(name: string): void {
    this.tables.set(`inet ${name}`, { script: `table inet ${name} {\n}`, elements: new Map() });
  }

  has(table: string): boolean {
    return this.tables.has(`inet ${table}`);
  }

  elements(table: string, set: string): string[] {
    return [...(this.tables.get(`inet ${table}`)?.elements.get(set) ?? [])].sort();
  }
}
