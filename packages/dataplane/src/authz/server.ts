// `palisade authz-server`: Envoy's external authorization API v3 over gRPC
// (`envoy.service.auth.v3.Authorization/Check`). Each Check is judged by the destination's policy
// view with `PolicyView.decideInbound` — the sidecar's own decision, identity ↔ address binding
// included — and answered OK or PERMISSION_DENIED with a 403 for the downstream. Checks of
// Envoy's network filter (no HTTP attributes: a TCP connection) are judged once at L4 with
// `PolicyView.decideInboundConnection`, as the sidecar's tcp ports are.
// Owns: the Check handler, its access log lines and counters, listening and draining. Must
// never: answer a Check with a gRPC error (Envoy's `failure_mode_allow` would turn it into an
// allow): every failure is a CheckResponse with a non-OK status and a denied response.

import * as grpc from '@grpc/grpc-js';
import type { Provenance } from '@palisade/core';
import { AccessLog, provenanceForLog, provenanceSummary } from '../sidecar/access-log.js';
import type { AccessRecord, SidecarCounters } from '../sidecar/access-log.js';
import type { SidecarDecision } from '../sidecar/policy-view.js';
import { checkAttributes } from './attributes.js';
import { authorizationService, RPC_CODE, toStruct } from './proto.js';
import type {
  CheckRequestMsg,
  CheckResponseMsg,
  HeaderValueOptionMsg,
  StructMsg,
} from './proto.js';
import { clientRefusal, listenerCredentials } from './listener-tls.js';
import type { ListenerSecurity } from './listener-tls.js';
import type { PolicySource } from './source.js';
import { AuthzViews } from './views.js';
import type { ViewsOptions, ViewsStatus } from './views.js';

/** Dynamic metadata namespace (Envoy's ext_authz filter publishes it under its own name). */
export const METADATA_KEY = 'palisade';
/** Identity header the application may trust: removed from the request, then set from the peer. */
export const PEER_IDENTITY_HEADER = 'x-palisade-peer-identity';

export interface AuthzServerOptions extends ViewsOptions {
  readonly source: PolicySource;
  readonly log?: AccessLog;
  /** Progress and problems (view updates, source errors), one line each. */
  readonly notify?: (line: string) => void;
  readonly now?: () => Date;
  /**
   * How the listener is secured. Omitted: plaintext on a unix socket, and `start` refuses a TCP
   * address (plaintext on TCP only as `{ kind: 'plaintext' }`, chosen explicitly).
   */
  readonly listener?: ListenerSecurity;
}

export interface AuthzStats {
  readonly checks: number;
  readonly counters: SidecarCounters;
  readonly views: ViewsStatus;
}

function l7(kind: Provenance['kind'], reason: string): Provenance {
  return { point: 'l7', direction: 'ingress', kind, reason };
}

