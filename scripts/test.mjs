#!/usr/bin/env node
// The one test command (`npm test`): type check, lint and format check, then every test file of
// the workspace under Node's test runner. Ends with one line `N passed, N failed, N skipped`,
// which CI reads. Flags: --only-tests skips the static checks; any other argument filters test
// files by substring.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { tmpdir } from 'node:os';

const root = new URL('..', import.meta.url).pathname;
const args = process.argv.slice(2);
const onlyTests = args.includes('--only-tests');
const filters = args.filter((a) => !a.startsWith('--'));

let passed = 0;
let failed = 0;
let skipped = 0;

function run(name, cmd, cmdArgs) {
  const started = Date.now();
  const r = spawnSync(cmd, cmdArgs, { cwd: root, stdio: 'inherit' });
  const ok = r.status === 0;
  console.log(`${ok ? 'ok' : 'FAILED'}: ${name} (${Date.now() - started} ms)`);
  if (ok) passed += 1;
  else failed += 1;
}

if (!onlyTests && filters.length === 0) {
  run('type check', 'npx', ['tsc', '-p', 'packages/core']);
  run('type check (tests, cli, bench)', 'npx', ['tsc', '-p', 'tsconfig.json']);
  run('type check (console, browser)', 'npx', ['tsc', '-p', 'packages/console']);
  run('lint', 'npx', ['eslint', '--max-warnings', '0', '.']);
  run('format check', 'npx', ['prettier', '--check', '--log-level', 'warn', '.']);
}

// The bundled commands (sidecar, CNI plugin) are built once here rather than by the first of
// many concurrent plugin runs; a failure only means those runs fall back to the sources.
{
  const b = spawnSync(process.execPath, [join(root, 'scripts', 'command-bundle.mjs')], {
    cwd: root,
    encoding: 'utf8',
  });
  console.log(
    b.status === 0
      ? `bundles: ${b.stdout.trim().split('\n').join('; ')}`
      : `bundles not built (commands run from the sources): ${b.stderr.trim()}`,
  );
}

function findTests(dir, out) {
  for (const name of readdirSync(dir)) {
    if (name === 'node_modules' || name.startsWith('.')) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) findTests(p, out);
    else if (name.endsWith('.test.ts')) out.push(relative(root, p));
  }
  return out;
}

const files = ['packages', 'conformance', 'tests', 'bench']
  .flatMap((d) => {
    try {
      return findTests(join(root, d), []);
    } catch {
      return [];
    }
  })
  .filter((f) => filters.length === 0 || filters.some((s) => f.includes(s)))
  .sort();

const tap = join(tmpdir(), `palisade-test-${process.pid}.tap`);
const r = spawnSync(
  process.execPath,
  [
    '--import',
    'tsx',
    '--test',
    '--test-concurrency=2',
    '--test-reporter=spec',
    '--test-reporter-destination=stdout',
    '--test-reporter=tap',
    `--test-reporter-destination=${tap}`,
    ...files,
  ],
  { cwd: root, stdio: 'inherit' },
);
let tapText = '';
try {
  tapText = readFileSync(tap, 'utf8');
  rmSync(tap);
} catch {
  // no report: counted as a failure below
}
const count = (key) => {
  const m = tapText.match(new RegExp(`^# ${key} (\\d+)$`, 'm'));
  return m ? Number(m[1]) : 0;
};
passed += count('pass');
failed += count('fail') + count('cancelled');
skipped += count('skipped') + count('todo');
if (r.status !== 0 && count('fail') + count('cancelled') === 0) failed += 1;
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed === 0 ? 0 : 1);
