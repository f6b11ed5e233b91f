import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { CniError } from './cni-error.js';
import { IPAM_DB_FILE, SqliteIpam } from './ipam.js';
import type { IpamPool } from './ipam.js';
import { formatIpv4, parseIpv4, parseIpv4Cidr } from './ipv4.js';

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), `palisade-ipam-${process.pid}-`));
  dirs.push(d);
  return d;
}
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function pool(subnet: string, network = 'palisade', gateway?: string): IpamPool {
  const p = parseIpv4Cidr(subnet);
  if (!p.ok) throw new Error(p.reason);
  return { network, subnet: p.cidr, reserved: gateway ? [parseIpv4(gateway) ?? 0] : [] };
}

const ip = (s: string): number => parseIpv4(s) ?? -1;

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof CniError) return e.code;
    throw e;
  }
  return 'no error';
}

describe('IPAM (SQLite, BEGIN IMMEDIATE)', () => {
  test('the network and broadcast addresses are never allocated, nor the configured gateway', () => {
    const ipam = SqliteIpam.open(tempDir());
    const p = pool('10.9.0.0/29', 'palisade', '10.9.0.1');
    const got = [1, 2, 3, 4, 5].map((i) => formatIpv4(ipam.allocate(p, `c${i}`, 'eth0').address));
    assert.deepEqual(got.sort(), ['10.9.0.2', '10.9.0.3', '10.9.0.4', '10.9.0.5', '10.9.0.6']);
    assert.equal(
      codeOf(() => ipam.allocate(p, 'c6', 'eth0')),
      'CNI_ERR_POOL_EXHAUSTED',
    );
    ipam.close();
  });

  test('pool exhaustion is a clear error naming the pool, and a release makes room again', () => {
    const ipam = SqliteIpam.open(tempDir());
    const p = pool('10.9.1.0/30');
    ipam.allocate(p, 'a', 'eth0');
    ipam.allocate(p, 'b', 'eth0');
    try {
      ipam.allocate(p, 'c', 'eth0');
      assert.fail('expected exhaustion');
    } catch (e) {
      assert.ok(e instanceof CniError);
      assert.equal(e.code, 'CNI_ERR_POOL_EXHAUSTED');
      assert.match(e.message, /10\.9\.1\.0\/30.*2 allocatable/);
    }
    const freed = ipam.release('palisade', 'a', 'eth0');
    assert.equal(formatIpv4(freed ?? 0), '10.9.1.1');
    assert.equal(formatIpv4(ipam.allocate(p, 'c', 'eth0').address), '10.9.1.1');
    ipam.close();
  });

  test('spec §3: state is keyed by (network, container id, ifname); a repeated ADD gets the same address', () => {
    const ipam = SqliteIpam.open(tempDir());
    const p = pool('10.9.2.0/24');
    const first = ipam.allocate(p, 'ctr', 'eth0');
    assert.equal(first.fresh, true);
    const again = ipam.allocate(p, 'ctr', 'eth0');
    assert.equal(again.fresh, false);
    assert.equal(again.address, first.address);
    const second = ipam.allocate(p, 'ctr', 'eth1');
    assert.notEqual(second.address, first.address);
    assert.equal(ipam.list('palisade').length, 2);
    ipam.close();
  });

  test('a requested address is honoured when free and inside the pool', () => {
    const ipam = SqliteIpam.open(tempDir());
    const p = pool('10.9.3.0/24');
    assert.equal(formatIpv4(ipam.allocate(p, 'a', 'eth0', ip('10.9.3.77')).address), '10.9.3.77');
  });

  test('a requested address is refused when held by another container, outside the pool, or the network/broadcast/gateway', () => {
    const ipam = SqliteIpam.open(tempDir());
    const p = pool('10.9.4.0/24', 'palisade', '10.9.4.1');
    ipam.allocate(p, 'a', 'eth0', ip('10.9.4.10'));
    for (const bad of ['10.9.4.10', '10.9.5.1', '10.9.4.0', '10.9.4.255', '10.9.4.1'])
      assert.equal(
        codeOf(() => ipam.allocate(p, 'b', 'eth0', ip(bad))),
        'CNI_ERR_ADDRESS_UNAVAILABLE',
        bad,
      );
    try {
      ipam.allocate(p, 'b', 'eth0', ip('10.9.4.10'));
    } catch (e) {
      assert.match((e as Error).message, /held by container a \(eth0\)/);
    }
    assert.equal(
      ipam.get('palisade', 'b', 'eth0'),
      undefined,
      'a refused request allocates nothing',
    );
    ipam.close();
  });

  test('a repeated ADD asking for a different address than it holds is refused', () => {
    const ipam = SqliteIpam.open(tempDir());
    const p = pool('10.9.6.0/24');
    ipam.allocate(p, 'a', 'eth0', ip('10.9.6.5'));
    assert.equal(
      codeOf(() => ipam.allocate(p, 'a', 'eth0', ip('10.9.6.6'))),
      'CNI_ERR_ADDRESS_UNAVAILABLE',
    );
    ipam.close();
  });

  test('no duplicates across restarts: allocations survive closing and reopening the file', () => {
    const dir = tempDir();
    const p = pool('10.9.7.0/24');
    const before = SqliteIpam.open(dir);
    const a = before.allocate(p, 'a', 'eth0').address;
    const b = before.allocate(p, 'b', 'eth0').address;
    before.close();
    const after = SqliteIpam.open(dir);
    assert.deepEqual(
      after.list('palisade').map((x) => [x.containerId, x.address]),
      [
        ['a', a],
        ['b', b],
      ],
    );
    const c = after.allocate(p, 'c', 'eth0').address;
    assert.ok(c !== a && c !== b);
    assert.equal(after.allocate(p, 'a', 'eth0').address, a, 'still idempotent after a restart');
    after.close();
  });

  test('a released address is handed out again only after the rest of the pool (round robin)', () => {
    const ipam = SqliteIpam.open(tempDir());
    const p = pool('10.9.8.0/29');
    const a = ipam.allocate(p, 'a', 'eth0').address;
    ipam.release('palisade', 'a', 'eth0');
    const next = ipam.allocate(p, 'b', 'eth0').address;
    assert.notEqual(next, a);
  });

  test('two handles on one file (as two plugin processes) never hand out the same address', () => {
    const dir = tempDir();
    const p = pool('10.9.9.0/24');
    const x = SqliteIpam.open(dir);
    const y = SqliteIpam.open(dir);
    const seen = new Set<number>();
    for (let i = 0; i < 50; i++) {
      seen.add((i % 2 === 0 ? x : y).allocate(p, `c${i}`, 'eth0').address);
    }
    assert.equal(seen.size, 50);
    x.close();
    y.close();
  });

  test('addresses are unique across networks sharing a data dir', () => {
    const ipam = SqliteIpam.open(tempDir());
    const one = pool('10.9.10.0/30', 'one');
    const two = pool('10.9.10.0/30', 'two');
    ipam.allocate(one, 'a', 'eth0');
    ipam.allocate(one, 'b', 'eth0');
    assert.equal(
      codeOf(() => ipam.allocate(two, 'c', 'eth0')),
      'CNI_ERR_POOL_EXHAUSTED',
    );
  });

  test('release is idempotent and only releases the attachment it names', () => {
    const ipam = SqliteIpam.open(tempDir());
    const p = pool('10.9.11.0/24');
    ipam.allocate(p, 'a', 'eth0');
    assert.equal(ipam.release('palisade', 'a', 'eth1'), undefined);
    assert.equal(ipam.release('other', 'a', 'eth0'), undefined);
    assert.notEqual(ipam.release('palisade', 'a', 'eth0'), undefined);
    assert.equal(ipam.release('palisade', 'a', 'eth0'), undefined);
  });

  test('the database file is private: mode 0600', () => {
    const dir = tempDir();
    SqliteIpam.open(dir).close();
    assert.equal(statSync(join(dir, IPAM_DB_FILE)).mode & 0o777, 0o600);
  });

  test('an unopenable data dir is an I/O error, not a crash', () => {
    const dir = tempDir();
    SqliteIpam.open(dir).close();
    assert.equal(
      codeOf(() => SqliteIpam.open(join(dir, IPAM_DB_FILE, 'sub'))),
      'CNI_ERR_IO',
    );
  });

  test('any sequence of ADDs and DELs keeps every address unique, allocatable and idempotent', () => {
    const p = pool('10.9.12.0/28', 'palisade', '10.9.12.1');
    fc.assert(
      fc.property(
        fc.array(fc.record({ del: fc.boolean(), c: fc.integer({ min: 0, max: 15 }) }), {
          maxLength: 60,
        }),
        (ops) => {
          const ipam = SqliteIpam.open(tempDir());
          const model = new Map<number, number>();
          try {
            for (const op of ops) {
              const cid = `c${op.c}`;
              if (op.del) {
                const freed = ipam.release('palisade', cid, 'eth0');
                assert.equal(freed, model.get(op.c));
                model.delete(op.c);
                continue;
              }
              try {
                const a = ipam.allocate(p, cid, 'eth0');
                if (model.has(op.c)) assert.equal(a.address, model.get(op.c));
                model.set(op.c, a.address);
              } catch (e) {
                assert.ok(e instanceof CniError && e.code === 'CNI_ERR_POOL_EXHAUSTED');
                assert.equal(
                  model.size,
                  13,
                  'exhausted only when all 13 allocatable addresses are held',
                );
              }
              const held = [...model.values()];
              assert.equal(new Set(held).size, held.length);
              for (const h of held) assert.ok(h > ip('10.9.12.1') && h < ip('10.9.12.15'));
            }
            assert.deepEqual(
              ipam
                .list('palisade')
                .map((x) => x.address)
                .sort(),
              [...model.values()].sort(),
            );
          } finally {
            ipam.close();
          }
        },
      ),
      { numRuns: 40 },
    );
  });
});
