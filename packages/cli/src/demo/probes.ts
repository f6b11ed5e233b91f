// The demo's probes: each is made from inside a pod (its service makes the call, with the pod's
// address) and observed at the enforcement points themselves — the kernel's rule counters and
// the sidecars' access logs and 403 answers. Probes run one at a time, so a counter that rose
// during a probe belongs to it. Owns: the observation and its classification. Must never: infer
// an outcome from the policy instead of observing it.

import { deciding, KernelObserver } from './kernel.js';
import type { AccessLine, Sidecar } from './sidecars.js';
import type { Pod } from './topology.js';
import { POD_PORT } from './topology.js';

export type Verdict = 'allow' | 'deny' | 'error';

export interface Observation {
  readonly observed: Verdict;
  /** `kernel`, `L7 (sidecar of ns/name)`, `kernel and L7`, or why nothing could be said. */
  readonly enforcedBy: string;
  readonly provenance: { readonly kernel: readonly string[]; readonly l7?: string };
  readonly detail: string;
  readonly status?: number;
  readonly body?: string;
}

export class Probes {
  constructor(
    readonly kernel: KernelObserver,
    readonly sidecars: ReadonlyMap<string, Sidecar>,
  ) {}

  async #withCounters<T>(
    f: () => Promise<T>,
  ): Promise<{ r: T; hits: ReturnType<typeof KernelObserver.diff> }> {
    const before = await this.kernel.read();
    const marks = new Map([...this.sidecars].map(([k, s]) => [k, s.accessBase + s.access.length]));
    const r = await f();
    // Access-log lines and counters are written before the answer leaves; a short pause lets
    // the sidecars' stdout lines arrive.
    await new Promise((res) => setTimeout(res, 30));
    const after = await this.kernel.read();
    this.#marks = marks;
    return { r, hits: KernelObserver.diff(before, after) };
  }

  #marks = new Map<string, number>();

  /** Access-log records written by sidecars during the last probe. */
  #records(): { pod: string; line: AccessLine }[] {
    const out: { pod: string; line: AccessLine }[] = [];
    for (const [k, s] of this.sidecars)
      for (const line of s.access.slice(
        Math.max(0, (this.#marks.get(k) ?? s.accessBase + s.access.length) - s.accessBase),
      ))
        out.push({ pod: k, line });
    return out;
  }

  /** A TCP connection from `from` to `to`'s pod port: the kernel alone decides. */
  async tcp(from: Pod, to: Pod, timeoutMs = 400): Promise<Observation> {
    const { r, hits } = await this.#withCounters(() =>
      from.ask({ op: 'tcp', host: to.ip, port: POD_PORT, timeoutMs }),
    );
    if (r.ok === true)
      return {
        observed: 'allow',
        enforcedBy: 'kernel',
        provenance: { kernel: deciding(hits, 'accept') },
        detail: `connected in ${String(r.ms)} ms`,
      };
    const drops = deciding(hits, 'drop');
    return {
      observed: drops.length > 0 ? 'deny' : 'error',
      enforcedBy: drops.length > 0 ? 'kernel' : `no drop counted (${String(r.error)})`,
      provenance: { kernel: drops },
      detail: `no answer within ${timeoutMs} ms (${String(r.error)})`,
    };
  }

  /**
   * One HTTP request from `from`: through its sidecar (mTLS with its own SVID), or straight to
   * the destination with a certificate it holds (`tls`).
   */
  async http(
    from: Pod,
    to: Pod,
    o: {
      readonly method?: string;
      readonly path: string;
      readonly tls?: { readonly cert: string; readonly key: string };
      readonly timeoutMs?: number;
    },
  ): Promise<Observation> {
    const direct = o.tls !== undefined;
    const url = `${direct ? 'https' : 'http'}://${to.ip}:${POD_PORT}${o.path}`;
    const { r, hits } = await this.#withCounters(() =>
      from.ask(
        {
          op: 'http',
          url,
          method: o.method ?? 'GET',
          ...(o.tls ? { tls: o.tls } : {}),
          timeoutMs: o.timeoutMs ?? 3000,
        },
        (o.timeoutMs ?? 3000) + 5000,
      ),
    );
    const records = this.#records();
    const accepts = deciding(hits, 'accept');
    const drops = deciding(hits, 'drop');
    if (r.ok !== true) {
      return {
        observed: drops.length > 0 ? 'deny' : 'error',
        enforcedBy: drops.length > 0 ? 'kernel' : `no drop counted (${String(r.error)})`,
        provenance: { kernel: drops },
        detail: `no HTTP answer (${String(r.error)})`,
      };
    }
    const status = Number(r.status);
    const body = typeof r.body === 'string' ? r.body : '';
    if (status === 403) {
      const refusal =
        records.find((x) => x.line.verdict === 'deny' && x.pod === to.ref) ??
        records.find((x) => x.line.verdict === 'deny');
      const where = refusal
        ? `${refusal.line.side === 'inbound' ? 'inbound' : 'outbound'} sidecar of ${refusal.pod}`
        : 'a sidecar';
      const m = /RBAC: access denied \((.*)\) request-id/.exec(body);
      const p = refusal?.line.provenance;
      return {
        observed: 'deny',
        enforcedBy: `L7 (${where})`,
        provenance: {
          kernel: accepts,
          l7: p
            ? `${p.kind}${p.policy !== undefined ? ` ${p.policy}` : ''}${p.rule !== undefined ? ` rule ${p.rule}` : ''}${p.tier !== undefined ? ` (tier ${p.tier})` : ''}: ${p.reason}`
            : (m?.[1] ?? body.slice(0, 200)),
        },
        detail: `HTTP 403 ${m?.[1] ?? body.slice(0, 120)}`,
        status,
        body,
      };
    }
    const allow = records.find(
      (x) => x.pod === to.ref && x.line.side === 'inbound' && x.line.verdict === 'allow',
    );
    const p = allow?.line.provenance;
    return {
      observed: status >= 200 && status < 300 ? 'allow' : 'error',
      enforcedBy: 'kernel and L7',
      provenance: {
        kernel: accepts,
        ...(p
          ? {
              l7: `${p.kind}${p.policy !== undefined ? ` ${p.policy}` : ''}${p.rule !== undefined ? ` rule ${p.rule}` : ''}${p.tier !== undefined ? ` (tier ${p.tier})` : ''}`,
            }
          : {}),
      },
      detail: `HTTP ${status} in ${String(r.ms)} ms${allow ? `, as ${allow.line.source.identity ?? 'plaintext'}` : ''}`,
      status,
      body,
    };
  }
}
