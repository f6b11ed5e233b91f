import { test } from 'node:test';
import assert from 'node:assert/strict';
import { authorizationService } from './proto.js';
import type { CheckRequestMsg, CheckResponseMsg } from './proto.js';

// A minimal protobuf wire encoder and decoder, written from the encoding spec, so these tests
// pin Envoy's field numbers at the byte level rather than through our own .proto files.
function varint(n: number): number[] {
  const out: number[] = [];
  let v = n;
  while (v > 0x7f) {
    out.push((v & 0x7f) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
}
const bytes = (field: number, payload: number[] | string): number[] => {
  const b = typeof payload === 'string' ? [...Buffer.from(payload, 'utf8')] : payload;
  return [...varint((field << 3) | 2), ...varint(b.length), ...b];
};
const uint = (field: number, v: number): number[] => [...varint(field << 3), ...varint(v)];

interface Field {
  readonly n: number;
  readonly wire: number;
  readonly value: number | Buffer;
}
function decode(buf: Buffer): Field[] {
  const out: Field[] = [];
  let i = 0;
  const readVarint = (): number => {
    let shift = 0;
    let v = 0;
    for (;;) {
      const b = buf[i++] ?? 0;
      v += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return v;
      shift += 7;
    }
  };
  while (i < buf.length) {
    const tag = readVarint();
    const wire = tag & 7;
    const n = tag >>> 3;
    if (wire === 0) out.push({ n, wire, value: readVarint() });
    else if (wire === 2) {
      const len = readVarint();
      out.push({ n, wire, value: buf.subarray(i, i + len) });
      i += len;
    } else throw new Error(`unexpected wire type ${wire}`);
  }
  return out;
}
const sub = (fs: Field[], n: number): Field[] => {
  const f = fs.find((x) => x.n === n);
  assert.ok(f && Buffer.isBuffer(f.value), `field ${n} present and length-delimited`);
  return decode(f.value);
};

test('CheckRequest decodes with Envoy field numbers (attributes 1; source 1, destination 2, request 4; principal 4; socket address 2/3; http id 1, method 2, headers 3, path 4, host 5, protocol 10)', () => {
  const socket = (ip: string, port: number): number[] =>
    bytes(1, bytes(1, [...bytes(2, ip), ...uint(3, port)]));
  const wire = bytes(1, [
    ...bytes(1, [...socket('10.0.0.1', 4444), ...bytes(4, 'spiffe://cluster.local/ns/a/sa/b')]),
    ...bytes(2, socket('10.0.0.2', 9080)),
    ...bytes(
      4,
      bytes(2, [
        ...bytes(1, 'req-9'),
        ...bytes(2, 'PUT'),
        ...bytes(3, [...bytes(1, 'x-a'), ...bytes(2, 'b')]),
        ...bytes(4, '/p?q=1'),
        ...bytes(5, 'svc:9080'),
        ...bytes(10, 'HTTP/2'),
      ]),
    ),
    ...bytes(10, [...bytes(1, 'k'), ...bytes(2, 'v')]),
  ]);
  const m = authorizationService()['Check'];
  assert.ok(m);
  const r = m.requestDeserialize(Buffer.from(wire)) as CheckRequestMsg;
  const a = r.attributes;
  assert.equal(a?.source?.address?.socket_address?.address, '10.0.0.1');
  assert.equal(a?.source?.address?.socket_address?.port_value, 4444);
  assert.equal(a?.source?.principal, 'spiffe://cluster.local/ns/a/sa/b');
  assert.equal(a?.destination?.address?.socket_address?.port_value, 9080);
  const h = a?.request?.http;
  assert.deepEqual(
    [h?.id, h?.method, h?.headers?.['x-a'], h?.path, h?.host, h?.protocol],
    ['req-9', 'PUT', 'b', '/p?q=1', 'svc:9080', 'HTTP/2'],
  );
  assert.equal(a?.context_extensions?.['k'], 'v');
});

test('CheckResponse encodes with Envoy field numbers (status 1, denied_response 2 with status 1/headers 2/body 3, ok_response 3, dynamic_metadata 4)', () => {
  const m = authorizationService()['Check'];
  assert.ok(m);
  const denied: CheckResponseMsg = {
    status: { code: 7, message: 'no' },
    denied_response: {
      status: { code: 403 },
      headers: [{ header: { key: 'x-request-id', value: 'r1' } }],
      body: 'RBAC: access denied',
    },
    dynamic_metadata: { fields: { palisade: { stringValue: 'deny' } } },
  };
  const top = decode(m.responseSerialize(denied));
  const status = sub(top, 1);
  assert.equal(status.find((f) => f.n === 1)?.value, 7);
  assert.equal(String(status.find((f) => f.n === 2)?.value), 'no');
  const d = sub(top, 2);
  assert.equal(sub(d, 1).find((f) => f.n === 1)?.value, 403);
  const hv = sub(sub(d, 2), 1);
  assert.equal(String(hv.find((f) => f.n === 1)?.value), 'x-request-id');
  assert.equal(String(hv.find((f) => f.n === 2)?.value), 'r1');
  assert.equal(String(d.find((f) => f.n === 3)?.value), 'RBAC: access denied');
  assert.ok(
    top.some((f) => f.n === 4),
    'dynamic_metadata is field 4',
  );
  const ok = decode(
    m.responseSerialize({
      status: { code: 0, message: '' },
      ok_response: {
        headers: [{ header: { key: 'a', value: 'b' } }],
        headers_to_remove: ['x-y'],
        response_headers_to_add: [{ header: { key: 'c', value: 'd' } }],
      },
    } satisfies CheckResponseMsg),
  );
  const okr = sub(ok, 3);
  assert.equal(String(sub(sub(okr, 2), 1).find((f) => f.n === 1)?.value), 'a');
  assert.equal(String(okr.find((f) => f.n === 5)?.value), 'x-y');
  assert.equal(String(sub(sub(okr, 6), 1).find((f) => f.n === 1)?.value), 'c');
});

test('the service is envoy.service.auth.v3.Authorization with one unary Check', () => {
  const svc = authorizationService();
  assert.deepEqual(Object.keys(svc), ['Check']);
  assert.equal(svc['Check']?.path, '/envoy.service.auth.v3.Authorization/Check');
  assert.equal(svc['Check']?.requestStream, false);
  assert.equal(svc['Check']?.responseStream, false);
});
