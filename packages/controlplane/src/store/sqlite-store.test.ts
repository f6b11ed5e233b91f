import { after } from 'node:test';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runStoreContract } from './store-contract.js';
import { SqliteStore } from './sqlite-store.js';

const dir = mkdtempSync(join(tmpdir(), `palisade-sqlite-contract-${process.pid}-`));
after(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;

runStoreContract('sqlite', () => Promise.resolve(new SqliteStore(join(dir, `s${++n}.db`))), {
  fresh: true,
  // A second connection to the same file, as a second process would open it.
  secondHandle: (s) => Promise.resolve(new SqliteStore((s as SqliteStore).path)),
});
