// `palisade server` (DESIGN §6): data dir, store, first admin token, the Palisade CA and the
// server's HTTPS certificate from it (renewed in place), listen, graceful stop.
// Owns: start-up order and its failure messages. Must never: print or log the admin token
// (it is written to <data-dir>/admin.token, mode 0600, and only the file's path is printed).

import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ADMINS_GROUP } from '../auth/principal.js';
import { looksLikeToken, mintToken } from '../auth/tokens.js';
import type { Store } from '../store/store.js';
import { ApiServer } from './api.js';
import { issueToken } from './bootstrap.js';
import type { Listening } from './listen.js';
import { isLoopback, listen } from './listen.js';
import { openStore } from '../store/open-store.js';
import type { ServerCredentials } from './tls.js';
import type { CertificateAuthority } from '@palisade/pki';
import { PkiError } from '@palisade/pki';
import type { IssuedServerCredentials } from '../ca/server-ca.js';
import { IssuanceAudit, issueServerCredentials, openServerCa } from '../ca/server-ca.js';
import { FlowService } from '../flows/flow-api.js';
import { FlowMetrics } from '../flows/flow-metrics.js';
import type { FlowRetention } from '../flows/flow-store.js';
import { FlowStore } from '../flows/flow-store.js';
import type { StaticRoute } from './api.js';

export interface RunServerOptions {
  readonly listen: string;
  readonly dataDir: string;
  readonly store?: string;
  readonly insecurePlaintext: boolean;
  /** Structured log lines (stderr). */
  readonly log: (line: Readonly<Record<string, unknown>>) => void;
  /** Human-readable start-up lines (stdout). */
  readonly say: (line: string) => void;
  /** Tests: credentials instead of a certificate from the Palisade CA. */
  readonly credentials?: ServerCredentials;
  /** Passphrase of the CA key files when they are encrypted (`palisade ca init --passphrase-file`). */
  readonly caPassphrase?: string;
  readonly rateLimit?: { perSecond: number; burst: number } | false;
  /** Opens `--store` (default: store/open-store.ts; tests inject failing stores). */
  readonly openStore?: (url: string) => Promise<Store>;
  /** Flow record retention (default: 7 days, 10 million records, 8 GiB), in `<data-dir>/flows.db`. */
  readonly flowRetention?: Partial<FlowRetention>;
  /** Static assets outside /api (the web console, mounted by `palisade server`). */
  readonly staticRoute?: StaticRoute;
}

export class ServerStartError extends Error {}

export interface RunningServer {
  readonly url: string;
  readonly store: Store;
  readonly api: ApiServer;
  readonly flows: FlowStore;
  readonly listening: Listening;
  readonly ca: CertificateAuthority;
  /** When the current server certificate is replaced (absent with caller credentials or plaintext). */
  readonly serverCertificate: () => { serial: string; notAfter: Date; renewAt: Date } | undefined;
  /** Renews the server certificate now, as the timer does at renewAt (operators, tests). */
  renewServerCertificate(): Promise<void>;
  stop(): Promise<void>;
}

export function parseListen(s: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(s);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (!m || host === undefined || !Number.isInteger(port) || port > 65535)
    throw new ServerStartError(
      `--listen ${JSON.stringify(s)} must be HOST:PORT, e.g. 127.0.0.1:9443 or [::1]:9443`,
    );
  return { host, port };
}

function ensureAdminToken(dataDir: string): { token: string; file: string; created: boolean } {
  const file = join(dataDir, 'admin.token');
  if (existsSync(file)) {
    const token = readFileSync(file, 'utf8').trim();
    if (!looksLikeToken(token))
      throw new ServerStartError(
        `${file} does not hold a Palisade token; remove it to mint a new one`,
      );
    chmodSync(file, 0o600);
    return { token, file, created: false };
  }
  const { token } = mintToken();
  writeFileSync(file, `${token}\n`, { mode: 0o600, flag: 'wx' });
  return { token, file, created: true };
}

