// The policy views an authorization server holds, and which one judges a Check. Owns: building
// views from snapshots (fail static per endpoint, through `PolicyViewHolder`) and selecting the
// destination's view: the one endpoint given with `--endpoint`, or the workload endpoint that owns
// the request's destination address. Must never: judge a request with another endpoint's view,
// or answer anything but "no view" (a deny) when no view fits.

import { compile, formatIp } from '@palisade/core';
import type { Engine } from '@palisade/core';
import { PolicyView, PolicyViewHolder } from '../sidecar/policy-view.js';
import type { PolicySnapshot } from './source.js';

export interface ViewsOptions {
  /** `namespace/name`: judge every request as addressed to this endpoint. */
  readonly endpoint?: string;
  readonly trustDomain?: string;
  readonly istioRootNamespace?: string;
}

export type Selected =
  | { readonly ok: true; readonly view: PolicyView }
  | { readonly ok: false; readonly reason: string };

export interface ViewsStatus {
  readonly mode: 'endpoint' | 'by-destination';
  readonly endpoints: readonly { endpoint: string; version: number; rejectedUpdates: number }[];
  readonly lastSnapshot: number | undefined;
  readonly lastError: string | undefined;
}

export class AuthzViews {
  readonly #opts: ViewsOptions;
  readonly #holders = new Map<string, PolicyViewHolder>();
  /** Destination address → endpoint, from the last snapshot that compiled. */
  #byAddress = new Map<string, string>();
  #lastSnapshot: number | undefined;
  #lastError: string | undefined;

  constructor(opts: ViewsOptions = {}) {
    this.#opts = opts;
  }

  get mode(): ViewsStatus['mode'] {
    return this.#opts.endpoint !== undefined ? 'endpoint' : 'by-destination';
  }

  /** Applies one snapshot; returns the endpoints whose view changed and the problems found. */
  apply(s: PolicySnapshot): { readonly updated: string[]; readonly problems: string[] } {
    if ('view' in s) return this.#applyView(s.view);
    let engine: Engine;
    try {
      engine = compile(s.resources, {
        revision: s.version,
        ...(this.#opts.trustDomain ? { trustDomain: this.#opts.trustDomain } : {}),
        ...(this.#opts.istioRootNamespace
          ? { istioRootNamespace: this.#opts.istioRootNamespace }
          : {}),
      });
    } catch (e) {
      return this.#fail(`snapshot ${s.version} does not compile: ${(e as Error).message}`);
    }
    const errors = engine.diagnostics().filter((d) => d.severity === 'error');
    if (errors.length > 0)
      return this.#fail(
        `snapshot ${s.version} has ${errors.length} error(s), first: ${errors[0]?.message ?? ''}`,
      );
    const targets =
      this.#opts.endpoint !== undefined
        ? [this.#opts.endpoint]
        : s.endpoint !== undefined
          ? [s.endpoint]
          : engine.workloadEndpoints().filter((id) => {
              const ep = engine.describeEndpoint(id);
              return ep !== undefined && ep.l7 && ep.serviceAccount !== undefined;
            });
    if (
      this.#opts.endpoint !== undefined &&
      s.endpoint !== undefined &&
      s.endpoint !== this.#opts.endpoint
    )
      return this.#fail(
        `snapshot for ${s.endpoint} offered to the server of ${this.#opts.endpoint}`,
      );
    const updated: string[] = [];
    const problems: string[] = [];
    for (const id of targets) {
      const r = PolicyView.fromEngine(engine, id, s.version);
      const holder = this.#holders.get(r.ok ? r.view.endpoint : id);
      if (!holder) {
        if (r.ok) {
          this.#holders.set(r.view.endpoint, new PolicyViewHolder(r.view));
          updated.push(r.view.endpoint);
        } else problems.push(`${id}: ${r.reason}`);
      } else if (holder.update(r)) updated.push(holder.current.endpoint);
      else problems.push(`${id}: ${holder.status().lastError ?? 'refused'}`);
    }
    if (this.#opts.endpoint === undefined && s.endpoint === undefined) {
      // A full set: endpoints that left it lose their view (no view: every request denied).
      const keep = new Set(targets.map((t) => engine.describeEndpoint(t)?.id ?? t));
      for (const id of [...this.#holders.keys()]) if (!keep.has(id)) this.#holders.delete(id);
      this.#byAddress = new Map();
    }
    for (const id of targets) {
      const ep = engine.describeEndpoint(id);
      if (!ep) continue;
      for (const [ip, owner] of this.#byAddress) if (owner === ep.id) this.#byAddress.delete(ip);
      for (const ip of ep.ips) this.#byAddress.set(formatIp(ip), ep.id);
    }
    this.#lastSnapshot = s.version;
    this.#lastError = problems.length > 0 ? problems.join('; ') : undefined;
    return { updated, problems };
  }

  /** Records a source error (the current views stay). */
  sourceError(reason: string): void {
    this.#lastError = reason;
  }

  /** The view that judges a request to `destinationIp`. */
  select(destinationIp: string): Selected {
    if (this.#opts.endpoint !== undefined) {
      const h = this.#holders.get(this.#opts.endpoint) ?? [...this.#holders.values()][0];
      if (!h) return { ok: false, reason: `no policy view for ${this.#opts.endpoint} yet` };
      const v = h.current;
      // Envoy in front of one workload sees that workload's address (or its own); another known
      // endpoint's address means the request is not for the endpoint this view judges.
      const owner = v.endpointAt(destinationIp);
      if (owner !== undefined && owner !== v.endpoint)
        return {
          ok: false,
          reason: `destination ${destinationIp} is ${owner}, not ${v.endpoint} whose policy this server holds`,
        };
      return { ok: true, view: v };
    }
    const id = this.#byAddress.get(destinationIp);
    const h = id !== undefined ? this.#holders.get(id) : undefined;
    if (!h) return { ok: false, reason: `no policy view for destination ${destinationIp}` };
    return { ok: true, view: h.current };
  }

  status(): ViewsStatus {
    return {
      mode: this.mode,
      endpoints: [...this.#holders.values()].map((h) => {
        const s = h.status();
        return { endpoint: s.endpoint, version: s.version, rejectedUpdates: s.rejectedUpdates };
      }),
      lastSnapshot: this.#lastSnapshot,
      lastError: this.#lastError,
    };
  }

  /** A view built elsewhere (the agent's feed): one endpoint, through its holder (fail static). */
  #applyView(view: PolicyView): { updated: string[]; problems: string[] } {
    if (this.#opts.endpoint === undefined)
      return this.#fail(`a view of ${view.endpoint} needs a server of one endpoint (--endpoint)`);
    if (view.endpoint !== this.#opts.endpoint)
      return this.#fail(
        `a view of ${view.endpoint} offered to the server of ${this.#opts.endpoint}`,
      );
    const holder = this.#holders.get(view.endpoint);
    this.#lastSnapshot = view.version;
    if (!holder) {
      this.#holders.set(view.endpoint, new PolicyViewHolder(view));
      this.#lastError = undefined;
      return { updated: [view.endpoint], problems: [] };
    }
    if (holder.update({ ok: true, view })) {
      this.#lastError = undefined;
      return { updated: [view.endpoint], problems: [] };
    }
    return this.#fail(`${view.endpoint}: ${holder.status().lastError ?? 'refused'}`);
  }

  #fail(reason: string): { updated: string[]; problems: string[] } {
    this.#lastError = reason;
    return { updated: [], problems: [reason] };
  }
}
