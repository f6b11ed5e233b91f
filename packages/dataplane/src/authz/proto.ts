// The ext_authz v3 wire contract: loads the `.proto` subset kept in `packages/dataplane/proto`
// (Envoy's names and field numbers) and types the plain objects grpc-js hands over. Owns: the
// loader options (field names as in the proto, enums as names, 64-bit integers as strings, oneof
// virtual fields). Must never: trust these objects' shapes; attributes.ts validates every field.

import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

export const PROTO_DIR = fileURLToPath(new URL('../../proto', import.meta.url));
export const EXTERNAL_AUTH_PROTO = 'envoy/service/auth/v3/external_auth.proto';
export const CHECK_METHOD = '/envoy.service.auth.v3.Authorization/Check';

/** google.rpc.Code values used in CheckResponse.status. */
export const RPC_CODE = { OK: 0, INVALID_ARGUMENT: 3, PERMISSION_DENIED: 7, INTERNAL: 13 } as const;

export interface SocketAddressMsg {
  readonly address?: string;
  readonly port_value?: number;
  readonly named_port?: string;
}

export interface AddressMsg {
  readonly socket_address?: SocketAddressMsg | null;
  readonly pipe?: { readonly path?: string } | null;
}

export interface PeerMsg {
  readonly address?: AddressMsg | null;
  readonly service?: string;
  readonly principal?: string;
  readonly certificate?: string;
}

export interface HttpRequestMsg {
  readonly id?: string;
  readonly method?: string;
  readonly headers?: Readonly<Record<string, string>>;
  readonly path?: string;
  readonly host?: string;
  readonly scheme?: string;
  readonly protocol?: string;
}

export interface CheckRequestMsg {
  readonly attributes?: {
    readonly source?: PeerMsg | null;
    readonly destination?: PeerMsg | null;
    readonly request?: { readonly http?: HttpRequestMsg | null } | null;
    readonly context_extensions?: Readonly<Record<string, string>>;
  } | null;
}

export interface HeaderValueOptionMsg {
  readonly header: { readonly key: string; readonly value: string };
  readonly append_action?: 'OVERWRITE_IF_EXISTS_OR_ADD' | 'APPEND_IF_EXISTS_OR_ADD';
}

/** google.protobuf.Struct as protobufjs represents it (its bundled well-known types keep camelCase names). */
export interface StructMsg {
  readonly fields: Readonly<Record<string, ValueMsg>>;
}
export type ValueMsg =
  | { readonly stringValue: string }
  | { readonly numberValue: number }
  | { readonly boolValue: boolean }
  | { readonly structValue: StructMsg };

export interface CheckResponseMsg {
  readonly status: { readonly code: number; readonly message: string };
  readonly denied_response?: {
    readonly status: { readonly code: number | string };
    readonly headers: readonly HeaderValueOptionMsg[];
    readonly body: string;
  };
  readonly ok_response?: {
    readonly headers: readonly HeaderValueOptionMsg[];
    readonly headers_to_remove: readonly string[];
    readonly response_headers_to_add: readonly HeaderValueOptionMsg[];
  };
  readonly dynamic_metadata?: StructMsg;
}

export const LOADER_OPTIONS: protoLoader.Options = {
  includeDirs: [PROTO_DIR],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: false,
  oneofs: true,
};

let cached: grpc.ServiceDefinition | undefined;

/** The Authorization service definition (loaded once per process). */
export function authorizationService(): grpc.ServiceDefinition {
  if (cached) return cached;
  const def = protoLoader.loadSync(EXTERNAL_AUTH_PROTO, LOADER_OPTIONS);
  const svc = def['envoy.service.auth.v3.Authorization'];
  if (!svc || !('Check' in svc))
    throw new Error('the Authorization service is missing from the proto');
  cached = svc;
  return cached;
}

/** A client constructor for tests, benchmarks and tools (built from the same proto). */
export function authorizationClient(): grpc.ServiceClientConstructor {
  const def = protoLoader.loadSync(EXTERNAL_AUTH_PROTO, LOADER_OPTIONS);
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    envoy: { service: { auth: { v3: { Authorization: grpc.ServiceClientConstructor } } } };
  };
  return pkg.envoy.service.auth.v3.Authorization;
}

/** Plain values → google.protobuf.Struct. */
export function toStruct(
  o: Readonly<
    Record<
      string,
      | string
      | number
      | boolean
      | undefined
      | Readonly<Record<string, string | number | boolean | undefined>>
    >
  >,
): StructMsg {
  const fields: Record<string, ValueMsg> = {};
  for (const [k, v] of Object.entries(o)) {
    if (v === undefined) continue;
    if (typeof v === 'string') fields[k] = { stringValue: v };
    else if (typeof v === 'number') fields[k] = { numberValue: v };
    else if (typeof v === 'boolean') fields[k] = { boolValue: v };
    else fields[k] = { structValue: toStruct(v) };
  }
  return { fields };
}
