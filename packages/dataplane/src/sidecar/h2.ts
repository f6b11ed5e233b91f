// HTTP/2 and gRPC helpers of the inbound sidecar: how a refusal is answered to a gRPC client,
// which protocol the application speaks on a port, header conversion between HTTP/2 streams and
// HTTP/1.1 messages, and the pooled h2c session to the application.
// Owns: protocol translation. Must never: change the method, path or authority that was judged.

import { connect as http2Connect, constants as h2 } from 'node:http2';
import type {
  ClientHttp2Session,
  ClientHttp2Stream,
  IncomingHttpHeaders as H2Headers,
  ServerHttp2Stream,
} from 'node:http2';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import type { Socket } from 'node:net';
import { forwardHeaders } from './request.js';

/** What the application on a port speaks: HTTP/1.1, or HTTP/2 over cleartext (prior knowledge). */
export type AppProtocol = 'http/1.1' | 'h2c';

/**
 * The application protocol of a port, as Kubernetes and Istio name it: the port's `appProtocol`
 * (`kubernetes.io/h2c`, `grpc`, `http2`) or, without one, Istio's port-name prefixes (`grpc`,
 * `grpc-*`, `http2`, `http2-*`); everything else is HTTP/1.1. gRPC-Web is HTTP/1.1-compatible
 * and stays HTTP/1.1.
 */
export function appProtocolFor(port: {
  readonly name?: string;
  readonly appProtocol?: string;
}): AppProtocol {
  const h2Names = /^(grpc|http2)(-.*)?$/i;
  const ap = port.appProtocol?.trim().toLowerCase();
  if (ap !== undefined && ap !== '')
    return ap === 'kubernetes.io/h2c' || ap === 'grpc' || ap === 'http2' ? 'h2c' : 'http/1.1';
  return port.name !== undefined && h2Names.test(port.name) && !/^grpc-web/i.test(port.name)
    ? 'h2c'
    : 'http/1.1';
}

/** A gRPC request: `application/grpc` or `application/grpc+<codec>` (not gRPC-Web). */
export function isGrpc(contentType: string | string[] | undefined): boolean {
  if (typeof contentType !== 'string') return false;
  const ct = contentType.split(';')[0]?.trim().toLowerCase() ?? '';
  return ct === 'application/grpc' || ct.startsWith('application/grpc+');
}

/**
 * The gRPC status an intermediary reports for an HTTP status (the gRPC project's HTTP to gRPC
 * status mapping, which Envoy's local replies use): 403 is PERMISSION_DENIED (7).
 */
export function grpcStatusForHttp(status: number): number {
  switch (status) {
    case 400:
      return 13; // INTERNAL
    case 401:
      return 16; // UNAUTHENTICATED
    case 403:
      return 7; // PERMISSION_DENIED
    case 404:
      return 12; // UNIMPLEMENTED
    case 429:
    case 502:
    case 503:
    case 504:
      return 14; // UNAVAILABLE
    default:
      return 2; // UNKNOWN
  }
}

