import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore, parseStoreUrl } from './open-store.js';
import { StoreError } from './store.js';

const dir = mkdtempSync(join(tmpdir(), `palisade-open-store-${process.pid}-`));
after(() => rmSync(dir, { recursive: true, force: true }));

function code(c: string): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof StoreError, String(e));
    assert.equal(e.code, c, e.message);
    return true;
  };
}

test('open-store: the accepted URL forms parse to their adapters', () => {
  assert.deepEqual(parseStoreUrl('memory:'), { kind: 'memory' });
  assert.deepEqual(parseStoreUrl('sqlite:data/palisade.db'), {
    kind: 'sqlite',
    path: 'data/palisade.db',
  });
  assert.deepEqual(parseStoreUrl('sqlite:///var/lib/p.db'), {
    kind: 'sqlite',
    path: '/var/lib/p.db',
  });
  assert.deepEqual(parseStoreUrl('etcd://h1:2379,h2.example.com:12379,[::1]:2379,h3'), {
    kind: 'etcd',
    endpoints: ['h1:2379', 'h2.example.com:12379', '[::1]:2379', 'h3:2379'],
  });
  assert.deepEqual(parseStoreUrl('etcds://h1:2379?ca=/etc/ca.pem&cert=/c.pem&key=/k.pem'), {
    kind: 'etcd',
    endpoints: ['h1:2379'],
    tls: { ca: '/etc/ca.pem', cert: '/c.pem', key: '/k.pem' },
  });
});

test('open-store: malformed URLs fail with STORE_ERR_INVALID naming the accepted forms', () => {
  for (const url of [
    '',
    '   ',
    'memory',
    'sqlite:',
    'postgres://db/x',
    'etcd://',
    'etcd://h1:2379,,h2:2379',
    'etcd://h1:0',
    'etcd://h1:99999',
    'etcd://h1:2379/path',
    'etcd://h1:2379?ca=/x',
    'etcd://-bad-:2379',
    'etcd://user@h1:2379',
    'etcds://h1:2379',
    'etcds://h1:2379?ca=/ca.pem&cert=/c.pem',
    'etcds://h1:2379?ca=/ca.pem&password=x',
    'sqlite:a\nb',
    'etcd://h1:2379#frag',
  ]) {
    assert.throws(
      () => parseStoreUrl(url),
      (e: unknown) => {
        code('STORE_ERR_INVALID')(e);
        assert.match((e as Error).message, /memory:, sqlite:<path>/, url);
        return true;
      },
      url,
    );
  }
});

test('open-store: memory and sqlite URLs open working stores', async () => {
  for (const url of ['memory:', `sqlite:${join(dir, 'x.db')}`]) {
    const s = await openStore(url);
    const r = await s.txn({ compares: [], success: [{ kind: 'put', key: 'k', value: 'v' }] });
    assert.equal(r.revision, 2, url);
    await s.close();
  }
});

test('open-store: an unreachable etcd fails at open with STORE_ERR_UNAVAILABLE, quickly', async () => {
  const t0 = Date.now();
  await assert.rejects(openStore('etcd://127.0.0.1:1,127.0.0.1:9'), code('STORE_ERR_UNAVAILABLE'));
  assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
});

test('open-store: etcds with an unreadable CA file fails with STORE_ERR_INVALID', async () => {
  await assert.rejects(
    openStore(`etcds://127.0.0.1:1?ca=${join(dir, 'missing.pem')}`),
    code('STORE_ERR_INVALID'),
  );
});
