// Command-line parsing shared by every command: flags with values, repeatable flags, booleans,
// "did you mean" for unknown flags. Owns: argv → options. Must never: do I/O.

import { suggest } from '@palisade/core';

export interface FlagSpec {
  readonly kind: 'string' | 'boolean' | 'list';
  readonly short?: string;
  readonly help: string;
  readonly value?: string;
}

export type Flags = Readonly<Record<string, FlagSpec>>;

export interface Parsed {
  readonly values: Record<string, string | boolean | string[] | undefined>;
  readonly positionals: string[];
}

export class UsageError extends Error {
  readonly code = 'CLI_ERR_USAGE';
}

export function parseArgs(argv: readonly string[], flags: Flags): Parsed {
  const values: Parsed['values'] = {};
  const positionals: string[] = [];
  const byShort = new Map<string, string>();
  for (const [name, f] of Object.entries(flags)) if (f.short) byShort.set(f.short, name);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? '';
    if (a === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (a === '-' || !a.startsWith('-')) {
      positionals.push(a);
      continue;
    }
    let name: string;
    let inline: string | undefined;
    if (a.startsWith('--')) {
      const eq = a.indexOf('=');
      name = eq < 0 ? a.slice(2) : a.slice(2, eq);
      inline = eq < 0 ? undefined : a.slice(eq + 1);
    } else {
      const s = byShort.get(a.slice(1, 2));
      if (!s) throw new UsageError(`unknown flag ${a}`);
      name = s;
      inline = a.length > 2 ? a.slice(2) : undefined;
    }
    const spec = flags[name];
    if (!spec) {
      const near = suggest(name, Object.keys(flags));
      throw new UsageError(`unknown flag --${name}${near ? `; did you mean --${near}?` : ''}`);
    }
    if (spec.kind === 'boolean') {
      if (inline !== undefined) throw new UsageError(`--${name} takes no value`);
      values[name] = true;
      continue;
    }
    let v = inline;
    if (v === undefined) {
      v = argv[i + 1];
      if (v === undefined)
        throw new UsageError(`--${name} needs a value (${spec.value ?? 'VALUE'})`);
      i++;
    }
    if (spec.kind === 'list') {
      const list = (values[name] as string[] | undefined) ?? [];
      list.push(v);
      values[name] = list;
    } else {
      if (values[name] !== undefined) throw new UsageError(`--${name} given twice`);
      values[name] = v;
    }
  }
  return { values, positionals };
}

export function flagHelp(flags: Flags): string {
  return Object.entries(flags)
    .map(([name, f]) => {
      const left = `  ${f.short ? `-${f.short}, ` : '    '}--${name}${f.kind === 'boolean' ? '' : ` ${f.value ?? 'VALUE'}`}`;
      return `${left.padEnd(36)}${f.help}`;
    })
    .join('\n');
}
