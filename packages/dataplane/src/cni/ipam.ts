// Address allocation for the CNI plugin: one SQLite file per node, shared by every plugin process.
// Owns: the guarantee that no address is held by two attachments, across restarts and concurrent
// ADDs from separate processes (every change runs in a `BEGIN IMMEDIATE` transaction, so writers
// are serialised by SQLite's file lock). Must never: hand out the network, broadcast or reserved
// addresses, or release an address it did not allocate to that attachment.

import { chmodSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { CniError } from './cni-error.js';
import { blockSize, cidrHas, formatCidr, formatIpv4 } from './ipv4.js';
import type { Ipv4Cidr } from './ipv4.js';

export interface IpamPool {
  /** The CNI network name: attachments are keyed by (network, container id, ifname). */
  readonly network: string;
  readonly subnet: Ipv4Cidr;
  /** Addresses of the subnet never allocated (the configured gateway). */
  readonly reserved: readonly number[];
}

export interface Allocation {
  readonly network: string;
  readonly containerId: string;
  readonly ifname: string;
  readonly address: number;
  readonly allocatedAt: string;
}

export type AllocateResult = Allocation & {
  /** False when the attachment already held the address (a repeated ADD). */
  readonly fresh: boolean;
};

/** The allocation port the plugin needs. */
export interface Ipam {
  /**
   * The attachment's address: the one it already holds (ADD is idempotent), else `requested` if
   * free and usable, else the next free address after the last one handed out.
   */
  allocate(pool: IpamPool, containerId: string, ifname: string, requested?: number): AllocateResult;
  /** Releases the attachment's address; undefined when it held none (DEL is idempotent). */
  release(network: string, containerId: string, ifname: string): number | undefined;
  get(network: string, containerId: string, ifname: string): Allocation | undefined;
  list(network: string): readonly Allocation[];
  close(): void;
}

export const IPAM_DB_FILE = 'ipam.db';

interface Row {
  network: string;
  address: number;
  container_id: string;
  ifname: string;
  allocated_at: string;
}

function toAllocation(r: Row): Allocation {
  return {
    network: r.network,
    containerId: r.container_id,
    ifname: r.ifname,
    address: r.address,
    allocatedAt: r.allocated_at,
  };
}

function isBusy(e: unknown): boolean {
  const code = (e as { code?: unknown }).code;
  return typeof code === 'string' && (code === 'SQLITE_BUSY' || code.startsWith('SQLITE_BUSY_'));
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

export interface SqliteIpamOptions {
  /** How long one plugin run waits for the file lock before answering "try again" (CNI 11). */
  readonly busyTimeoutMs?: number;
  /** The clock, for `allocatedAt`. */
  readonly now?: () => Date;
}

/** The SQLite implementation; the file is `<dataDir>/ipam.db`, mode 0600 in a 0700 directory. */
export class SqliteIpam implements Ipam {
  private readonly db: Database.Database;
  private readonly now: () => Date;

  private constructor(db: Database.Database, now: () => Date) {
    this.db = db;
    this.now = now;
  }

  static open(dataDir: string, options: SqliteIpamOptions = {}): SqliteIpam {
    const timeout = options.busyTimeoutMs ?? 10_000;
    const file = join(dataDir, IPAM_DB_FILE);
    let db: Database.Database;
    try {
      mkdirSync(dataDir, { recursive: true, mode: 0o700 });
      db = new Database(file, { timeout });
      chmodSync(file, 0o600);
    } catch (e) {
      throw new CniError(
        'CNI_ERR_IO',
        `cannot open the address database ${file}: ${(e as Error).message}`,
        {
          cause: e,
        },
      );
    }
    const deadline = Date.now() + timeout;
    // Switching to WAL needs the database to itself; under a crowd of first-time openers SQLite
    // may answer BUSY without waiting, so retry until the same deadline as any other lock wait.
    for (;;) {
      try {
        if (String(db.pragma('journal_mode', { simple: true })) !== 'wal')
          db.pragma('journal_mode = WAL');
        db.pragma('synchronous = FULL');
        db.transaction(() => {
          db.exec(`
            CREATE TABLE IF NOT EXISTS allocations (
              address INTEGER PRIMARY KEY,
              network TEXT NOT NULL,
              container_id TEXT NOT NULL,
              ifname TEXT NOT NULL,
              allocated_at TEXT NOT NULL,
              UNIQUE (network, container_id, ifname)
            );
            CREATE TABLE IF NOT EXISTS cursors (network TEXT PRIMARY KEY, last INTEGER NOT NULL);
          `);
        }).immediate();
        break;
      } catch (e) {
        if (isBusy(e) && Date.now() < deadline) {
          sleepSync(5 + Math.floor(Math.random() * 20));
          continue;
        }
        db.close();
        if (isBusy(e))
          throw new CniError(
            'CNI_ERR_IPAM_BUSY',
            `the address database ${file} stayed locked for ${timeout} ms`,
          );
        throw new CniError(
          'CNI_ERR_IO',
          `cannot prepare the address database ${file}: ${(e as Error).message}`,
          {
            cause: e,
          },
        );
      }
    }
    return new SqliteIpam(db, options.now ?? (() => new Date()));
  }

  private immediate<T>(fn: () => T): T {
    try {
      return this.db.transaction(fn).immediate();
    } catch (e) {
      if (isBusy(e))
        throw new CniError(
          'CNI_ERR_IPAM_BUSY',
          'the address database stayed locked by other plugin runs',
        );
      throw e;
    }
  }

  allocate(
    pool: IpamPool,
    containerId: string,
    ifname: string,
    requested?: number,
  ): AllocateResult {
    return this.immediate(() => {
      const held = this.get(pool.network, containerId, ifname);
      if (held) {
        if (requested !== undefined && requested !== held.address)
          throw new CniError(
            'CNI_ERR_ADDRESS_UNAVAILABLE',
            `container ${containerId} (${ifname}) already holds ${formatIpv4(held.address)}, not the requested ${formatIpv4(requested)}`,
          );
        return { ...held, fresh: false };
      }
      const first = pool.subnet.network + 1;
      const last = pool.subnet.network + blockSize(pool.subnet.prefix) - 2;
      const reserved = new Set(pool.reserved);
      let address: number;
      if (requested !== undefined) {
        if (
          !cidrHas(pool.subnet, requested) ||
          requested < first ||
          requested > last ||
          reserved.has(requested)
        )
          throw new CniError(
            'CNI_ERR_ADDRESS_UNAVAILABLE',
            `requested address ${formatIpv4(requested)} is not allocatable from ${formatCidr(pool.subnet)} (outside the pool, or its network, broadcast or gateway address)`,
          );
        const holder = this.db
          .prepare<[number], Row>('SELECT * FROM allocations WHERE address = ?')
          .get(requested);
        if (holder)
          throw new CniError(
            'CNI_ERR_ADDRESS_UNAVAILABLE',
            `requested address ${formatIpv4(requested)} is held by container ${holder.container_id} (${holder.ifname}) of network ${holder.network}`,
          );
        address = requested;
      } else {
        const taken = new Set(
          this.db
            .prepare<[number, number], { address: number }>(
              'SELECT address FROM allocations WHERE address BETWEEN ? AND ?',
            )
            .all(first, last)
            .map((r) => r.address),
        );
        let reservedInPool = 0;
        for (const r of reserved)
          if (r >= first && r <= last) {
            taken.add(r);
            reservedInPool += 1;
          }
        const usable = last - first + 1;
        if (taken.size >= usable)
          throw new CniError(
            'CNI_ERR_POOL_EXHAUSTED',
            `no free address in ${formatCidr(pool.subnet)}: all ${usable - reservedInPool} allocatable addresses are held`,
          );
        const cursor = this.db
          .prepare<[string], { last: number }>('SELECT last FROM cursors WHERE network = ?')
          .get(pool.network);
        // Round-robin from the last address handed out, so a just-released address is reused last
        // (flows and policy caches keyed by the old owner's address have time to drain).
        let candidate = cursor && cursor.last >= first && cursor.last <= last ? cursor.last : last;
        for (;;) {
          candidate = candidate >= last ? first : candidate + 1;
          if (!taken.has(candidate)) break;
        }
        address = candidate;
        this.db
          .prepare(
            'INSERT INTO cursors (network, last) VALUES (?, ?) ON CONFLICT (network) DO UPDATE SET last = excluded.last',
          )
          .run(pool.network, address);
      }
      const allocatedAt = this.now().toISOString();
      this.db
        .prepare(
          'INSERT INTO allocations (address, network, container_id, ifname, allocated_at) VALUES (?, ?, ?, ?, ?)',
        )
        .run(address, pool.network, containerId, ifname, allocatedAt);
      return { network: pool.network, containerId, ifname, address, allocatedAt, fresh: true };
    });
  }

  release(network: string, containerId: string, ifname: string): number | undefined {
    return this.immediate(() => {
      const row = this.db
        .prepare<[string, string, string], { address: number }>(
          'DELETE FROM allocations WHERE network = ? AND container_id = ? AND ifname = ? RETURNING address',
        )
        .get(network, containerId, ifname);
      return row?.address;
    });
  }

  get(network: string, containerId: string, ifname: string): Allocation | undefined {
    const row = this.db
      .prepare<[string, string, string], Row>(
        'SELECT * FROM allocations WHERE network = ? AND container_id = ? AND ifname = ?',
      )
      .get(network, containerId, ifname);
    return row ? toAllocation(row) : undefined;
  }

  list(network: string): readonly Allocation[] {
    return this.db
      .prepare<[string], Row>('SELECT * FROM allocations WHERE network = ? ORDER BY address')
      .all(network)
      .map(toAllocation);
  }

  close(): void {
    this.db.close();
  }
}
