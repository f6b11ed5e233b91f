// The sidecar's part of transparent interception (docs/design/intercept.md): it keeps one
// loopback listener of the outbound proxy per destination its policy view lets the endpoint
// reach, and announces its listeners — inbound and outbound — to the agent, which installs the
// redirects in the pod's namespace. Order: a listener is open before it is announced (so no
// connection is redirected to a closed port), and closed only after an announcement without it
// was accepted (the agent removed its redirect first). Announced again after every view and
// every reconnection to the agent (a restarted agent starts from nothing); retried on failure.
// Owns: the destination → loopback port assignment and the announcement schedule. Must never:
// announce a listener that is not open, or pick a port that is an application port.

import type { InterceptAnnouncement, InterceptReply } from '../agent-socket/protocol.js';
import type { AgentLink } from './agent-link.js';
import type { OutboundProxy } from './outbound.js';
import type { PolicyViewHolder } from './policy-view.js';

export const DEFAULT_FIRST_OUTBOUND_PORT = 15101;
const LAST_PORT = 65535;

export interface InterceptionLinkOptions {
  readonly link: Pick<AgentLink, 'announceInterception' | 'onConnected' | 'onView'>;
  readonly proxy: Pick<OutboundProxy, 'addDestination' | 'removeDestination'>;
  readonly holder: PolicyViewHolder;
  /** The inbound listeners: application port → sidecar port. */
  readonly inbound: readonly { readonly appPort: number; readonly sidecarPort: number }[];
  /** The uid this process runs under (the agent exempts it from redirection). */
  readonly uid: number;
  /** First loopback port for destinations (default 15101). */
  readonly firstPort?: number;
  /** Ports never used for destinations (the application's, admin, the explicit proxy). */
  readonly reserved?: readonly number[];
  /** Retry bounds when the agent refuses or is away (default 250 ms .. 5 s). */
  readonly retryMinMs?: number;
  readonly retryMaxMs?: number;
  readonly say?: (line: string) => void;
}

export interface InterceptionLinkStatus {
  /** The last announcement the agent accepted is the current set. */
  readonly announced: boolean;
  readonly destinations: number;
  readonly redirected: number;
  readonly lastError: string | undefined;
}

interface Open {
  readonly ip: string;
  readonly port: number;
  readonly listenPort: number;
}

const keyOf = (ip: string, port: number): string => `${ip} ${port}`;

export class InterceptionLink {
  readonly #o: InterceptionLinkOptions;
  readonly #open = new Map<string, Open>();
  readonly #unlisten: (() => void)[] = [];
  #running: Promise<void> | undefined;
  #again = false;
  #stopped = false;
  #retry: NodeJS.Timeout | undefined;
  #delay: number;
  #announced = false;
  #reply: InterceptReply | undefined;
  #lastError: string | undefined;
  #next: number;
  #printedVersion = -1;

  constructor(o: InterceptionLinkOptions) {
    this.#o = o;
    this.#delay = o.retryMinMs ?? 250;
    this.#next = o.firstPort ?? DEFAULT_FIRST_OUTBOUND_PORT;
  }

  /** Opens the listeners of the current view and announces; follows views and reconnections. */
  async start(): Promise<void> {
    this.#unlisten.push(this.#o.link.onView(() => this.kick()));
    this.#unlisten.push(this.#o.link.onConnected(() => this.kick()));
    this.kick();
    await this.#running;
  }

  status(): InterceptionLinkStatus {
    return {
      announced: this.#announced,
      destinations: this.#open.size,
      redirected: this.#reply?.outbound ?? 0,
      lastError: this.#lastError,
    };
  }

  /** Stops announcing. The listeners close with the proxy; the agent keeps the redirects. */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const f of this.#unlisten.splice(0)) f();
    if (this.#retry) clearTimeout(this.#retry);
    await this.#running;
  }

  /** Runs a synchronisation now, or once more after the one running. */
  kick(): void {
    if (this.#stopped) return;
    this.#announced = false;
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = (async () => {
      do {
        this.#again = false;
        await this.#sync();
      } while (this.#again && !this.#stopped);
      this.#running = undefined;
    })();
  }

  #taken(): Set<number> {
    const s = new Set<number>(this.#o.reserved ?? []);
    for (const i of this.#o.inbound) {
      s.add(i.appPort);
      s.add(i.sidecarPort);
    }
    for (const x of this.#open.values()) s.add(x.listenPort);
    return s;
  }

  async #openListener(ip: string, port: number): Promise<Open | undefined> {
    const taken = this.#taken();
    for (let tries = 0; tries < 64; tries++) {
      if (this.#next > LAST_PORT) this.#next = this.#o.firstPort ?? DEFAULT_FIRST_OUTBOUND_PORT;
      const listenPort = this.#next++;
      if (taken.has(listenPort)) continue;
      try {
        await this.#o.proxy.addDestination({ ip, port, listenPort });
        return { ip, port, listenPort };
      } catch (e) {
        // In use by something else in the pod: the next port.
        if ((e as { code?: string }).code !== 'EADDRINUSE') throw e;
      }
    }
    return undefined;
  }

  async #sync(): Promise<void> {
    if (this.#stopped) return;
    const view = this.#o.holder.current;
    const want = new Map(view.interceptDestinations().map((d) => [keyOf(d.ip, d.port), d]));
    try {
      for (const [k, d] of want) {
        if (this.#open.has(k)) continue;
        const o = await this.#openListener(d.ip, d.port);
        if (o) this.#open.set(k, o);
        else this.#o.say?.(`interception: no free loopback port for ${d.ip}:${d.port}`);
      }
      const outbound = [...this.#open.entries()]
        .filter(([k]) => want.has(k))
        .map(([, o]) => ({ ip: o.ip, port: o.port, sidecarPort: o.listenPort }));
      const a: InterceptAnnouncement = { uid: this.#o.uid, inbound: this.#o.inbound, outbound };
      const r = await this.#o.link.announceInterception(a);
      // Printed once per view too: watchers (the live demo) wait for the view's redirects.
      const changed =
        JSON.stringify(r) !== JSON.stringify(this.#reply) || view.version !== this.#printedVersion;
      this.#printedVersion = view.version;
      this.#reply = r;
      this.#lastError = undefined;
      this.#delay = this.#o.retryMinMs ?? 250;
      if (changed)
        this.#o.say?.(
          `interception installed by the agent (view ${view.version}): ${r.inbound} inbound, ${r.outbound} outbound redirects${r.skipped.length > 0 ? `; not redirected: ${r.skipped.slice(0, 5).join(', ')}` : ''}`,
        );
      // The agent has removed the redirects of destinations no longer wanted: close them now.
      for (const [k, o] of [...this.#open]) {
        if (want.has(k)) continue;
        this.#open.delete(k);
        await this.#o.proxy.removeDestination(o.listenPort);
      }
      this.#announced = !this.#again;
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      if (message !== this.#lastError)
        this.#o.say?.(
          `interception: the agent did not install the redirects (retrying): ${message}`,
        );
      this.#lastError = message;
      if (!this.#stopped && !this.#retry) {
        const wait = this.#delay;
        this.#delay = Math.min(this.#o.retryMaxMs ?? 5_000, this.#delay * 2);
        this.#retry = setTimeout(() => {
          this.#retry = undefined;
          this.kick();
        }, wait);
        this.#retry.unref();
      }
    }
  }
}
