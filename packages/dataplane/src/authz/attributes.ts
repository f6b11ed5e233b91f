// CheckRequest → the attributes the L7 decision takes. Owns: reading Envoy's AttributeContext
// (peer principal, source and destination socket addresses, the HTTP request) and refusing what
// cannot be judged. Must never: guess a missing attribute (a request that lacks the source
// address, the destination port or a usable path is refused, never judged with a default), or
// pass the engine a path, method or header set other than the one Envoy will forward.

import { isIP } from 'node:net';
import { randomUUID } from 'node:crypto';
import { checkRequestPath, plainAddress } from '../sidecar/request.js';
import type { AddressMsg, CheckRequestMsg } from './proto.js';

export const MAX_HEADERS = 256;
export const MAX_HEADER_BYTES = 64 * 1024;

/**
 * What one Check asks: an HTTP request for `PolicyView.decideInbound`, or — from Envoy's network
 * ext_authz filter, whose CheckRequest has no HTTP attributes — one TCP connection for
 * `PolicyView.decideInboundConnection` (judged at L4, as the sidecar judges its tcp ports).
 */
export type CheckAttributes = ConnectionAttributes &
  (
    | {
        readonly kind: 'http';
        readonly method: string;
        readonly path: string;
        readonly host: string | undefined;
        readonly headers: Readonly<Record<string, string>>;
      }
    | { readonly kind: 'l4' }
  );

interface ConnectionAttributes {
  readonly requestId: string;
  readonly sourceIp: string;
  /** The peer certificate's identity as Envoy reports it; null for a plaintext downstream. */
  readonly principal: string | null;
  readonly destinationIp: string;
  readonly port: number;
  /** The identity Envoy itself presented to the downstream (empty when it did not say). */
  readonly destinationPrincipal: string;
}

export type AttributesResult =
  | { readonly ok: true; readonly attrs: CheckAttributes }
  | {
      readonly ok: false;
      readonly requestId: string;
      /** 400: the request is malformed; 403: it lacks what a decision needs. */
      readonly status: 400 | 403;
      readonly reason: string;
      /** What is known, for the access log. */
      readonly sourceIp: string;
      readonly principal: string | null;
      readonly method: string | null;
      readonly path: string | null;
    };

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const METHOD = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}$/;
const HEADER_NAME = /^:?[!#$%&'*+.^_`|~0-9a-z-]{1,256}$/;

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

function socketOf(a: AddressMsg | null | undefined): { ip: string; port: number } | string {
  if (!a || typeof a !== 'object') return 'no address';
  const s = a.socket_address;
  if (!s || typeof s !== 'object')
    return a.pipe ? 'a pipe address, not an IP socket' : 'no socket address';
  const ip = plainAddress(str(s.address));
  if (ip === undefined || isIP(ip) === 0)
    return `address ${JSON.stringify(s.address ?? '')} is not an IP address`;
  const port = s.port_value;
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535)
    return `port ${JSON.stringify(port ?? s.named_port ?? null)} is not a port number`;
  return { ip, port };
}

/** Reads and checks one CheckRequest. Never throws for any input. */
export function checkAttributes(req: CheckRequestMsg | null | undefined): AttributesResult {
  const a = req && typeof req === 'object' ? req.attributes : undefined;
  const http = a?.request?.http ?? undefined;
  const rawHeaders =
    http && typeof http.headers === 'object' && http.headers !== null ? http.headers : {};
  const givenId = str(http?.id) ?? str(rawHeaders['x-request-id']);
  const requestId = givenId !== undefined && REQUEST_ID.test(givenId) ? givenId : randomUUID();
  const src = socketOf(a?.source?.address);
  const principalRaw = str(a?.source?.principal) ?? '';
  const principal = principalRaw === '' ? null : principalRaw;
  const method = str(http?.method) ?? null;
  const rawPath = str(http?.path) ?? null;
  const refuse = (status: 400 | 403, reason: string): AttributesResult => ({
    ok: false,
    requestId,
    status,
    reason,
    sourceIp: typeof src === 'string' ? 'unknown' : src.ip,
    principal,
    method,
    path: rawPath,
  });
  if (!a) return refuse(403, 'the CheckRequest has no attributes');
  if (typeof src === 'string') return refuse(403, `source: ${src}`);
  const dst = socketOf(a.destination?.address);
  if (typeof dst === 'string') return refuse(403, `destination: ${dst}`);
  if (!http)
    return {
      ok: true,
      attrs: {
        kind: 'l4',
        requestId,
        sourceIp: src.ip,
        principal,
        destinationIp: dst.ip,
        port: dst.port,
        destinationPrincipal: str(a.destination?.principal) ?? '',
      },
    };
  if (method === null || !METHOD.test(method)) return refuse(400, 'missing or malformed method');
  const target = checkRequestPath(rawPath ?? undefined);
  if (!target.ok) return refuse(400, `request refused: ${target.reason}`);
  const headers: Record<string, string> = {};
  let count = 0;
  let bytes = 0;
  for (const [k, v] of Object.entries(rawHeaders)) {
    if (typeof v !== 'string') return refuse(400, 'a header value is not a string');
    const name = k.toLowerCase();
    if (!HEADER_NAME.test(name)) return refuse(400, 'malformed header name');
    count++;
    bytes += name.length + v.length;
    if (count > MAX_HEADERS || bytes > MAX_HEADER_BYTES)
      return refuse(400, 'too many or too large headers');
    // Pseudo-headers are attributes of their own (method, path, host); the sidecar's engine
    // input has none, so neither does this one.
    if (name.startsWith(':')) continue;
    headers[name] = v;
  }
  const hostRaw = str(http.host) ?? rawHeaders[':authority'] ?? rawHeaders['host'];
  const host = hostRaw === undefined || hostRaw === '' ? undefined : hostRaw;
  // As an HTTP/1.1 client would have sent it to the sidecar.
  if (host !== undefined && headers['host'] === undefined) headers['host'] = host;
  return {
    ok: true,
    attrs: {
      kind: 'http',
      requestId,
      sourceIp: src.ip,
      principal,
      destinationIp: dst.ip,
      port: dst.port,
      destinationPrincipal: str(a.destination?.principal) ?? '',
      method,
      path: target.path,
      host,
      headers,
    },
  };
}
