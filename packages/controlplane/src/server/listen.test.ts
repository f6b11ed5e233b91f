// The server over a real HTTPS socket with real certificates made by the openssl CLI: client
// certificates (valid, expired, from a foreign CA), tokens, the body limit while reading, watch
// streams, the first-start files, plaintext only on loopback, and no secret in the log.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runServer, ServerStartError } from './run-server.js';
import type { RunningServer } from './run-server.js';
import { opensslCreateCa, opensslIssue } from './openssl-test-support.js';

interface Reply {
  status: number;
  body: string;
}

function call(
  url: string,
  path: string,
  o: {
    ca: string;
    cert?: string;
    key?: string;
    token?: string;
    method?: string;
    body?: string | Buffer;
  },
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${url}${path}`,
      {
        method: o.method ?? 'GET',
        ca: o.ca,
        ...(o.cert ? { cert: o.cert, key: o.key } : {}),
        headers: o.token ? { authorization: `Bearer ${o.token}` } : {},
        timeout: 10_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (o.body !== undefined) req.write(o.body);
    req.end();
  });
}

describe('HTTPS with client certificates from our CA', { timeout: 60_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), `palisade-tls-${process.pid}-`));
  const pki = join(dir, 'pki');
  const logs: string[] = [];
  let server: RunningServer;
  let ca: string;
  const pem = (f: string) => readFileSync(f, 'utf8');
  let alice: { cert: string; key: string };
  let node: { cert: string; key: string };
  let expired: { cert: string; key: string };
  let foreign: { cert: string; key: string };
  let adminToken: string;

  before(async () => {
    const root = opensslCreateCa(pki, 'root');
    const other = opensslCreateCa(pki, 'foreign-root');
    const srv = opensslIssue(root, pki, 'server', {
      subject: '/CN=server',
      ips: ['127.0.0.1'],
      days: 2,
      usage: 'server',
    });
    const leaf = (c: { certFile: string; keyFile: string }) => ({
      cert: pem(c.certFile),
      key: pem(c.keyFile),
    });
    alice = leaf(
      opensslIssue(root, pki, 'alice', {
        subject: '/O=system:admins/CN=alice',
        days: 2,
        usage: 'client',
      }),
    );
    node = leaf(
      opensslIssue(root, pki, 'node', {
        subject: '/CN=n',
        uris: ['spiffe://cluster.local/node/node-7'],
        days: 2,
        usage: 'client',
      }),
    );
    expired = leaf(
      opensslIssue(root, pki, 'expired', {
        subject: '/O=system:admins/CN=old',
        days: -1,
        usage: 'client',
      }),
    );
    foreign = leaf(
      opensslIssue(other, pki, 'foreign', {
        subject: '/O=system:admins/CN=eve',
        days: 2,
        usage: 'client',
      }),
    );
    ca = pem(root.certFile);
    server = await runServer({
      listen: '127.0.0.1:0',
      dataDir: join(dir, 'data'),
      store: 'memory:',
      insecurePlaintext: false,
      log: (l) => logs.push(JSON.stringify(l)),
      say: (l) => logs.push(l),
      credentials: { key: pem(srv.keyFile), certChain: pem(srv.certFile), clientCa: ca },
      rateLimit: false,
    });
    adminToken = readFileSync(join(dir, 'data', 'admin.token'), 'utf8').trim();
  });

  after(async () => {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('first start writes admin.token with mode 0600', () => {
    const st = statSync(join(dir, 'data', 'admin.token'));
    assert.equal(st.mode & 0o777, 0o600);
    assert.match(adminToken, /^pal_/);
  });

  test('a client certificate from our CA authenticates its subject (CN user, O groups)', async () => {
    const r = await call(server.url, '/api/v1/whoami', { ca, ...alice });
    assert.equal(r.status, 200, r.body);
    const p = JSON.parse(r.body) as { kind: string; name: string; groups: string[]; via: string };
    assert.deepEqual(
      [p.kind, p.name, p.groups, p.via],
      ['User', 'alice', ['system:admins'], 'certificate'],
    );
  });

  test('a SPIFFE node URI authenticates a node', async () => {
    const r = await call(server.url, '/api/v1/whoami', { ca, ...node });
    assert.deepEqual(JSON.parse(r.body), {
      kind: 'Node',
      name: 'node-7',
      groups: [],
      via: 'certificate',
    });
  });

  test('an expired client certificate is 401 saying it expired', async () => {
    const r = await call(server.url, '/api/v1/whoami', { ca, ...expired });
    assert.equal(r.status, 401);
    const b = JSON.parse(r.body) as { code: string; message: string };
    assert.equal(b.code, 'AUTH_ERR_BAD_CERTIFICATE');
    assert.match(b.message, /expired/);
  });

  test('a certificate from a foreign CA is 401 saying so', async () => {
    const r = await call(server.url, '/api/v1/whoami', { ca, ...foreign });
    assert.equal(r.status, 401);
    const b = JSON.parse(r.body) as { code: string; message: string };
    assert.equal(b.code, 'AUTH_ERR_BAD_CERTIFICATE');
    assert.match(b.message, /not issued by this server's CA/);
  });

  test('the admin token works over TLS without a client certificate', async () => {
    const r = await call(server.url, '/api/v1/whoami', { ca, token: adminToken });
    assert.equal(r.status, 200);
    assert.equal((JSON.parse(r.body) as { name: string }).name, 'admin');
  });

  test('a 9 MiB body is refused with 413 while it is read', async () => {
    const r = await call(server.url, '/api/v1/apply', {
      ca,
      token: adminToken,
      method: 'POST',
      body: Buffer.alloc(9 * 1024 * 1024, 0x23),
    }).catch((e: Error) => ({ status: -1, body: e.message }));
    // The server answers 413 and closes; a client still writing may see the reset instead.
    assert.ok(r.status === 413 || r.status === -1, `${r.status}`);
  });

  test('apply and read back over the socket', async () => {
    const body =
      'apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: security}\nspec: {order: 100}\n';
    const r = await call(server.url, '/api/v1/apply', { ca, ...alice, method: 'POST', body });
    assert.equal(r.status, 200, r.body);
    const g = await call(server.url, '/api/v1/projectcalico.org/Tier/security', {
      ca,
      token: adminToken,
    });
    assert.equal((JSON.parse(g.body) as { spec: { order: number } }).spec.order, 100);
  });

  test('the log never holds a token, even after failed authentications', async () => {
    await call(server.url, '/api/v1/whoami', { ca, token: adminToken + 'x' });
    await call(server.url, '/api/v1/whoami', { ca, token: adminToken.slice(0, -1) + 'A' });
    await call(server.url, '/api/v1/whoami', { ca, token: 'pal_' + 'B'.repeat(43) });
    const all = logs.join('\n');
    assert.ok(all.includes('/api/v1/whoami'), 'requests are logged');
    assert.ok(!all.includes(adminToken), 'the admin token is in the log');
    assert.ok(!all.includes(adminToken.slice(4, 20)), 'part of the admin token is in the log');
    assert.ok(!all.includes('B'.repeat(43)));
    assert.ok(!all.includes('PRIVATE KEY'));
  });
});

describe('start-up refusals', () => {
  test('plaintext is refused off loopback', async () => {
    const dir = mkdtempSync(join(tmpdir(), `palisade-pt-${process.pid}-`));
    try {
      await assert.rejects(
        runServer({
          listen: '0.0.0.0:0',
          dataDir: dir,
          store: 'memory:',
          insecurePlaintext: true,
          log: () => {},
          say: () => {},
        }),
        (e: Error) => e instanceof ServerStartError && /loopback/.test(e.message),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('plaintext on loopback with the flag serves HTTP', async () => {
    const dir = mkdtempSync(join(tmpdir(), `palisade-pl-${process.pid}-`));
    const s = await runServer({
      listen: '127.0.0.1:0',
      dataDir: dir,
      store: 'memory:',
      insecurePlaintext: true,
      log: () => {},
      say: () => {},
    });
    try {
      assert.match(s.url, /^http:\/\//);
      const r = await fetch(`${s.url}/api/v1/whoami`, {
        headers: {
          authorization: `Bearer ${readFileSync(join(dir, 'admin.token'), 'utf8').trim()}`,
        },
      });
      assert.equal(r.status, 200);
    } finally {
      await s.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('an unknown store URL is refused before anything starts', async () => {
    const dir = mkdtempSync(join(tmpdir(), `palisade-st-${process.pid}-`));
    try {
      await assert.rejects(
        runServer({
          listen: '127.0.0.1:0',
          dataDir: dir,
          store: 'bogus://x',
          insecurePlaintext: true,
          log: () => {},
          say: () => {},
        }),
        (e: Error) => e instanceof ServerStartError && /nothing was started/.test(e.message),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test(
    'without credentials the server serves HTTPS with a certificate from its own CA (ca.pem verifies it)',
    { timeout: 30_000 },
    async () => {
      const dir = mkdtempSync(join(tmpdir(), `palisade-dev-${process.pid}-`));
      const s = await runServer({
        listen: '127.0.0.1:0',
        dataDir: dir,
        store: 'memory:',
        insecurePlaintext: false,
        log: () => {},
        say: () => {},
      });
      try {
        const ca = readFileSync(join(dir, 'ca.pem'), 'utf8');
        const r = await call(s.url, '/healthz', { ca });
        assert.equal(r.status, 200);
      } finally {
        await s.stop();
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});

describe('the embedded default store', () => {
  test(
    'without --store the server keeps its state in <data-dir>/palisade.db and it survives a restart',
    { timeout: 60_000 },
    async () => {
      const dir = mkdtempSync(join(tmpdir(), `palisade-db-${process.pid}-`));
      const start = () =>
        runServer({
          listen: '127.0.0.1:0',
          dataDir: dir,
          insecurePlaintext: true,
          log: () => {},
          say: () => {},
        });
      const token = () => readFileSync(join(dir, 'admin.token'), 'utf8').trim();
      const ns = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'kept' } };
      let s = await start();
      try {
        const w = await fetch(`${s.url}/api/v1/apply`, {
          method: 'POST',
          headers: { authorization: `Bearer ${token()}`, 'content-type': 'application/json' },
          body: JSON.stringify(ns),
        });
        assert.equal(w.status, 200, await w.text());
        await s.stop();
        assert.ok(statSync(join(dir, 'palisade.db')).isFile(), 'palisade.db is written');
        s = await start();
        const r = await fetch(`${s.url}/api/v1/core/Namespace/kept`, {
          headers: { authorization: `Bearer ${token()}` },
        });
        assert.equal(r.status, 200, 'the namespace applied before the restart is still there');
      } finally {
        await s.stop();
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});
