// The store contract against a real single-member etcd started for this file, plus the
// adapter's own failure modes. Without etcd installed these tests fail (they never skip).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { runStoreContract } from './store-contract.js';
import { EtcdCluster } from './etcd-harness.js';
import { EtcdStore, etcdPrefixEnd } from './etcd-store.js';
import { StoreError } from './store.js';

let cluster: EtcdCluster | undefined;
before(async () => {
  cluster = await EtcdCluster.start(1);
});
after(async () => {
  await cluster?.stop();
});

function endpoints(): string[] {
  if (cluster === undefined) throw new Error('etcd did not start (see the before hook)');
  return cluster.endpoints;
}

runStoreContract('etcd', () => Promise.resolve(new EtcdStore({ endpoints: endpoints() })), {
  secondHandle: () => Promise.resolve(new EtcdStore({ endpoints: endpoints() })),
});

test('etcd: range ends of prefixes follow etcd byte order', () => {
  assert.deepEqual(etcdPrefixEnd(Buffer.from('a/')), Buffer.from('a0'));
  assert.deepEqual(etcdPrefixEnd(Buffer.from([0x61, 0xff])), Buffer.from('b'));
  assert.deepEqual(etcdPrefixEnd(Buffer.from([0xff, 0xff])), Buffer.from([0]));
  assert.deepEqual(etcdPrefixEnd(Buffer.alloc(0)), Buffer.from([0]));
});

test('etcd: an unreachable cluster fails fast with STORE_ERR_UNAVAILABLE', async () => {
  // Ports of a member that is not running: connection refused on every endpoint.
  const s = new EtcdStore({ endpoints: ['127.0.0.1:1', '127.0.0.1:9'], requestTimeoutMs: 1000 });
  try {
    for (const call of [
      () => s.get('k'),
      () => s.txn({ compares: [], success: [{ kind: 'put', key: 'k', value: 'v' }] }),
      () => s.status(),
    ]) {
      const t0 = Date.now();
      await assert.rejects(call(), (e: unknown) => {
        assert.ok(e instanceof StoreError, String(e));
        assert.equal(e.code, 'STORE_ERR_UNAVAILABLE');
        assert.match(e.message, /127\.0\.0\.1:1/);
        return true;
      });
      assert.ok(Date.now() - t0 < 5000, `took ${Date.now() - t0} ms`);
    }
    const t0 = Date.now();
    const w = new EtcdStore({ endpoints: ['127.0.0.1:1'], watchReconnectMs: 500 });
    await assert.rejects(w.watch('', { fromRevision: 1 }).next(), (e: unknown) => {
      assert.equal((e as StoreError).code, 'STORE_ERR_UNAVAILABLE');
      return true;
    });
    assert.ok(Date.now() - t0 < 5000);
    await w.close();
  } finally {
    await s.close();
  }
});
