// The interception route of the per-endpoint sockets and its wire validation: an announcement is
// accepted only on the endpoint's own socket, only with PUT and a well-formed body (hostile
// bodies refused field by field), and goes to the agent's sink; without a sink the agent says it
// does not intercept. With an owner, each endpoint's directory and socket are handed to the
// sidecar uid and the directories above become traversable only.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { EndpointSockets } from './endpoint-sockets.js';
import type { InterceptSink, PolicySyncSource } from './endpoint-sockets.js';
import {
  MAX_INTERCEPT_OUTBOUND,
  endpointSocketPath,
  validateInterceptAnnouncement,
} from './protocol.js';
import type { InterceptAnnouncement } from './protocol.js';

const source = (locals: string[]): PolicySyncSource => ({
  localEndpoints: () => locals,
  onLocalEndpointsChanged: () => () => undefined,
  subscribe: () => ({ unsubscribe: () => undefined, version: () => undefined }),
  issue: () => Promise.resolve({ status: 201, body: {} }),
});

function call(
  socketPath: string,
  method: string,
  path: string,
  body: string,
): Promise<{ status: number; doc: { error?: { code: string } } & Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request({
      socketPath,
      method,
      path,
      headers: { 'content-type': 'application/json' },
    });
    req.on('response', (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          doc: JSON.parse(text) as { error?: { code: string } } & Record<string, unknown>,
        }),
      );
    });
    req.on('error', reject);
    req.end(body);
  });
}

const good: InterceptAnnouncement = {
  uid: 1337,
  inbound: [{ appPort: 9080, sidecarPort: 15006 }],
  outbound: [{ ip: '10.1.2.3', port: 9080, sidecarPort: 15101 }],
};

test('an interception announcement is validated field by field (hostile bodies refused)', () => {
  assert.deepEqual(validateInterceptAnnouncement(good), { ok: true, value: good });
  const bad: unknown[] = [
    null,
    [],
    'x',
    { ...good, extra: 1 },
    { ...good, uid: -1 },
    { ...good, uid: 1.5 },
    { ...good, uid: '1337' },
    { ...good, inbound: [{ appPort: 0, sidecarPort: 15006 }] },
    { ...good, inbound: [{ appPort: 9080, sidecarPort: 70000 }] },
    { ...good, inbound: [{ appPort: 9080, sidecarPort: 15006, x: 1 }] },
    {
      ...good,
      inbound: Array.from({ length: 17 }, (_, i) => ({ appPort: i + 1, sidecarPort: 20000 + i })),
    },
    { ...good, outbound: [{ ip: 'ratings.default', port: 9080, sidecarPort: 15101 }] },
    { ...good, outbound: [{ ip: '10.1.2.3; flush ruleset', port: 9080, sidecarPort: 15101 }] },
    { ...good, outbound: [{ ip: '999.1.1.1', port: 9080, sidecarPort: 15101 }] },
    { ...good, outbound: [{ ip: '10.1.2.3', port: '9080', sidecarPort: 15101 }] },
    {
      ...good,
      outbound: Array.from({ length: MAX_INTERCEPT_OUTBOUND + 1 }, (_, i) => ({
        ip: '10.1.2.3',
        port: (i % 60000) + 1,
        sidecarPort: 15101,
      })),
    },
  ];
  for (const b of bad)
    assert.equal(validateInterceptAnnouncement(b).ok, false, JSON.stringify(b).slice(0, 120));
});

test("announcements are taken only on the endpoint's own socket, with PUT, and reach the agent's sink", async () => {
  const dir = mkdtempSync(join(tmpdir(), `palisade-icr-${process.pid}-`));
  const got: [string, InterceptAnnouncement][] = [];
  const sink: InterceptSink = {
    announce: (endpoint, a) => {
      got.push([endpoint, a]);
      return Promise.resolve({
        status: 200,
        body: { table: 't', inbound: 1, outbound: 1, skipped: [] },
      });
    },
  };
  const s = new EndpointSockets({
    source: source(['a/one']),
    dir: join(dir, 'eps'),
    intercept: sink,
  });
  const bare = new EndpointSockets({ source: source(['a/one']), dir: join(dir, 'bare') });
  try {
    await s.start();
    await bare.start();
    const sock = endpointSocketPath(join(dir, 'eps'), 'a', 'one');
    const body = JSON.stringify(good);
    const ok = await call(sock, 'PUT', '/v1/intercept/endpoints/a/one', body);
    assert.equal(ok.status, 200);
    assert.deepEqual(got, [['a/one', good]]);
    const other = await call(sock, 'PUT', '/v1/intercept/endpoints/a/two', body);
    assert.equal(other.status, 403);
    assert.equal(other.doc.error?.code, 'DATAPLANE_ERR_POLICYSYNC_FORBIDDEN');
    assert.equal((await call(sock, 'POST', '/v1/intercept/endpoints/a/one', body)).status, 400);
    const malformed = await call(
      sock,
      'PUT',
      '/v1/intercept/endpoints/a/one',
      '{"uid":0,"inbound":{}}',
    );
    assert.equal(malformed.status, 400);
    assert.equal(
      (await call(sock, 'PUT', '/v1/intercept/endpoints/a/one', 'not json')).status,
      400,
    );
    assert.equal(got.length, 1, 'nothing refused reached the sink');
    const none = await call(
      endpointSocketPath(join(dir, 'bare'), 'a', 'one'),
      'PUT',
      '/v1/intercept/endpoints/a/one',
      body,
    );
    assert.equal(none.status, 503);
  } finally {
    await s.close();
    await bare.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test(
  'with an owner, the endpoint directory and socket belong to the sidecar uid; the ones above are traversable only',
  { skip: process.getuid?.() !== 0 ? 'needs root' : false },
  async () => {
    const dir = mkdtempSync(join(tmpdir(), `palisade-ico-${process.pid}-`));
    const s = new EndpointSockets({
      source: source(['a/one']),
      dir: join(dir, 'eps'),
      owner: { uid: 1337, gid: 1337 },
    });
    try {
      await s.start();
      const sock = endpointSocketPath(join(dir, 'eps'), 'a', 'one');
      const st = statSync(sock);
      assert.equal(st.uid, 1337);
      assert.equal(st.mode & 0o777, 0o600);
      const d = statSync(dirname(sock));
      assert.equal(d.uid, 1337);
      assert.equal(d.mode & 0o777, 0o700);
      assert.equal(statSync(join(dir, 'eps', 'a')).mode & 0o777, 0o711);
      assert.equal(statSync(join(dir, 'eps')).mode & 0o777, 0o711);
    } finally {
      await s.close();
      rmSync(dir, { recursive: true, force: true });
    }
  },
);
