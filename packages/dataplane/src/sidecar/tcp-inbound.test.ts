// The L4 (tcp) sidecar with real sockets, real TLS and real SVIDs from a real CA, on loopback
// addresses that play the pods' IPs: a raw line protocol through the inbound relay and through
// the outbound relay + inbound relay pair, each outcome compared with `palisade check` (the real
// CLI, a probe without HTTP attributes) for the same YAML. Semantics checked: DESIGN §4.6 (Calico
// `http` rules cannot match non-HTTP traffic; the peer certificate's identity and its binding to
// the source address), Istio "Authorization policy for TCP traffic" (an ALLOW rule with an
// HTTP-only field is ignored; a DENY rule drops its HTTP-only fields and denies more),
// PeerAuthentication STRICT/PERMISSIVE as on HTTP ports, secure naming on the outbound side.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { connect as netConnect } from 'node:net';
import type { Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadText } from '@palisade/core';
import { svidClientOptions } from '@palisade/pki';
import type { CertificateAuthority, SvidMaterial } from '@palisade/pki';
import { AccessLog } from './access-log.js';
import type { AccessRecord } from './access-log.js';
import { PolicyView, PolicyViewHolder } from './policy-view.js';
import { TcpInboundSidecar } from './tcp-inbound.js';
import { TcpOutbound } from './tcp-outbound.js';
import { issue, loopbackPrefix, newCa, tempDir } from './test-fixtures.js';
import {
  API_EGRESS_DENY,
  CALICO,
  DB_PORT,
  ISTIO_ALLOW,
  ISTIO_DENY,
  NS,
  PERMISSIVE,
  STRICT,
  lineApp,
  spiffe,
  world,
} from './tcp-world.js';

const BIN = fileURLToPath(new URL('../../../cli/bin/palisade.js', import.meta.url));
const P = loopbackPrefix();
const IPS = { db: `${P}.10`, api: `${P}.11`, web: `${P}.12`, intruder: `${P}.13` };
type Svid = SvidMaterial & { readonly bundlePem: string };
type Who = 'api' | 'web' | 'intruder';

function viewOf(yaml: string, endpoint: string, version: number): PolicyView {
  const loaded = loadText(yaml, `v${version}.yaml`);
  const e = loaded.diagnostics.find((d) => d.severity === 'error');
  assert.equal(e, undefined, `the test world loads: ${e?.message ?? ''}`);
  const r = PolicyView.fromResources(loaded.resources, endpoint, version);
  if (!r.ok) throw new Error(r.reason);
  return r.view;
}

interface Talk {
  /** What the application answered (empty: nothing reached it or it was refused). */
  readonly data: string;
  readonly error?: string;
}

/** Sends `ping` on a new connection, half-closes, and reads until the server closes. */
function talk(
  port: number,
  from: string,
  svid: Svid | undefined,
  bundle: string,
  host = IPS.db,
  opts: { readonly wait?: boolean } = {},
): Promise<Talk> {
  return new Promise((resolve) => {
    let data = '';
    let s: Socket;
    const go = (): void => {
      if (!opts.wait) {
        s.write('ping\n');
        s.end();
      }
    };
    if (svid) {
      const raw = netConnect({ host, port, localAddress: from, allowHalfOpen: true });
      s = tlsConnect(
        {
          socket: raw,
          ...svidClientOptions(svid, {
            trustBundlePem: bundle,
            trustDomain: 'cluster.local',
            expect: { kind: 'any-in-trust-domain' },
          }),
        },
        go,
      );
    } else s = netConnect({ host, port, localAddress: from, allowHalfOpen: true }, go);
    s.setEncoding('utf8');
    s.setTimeout(10_000, () => s.destroy(new Error('timeout')));
    s.on('data', (d: string) => {
      data += d;
      // A server-first test answers the banner, then half-closes.
      if (opts.wait && data.endsWith('\n') && !s.writableEnded) {
        s.write('ping\n');
        s.end();
      }
    });
    // The server's end: nothing more will come (a half-open client would otherwise wait).
    s.on('end', () => {
      if (!s.writableEnded) s.end();
    });
    let error: string | undefined;
    s.on('error', (e: Error & { code?: string }) => (error = e.code ?? e.message));
    s.on('close', () => resolve({ data, ...(error !== undefined ? { error } : {}) }));
  });
}

