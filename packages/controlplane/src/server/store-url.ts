// `--store URL` → a Store. Placeholder until the store adapters land (store/open-store.ts):
// only `memory:` is served here; `sqlite:` and `etcd://` are refused with a clear message.
// The lead switches `palisade server` to store/open-store.js when merging.

import { MemoryStore } from '../store/memory-store.js';
import type { Store } from '../store/store.js';

export class StoreUrlError extends Error {}

export function openStore(url: string): Promise<Store> {
  if (url === 'memory:' || url === 'memory') return Promise.resolve(new MemoryStore());
  if (url.startsWith('sqlite:') || url.startsWith('etcd://'))
    return Promise.reject(
      new StoreUrlError(
        `store ${JSON.stringify(url)}: the SQLite and etcd adapters are not in this build yet; use --store memory:`,
      ),
    );
  return Promise.reject(
    new StoreUrlError(
      `unknown store URL ${JSON.stringify(url)}: use memory:, sqlite:PATH or etcd://HOST:PORT[,HOST:PORT]`,
    ),
  );
}
