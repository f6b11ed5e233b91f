// The request and response of the API handler, independent of sockets (fastify's inject idea):
// the handler is a function from ApiRequest to ApiResponse, tested without a socket and served
// by server/listen.ts over node:https.

import type { PeerCertificateInfo } from '../auth/principal.js';

export interface TlsInfo {
  /** The client presented a certificate. */
  readonly presented: boolean;
  /** Node's TLS verified it against the client CA bundle (chain, validity dates). */
  readonly authorized: boolean;
  /** Node's reason when not authorized, e.g. CERT_HAS_EXPIRED. */
  readonly authorizationError?: string;
  readonly peer?: PeerCertificateInfo;
}

export interface ApiRequest {
  readonly method: string;
  /** Path and query, e.g. `/api/v1/projectcalico.org/Tier?watch=1`. */
  readonly url: string;
  /** Lower-case header names. */
  readonly headers: Readonly<Record<string, string | undefined>>;
  readonly body: Buffer;
  readonly remoteAddress: string;
  readonly tls?: TlsInfo;
  /** Aborts when the client goes away (ends watches). */
  readonly signal?: AbortSignal;
}

export type ApiResponse =
  | {
      readonly status: number;
      readonly headers: Readonly<Record<string, string>>;
      readonly body: string;
    }
  | {
      readonly status: number;
      readonly headers: Readonly<Record<string, string>>;
      /** Newline-delimited JSON, one chunk a line; ends when the watch ends. */
      readonly stream: AsyncIterable<string>;
    };
