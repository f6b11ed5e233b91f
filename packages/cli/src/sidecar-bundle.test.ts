// The bundled sidecar (scripts/sidecar-bundle.mjs): built into a cache keyed by its sources,
// reused while they are unchanged, rebuilt when the manifest no longer matches them, and run by
// bin/palisade.js — which falls back to the sources, saying so, when no bundle can be made.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { buildBundle, freshBundle, sidecarBundle } from '../../../scripts/sidecar-bundle.mjs';

const BIN = fileURLToPath(new URL('../bin/palisade.js', import.meta.url));

describe('the sidecar bundle', { timeout: 120_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), `palisade-sidecar-bundle-${process.pid}-`));
  const saved = process.env['PALISADE_SIDECAR_CACHE'];
  process.env['PALISADE_SIDECAR_CACHE'] = dir;
  after(() => {
    if (saved === undefined) delete process.env['PALISADE_SIDECAR_CACHE'];
    else process.env['PALISADE_SIDECAR_CACHE'] = saved;
    rmSync(dir, { recursive: true, force: true });
  });

  test('is built once from the sources and then reused while they are unchanged', async () => {
    assert.equal(freshBundle(), undefined, 'an empty cache holds no bundle');
    const b = await sidecarBundle();
    assert.ok(b.path, b.reason);
    assert.ok(b.path.startsWith(dir));
    const m = (await import(pathToFileURL(b.path).href)) as { sidecarMain?: unknown };
    assert.equal(typeof m.sidecarMain, 'function');
    const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as {
      inputs: string[];
    };
    assert.ok(manifest.inputs.includes('packages/dataplane/src/sidecar/inbound.ts'));
    assert.ok(manifest.inputs.every((f) => !f.includes('node_modules')));
    assert.equal(freshBundle(), b.path, 'unchanged sources: the same bundle');
  });

  test('is stale when a source differs from the manifest or is gone', async () => {
    const path = await buildBundle();
    const mf = join(dir, 'manifest.json');
    const manifest = JSON.parse(readFileSync(mf, 'utf8')) as { key: string; inputs: string[] };
    // The same file names under another key: what an edited source looks like.
    writeFileSync(mf, JSON.stringify({ ...manifest, key: 'f'.repeat(32) }));
    assert.equal(freshBundle(), undefined);
    writeFileSync(mf, JSON.stringify({ ...manifest, inputs: [...manifest.inputs, 'gone.ts'] }));
    assert.equal(freshBundle(), undefined);
    writeFileSync(mf, JSON.stringify({ ...manifest, inputs: ['../outside.ts'] }));
    assert.equal(freshBundle(), undefined, 'a path outside the repository is refused');
    writeFileSync(mf, 'not json');
    assert.equal(freshBundle(), undefined);
    writeFileSync(mf, JSON.stringify(manifest));
    assert.equal(freshBundle(), path);
  });

  test('palisade sidecar runs from it, and from the sources (saying so) when none can be made', () => {
    const args = [BIN, 'sidecar', '--endpoint', 'not an endpoint', '--app-port', '9080'];
    const bundled = spawnSync(process.execPath, args, {
      encoding: 'utf8',
      env: { ...process.env, PALISADE_SIDECAR_CACHE: dir },
      timeout: 60_000,
    });
    assert.equal(bundled.status, 2, bundled.stderr);
    assert.match(bundled.stderr, /error CLI_ERR_USAGE: sidecar needs --endpoint/);
    assert.doesNotMatch(bundled.stderr, /running from the sources/);
    // A cache below a regular file cannot be written: the sources run, with the same answer.
    const file = join(dir, 'a-file');
    writeFileSync(file, '');
    const fallback = spawnSync(process.execPath, args, {
      encoding: 'utf8',
      env: { ...process.env, PALISADE_SIDECAR_CACHE: join(file, 'cache') },
      timeout: 60_000,
    });
    assert.equal(fallback.status, 2, fallback.stderr);
    assert.match(fallback.stderr, /palisade sidecar: running from the sources \(no bundle: /);
    assert.match(fallback.stderr, /error CLI_ERR_USAGE: sidecar needs --endpoint/);
  });
});
