// Reading `-f` inputs: files, directories (recursive, sorted) and stdin, with the size limit
// checked before a file is read whole. Owns: file I/O for offline commands.

import { readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { DEFAULT_LOAD_LIMITS, loadMany } from '@palisade/core';
import type { Diagnostic, LoadResult } from '@palisade/core';

export interface Io {
  readonly stdout: { write(s: string): unknown };
  readonly stderr: { write(s: string): unknown };
  /** Reads all of standard input. */
  readonly readStdin: () => Promise<string>;
}

export class InputError extends Error {
  readonly code = 'CLI_ERR_FILE';
}

const EXTENSIONS = new Set(['.yaml', '.yml', '.json']);

function walk(dir: string, out: string[]): void {
  for (const name of readdirSync(dir).sort()) {
    if (name.startsWith('.')) continue;
    const p = join(dir, name);
    const st = statSync(p);
    if (st.isDirectory()) walk(p, out);
    else if (EXTENSIONS.has(extname(name).toLowerCase())) out.push(p);
  }
}

/** Reads every input and loads it as one set (duplicates across files are errors). */
export async function readInputs(
  paths: readonly string[],
  io: Io,
  maxBytes: number = DEFAULT_LOAD_LIMITS.maxBytes,
): Promise<LoadResult & { files: number }> {
  if (paths.length === 0)
    throw new InputError('no input: give -f FILE, -f DIRECTORY or -f - (stdin)');
  const texts: { name: string; text: string }[] = [];
  const tooBig: Diagnostic[] = [];
  for (const p of paths) {
    if (p === '-') {
      texts.push({ name: '<stdin>', text: await io.readStdin() });
      continue;
    }
    let st;
    try {
      st = statSync(p);
    } catch {
      throw new InputError(`cannot read ${p}: no such file or directory`);
    }
    const files: string[] = [];
    if (st.isDirectory()) {
      walk(p, files);
      if (files.length === 0) throw new InputError(`${p} holds no .yaml, .yml or .json file`);
    } else files.push(p);
    for (const f of files) {
      const size = statSync(f).size;
      if (size > maxBytes) {
        tooBig.push({
          code: 'POLICY_ERR_LIMIT_EXCEEDED',
          severity: 'error',
          message: `the file is ${size} bytes; the limit is ${maxBytes}`,
          hint: 'split it into several files',
          file: f,
          line: 0,
          column: 0,
        });
        continue;
      }
      try {
        texts.push({ name: f, text: readFileSync(f, 'utf8') });
      } catch (e) {
        throw new InputError(`cannot read ${f}: ${(e as Error).message}`);
      }
    }
  }
  const r = loadMany(texts, { maxBytes });
  return {
    resources: r.resources,
    diagnostics: [...tooBig, ...r.diagnostics],
    files: texts.length + tooBig.length,
  };
}