function header(key: string, value: string): HeaderValueOptionMsg {
  return { header: { key, value }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' };
}

export class AuthzServer {
  readonly log: AccessLog;
  readonly views: AuthzViews;
  readonly #opts: AuthzServerOptions;
  readonly #now: () => Date;
  readonly #notify: (line: string) => void;
  #grpc: grpc.Server | undefined;
  #checks = 0;
  /** What the listener requires (TLS identity, client certificates), once started. */
  listenerDescription = '';

  constructor(opts: AuthzServerOptions) {
    this.#opts = opts;
    this.log = opts.log ?? new AccessLog(undefined);
    this.views = new AuthzViews(opts);
    this.#now = opts.now ?? (() => new Date());
    this.#notify = opts.notify ?? (() => undefined);
  }

  /**
   * Starts the policy source, then listens. `address` is `host:port` (port 0: any free port) or
   * `unix:/path`. Resolves with the bound port (0 for a unix socket).
   */
  async start(address: string): Promise<number> {
    // The key material is checked before the policy source starts or anything listens.
    const creds = listenerCredentials(address, this.#opts.listener, this.#now());
    if (!creds.ok) throw Object.assign(new Error(creds.message), { code: creds.code });
    this.listenerDescription = creds.describe;
    await this.#opts.source.start({
      onSnapshot: (s) => {
        const r = this.views.apply(s);
        for (const p of r.problems) this.#notify(`policy ${s.version}: kept the last view: ${p}`);
        if (r.updated.length > 0)
          this.#notify(
            `policy ${s.version}: views for ${r.updated.length <= 5 ? r.updated.join(', ') : `${r.updated.length} endpoints`}`,
          );
      },
      onError: (reason) => {
        this.views.sourceError(reason);
        this.#notify(`policy source: ${reason} (the last views stay)`);
      },
    });
    const server = new grpc.Server({
      'grpc.max_receive_message_length': 1024 * 1024,
      'grpc.max_concurrent_streams': 1000,
    });
    server.addService(authorizationService(), {
      Check: (
        call: grpc.ServerUnaryCall<CheckRequestMsg, CheckResponseMsg>,
        cb: grpc.sendUnaryData<CheckResponseMsg>,
      ) => {
        const refused = clientRefusal(
          this.#opts.listener,
          call.getAuthContext().sslPeerCertificate?.subjectaltname,
        );
        cb(null, refused === undefined ? this.check(call.request) : this.#refuseCaller(refused));
      },
    });
    this.#grpc = server;
    return new Promise<number>((resolve, reject) =>
      server.bindAsync(address, creds.credentials, (err, port) =>
        err ? reject(err) : resolve(port),
      ),
    );
  }

  /** Stops accepting, lets calls in flight finish for up to `graceMs`, then cuts the rest. */
  async close(graceMs = 5000): Promise<void> {
    await this.#opts.source.close();
    const s = this.#grpc;
    this.#grpc = undefined;
    if (!s) return;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        s.forceShutdown();
        resolve();
      }, graceMs);
      s.tryShutdown(() => {
        clearTimeout(t);
        resolve();
      });
    });
  }

  /** A caller the listener does not accept gets a denial, never a gRPC error (fail closed). */
  #refuseCaller(reason: string): CheckResponseMsg {
    this.#checks++;
    const p = l7('unmanaged', reason);
    this.#record({
      requestId: '-',
      source: { ip: '-', identity: null },
      destination: { endpoint: '-', port: 0 },
      method: null,
      path: null,
      verdict: 'deny',
      status: 403,
      provenance: p,
      policyVersion: 0,
      started: process.hrtime.bigint(),
    });
    return this.#denied(RPC_CODE.PERMISSION_DENIED, 403, '-', p, 'caller not allowed');
  }

  stats(): AuthzStats {
    return { checks: this.#checks, counters: this.log.snapshot(), views: this.views.status() };
  }

  /** Judges one CheckRequest (the gRPC handler; callable without a socket). Never throws. */
  check(req: CheckRequestMsg): CheckResponseMsg {
    const started = process.hrtime.bigint();
    this.#checks++;
    const a = checkAttributes(req);
    if (!a.ok) {
      const p = l7('unmanaged', a.reason);
      this.#record({
        requestId: a.requestId,
        source: { ip: a.sourceIp, identity: a.principal },
        destination: { endpoint: '-', port: 0 },
        method: a.method,
        path: a.path,
        verdict: 'deny',
        status: a.status,
        provenance: p,
        policyVersion: 0,
        started,
      });
      return this.#denied(
        a.status === 400 ? RPC_CODE.INVALID_ARGUMENT : RPC_CODE.PERMISSION_DENIED,
        a.status,
        a.requestId,
        p,
        a.status === 400 ? `bad request: ${a.reason}` : undefined,
      );
    }
    const at = a.attrs;
    const base = {
      requestId: at.requestId,
      source: { ip: at.sourceIp, identity: at.principal },
      method: at.kind === 'http' ? at.method : null,
      path: at.kind === 'http' ? at.path : null,
      started,
    };
    const sel = this.views.select(at.destinationIp);
    if (!sel.ok) {
      const p = l7('no-l7-point', sel.reason);
      this.#record({
        ...base,
        destination: { endpoint: '-', port: at.port },
        verdict: 'deny',
        status: 403,
        provenance: p,
        policyVersion: 0,
      });
      return this.#denied(RPC_CODE.PERMISSION_DENIED, 403, at.requestId, p);
    }
    const view = sel.view;
    const dest = { endpoint: view.endpoint, port: at.port };
    if (at.destinationPrincipal !== '' && at.destinationPrincipal !== view.identity) {
      const p = l7(
        'identity-mismatch',
        `the proxy presents ${at.destinationPrincipal}, but the policy view is for ${view.identity}`,
      );
      this.#record({
        ...base,
        destination: dest,
        verdict: 'deny',
        status: 403,
        provenance: p,
        policyVersion: view.version,
      });
      return this.#denied(RPC_CODE.PERMISSION_DENIED, 403, at.requestId, p);
    }
    let d: SidecarDecision;
    try {
      // A network-filter Check (a TCP connection) is judged once at L4, as the sidecar's tcp
      // ports are: no HTTP attributes, so no rule that needs them can match.
      d =
        at.kind === 'http'
          ? view.decideInbound({
              sourceIp: at.sourceIp,
              principal: at.principal,
              port: at.port,
              method: at.method,
              path: at.path,
              host: at.host,
              headers: at.headers,
            })
          : view.decideInboundConnection({
              sourceIp: at.sourceIp,
              principal: at.principal,
              port: at.port,
            });
    } catch (e) {
      const p = l7('unmanaged', `decision failed: ${(e as Error).message}`);
      this.#record({
        ...base,
        destination: dest,
        verdict: 'error',
        status: 500,
        provenance: p,
        policyVersion: view.version,
      });
      return this.#denied(RPC_CODE.INTERNAL, 500, at.requestId, p, 'decision error');
    }
    if (d.verdict === 'deny') {
      this.#record({
        ...base,
        destination: dest,
        verdict: 'deny',
        status: 403,
        provenance: d.provenance,
        policyVersion: view.version,
      });
      return this.#denied(RPC_CODE.PERMISSION_DENIED, 403, at.requestId, d.provenance);
    }
    this.#record({
      ...base,
      destination: dest,
      verdict: 'allow',
      status: 200,
      provenance: d.provenance,
      policyVersion: view.version,
    });
    return {
      status: { code: RPC_CODE.OK, message: '' },
      ok_response: {
        headers: at.principal !== null ? [header(PEER_IDENTITY_HEADER, at.principal)] : [],
        headers_to_remove: at.principal !== null ? [] : [PEER_IDENTITY_HEADER],
        response_headers_to_add: [],
      },
      dynamic_metadata: this.#metadata(
        'allow',
        d.provenance,
        at.requestId,
        view.version,
        view.endpoint,
      ),
    };
  }

  #metadata(
    verdict: string,
    p: Provenance,
    requestId: string,
    version: number,
    endpoint: string,
  ): StructMsg {
    return toStruct({
      [METADATA_KEY]: {
        verdict,
        kind: p.kind,
        tier: p.tier,
        policy: p.policy,
        rule: p.rule,
        reason: p.reason,
        policy_version: version,
        request_id: requestId,
        endpoint,
      },
    });
  }

  #denied(
    code: number,
    http: 400 | 403 | 500,
    requestId: string,
    p: Provenance,
    summary?: string,
  ): CheckResponseMsg {
    const why = summary ?? provenanceSummary(p);
    return {
      status: { code, message: p.reason },
      denied_response: {
        status: { code: http },
        headers: [
          header('content-type', 'text/plain; charset=utf-8'),
          header('x-request-id', requestId),
        ],
        body:
          http === 403
            ? `RBAC: access denied (${why}) request-id ${requestId}\n`
            : `${why} request-id ${requestId}\n`,
      },
      dynamic_metadata: this.#metadata(http === 500 ? 'error' : 'deny', p, requestId, 0, '-'),
    };
  }

  #record(
    r: Omit<AccessRecord, 'time' | 'side' | 'stage' | 'latencyMs' | 'provenance'> & {
      provenance: Provenance;
      started: bigint;
    },
  ): void {
    const { started, provenance, ...rest } = r;
    this.log.record({
      ...rest,
      time: this.#now().toISOString(),
      side: 'inbound',
      stage: 'request',
      provenance: provenanceForLog(provenance),
      latencyMs: Number(process.hrtime.bigint() - started) / 1e6,
    });
  }
}
