// The bundled commands (scripts/command-bundle.mjs), the sidecar and the CNI plugin: built into a
// cache keyed by their sources, reused while they are unchanged, rebuilt when the manifest no
// longer matches them, and run by bin/palisade.js — which falls back to the sources, saying so,
// when no bundle can be made.
import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import {
  buildBundle,
  commandBundle,
  freshBundle,
  sidecarBundle,
} from '../../../scripts/command-bundle.mjs';

const BIN = fileURLToPath(new URL('../bin/palisade.js', import.meta.url));

describe('the sidecar bundle', { timeout: 120_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), `palisade-sidecar-bundle-${process.pid}-`));
  const saved = process.env['PALISADE_BUNDLE_CACHE'];
  process.env['PALISADE_BUNDLE_CACHE'] = dir;
  after(() => {
    if (saved === undefined) delete process.env['PALISADE_BUNDLE_CACHE'];
    else process.env['PALISADE_BUNDLE_CACHE'] = saved;
    rmSync(dir, { recursive: true, force: true });
  });

  test('is built once from the sources and then reused while they are unchanged', async () => {
    assert.equal(freshBundle(), undefined, 'an empty cache holds no bundle');
    const b = await sidecarBundle();
    assert.ok(b.path, b.reason);
    assert.ok(b.path.startsWith(dir));
    const m = (await import(pathToFileURL(b.path).href)) as { sidecarMain?: unknown };
    assert.equal(typeof m.sidecarMain, 'function');
    const manifest = JSON.parse(readFileSync(join(dir, 'sidecar.manifest.json'), 'utf8')) as {
      inputs: string[];
    };
    assert.ok(manifest.inputs.includes('packages/dataplane/src/sidecar/inbound.ts'));
    assert.ok(manifest.inputs.every((f) => !f.includes('node_modules')));
    assert.equal(freshBundle(), b.path, 'unchanged sources: the same bundle');
  });

  test('is stale when a source differs from the manifest or is gone', async () => {
    const path = await buildBundle();
    const mf = join(dir, 'sidecar.manifest.json');
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
      env: { ...process.env, PALISADE_BUNDLE_CACHE: dir },
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
      env: { ...process.env, PALISADE_BUNDLE_CACHE: join(file, 'cache') },
      timeout: 60_000,
    });
    assert.equal(fallback.status, 2, fallback.stderr);
    assert.match(fallback.stderr, /palisade sidecar: running from the sources \(no bundle: /);
    assert.match(fallback.stderr, /error CLI_ERR_USAGE: sidecar needs --endpoint/);
  });

  test('the CNI plugin runs from its own bundle when the runtime calls it (CNI_COMMAND set), with the same answers', async () => {
    const b = await commandBundle('cni');
    assert.ok(b.path, b.reason);
    assert.equal(freshBundle('cni'), b.path);
    const manifest = JSON.parse(readFileSync(join(dir, 'cni.manifest.json'), 'utf8')) as {
      inputs: string[];
    };
    assert.ok(manifest.inputs.includes('packages/dataplane/src/cni/plugin.ts'));
    assert.ok(
      !manifest.inputs.some((f) => f.includes('/sidecar/')),
      'the plugin bundle carries no sidecar code',
    );
    const run = (cache: string, command: string) =>
      spawnSync(process.execPath, [BIN], {
        encoding: 'utf8',
        input: '{"cniVersion":"1.0.0"}',
        env: { ...process.env, PALISADE_BUNDLE_CACHE: cache, CNI_COMMAND: command },
        timeout: 60_000,
      });
    const version = run(dir, 'VERSION');
    assert.equal(version.status, 0, version.stderr);
    assert.deepEqual(JSON.parse(version.stdout), {
      cniVersion: '1.0.0',
      supportedVersions: ['1.0.0'],
    });
    assert.doesNotMatch(version.stderr, /running from the sources/);
    // An unknown command is the spec's error JSON, from the bundle and from the sources alike.
    const file = join(dir, 'another-file');
    writeFileSync(file, '');
    const bundled = run(dir, 'BOGUS');
    const sources = run(join(file, 'cache'), 'BOGUS');
    assert.match(sources.stderr, /palisade cni: running from the sources \(no bundle: /);
    assert.notEqual(bundled.status, 0);
    assert.equal(sources.status, bundled.status);
    assert.equal(sources.stdout, bundled.stdout);
    assert.equal((JSON.parse(bundled.stdout) as { code?: number }).code !== undefined, true);
  });
});
