import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { SqliteStore } from './sqlite-store.js';
import { StoreError, type WatchBatch } from './store.js';

const dir = mkdtempSync(join(tmpdir(), `palisade-sqlite-${process.pid}-`));
after(() => rmSync(dir, { recursive: true, force: true }));
const root = new URL('../../../../', import.meta.url).pathname;
const child = new URL('./sqlite-writer-child.ts', import.meta.url).pathname;

function code(c: string): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof StoreError, String(e));
    assert.equal(e.code, c, e.message);
    return true;
  };
}

function spawnWriter(path: string, mode: 'loop' | 'puts', n: number) {
  return spawn(process.execPath, ['--import', 'tsx', child, path, mode, String(n)], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

test('sqlite: the database, its WAL and shared memory are created with mode 0600', async () => {
  const path = join(dir, 'new-dir', 'mode.db');
  const s = new SqliteStore(path);
  await s.txn({ compares: [], success: [{ kind: 'put', key: 'a', value: 'secret' }] });
  for (const f of [path, `${path}-wal`, `${path}-shm`])
    assert.equal(statSync(f).mode & 0o777, 0o600, f);
  assert.equal(statSync(join(dir, 'new-dir')).mode & 0o777, 0o700);
  await s.close();
  // A pre-existing file readable by others is tightened on open.
  const loose = join(dir, 'loose.db');
  writeFileSync(loose, '', { mode: 0o644 });
  const s2 = new SqliteStore(loose);
  assert.equal(statSync(loose).mode & 0o777, 0o600);
  await s2.close();
});

test('sqlite: a file that is not a Palisade store is refused with STORE_ERR_CORRUPT', () => {
  const junk = join(dir, 'junk.db');
  writeFileSync(junk, Buffer.alloc(8192, 0x5a), { mode: 0o600 });
  assert.throws(() => new SqliteStore(junk), code('STORE_ERR_CORRUPT'));
  const text = join(dir, 'text.db');
  writeFileSync(
    text,
    'SQLite format 3\0 but not really, just a text file pretending\n'.repeat(200),
  );
  assert.throws(() => new SqliteStore(text), code('STORE_ERR_CORRUPT'));
  const foreign = join(dir, 'foreign.db');
  const db = new Database(foreign);
  db.exec('CREATE TABLE t (x)');
  db.close();
  assert.throws(() => new SqliteStore(foreign), code('STORE_ERR_CORRUPT'));
});

test('sqlite: a store written by a newer schema version is refused, not misread', async () => {
  const path = join(dir, 'newer.db');
  await new SqliteStore(path).close();
  const db = new Database(path);
  db.pragma('user_version = 99');
  db.close();
  assert.throws(
    () => new SqliteStore(path),
    (e: unknown) => {
      code('STORE_ERR_CORRUPT')(e);
      assert.match((e as Error).message, /version 99/);
      return true;
    },
  );
});

test('sqlite: an unusable path fails with STORE_ERR_UNAVAILABLE or INVALID', () => {
  const d = join(dir, 'a-directory');
  mkdirSync(d);
  assert.throws(() => new SqliteStore(d), code('STORE_ERR_UNAVAILABLE'));
  assert.throws(() => new SqliteStore(''), code('STORE_ERR_INVALID'));
});

test('sqlite: data, revisions and history survive reopening the file', async () => {
  const path = join(dir, 'reopen.db');
  const s = new SqliteStore(path);
  const r1 = await s.txn({ compares: [], success: [{ kind: 'put', key: 'k', value: '1' }] });
  await s.txn({ compares: [], success: [{ kind: 'put', key: 'k', value: '2' }] });
  await s.close();
  const s2 = new SqliteStore(path);
  assert.equal((await s2.status()).revision, r1.revision + 1);
  assert.equal((await s2.get('k'))?.version, 2);
  assert.equal((await s2.list('', { revision: r1.revision })).items[0]?.value, '1');
  const w = s2.watch('', { fromRevision: r1.revision });
  const b = (await w.next()).value as WatchBatch;
  assert.equal(b.events[0]?.kv.value, '1');
  await s2.close();
});

test('sqlite: compaction deletes old versions from the file and keeps it consistent', async () => {
  const path = join(dir, 'compact.db');
  const s = new SqliteStore(path);
  for (let i = 0; i < 50; i++)
    await s.txn({ compares: [], success: [{ kind: 'put', key: `k${i % 5}`, value: String(i) }] });
  await s.txn({ compares: [], success: [{ kind: 'delete', key: 'k0' }] });
  const { revision } = await s.status();
  const count = (): number => {
    const db = new Database(path, { readonly: true });
    const n = (db.prepare('SELECT count(*) AS n FROM history').get() as { n: number }).n;
    db.close();
    return n;
  };
  assert.equal(count(), 51);
  await s.compact(revision);
  assert.equal(count(), 4, 'one version per live key; the deleted key leaves nothing');
  assert.deepEqual(s.integrityCheck(), []);
  assert.equal((await s.list('')).items.length, 4);
  await s.close();
});

test('sqlite: watches see commits made by another process on the same file', async () => {
  const path = join(dir, 'shared.db');
  const s = new SqliteStore(path, { pollMs: 20 });
  const ac = new AbortController();
  const w = s.watch('x/', { fromRevision: 2, signal: ac.signal });
  const p = spawnWriter(path, 'puts', 20);
  let stderr = '';
  p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exit = new Promise<number | null>((r) => p.on('exit', (c) => r(c)));
  const seen: number[] = [];
  const timer = setTimeout(() => ac.abort(), 20_000);
  for await (const b of w) {
    seen.push(b.revision);
    if (seen.length === 20) break;
  }
  clearTimeout(timer);
  assert.equal(await exit, 0, stderr);
  assert.deepEqual(
    seen,
    Array.from({ length: 20 }, (_, i) => i + 2),
  );
  // And this process's own writes continue the same revision sequence.
  const r = await s.txn({ compares: [], success: [{ kind: 'put', key: 'y', value: '1' }] });
  assert.equal(r.revision, 22);
  await s.close();
});

test('sqlite: a writer killed with SIGKILL mid-transaction leaves every transaction whole', async () => {
  const path = join(dir, 'crash.db');
  const keys = 5000;
  let lastRevision = 1;
  for (let round = 0; round < 4; round++) {
    const p = spawnWriter(path, 'loop', keys);
    let out = '';
    let stderr = '';
    let committed = 0;
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<NodeJS.Signals | null>((r) => p.on('exit', (_c, sig) => r(sig)));
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`child never committed: ${stderr}`)), 20_000);
      p.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        const m = [...out.matchAll(/committed (\d+)\n/g)];
        committed = Number(m.at(-1)?.[1] ?? 0);
        if (m.length > 0) {
          clearTimeout(t);
          resolve();
        }
      });
    });
    // Kill at a random moment: some rounds land inside a transaction, some between two.
    await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 400)));
    p.kill('SIGKILL');
    assert.equal(await exited, 'SIGKILL');
    const s = new SqliteStore(path);
    try {
      assert.deepEqual(s.integrityCheck(), []);
      const { revision } = await s.status();
      assert.ok(revision >= committed, `revision ${revision} lost commit ${committed}`);
      assert.ok(revision <= committed + 1, `revision ${revision} after ${committed}`);
      assert.ok(revision > lastRevision, 'every round commits');
      lastRevision = revision;
      const items = (await s.list('c/')).items;
      assert.equal(items.length, keys, 'all keys of the transaction or none');
      const bad = items.filter(
        (kv) => kv.modRevision !== revision || !kv.value.startsWith(`${revision}:`),
      );
      assert.equal(bad.length, 0, `${bad.length} keys from another transaction`);
      assert.ok(items.every((kv) => kv.version === revision - 1));
    } finally {
      await s.close();
    }
  }
});
