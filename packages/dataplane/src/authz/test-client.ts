// Test and benchmark support (not part of the public surface): a real gRPC client of the
// Authorization service built from the repository's proto, and CheckRequest builders.

import * as grpc from '@grpc/grpc-js';
import { authorizationClient } from './proto.js';
import type { CheckRequestMsg, CheckResponseMsg } from './proto.js';

export interface CheckClient {
  check(req: CheckRequestMsg, timeoutMs?: number): Promise<CheckResponseMsg>;
  close(): void;
}

/** A client over `credentials` (default: plaintext). */
export function checkClient(
  address: string,
  credentials: grpc.ChannelCredentials = grpc.credentials.createInsecure(),
): CheckClient {
  const Client = authorizationClient();
  const c = new Client(address, credentials);
  return {
    check: (req, timeoutMs = 10_000) =>
      new Promise<CheckResponseMsg>((resolve, reject) => {
        const fn = c['Check'] as (
          r: CheckRequestMsg,
          opts: grpc.CallOptions,
          cb: (e: grpc.ServiceError | null, res: CheckResponseMsg) => void,
        ) => void;
        fn.call(c, req, { deadline: Date.now() + timeoutMs }, (e, res) =>
          e ? reject(e) : resolve(res),
        );
      }),
    close: () => c.close(),
  };
}

export interface RequestSpec {
  readonly sourceIp: string;
  readonly sourcePort?: number;
  /** The peer certificate's URI SAN; omitted or '' for plaintext. */
  readonly principal?: string;
  readonly destinationIp: string;
  readonly port: number;
  readonly method?: string;
  readonly path?: string;
  readonly host?: string;
  readonly headers?: Readonly<Record<string, string>>;
  readonly id?: string;
}

/** A CheckRequest as Envoy's HTTP ext_authz filter fills it in. */
export function checkRequest(s: RequestSpec): CheckRequestMsg {
  const host = s.host ?? `${s.destinationIp}:${s.port}`;
  const method = s.method ?? 'GET';
  const path = s.path ?? '/';
  return {
    attributes: {
      source: {
        address: { socket_address: { address: s.sourceIp, port_value: s.sourcePort ?? 40000 } },
        principal: s.principal ?? '',
      },
      destination: {
        address: { socket_address: { address: s.destinationIp, port_value: s.port } },
      },
      request: {
        http: {
          ...(s.id !== undefined ? { id: s.id } : {}),
          method,
          path,
          host,
          scheme: 'http',
          protocol: 'HTTP/1.1',
          headers: {
            ':authority': host,
            ':method': method,
            ':path': path,
            ...(s.headers ?? {}),
          },
        },
      },
    },
  };
}

/** The value of a header in a response's header list. */
export function headerValue(
  list: readonly { header: { key: string; value: string } }[] | undefined,
  key: string,
): string | undefined {
  return list?.find((h) => h.header.key === key)?.header.value;
}

/** A string field of the `palisade` dynamic metadata. */
export function metadataField(res: CheckResponseMsg, field: string): string | number | undefined {
  const inner = res.dynamic_metadata?.fields['palisade'];
  if (!inner || !('structValue' in inner)) return undefined;
  const v = inner.structValue.fields[field];
  if (!v) return undefined;
  if ('stringValue' in v) return v.stringValue;
  if ('numberValue' in v) return v.numberValue;
  return undefined;
}