interface CheckLine {
  readonly l7: { readonly verdict: string; readonly provenance: { readonly kind: string } };
}

/** `palisade check -f WORLD --probes FILE -o json` for probes without HTTP attributes. */
function palisadeCheck(
  dir: string,
  name: string,
  yaml: string,
  probes: readonly Record<string, unknown>[],
): Promise<CheckLine[]> {
  const wf = join(dir, `${name}.yaml`);
  const pf = join(dir, `${name}.jsonl`);
  writeFileSync(wf, yaml);
  writeFileSync(pf, probes.map((p) => JSON.stringify(p)).join('\n') + '\n');
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [BIN, 'check', '-f', wf, '--probes', pf, '-o', 'json'],
      { timeout: 30_000 },
      (err, stdout, stderr) => {
        if (err && err.code !== 1) return reject(new Error(`palisade check: ${stderr}`));
        resolve(
          stdout
            .split('\n')
            .filter((l) => l.trim() !== '')
            .map((l) => JSON.parse(l) as CheckLine),
        );
      },
    );
  });
}

interface Case {
  readonly name: string;
  /** Who connects (its address) and whose certificate it shows (null: plaintext). */
  readonly from: Who;
  readonly shows: Who | null;
  readonly allowed: boolean;
  /** The provenance kind of the decision (the sidecar's record and `palisade check` agree). */
  readonly kind: string;
  readonly policy?: string;
}

const WORLDS: readonly {
  readonly title: string;
  readonly policies: readonly string[];
  readonly cases: readonly Case[];
}[] = [
  {
    title:
      'Calico (DESIGN §4.6): a serviceAccounts rule admits api at L4; an Allow rule with an http match cannot match a non-HTTP connection, so web falls to the default deny of the tier; STRICT PeerAuthentication refuses plaintext',
    policies: [CALICO, STRICT],
    cases: [
      {
        name: 'api with its own certificate',
        from: 'api',
        shows: 'api',
        allowed: true,
        kind: 'rule',
      },
      {
        name: 'web (wrong identity): the http rule that names it does not match TCP',
        from: 'web',
        shows: 'web',
        allowed: false,
        kind: 'tier-default',
      },
      {
        name: "the intruder presenting api's stolen certificate from its own address",
        from: 'intruder',
        shows: 'api',
        allowed: false,
        kind: 'identity-mismatch',
      },
      {
        name: 'api in plaintext under STRICT',
        from: 'api',
        shows: null,
        allowed: false,
        kind: 'peer-authentication',
      },
    ],
  },
  {
    title:
      'Istio "Authorization policy for TCP traffic": an ALLOW rule that contains an HTTP-only field (methods) is ignored, so web is not allowed; the L4-only ALLOW rule admits api',
    policies: [ISTIO_ALLOW, PERMISSIVE],
    cases: [
      {
        name: 'api by the L4-only ALLOW rule',
        from: 'api',
        shows: 'api',
        allowed: true,
        kind: 'istio-allow',
        policy: 'db-allow',
      },
      {
        name: 'web: its ALLOW rule names a method and is ignored for TCP',
        from: 'web',
        shows: 'web',
        allowed: false,
        kind: 'istio-no-allow-match',
      },
      {
        name: 'plaintext under PERMISSIVE reaches the ALLOW policy without a principal',
        from: 'api',
        shows: null,
        allowed: false,
        kind: 'istio-no-allow-match',
      },
    ],
  },
  {
    title:
      'Istio "Authorization policy for TCP traffic": a DENY rule drops its HTTP-only fields (methods, paths) and so denies every connection of web; api (no ALLOW policy) is allowed',
    policies: [ISTIO_DENY, PERMISSIVE],
    cases: [
      {
        name: 'api, no ALLOW policy applies',
        from: 'api',
        shows: 'api',
        allowed: true,
        kind: 'no-policy',
      },
      {
        name: 'web: the DENY rule for POST /admin denies its TCP connection',
        from: 'web',
        shows: 'web',
        allowed: false,
        kind: 'istio-deny',
        policy: 'db-deny',
      },
      {
        name: 'plaintext allowed by PERMISSIVE (no principal, the DENY rule names one)',
        from: 'api',
        shows: null,
        allowed: true,
        kind: 'no-policy',
      },
    ],
  },
];