export async function runServer(o: RunServerOptions): Promise<RunningServer> {
  const { host, port } = parseListen(o.listen);
  if (o.insecurePlaintext && !isLoopback(host))
    throw new ServerStartError(
      `--insecure-plaintext is refused on ${host}: plaintext is only allowed on a loopback address (127.0.0.1, ::1)`,
    );
  const dataDir = resolve(o.dataDir);
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  // The embedded default: one SQLite file in the data dir (DESIGN §6).
  const storeUrl = o.store ?? `sqlite:${join(dataDir, 'palisade.db')}`;
  let store: Store;
  try {
    store = await (o.openStore ?? openStore)(storeUrl);
    await store.status();
  } catch (e) {
    throw new ServerStartError(
      `cannot open the store ${storeUrl}: ${e instanceof Error ? e.message : String(e)}; nothing was started`,
    );
  }
  const admin = ensureAdminToken(dataDir);
  await issueToken(store, { kind: 'User', name: 'admin' }, [ADMINS_GROUP], {
    token: admin.token,
    createdBy: 'first start',
  });
  // The Palisade CA of the data dir (created at first start); its issuances go to our audit log.
  const issuanceAudit = new IssuanceAudit(store);
  let ca: CertificateAuthority;
  let caCreated: boolean;
  try {
    ({ ca, created: caCreated } = await openServerCa(dataDir, {
      audit: issuanceAudit.sink,
      ...(o.caPassphrase !== undefined ? { passphrase: o.caPassphrase } : {}),
    }));
  } catch (e) {
    await store.close();
    const locked = e instanceof PkiError && e.code === 'PKI_ERR_KEY_LOCKED';
    throw new ServerStartError(
      `cannot open the certificate authority in ${dataDir}: ${e instanceof PkiError ? `${e.code}: ${e.message}` : e instanceof Error ? e.message : String(e)}` +
        (locked ? ' (palisade server --ca-passphrase-file FILE)' : ''),
    );
  }
  const caFile = join(dataDir, 'ca.pem');
  let credentials: ServerCredentials | undefined;
  let issued: IssuedServerCredentials | undefined;
  if (!o.insecurePlaintext) {
    if (o.credentials) credentials = o.credentials;
    else {
      try {
        issued = await issueServerCredentials(ca, host);
      } catch (e) {
        await store.close();
        throw new ServerStartError(
          `cannot issue the server certificate: ${e instanceof Error ? e.message : String(e)}`,
        );
      }
      credentials = issued;
    }
  }
  // Flow records live in their own SQLite file beside the store's, whatever the store is: they are
  // high-volume, node-local observations that must not contend with policy transactions.
  let flowStore: FlowStore;
  try {
    flowStore = new FlowStore(join(dataDir, 'flows.db'), {
      ...(o.flowRetention ? { retention: o.flowRetention } : {}),
    });
  } catch (e) {
    await store.close();
    throw new ServerStartError(
      `cannot open the flow database ${join(dataDir, 'flows.db')}: ${e instanceof Error ? e.message : String(e)}`,
    );
  }
  const flowMetrics = new FlowMetrics();
  const pruneTimer = setInterval(() => {
    try {
      flowMetrics.evicted += flowStore.prune();
    } catch (e) {
      o.log({ msg: 'flow retention failed', error: e instanceof Error ? e.message : String(e) });
    }
  }, 60_000);
  pruneTimer.unref();
  const api = new ApiServer({
    store,
    flows: new FlowService({ store: flowStore, metrics: flowMetrics }),
    ...(o.staticRoute ? { staticRoute: o.staticRoute } : {}),
    log: o.log,
    ...(o.rateLimit !== undefined ? { rateLimit: o.rateLimit } : {}),
    ca: { authority: ca, audit: issuanceAudit, onRotated: () => onRotated() },
  });
  let listening: Listening;
  try {
    listening = await listen(api, { host, port, ...(credentials ? { credentials } : {}) });
  } catch (e) {
    clearInterval(pruneTimer);
    flowStore.close();
    await store.close();
    throw new ServerStartError(
      `cannot listen on ${o.listen}: ${e instanceof Error ? e.message : String(e)}`,
    );
  }
  // Renewal in place: at renewAt a new key and certificate (and the current bundle as client CA)
  // replace the secure context for new connections; a failed renewal is retried every minute.
  let timer: NodeJS.Timeout | undefined;
  const schedule = (at: Date) => {
    const wait = Math.min(Math.max(at.getTime() - Date.now(), 1000), 2 ** 31 - 1);
    timer = setTimeout(() => void renew(), wait);
    timer.unref();
  };
  const renew = async () => {
    clearTimeout(timer);
    if (stopped) return;
    try {
      const next = await issueServerCredentials(ca, host);
      listening.updateCredentials(next);
      issued = next;
      o.log({ msg: 'server certificate renewed', serial: next.serial, notAfter: next.notAfter });
      schedule(next.renewAt);
    } catch (e) {
      o.log({
        msg: 'server certificate renewal failed; retrying in 60 s',
        error: e instanceof Error ? e.message : String(e),
      });
      schedule(new Date(Date.now() + 60_000));
    }
  };
  if (issued) schedule(issued.renewAt);
  // After a rotation the listener must trust client certificates of the new root too: a renewal
  // re-reads the bundle as its client CA (and gets a certificate from whichever root signs now).
  const onRotated = async (): Promise<void> => {
    if (issued) await renew();
  };
  o.log({
    msg: 'listening',
    url: listening.url,
    store: store.name,
    tls: credentials !== undefined,
    trustDomain: ca.trustDomain,
  });
  o.say(
    `${caCreated ? 'created' : 'loaded'} the certificate authority for ${ca.trustDomain}; trust bundle ${caFile}`,
  );
  o.say(`palisade server listening on ${listening.url} (store ${store.name})`);
  if (o.staticRoute) o.say(`console: ${listening.url}/console/ (sign in with a token)`);
  o.say(`${admin.created ? 'wrote' : 'using'} the admin token in ${admin.file} (mode 0600)`);
  o.say(
    `connect: palisade login --server ${listening.url} --token-file ${admin.file}${credentials && !o.credentials ? ` --ca-file ${caFile}` : ''}`,
  );
  let stopped = false;
  return {
    url: listening.url,
    store,
    api,
    flows: flowStore,
    listening,
    ca,
    serverCertificate: () =>
      issued
        ? { serial: issued.serial, notAfter: issued.notAfter, renewAt: issued.renewAt }
        : undefined,
    renewServerCertificate: async () => {
      if (!issued)
        throw new ServerStartError('this server does not serve a certificate from its CA');
      await renew();
    },
    stop: async () => {
      if (stopped) return;
      stopped = true;
      clearTimeout(timer);
      clearInterval(pruneTimer);
      await listening.close();
      flowStore.close();
      await store.close();
    },
  };
}
