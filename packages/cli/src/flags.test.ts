import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { DEFAULT_DATA_DIR } from '@palisade/pki';
import { CA_DEFAULT_DATA_DIR } from './flags.js';

const source = (file: string): string =>
  readFileSync(new URL(file, import.meta.url), 'utf8')
    .split('\n')
    .filter((l) => /^\s*(import|export) /.test(l) || /^\s*} from /.test(l))
    .join('\n');

test('the help text names the data directory the CA really defaults to', () => {
  assert.equal(CA_DEFAULT_DATA_DIR, DEFAULT_DATA_DIR);
});

test('main.ts imports no command implementation statically (help and usage errors stay light)', () => {
  const heavy = ['./offline.js', './online/', './ca.js', './agent.js', './demo.js', '@palisade/'];
  const statics = source('./main.ts')
    .split('\n')
    .filter((l) => !l.startsWith('import type'));
  for (const h of heavy) {
    const hits = statics.filter((l) => l.includes(`'${h}`));
    assert.deepEqual(hits, [], `main.ts must import ${h} lazily`);
  }
});

test('flags.ts imports nothing but types and other light modules', () => {
  const imports = source('./flags.ts')
    .split('\n')
    .filter((l) => / from '/.test(l) && !l.startsWith('import type'));
  assert.deepEqual(imports, []);
});
