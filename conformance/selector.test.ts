// Runs the selector conformance corpus (conformance/selector/*.yaml): one named test per case.
// Every case's rule must be one of the rules documented in docs/design/selector.md.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';
import {
  compileSelector,
  matchSelector,
  parseSelector,
  printSelector,
  type Labels,
} from '../packages/core/src/selector/selector.js';

interface Case {
  readonly selector: string;
  readonly labels: Labels;
  readonly expect: boolean | 'error';
  readonly rule: string;
  readonly canonical?: string;
  readonly position?: number;
}

const here = dirname(fileURLToPath(import.meta.url));
const corpusDir = join(here, 'selector');
const doc = readFileSync(join(here, '..', 'docs', 'design', 'selector.md'), 'utf8');
const documentedRules = new Set([...doc.matchAll(/^\| `([a-z-]+)` \|/gm)].map((m) => m[1]));

function loadCases(file: string): Case[] {
  const data = parseYaml(readFileSync(join(corpusDir, file), 'utf8')) as { cases?: unknown };
  if (!Array.isArray(data.cases)) throw new Error(`${file}: no 'cases' list`);
  return data.cases.map((raw, i) => {
    const c = raw as Partial<Case>;
    if (typeof c.selector !== 'string') throw new Error(`${file}#${i}: selector must be a string`);
    if (c.expect !== true && c.expect !== false && c.expect !== 'error') {
      throw new Error(`${file}#${i}: expect must be true, false or error`);
    }
    if (typeof c.rule !== 'string') throw new Error(`${file}#${i}: rule is required`);
    return { ...c, labels: c.labels ?? {} } as Case;
  });
}

function shorten(s: string): string {
  const oneLine = JSON.stringify(s);
  return oneLine.length > 70 ? `${oneLine.slice(0, 60)}…(${s.length} chars)` : oneLine;
}

const files = readdirSync(corpusDir)
  .filter((f) => f.endsWith('.yaml'))
  .sort();

let total = 0;
for (const file of files) {
  const cases = loadCases(file);
  total += cases.length;
  cases.forEach((c, i) => {
    test(`selector ${file}#${i} [${c.rule}] ${shorten(c.selector)}`, () => {
      assert.ok(documentedRules.has(c.rule), `rule '${c.rule}' is not documented`);
      const r = parseSelector(c.selector);
      if (c.expect === 'error') {
        assert.equal(r.ok, false, r.ok ? `parsed as ${printSelector(r.selector)}` : '');
        if (!r.ok && c.position !== undefined) {
          assert.equal(r.error.position, c.position, r.error.message);
        }
        return;
      }
      if (!r.ok) assert.fail(`unexpected error at ${r.error.position}: ${r.error.message}`);
      assert.equal(matchSelector(r.selector, c.labels), c.expect, 'matchSelector');
      assert.equal(compileSelector(r.selector)(c.labels), c.expect, 'compileSelector');
      const printed = printSelector(r.selector);
      if (c.canonical !== undefined) assert.equal(printed, c.canonical);
      const again = parseSelector(printed);
      assert.ok(again.ok, `canonical form does not parse: ${printed}`);
      assert.deepEqual(again.selector, r.selector, 'canonical form parses to the same tree');
    });
  });
}

test('selector corpus has at least 170 cases', () => {
  assert.ok(total >= 170, `only ${total} cases`);
});
