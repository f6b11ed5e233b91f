// The watch client against hostile or broken streams from a local HTTP server: a snapshot is
// delivered only whole (at its BOOKMARK), malformed lines end the stream with an error instead of
// reaching the caller, and 410 (as a status or as an ERROR event) means relist.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { ApiClient, ApiRequestError } from './api-client.js';

const pod = (name: string, rv: string) =>
  JSON.stringify({
    type: 'ADDED',
    object: {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace: 'x', resourceVersion: rv },
    },
  });
const bookmark = (rv: string) =>
  JSON.stringify({ type: 'BOOKMARK', object: { metadata: { resourceVersion: rv } } });

describe('watch client on hostile streams', () => {
  let server: Server;
  let url = '';
  let body = '';
  let status = 200;
  let seenAuth: string | undefined;

  before(async () => {
    server = createServer((req, res) => {
      seenAuth = req.headers.authorization;
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(body);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => server.close());

  const run = async (fromRevision?: string) => {
    const got: string[] = [];
    const client = new ApiClient({ server: url, token: 'tok-123' });
    const err = await client
      .watchOnce(
        fromRevision,
        {
          onReset: (objs, rv) => got.push(`reset ${objs.length} @${rv}`),
          onEvent: (t, o, rv) => got.push(`${t} ${o.metadata.name} @${rv}`),
          onRevision: (rv) => got.push(`rv ${rv}`),
        },
        new AbortController().signal,
      )
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    return { got, err };
  };

  test('a whole snapshot is delivered at its BOOKMARK, then events, with the bearer token', async () => {
    status = 200;
    body = [pod('a', '3'), pod('b', '4'), bookmark('5'), pod('c', '6'), bookmark('7'), ''].join(
      '\n',
    );
    const { got, err } = await run();
    assert.equal(err, undefined);
    assert.deepEqual(got, ['reset 2 @5', 'ADDED c @6', 'rv 7']);
    assert.equal(seenAuth, 'Bearer tok-123');
  });

  test('a stream cut inside the snapshot delivers nothing', async () => {
    body = [pod('a', '3'), pod('b', '4')].join('\n') + '\n';
    const { got, err } = await run();
    assert.deepEqual(got, []);
    assert.match(String(err), /inside the initial snapshot/);
  });

  test('malformed lines end the stream with an error, never reach the caller', async () => {
    for (const bad of [
      '{not json',
      JSON.stringify({ type: 'ADDED', object: { kind: 'Pod', metadata: { name: 'x' } } }),
      JSON.stringify({
        type: 'ADDED',
        object: { apiVersion: 'v1', kind: 'Pod', metadata: { name: 7, resourceVersion: '1' } },
      }),
      JSON.stringify({
        type: 'MODIFIED',
        object: { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'x', resourceVersion: '1e9' } },
      }),
      JSON.stringify({ type: 'SURPRISE', object: {} }),
      JSON.stringify({ type: 'BOOKMARK', object: { metadata: {} } }),
      JSON.stringify(null),
    ]) {
      body = [bookmark('5'), bad, pod('after', '9'), ''].join('\n');
      const { got, err } = await run('5');
      assert.ok(err instanceof Error, `${bad} must fail`);
      assert.deepEqual(got, ['rv 5'], `${bad}: nothing after it is delivered`);
    }
  });

  test('410 as a status or as an ERROR event asks for a relist', async () => {
    status = 410;
    body = JSON.stringify({ code: 'API_ERR_GONE', message: 'too old' });
    let { err } = await run('1');
    assert.ok(err instanceof ApiRequestError && err.status === 410);
    status = 200;
    body = [
      bookmark('5'),
      JSON.stringify({ type: 'ERROR', object: { status: 410, message: 'behind' } }),
      '',
    ].join('\n');
    ({ err } = await run('5'));
    assert.ok(err instanceof ApiRequestError && err.status === 410);
  });

  test('a token that cannot be a bearer token, or a non-HTTP URL, is refused up front', () => {
    assert.throws(() => new ApiClient({ server: url, token: 'a b\r\nX-Evil: 1' }), /bearer token/);
    assert.throws(() => new ApiClient({ server: url, token: '' }), /bearer token/);
    assert.throws(() => new ApiClient({ server: 'file:///etc/passwd', token: 't' }), /not http/);
  });
});
