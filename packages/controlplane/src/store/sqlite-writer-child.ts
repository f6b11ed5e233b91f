// A child process for the SQLite adapter's tests: writes to a store file from another process.
// `loop N`: forever, one transaction putting N keys `c/<i>` whose value names the transaction's
// revision, printing `committed <revision>` after each commit (the crash test kills it).
// `puts N`: N single-key transactions `x/<i>`, then exits (the cross-process watch test).
import { SqliteStore } from './sqlite-store.js';

const [path, mode, count] = process.argv.slice(2);
if (path === undefined || (mode !== 'loop' && mode !== 'puts') || count === undefined) {
  console.error('usage: sqlite-writer-child.ts PATH loop|puts N');
  process.exit(2);
}
const n = Number(count);
const store = new SqliteStore(path);
const pad = 'p'.repeat(200);
if (mode === 'loop') {
  for (;;) {
    const rev = (await store.status()).revision + 1;
    const ops = Array.from({ length: n }, (_, i) => ({
      kind: 'put' as const,
      key: `c/${String(i).padStart(5, '0')}`,
      value: `${rev}:${pad}`,
    }));
    const r = await store.txn({ compares: [], success: ops });
    process.stdout.write(`committed ${r.revision}\n`);
  }
} else {
  for (let i = 0; i < n; i++)
    await store.txn({ compares: [], success: [{ kind: 'put', key: `x/${i}`, value: String(i) }] });
  await store.close();
}
