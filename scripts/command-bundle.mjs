// The bundled commands: `palisade sidecar` (one per pod, long-running: memory) and `palisade cni`
// (run by the container runtime once per pod event: start-up time), each an entry of
// packages/cli/src and everything it imports, built by esbuild (already installed: tsx depends
// on it) into one plain JavaScript module in a cache keyed by the hash of its sources, so the
// process runs without tsx (no loader thread, no transpiler, no per-closure name wrappers):
// docs/design/sidecar.md, "Running from a bundle". bin/palisade.js asks `commandBundle(name)` for
// the module before anything else; a stale or missing bundle is rebuilt on the spot when the
// cache is writable, else the bin falls back to the sources through tsx (slower, larger, same
// behaviour).
//
//   node scripts/command-bundle.mjs [NAME...]          build (or confirm) the bundles, print their paths
//   node scripts/command-bundle.mjs --check [NAME...]  exit 0 if they are fresh, 1 if not
//
// NAME is sidecar or cni (default: both). Cache: node_modules/.cache/palisade-bundles (or
// PALISADE_BUNDLE_CACHE): `NAME.manifest.json` (the source files and the key) and
// `NAME-<key>.mjs`. The key hashes every bundled file outside node_modules (path and content),
// package-lock.json (what is in node_modules), esbuild's version and this script; a file of the
// manifest that changed or disappeared makes the bundle stale. PALISADE_FROM_SOURCE=1 runs the
// sources instead (debugging).

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
/** The bundled commands and their entry modules (each exports its `…Main(argv)`). */
export const ENTRIES = {
  sidecar: join(ROOT, 'packages', 'cli', 'src', 'sidecar-main.ts'),
  cni: join(ROOT, 'packages', 'cli', 'src', 'cni-main.ts'),
};

function entryOf(name) {
  if (!Object.hasOwn(ENTRIES, name)) throw new Error(`no bundle named ${JSON.stringify(name)}`);
  return ENTRIES[name];
}

/** Where bundles are kept. */
export function cacheDir() {
  return (
    process.env.PALISADE_BUNDLE_CACHE ?? join(ROOT, 'node_modules', '.cache', 'palisade-bundles')
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
function keyOf(name, inputs) {
  const h = createHash('sha256');
  h.update(`palisade-bundle\0${name}\0${ROOT}\0${esbuildVersion()}\0`);
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
export function freshBundle(name = 'sidecar') {
  entryOf(name);
  const dir = cacheDir();
  let manifest;
  try {
    manifest = JSON.parse(readFileSync(join(dir, `${name}.manifest.json`), 'utf8'));
  } catch {
    return undefined;
  }
  if (!Array.isArray(manifest?.inputs) || typeof manifest.key !== 'string') return undefined;
  if (!manifest.inputs.every((x) => typeof x === 'string' && !x.startsWith('..'))) return undefined;
  const key = keyOf(name, manifest.inputs);
  const file = join(dir, `${name}-${manifest.key}.mjs`);
  return key === manifest.key && existsSync(file) ? file : undefined;
}

function writeAtomic(path, text) {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode: 0o644 });
  // Readable by the sidecar's own uid (the demo builds as root and runs sidecars as 1337).
  chmodSync(tmp, 0o644);
  renameSync(tmp, path);
}

const NATIVE = ['better-sqlite3', 'koffi'];

/** esbuild plugin: native packages resolved from ROOT and left external. */
const nativeAddons = {
  name: 'palisade-native-addons',
  setup(build) {
    const require = createRequire(join(ROOT, 'package.json'));
    build.onResolve({ filter: /^(better-sqlite3|koffi)$/ }, (a) => {
      if (!NATIVE.includes(a.path)) return undefined;
      return { path: require.resolve(a.path), external: true };
    });
  },
};

/**
 * esbuild's result for one entry with the commands' bundle options (output in memory; `outfile`
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
    // Native add-ons stay out of the bundle, imported from this checkout's node_modules by
    // absolute path (the CNI plugin's IPAM keeps its leases in SQLite; the bundle may live in a
    // cache outside the tree, and the key covers ROOT).
    plugins: [nativeAddons],
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
export async function buildBundle(name = 'sidecar') {
  const entry = entryOf(name);
  const dir = cacheDir();
  const r = await bundleEntry(entry, join(dir, `${name}.mjs`));
  const out = r.outputFiles?.find((f) => f.path.endsWith('.mjs'));
  if (!out) throw new Error('esbuild produced no output');
  const inputs = Object.keys(r.metafile.inputs)
    .map((p) => relative(ROOT, resolve(ROOT, p)))
    .filter((p) => !p.split(sep).includes('node_modules') && !p.startsWith('..'))
    .sort();
  const key = keyOf(name, inputs);
  if (!key) throw new Error('a bundled source disappeared during the build');
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const file = join(dir, `${name}-${key}.mjs`);
  writeAtomic(file, out.text);
  writeAtomic(join(dir, `${name}.manifest.json`), `${JSON.stringify({ key, inputs }, null, 1)}\n`);
  // Older bundles go (a running process has its module in memory already).
  const old = new RegExp(`^${name}-[0-9a-f]{32}\\.mjs$`);
  for (const f of readdirSync(dir))
    if (old.test(f) && f !== `${name}-${key}.mjs`) rmSync(join(dir, f), { force: true });
  return file;
}

/**
 * The bundle of command `name` to run: the fresh one, else a new build. Resolves with `{ path }`
 * or with `{ reason }` when there is none (the caller runs the sources instead).
 */
export async function commandBundle(name) {
  if (process.env.PALISADE_FROM_SOURCE === '1') return { reason: 'PALISADE_FROM_SOURCE=1' };
  try {
    const fresh = freshBundle(name);
    if (fresh) return { path: fresh };
    return { path: await buildBundle(name) };
  } catch (e) {
    return { reason: e instanceof Error ? e.message.split('\n')[0] : String(e) };
  }
}

/** `commandBundle('sidecar')`. */
export function sidecarBundle() {
  return commandBundle('sidecar');
}

if (process.argv[1] && resolve(process.argv[1]) === SELF) {
  const check = process.argv.includes('--check');
  const names = process.argv.slice(2).filter((a) => a !== '--check');
  for (const name of names.length > 0 ? names : Object.keys(ENTRIES)) {
    if (!Object.hasOwn(ENTRIES, name)) {
      console.error(`no bundle named ${JSON.stringify(name)} (${Object.keys(ENTRIES).join(', ')})`);
      process.exitCode = 2;
      break;
    }
    if (check) {
      const f = freshBundle(name);
      console.log(`${name}: ${f ?? 'stale or missing'}`);
      if (!f) process.exitCode = 1;
      continue;
    }
    const r = await commandBundle(name);
    if (r.path) console.log(`${name}: ${r.path}`);
    else {
      console.error(`no ${name} bundle: ${r.reason}`);
      process.exitCode = 1;
    }
  }
}
