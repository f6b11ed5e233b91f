// etcds://: the etcd adapter over TLS with a client certificate, against a real etcd that
// requires one (certificates from a throw-away CA made with openssl for this file).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EtcdCluster } from './etcd-harness.js';
import { openStore } from './open-store.js';
import { StoreError } from './store.js';

let cluster: EtcdCluster | undefined;
const dir = mkdtempSync(join(tmpdir(), `palisade-etcd-tls-${process.pid}-`));
before(async () => {
  cluster = await EtcdCluster.start(1, { tls: true });
});
after(async () => {
  await cluster?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function running(): EtcdCluster {
  if (cluster === undefined) throw new Error('etcd did not start (see the before hook)');
  return cluster;
}

test('etcds: reads, writes and watches work over TLS with a client certificate', async () => {
  const s = await openStore(running().url);
  try {
    assert.match(s.name, /^etcds:\/\//);
    const r = await s.txn({ compares: [], success: [{ kind: 'put', key: '/tls/k', value: 'v' }] });
    const w = s.watch('/tls/', { fromRevision: r.revision });
    const b = await w.next();
    assert.equal(b.done, false);
    assert.equal(b.value.events[0]?.kv.value, 'v');
    await w.return?.();
    assert.equal((await s.get('/tls/k'))?.value, 'v');
  } finally {
    await s.close();
  }
});

test('etcds: a member whose certificate our CA did not sign is refused, quickly', async () => {
  const c = running();
  const tls = c.tls;
  assert.ok(tls !== undefined);
  // Any other CA: the client's own certificate is not a CA and did not sign the server's.
  const q = new URLSearchParams({ ca: tls.cert, cert: tls.cert, key: tls.key });
  const t0 = Date.now();
  await assert.rejects(
    openStore(`etcds://${c.endpoints.join(',')}?${q.toString()}`, {
      etcd: { requestTimeoutMs: 2000 },
    }),
    (e: unknown) => e instanceof StoreError && e.code === 'STORE_ERR_UNAVAILABLE',
  );
  assert.ok(Date.now() - t0 < 10_000, `took ${Date.now() - t0} ms`);
});

test('etcds: without a client certificate the member refuses us', async () => {
  const c = running();
  const tls = c.tls;
  assert.ok(tls !== undefined);
  const q = new URLSearchParams({ ca: tls.ca });
  await assert.rejects(
    openStore(`etcds://${c.endpoints.join(',')}?${q.toString()}`, {
      etcd: { requestTimeoutMs: 2000 },
    }),
    (e: unknown) => e instanceof StoreError && e.code === 'STORE_ERR_UNAVAILABLE',
  );
  // A plaintext client on the TLS port fails the same way, never hangs.
  await assert.rejects(
    openStore(`etcd://${c.endpoints.join(',')}`, { etcd: { requestTimeoutMs: 2000 } }),
    (e: unknown) => e instanceof StoreError && e.code === 'STORE_ERR_UNAVAILABLE',
  );
  writeFileSync(join(dir, 'garbage.pem'), 'not a certificate');
  await assert.rejects(
    openStore(`etcds://${c.endpoints.join(',')}?ca=${join(dir, 'garbage.pem')}`),
    (e: unknown) => e instanceof StoreError,
  );
});