describe(
  'the L4 (tcp) sidecar relays a non-HTTP protocol with one decision per connection',
  { timeout: 60_000 },
  () => {
    const dir = tempDir('tcp-inbound');
    let ca: CertificateAuthority;
    const svids = new Map<string, Svid>();
    let bundle = '';

    before(async () => {
      ca = await newCa(join(dir.path, 'ca'));
      for (const sa of ['db', 'api', 'web', 'intruder']) {
        const s = await issue(ca, spiffe(sa));
        svids.set(sa, s);
        bundle = s.bundlePem;
      }
    });
    after(() => dir.cleanup());

    const svid = (sa: string): Svid => {
      const s = svids.get(sa);
      assert.ok(s);
      return s;
    };

    for (const [w, spec] of WORLDS.entries())
      test(`${spec.title}; each outcome as palisade check predicts`, async () => {
        const yaml = world(IPS, ...spec.policies);
        const holder = new PolicyViewHolder(viewOf(yaml, `${NS}/db`, 1));
        const app = await lineApp();
        const records: AccessRecord[] = [];
        const log = new AccessLog(undefined);
        log.onRecord((r) => records.push(r));
        const sidecar = new TcpInboundSidecar({
          listenHost: IPS.db,
          listenPort: 0,
          appPort: app.port,
          podPort: DB_PORT,
          svid: svid('db'),
          trustBundlePem: bundle,
          policy: holder,
          log,
          plaintextDetectMs: 200,
        });
        const { port } = await sidecar.start();
        try {
          const checked = await palisadeCheck(
            dir.path,
            `world-${w}`,
            yaml,
            spec.cases.map((c) => ({
              from: `${NS}/${c.from}`,
              to: `${NS}/db`,
              protocol: 'TCP',
              port: DB_PORT,
              principal: c.shows === null ? null : spiffe(c.shows),
            })),
          );
          for (const [i, c] of spec.cases.entries()) {
            const before = app.connections.length;
            const n = records.length;
            const got = await talk(
              port,
              IPS[c.from],
              c.shows === null ? undefined : svid(c.shows),
              bundle,
            );
            const check = checked[i];
            assert.ok(check, 'one check line per probe');
            assert.equal(
              check.l7.verdict,
              c.allowed ? 'allow' : 'deny',
              `${c.name}: palisade check predicts ${c.allowed ? 'allow' : 'deny'}`,
            );
            assert.equal(check.l7.provenance.kind, c.kind, `${c.name}: check provenance`);
            if (c.allowed) {
              assert.equal(
                got.data,
                'hello ping\nbye\n',
                `${c.name}: relayed both ways, half-close kept`,
              );
              assert.equal(app.connections.length, before + 1);
            } else {
              assert.equal(got.data, '', `${c.name}: nothing from the application`);
              assert.equal(
                app.connections.length,
                before,
                `${c.name}: the application saw no connection`,
              );
            }
            // One record per connection, with the decision's provenance.
            await waitFor(() => records.length > n);
            const r = records[n];
            assert.ok(r);
            assert.equal(records.length, n + 1, `${c.name}: one record per connection`);
            assert.equal(r.stage, 'connection');
            assert.equal(r.method, null);
            assert.equal(r.verdict, c.allowed ? 'allow' : 'deny', c.name);
            assert.equal(r.provenance.kind, c.kind, `${c.name}: ${r.provenance.reason}`);
            if (c.policy)
              assert.ok(
                r.provenance.policy?.includes(c.policy),
                `${c.name}: ${r.provenance.policy ?? ''}`,
              );
            assert.equal(r.source.ip, IPS[c.from]);
            assert.equal(r.source.identity, c.shows === null ? null : spiffe(c.shows));
          }
        } finally {
          await sidecar.close();
          app.server.close();
        }
      });

    test('a server-first protocol in plaintext where PERMISSIVE allows it: a silent client is taken as plaintext after the detection time, and the banner reaches it', async () => {
      const yaml = world(IPS, PERMISSIVE);
      const holder = new PolicyViewHolder(viewOf(yaml, `${NS}/db`, 1));
      const app = await lineApp('127.0.0.1', 'READY');
      const sidecar = new TcpInboundSidecar({
        listenHost: IPS.db,
        listenPort: 0,
        appPort: app.port,
        podPort: DB_PORT,
        svid: svid('db'),
        trustBundlePem: bundle,
        policy: holder,
        plaintextDetectMs: 150,
      });
      const { port } = await sidecar.start();
      try {
        const got = await talk(port, IPS.api, undefined, bundle, IPS.db, { wait: true });
        assert.equal(got.data, 'READY\nhello ping\nbye\n');
        // With mTLS the banner comes after the handshake, as for any client.
        const tls = await talk(port, IPS.api, svid('api'), bundle, IPS.db, { wait: true });
        assert.equal(tls.data, 'READY\nhello ping\nbye\n');
      } finally {
        await sidecar.close();
        app.server.close();
      }
    });

    test('under STRICT a silent client is closed at the handshake timeout, never taken as plaintext', async () => {
      const yaml = world(IPS, STRICT);
      const holder = new PolicyViewHolder(viewOf(yaml, `${NS}/db`, 1));
      const app = await lineApp('127.0.0.1', 'READY');
      const records: AccessRecord[] = [];
      const log = new AccessLog(undefined);
      log.onRecord((r) => records.push(r));
      const sidecar = new TcpInboundSidecar({
        listenHost: IPS.db,
        listenPort: 0,
        appPort: app.port,
        podPort: DB_PORT,
        svid: svid('db'),
        trustBundlePem: bundle,
        policy: holder,
        log,
        plaintextDetectMs: 50,
        handshakeTimeoutMs: 400,
      });
      const { port } = await sidecar.start();
      try {
        const t0 = Date.now();
        const got = await talk(port, IPS.api, undefined, bundle, IPS.db, { wait: true });
        assert.equal(got.data, '');
        assert.equal(app.connections.length, 0);
        assert.ok(Date.now() - t0 < 5_000, `closed after ${Date.now() - t0} ms`);
        await waitFor(() => records.length > 0);
        assert.equal(records[0]?.provenance.kind, 'peer-authentication');
      } finally {
        await sidecar.close();
        app.server.close();
      }
    });

    test('a certificate from another trust bundle is refused before any decision (identity-mismatch), the application sees nothing', async () => {
      const other = await newCa(join(dir.path, 'other-ca'));
      const forged = await issue(other, spiffe('api'));
      const yaml = world(IPS, CALICO);
      const holder = new PolicyViewHolder(viewOf(yaml, `${NS}/db`, 1));
      const app = await lineApp();
      const records: AccessRecord[] = [];
      const log = new AccessLog(undefined);
      log.onRecord((r) => records.push(r));
      const sidecar = new TcpInboundSidecar({
        listenHost: IPS.db,
        listenPort: 0,
        appPort: app.port,
        podPort: DB_PORT,
        svid: svid('db'),
        trustBundlePem: bundle,
        policy: holder,
        log,
      });
      const { port } = await sidecar.start();
      try {
        // The client trusts the real bundle for the server; its own chain is the forged one.
        const got = await talk(port, IPS.api, { ...forged, bundlePem: bundle }, bundle);
        assert.equal(got.data, '');
        assert.equal(app.connections.length, 0);
        await waitFor(() => records.length > 0);
        assert.equal(records[0]?.provenance.kind, 'identity-mismatch');
        assert.equal(records[0]?.verdict, 'deny');
      } finally {
        await sidecar.close();
        app.server.close();
      }
    });

    test('hostile and broken inputs: a bogus TLS record, a client that resets at once, and the application down — nothing is relayed, each refusal or failure is one record', async () => {
      const yaml = world(IPS, PERMISSIVE, CALICO);
      const holder = new PolicyViewHolder(viewOf(yaml, `${NS}/db`, 1));
      const gone = await lineApp();
      await new Promise<void>((r) => gone.server.close(() => r()));
      const records: AccessRecord[] = [];
      const log = new AccessLog(undefined);
      log.onRecord((r) => records.push(r));
      const sidecar = new TcpInboundSidecar({
        listenHost: IPS.db,
        listenPort: 0,
        appPort: gone.port,
        podPort: DB_PORT,
        svid: svid('db'),
        trustBundlePem: bundle,
        policy: holder,
        log,
        plaintextDetectMs: 100,
        handshakeTimeoutMs: 2_000,
      });
      const { port } = await sidecar.start();
      const raw = (bytes: Buffer | null): Promise<string> =>
        new Promise((resolve) => {
          const s = netConnect({ host: IPS.db, port, localAddress: IPS.api }, () => {
            if (bytes) s.write(bytes);
            // Reset: gone for good (a FIN alone is a half-close, after which a server-first
            // protocol's client may still read the banner).
            else s.resetAndDestroy();
          });
          let data = '';
          s.on('data', (d: Buffer) => (data += d.toString('latin1')));
          s.on('error', () => undefined);
          s.on('close', () => resolve(data));
          s.setTimeout(5_000, () => s.destroy());
        });
      try {
        // A TLS handshake record type with garbage after it.
        await raw(Buffer.from([0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 6, 7, 8]));
        await waitFor(() => records.length >= 1);
        assert.equal(records[0]?.verdict, 'deny');
        assert.equal(records[0]?.provenance.kind, 'identity-mismatch');
        assert.match(records[0]?.provenance.reason ?? '', /TLS handshake refused/);
        // Reset before a byte: nothing to decide, nothing recorded.
        await raw(null);
        await new Promise((r) => setTimeout(r, 300));
        assert.equal(records.length, 1);
        // Allowed (api's certificate), but the application is down: an error, not an allow.
        const got = await talk(port, IPS.api, svid('api'), bundle);
        assert.equal(got.data, '');
        await waitFor(() => records.length >= 2);
        assert.equal(records[1]?.verdict, 'error', records[1]?.provenance.reason);
        assert.equal(sidecar.counters().errors, 1);
      } finally {
        await sidecar.close();
      }
    });

    test('outbound L4: the application connection is judged once against its own egress rules, relayed over mTLS to the destination sidecar (secure naming), and reaches the application', async () => {
      const yaml = world(IPS, CALICO);
      const dbHolder = new PolicyViewHolder(viewOf(yaml, `${NS}/db`, 1));
      const apiHolder = new PolicyViewHolder(viewOf(yaml, `${NS}/api`, 1));
      assert.equal(
        apiHolder.current.speaksL4(IPS.db, DB_PORT),
        true,
        'the named port tcp-postgres is L4',
      );
      const app = await lineApp();
      const sidecar = new TcpInboundSidecar({
        listenHost: IPS.db,
        listenPort: 0,
        appPort: app.port,
        podPort: DB_PORT,
        svid: svid('db'),
        trustBundlePem: bundle,
        policy: dbHolder,
      });
      const { port } = await sidecar.start();
      const records: AccessRecord[] = [];
      const log = new AccessLog(undefined);
      log.onRecord((r) => records.push(r));
      const out = new TcpOutbound({
        svid: svid('api'),
        trustBundlePem: bundle,
        policy: apiHolder,
        sourceAddress: IPS.api,
        upstream: () => ({ host: IPS.db, port }),
        log,
      });
      const a = await out.addDestination({ ip: IPS.db, port: DB_PORT, listenPort: 0 });
      try {
        const got = await talk(a.port, '127.0.0.1', undefined, bundle, '127.0.0.1');
        assert.equal(got.data, 'hello ping\nbye\n');
        await waitFor(() => records.length > 0);
        assert.equal(records[0]?.side, 'outbound');
        assert.equal(records[0]?.verdict, 'allow');
        assert.equal(records[0]?.destination.endpoint, `${NS}/db`);

        // The source's egress at L4: a Deny rule of api's own egress closes the connection.
        const denied = viewOf(world(IPS, CALICO, API_EGRESS_DENY), `${NS}/api`, 2);
        assert.ok(apiHolder.update({ ok: true, view: denied }));
        const before = app.connections.length;
        const refused = await talk(a.port, '127.0.0.1', undefined, bundle, '127.0.0.1');
        assert.equal(refused.data, '');
        assert.equal(app.connections.length, before, 'nothing reached the destination');
        await waitFor(() => records.length > 1);
        assert.equal(records[1]?.verdict, 'deny');
        assert.equal(records[1]?.provenance.policy, `${NS}/api-egress`);
      } finally {
        await out.close();
        await sidecar.close();
        app.server.close();
      }
    });

    test('outbound L4 with the destination sidecar down: the connection is recorded as an error (not an allow) and closed at once', async () => {
      const yaml = world(IPS, CALICO);
      const apiHolder = new PolicyViewHolder(viewOf(yaml, `${NS}/api`, 1));
      const records: AccessRecord[] = [];
      const log = new AccessLog(undefined);
      log.onRecord((r) => records.push(r));
      // A port nothing listens on: bound, then closed.
      const gone = await lineApp(IPS.db);
      await new Promise<void>((r) => gone.server.close(() => r()));
      const out = new TcpOutbound({
        svid: svid('api'),
        trustBundlePem: bundle,
        policy: apiHolder,
        sourceAddress: IPS.api,
        upstream: () => ({ host: IPS.db, port: gone.port }),
        log,
        connectTimeoutMs: 8_000,
      });
      const a = await out.addDestination({ ip: IPS.db, port: DB_PORT, listenPort: 0 });
      try {
        const t0 = Date.now();
        const got = await talk(a.port, '127.0.0.1', undefined, bundle, '127.0.0.1');
        assert.equal(got.data, '');
        assert.ok(Date.now() - t0 < 4_000, `closed after ${Date.now() - t0} ms`);
        await waitFor(() => records.length > 0);
        assert.equal(records[0]?.verdict, 'error');
        assert.match(records[0]?.provenance.reason ?? '', /ECONNREFUSED/);
      } finally {
        await out.close();
      }
    });

    test('outbound L4 secure naming: a server presenting an identity the destination does not run is refused (identity-mismatch) and no byte is relayed', async () => {
      const yaml = world(IPS, CALICO);
      // An impostor at the db's address holds web's SVID (its own view is of web).
      const webHolder = new PolicyViewHolder(viewOf(yaml, `${NS}/web`, 1));
      const apiHolder = new PolicyViewHolder(viewOf(yaml, `${NS}/api`, 1));
      const app = await lineApp();
      const impostor = new TcpInboundSidecar({
        listenHost: IPS.db,
        listenPort: 0,
        appPort: app.port,
        podPort: DB_PORT,
        svid: svid('web'),
        trustBundlePem: bundle,
        policy: webHolder,
      });
      const { port } = await impostor.start();
      const records: AccessRecord[] = [];
      const log = new AccessLog(undefined);
      log.onRecord((r) => records.push(r));
      const out = new TcpOutbound({
        svid: svid('api'),
        trustBundlePem: bundle,
        policy: apiHolder,
        sourceAddress: IPS.api,
        upstream: () => ({ host: IPS.db, port }),
        log,
      });
      const a = await out.addDestination({ ip: IPS.db, port: DB_PORT, listenPort: 0 });
      try {
        const got = await talk(a.port, '127.0.0.1', undefined, bundle, '127.0.0.1');
        assert.equal(got.data, '');
        assert.equal(app.connections.length, 0);
        await waitFor(() => records.length > 0);
        assert.equal(records[0]?.verdict, 'deny');
        assert.equal(
          records[0]?.provenance.kind,
          'identity-mismatch',
          records[0]?.provenance.reason,
        );
      } finally {
        await out.close();
        await impostor.close();
        app.server.close();
      }
    });
  },
);

async function waitFor(f: () => boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 10));
  }
}
