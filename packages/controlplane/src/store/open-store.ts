// Opens a store from its URL (DESIGN §6 `--store URL`): `memory:`, `sqlite:<path>`,
// `etcd://h1:2379,h2:2379` or `etcds://h1:2379,...?ca=FILE[&cert=FILE&key=FILE]` (TLS, with an
// optional client certificate). Bad URLs fail with STORE_ERR_INVALID naming the accepted forms;
// an etcd that cannot be reached fails with STORE_ERR_UNAVAILABLE before the caller goes on.

import { readFileSync } from 'node:fs';
import { EtcdStore, type EtcdStoreOptions } from './etcd-store.js';
import { MemoryStore } from './memory-store.js';
import { SqliteStore, type SqliteStoreOptions } from './sqlite-store.js';
import { StoreError, type Store } from './store.js';

export type StoreUrl =
  | { readonly kind: 'memory' }
  | { readonly kind: 'sqlite'; readonly path: string }
  | {
      readonly kind: 'etcd';
      readonly endpoints: readonly string[];
      /** File paths for etcds:// (PEM). */
      readonly tls?: { readonly ca: string; readonly cert?: string; readonly key?: string };
    };

const FORMS =
  'memory:, sqlite:<path>, etcd://host:port[,host:port...] or etcds://host:port[,...]?ca=<file>[&cert=<file>&key=<file>]';

function bad(url: string, why: string): StoreError {
  // The URL may carry file paths, never secrets: it is safe to echo.
  return new StoreError(
    'STORE_ERR_INVALID',
    `store URL ${JSON.stringify(url)}: ${why}; use ${FORMS}`,
  );
}

const HOST =
  /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])$/;

function parseEndpoint(url: string, ep: string): string {
  const m = /^(.*?)(?::(\d{1,5}))?$/.exec(ep);
  const host = m?.[1] ?? '';
  if (host === '' || !HOST.test(host)) throw bad(url, `${JSON.stringify(ep)} is not host:port`);
  const port = m?.[2] === undefined ? 2379 : Number(m[2]);
  if (port < 1 || port > 65535) throw bad(url, `port ${port} is out of range`);
  return `${host}:${port}`;
}

/** Parses a store URL without opening anything. */
export function parseStoreUrl(url: string): StoreUrl {
  if (typeof url !== 'string' || url.trim() === '') throw bad(String(url), 'empty');
  if ([...url].some((ch) => ch.charCodeAt(0) < 0x20 || ch.charCodeAt(0) === 0x7f))
    throw bad(url, 'control characters');
  if (url === 'memory:' || url === 'memory://') return { kind: 'memory' };
  if (url.startsWith('sqlite:')) {
    let path = url.slice('sqlite:'.length);
    if (path.startsWith('//')) path = path.slice(2); // sqlite:///abs/path
    if (path === '') throw bad(url, 'no file path');
    return { kind: 'sqlite', path };
  }
  const m = /^(etcds?):\/\/([^/?#]*)(\/)?(?:\?([^#]*))?$/.exec(url);
  if (m === null) throw bad(url, 'unknown scheme or malformed');
  const tls = m[1] === 'etcds';
  const hosts = (m[2] ?? '').split(',');
  if (hosts.length === 0 || hosts.some((h) => h === '')) throw bad(url, 'empty member address');
  if (hosts.length > 64) throw bad(url, 'more than 64 members');
  const endpoints = hosts.map((h) => parseEndpoint(url, h));
  const params = new URLSearchParams(m[4] ?? '');
  const allowed = new Set(tls ? ['ca', 'cert', 'key'] : []);
  for (const k of params.keys()) {
    if (!allowed.has(k)) throw bad(url, `unknown parameter ${JSON.stringify(k)}`);
  }
  if (!tls) return { kind: 'etcd', endpoints };
  const ca = params.get('ca');
  if (ca === null || ca === '') throw bad(url, 'etcds:// needs ca=<file> (the CA of the members)');
  const cert = params.get('cert') ?? undefined;
  const key = params.get('key') ?? undefined;
  if ((cert === undefined) !== (key === undefined))
    throw bad(url, 'a client certificate needs both cert= and key=');
  return {
    kind: 'etcd',
    endpoints,
    tls: { ca, ...(cert === undefined ? {} : { cert }), ...(key === undefined ? {} : { key }) },
  };
}

export interface OpenStoreOptions {
  readonly sqlite?: SqliteStoreOptions;
  readonly etcd?: Omit<EtcdStoreOptions, 'endpoints' | 'tls'>;
  /** Ask an etcd store for its status before returning (default true): fail fast at start. */
  readonly check?: boolean;
}

function readPem(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new StoreError(
      'STORE_ERR_INVALID',
      `cannot read the etcd ${what} file ${path}: ${(e as Error).message}`,
      {
        cause: e,
      },
    );
  }
}

/** Opens the store a URL names. Rejects with STORE_ERR_INVALID, CORRUPT or UNAVAILABLE. */
export async function openStore(url: string, options: OpenStoreOptions = {}): Promise<Store> {
  const u = parseStoreUrl(url);
  switch (u.kind) {
    case 'memory':
      return new MemoryStore();
    case 'sqlite':
      return new SqliteStore(u.path, options.sqlite);
    case 'etcd': {
      const tls =
        u.tls === undefined
          ? undefined
          : {
              ca: readPem(u.tls.ca, 'CA'),
              ...(u.tls.cert === undefined ? {} : { cert: readPem(u.tls.cert, 'certificate') }),
              ...(u.tls.key === undefined ? {} : { key: readPem(u.tls.key, 'key') }),
            };
      const store = new EtcdStore({
        ...options.etcd,
        endpoints: u.endpoints,
        ...(tls === undefined ? {} : { tls }),
      });
      if (options.check !== false) {
        try {
          await store.status();
        } catch (e) {
          await store.close();
          throw e;
        }
      }
      return store;
    }
  }
}