/** `grpc-message` encoding: percent-encode everything outside printable ASCII, and `%`. */
export function grpcMessage(text: string): string {
  let out = '';
  for (const b of Buffer.from(text, 'utf8')) {
    if (b >= 0x20 && b <= 0x7e && b !== 0x25) out += String.fromCharCode(b);
    else out += `%${b.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/**
 * A refusal as a gRPC client expects it (as Envoy answers a local reply to a gRPC request): a
 * trailers-only response, HTTP 200, `content-type: application/grpc`, the mapped `grpc-status`
 * and the reason in `grpc-message`.
 */
export function grpcRefusalHeaders(httpStatus: number, message: string): OutgoingHttpHeaders {
  return {
    'content-type': 'application/grpc',
    'grpc-status': String(grpcStatusForHttp(httpStatus)),
    'grpc-message': grpcMessage(message),
  };
}

/** Headers that are never valid in an HTTP/2 message (RFC 9113 §8.2.2), beyond hop-by-hop ones. */
const H2_FORBIDDEN = ['http2-settings', 'host'];

/** Regular headers of an HTTP/2 message (pseudo-headers and connection-specific ones removed). */
export function regularHeaders(h: H2Headers | IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: IncomingHttpHeaders = {};
  for (const [k, v] of Object.entries(h)) if (!k.startsWith(':')) out[k] = v;
  return forwardHeaders(out, H2_FORBIDDEN);
}

/** `te: trailers` is the one TE value HTTP/2 allows (gRPC requires it); keep it when sent. */
export function keepsTrailersTe(h: H2Headers | IncomingHttpHeaders): boolean {
  const te = h['te'];
  return typeof te === 'string' && te.trim().toLowerCase() === 'trailers';
}

/** One multiplexed h2c session to the application, replaced when it closes or fails. */
export class H2Upstream {
  #session: ClientHttp2Session | undefined;
  #closed = false;

  constructor(
    private readonly host: string,
    private readonly port: number,
  ) {}

  session(): ClientHttp2Session {
    if (this.#closed) throw new Error('upstream closed');
    const s = this.#session;
    if (s && !s.closed && !s.destroyed) return s;
    const url = `http://${this.host.includes(':') ? `[${this.host}]` : this.host}:${this.port}`;
    const n = http2Connect(url, { settings: { enablePush: false } });
    const drop = (): void => {
      if (this.#session === n) this.#session = undefined;
    };
    n.on('error', drop);
    n.on('close', drop);
    n.on('goaway', drop);
    // An idle session does not keep the process alive.
    n.unref();
    this.#session = n;
    return n;
  }

  close(): void {
    this.#closed = true;
    this.#session?.destroy();
    this.#session = undefined;
  }
}

export const H2_CANCEL = h2.NGHTTP2_CANCEL;

/** The client connection preface of HTTP/2 (RFC 9113 §3.4). */
export const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/**
 * Reads the first bytes of a paused socket and tells what opens: a TLS handshake (0x16), the
 * HTTP/2 connection preface (cleartext HTTP/2 with prior knowledge, as plaintext gRPC clients
 * connect) or anything else (HTTP/1.1). The bytes are put back; the socket stays paused. A
 * socket that sends nothing decisive within `timeoutMs` is destroyed.
 */
export function sniffProtocol(
  sock: Socket,
  timeoutMs: number,
  then: (kind: 'tls' | 'h2c' | 'http1') => void,
): void {
  const timer = setTimeout(() => sock.destroy(), timeoutMs);
  let seen = Buffer.alloc(0);
  const onReadable = (): void => {
    let chunk: Buffer | null;
    while ((chunk = sock.read() as Buffer | null) !== null) seen = Buffer.concat([seen, chunk]);
    if (seen.length === 0) return;
    const tls = seen[0] === 0x16;
    const n = Math.min(seen.length, H2_PREFACE.length);
    const h2c = !tls && seen.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
    // A prefix of the preface: wait for the rest (the timer still runs).
    if (h2c && seen.length < H2_PREFACE.length) return;
    sock.off('readable', onReadable);
    sock.unshift(seen);
    clearTimeout(timer);
    then(tls ? 'tls' : h2c ? 'h2c' : 'http1');
  };
  sock.on('readable', onReadable);
  sock.once('close', () => clearTimeout(timer));
}

/**
 * Relays an upstream HTTP/2 stream's response to a downstream stream: headers (with the request
 * id), body and trailers (the gRPC status); a trailers-only response stays trailers-only. The
 * request body is piped up; either side closing early cancels the other. `onFail` runs when
 * the upstream stream fails (before or after the response started).
 */
export function relayStream(
  stream: ServerHttp2Stream,
  up: ClientHttp2Stream,
  id: string,
  onFail: (e: Error & { code?: string }) => void,
  onResponse?: () => void,
): void {
  let trailers: OutgoingHttpHeaders | undefined;
  up.on('trailers', (t: H2Headers) => (trailers = regularHeaders(t)));
  up.on('response', (uh, flags: number) => {
    onResponse?.();
    if (stream.destroyed) return;
    const h = regularHeaders(uh);
    h['x-request-id'] = id;
    const head = { ...h, ':status': Number(uh[':status'] ?? 502) };
    if ((flags & h2.NGHTTP2_FLAG_END_STREAM) !== 0) {
      stream.respond(head, { endStream: true });
      return;
    }
    stream.respond(head, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers(trailers ?? {}));
    up.pipe(stream);
  });
  up.on('error', onFail);
  stream.on('close', () => {
    if (!up.destroyed && !up.readableEnded) up.close(h2.NGHTTP2_CANCEL);
  });
  stream.pipe(up);
}
