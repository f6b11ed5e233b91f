// The bundled `palisade sidecar`: packages/cli/src/sidecar-main.ts and everything it imports,
// built by esbuild (already installed: tsx depends on it) into one plain JavaScript module in a
// cache keyed by the hash of its sources, so a sidecar process runs without tsx (no loader
// thread, no transpiler, no per-closure name wrappers): docs/design/sidecar.md, "Running from a
// bundle". bin/palisade.js asks `sidecarBundle()` for the module before anything else; a stale or
// missing bundle is rebuilt on the spot when the cache is writable, else the bin falls back to
// the sources through tsx (slower, larger, same behaviour).
//
//   node scripts/sidecar-bundle.mjs          build (or confirm) the bundle, print its path
//   node scripts/sidecar-bundle.mjs --check  exit 0 if the bundle is fresh, 1 if not
//
// Cache: node_modules/.cache/palisade-sidecar (or PALISADE_SIDECAR_CACHE): `manifest.json` (the
// source files and the key) and `sidecar-<key>.mjs`. The key hashes every bundled file outside
// node_modules (path and content), package-lock.json (what is in node_modules), esbuild's version
// and this script; a file of the manifest that changed or disappeared makes the bundle stale.

import { createHash } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const SELF = fileURLToPath(import.meta.url);
const ROOT = resolve(dirname(SELF), '..');
const ENTRY = join(ROOT, 'packages', 'cli', 'src', 'sidecar-main.ts');

/** Where bundles are kept. */
export function cacheDir() {
  return (
    process.env.PALISADE_SIDECAR_CACHE ?? join(ROOT, 'node_modules', '.cache', 'palisade-sidecar')
  );
}

function esbuildVersion() {
  try {
    const require = createRequire(join(ROOT, 'package.json'));
    return String(require('esbuild/package.json').version);
  } catch {
    return 'none';
  }
}

/** The key of a set of source files (paths relative to the repository root), or undefined when one is gone. */
function keyOf(inputs) {
  const h = createHash('sha256');
  h.update(`palisade-sidecar-bundle\0${esbuildVersion()}\0`);
  h.update(readFileSync(SELF));
  const lock = join(ROOT, 'package-lock.json');
  if (existsSync(lock)) h.update(readFileSync(lock));
  for (const rel of inputs) {
    let text;
    try {
      text = readFileSync(join(ROOT, rel));
    } catch {
      return undefined;
    }
    h.update(`\0${rel}\0`);
    h.update(text);
  }
  return h.digest('hex').slice(0, 32);
}

/** The bundle's path when the cache holds one built from the current sources. */
export function freshBundle() {
  const dir = cacheDir();
  let manifest;
  try {
    manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
  } catch {
    return undefined;
  }
  if (!Array.isArray(manifest?.inputs) || typeof manifest.key !== 'string') return undefined;
  if (!manifest.inputs.every((x) => typeof x === 'string' && !x.startsWith('..'))) return undefined;
  const key = keyOf(manifest.inputs);
  const file = join(dir, `sidecar-${manifest.key}.mjs`);
  return key === manifest.key && existsSync(file) ? file : undefined;
}

function writeAtomic(path, text) {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode: 0o644 });
  // Readable by the sidecar's own uid (the demo builds as root and runs sidecars as 1337).
  chmodSync(tmp, 0o644);
  renameSync(tmp, path);
}

/**
 * esbuild's result for one entry with the sidecar's bundle options (output in memory; `outfile`
 * only names it). Also used by `npm run bench -- l7` to run its sidecar processes the same way.
 */
export async function bundleEntry(entry, outfile) {
  const esbuild = await import('esbuild');
  return esbuild.build({
    entryPoints: [entry],
    absWorkingDir: ROOT,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    write: false,
    metafile: true,
    outfile,
    // Native add-ons stay out (the sidecar does not load them; a stray import fails loudly).
    external: ['better-sqlite3', 'koffi'],
    // Bundled CommonJS dependencies call require(); give the ES module one.
    banner: {
      js: "import { createRequire as __palisadeCreateRequire } from 'node:module'; const require = __palisadeCreateRequire(import.meta.url);",
    },
    // Whitespace and syntax only: ≈ 2 MB less resident (the source text stays in the heap),
    // names kept for stack traces.
    minifyWhitespace: true,
    minifySyntax: true,
    legalComments: 'none',
    logLevel: 'silent',
  });
}

/** Builds the bundle into the cache; resolves with its path. Throws when it cannot. */
export async function buildBundle() {
  const dir = cacheDir();
  const r = await bundleEntry(ENTRY, join(dir, 'sidecar.mjs'));
  const out = r.outputFiles?.find((f) => f.path.endsWith('.mjs'));
  if (!out) throw new Error('esbuild produced no output');
  const inputs = Object.keys(r.metafile.inputs)
    .map((p) => relative(ROOT, resolve(ROOT, p)))
    .filter((p) => !p.split(sep).includes('node_modules') && !p.startsWith('..'))
    .sort();
  const key = keyOf(inputs);
  if (!key) throw new Error('a bundled source disappeared during the build');
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const file = join(dir, `sidecar-${key}.mjs`);
  writeAtomic(file, out.text);
  writeAtomic(join(dir, 'manifest.json'), `${JSON.stringify({ key, inputs }, null, 1)}\n`);
  // Older bundles go (a running sidecar has its module in memory already).
  for (const f of readdirSync(dir))
    if (/^sidecar-[0-9a-f]{32}\.mjs$/.test(f) && f !== `sidecar-${key}.mjs`)
      rmSync(join(dir, f), { force: true });
  return file;
}

/**
 * The bundle to run: the fresh one, else a new build. Resolves with `{ path }` or with
 * `{ reason }` when there is none (the caller runs the sources instead).
 */
export async function sidecarBundle() {
  if (process.env.PALISADE_SIDECAR_FROM_SOURCE === '1')
    return { reason: 'PALISADE_SIDECAR_FROM_SOURCE=1' };
  try {
    const fresh = freshBundle();
    if (fresh) return { path: fresh };
    return { path: await buildBundle() };
  } catch (e) {
    return { reason: e instanceof Error ? e.message.split('\n')[0] : String(e) };
  }
}

if (process.argv[1] && resolve(process.argv[1]) === SELF) {
  if (process.argv.includes('--check')) {
    const f = freshBundle();
    console.log(f ?? 'stale or missing');
    process.exitCode = f ? 0 : 1;
  } else {
    const r = await sidecarBundle();
    if (r.path) console.log(r.path);
    else {
      console.error(`no sidecar bundle: ${r.reason}`);
      process.exitCode = 1;
    }
  }
}
