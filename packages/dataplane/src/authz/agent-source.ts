// The node agent's policy-sync feed as a policy source: the same per-endpoint stream the sidecar
// follows (`sidecar/agent-link.ts`: only what this endpoint needs, pushed on change, loaded and
// validated afresh), each view handed to the authorization server. Owns: the wiring. Must never:
// block the server on the agent (until the first view arrives every Check is denied; when the
// agent goes away the last view stays and the link reconnects).

import { AgentLink } from '../sidecar/agent-link.js';
import type { AgentLinkStatus } from '../sidecar/agent-link.js';
import type { PolicySource, PolicySourceHandlers } from './source.js';

export interface AgentSourceOptions {
  /** The agent's socket for this endpoint (`/run/palisade/endpoints/NS/NAME/agent.sock`). */
  readonly socketPath: string;
  readonly endpoint: string;
  /** The endpoint's ports Envoy fronts (the agent picks the callers' bindings by them). */
  readonly ports: readonly number[];
  readonly say?: (line: string) => void;
  readonly backoffMinMs?: number;
  readonly backoffMaxMs?: number;
}

export class AgentSource implements PolicySource {
  readonly link: AgentLink;
  #off: (() => void) | undefined;

  constructor(opts: AgentSourceOptions) {
    this.link = new AgentLink({
      socketPath: opts.socketPath,
      endpoint: opts.endpoint,
      ports: opts.ports,
      ...(opts.say ? { say: opts.say } : {}),
      ...(opts.backoffMinMs !== undefined ? { backoffMinMs: opts.backoffMinMs } : {}),
      ...(opts.backoffMaxMs !== undefined ? { backoffMaxMs: opts.backoffMaxMs } : {}),
    });
  }

  start(h: PolicySourceHandlers): Promise<void> {
    this.#off = this.link.onView((view) => h.onSnapshot({ version: view.version, view }));
    this.link.start();
    return Promise.resolve();
  }

  async close(): Promise<void> {
    this.#off?.();
    await this.link.stop();
  }

  status(): AgentLinkStatus {
    return this.link.status();
  }
}
