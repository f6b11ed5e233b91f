// Where the agent records the workload endpoints the CNI plugin created. Owns: the
// `EndpointRegistry` port and `InMemoryEndpointRegistry` (the agent will replace it with writes
// to the API server). Must never: let two attachments hold one address (an address is a network
// identity: policy follows it).

import type { RegisteredEndpoint } from './protocol.js';

export class RegistryConflictError extends Error {
  readonly code = 'CNI_ERR_REGISTRATION';
}

export interface EndpointRegistry {
  /** Records or replaces the attachment's endpoint; RegistryConflictError if one of its addresses belongs to another. */
  register(ep: RegisteredEndpoint): Promise<void>;
  /** True when something was removed. */
  deregister(containerId: string, ifname: string): Promise<boolean>;
  get(containerId: string, ifname: string): Promise<RegisteredEndpoint | undefined>;
  list(): Promise<readonly RegisteredEndpoint[]>;
}

const key = (containerId: string, ifname: string): string => `${containerId}\0${ifname}`;

function addressesOf(ep: RegisteredEndpoint): readonly string[] {
  return (ep.workloadEndpoint.spec.ipNetworks ?? []).map((n) => n.split('/')[0] ?? n);
}

export class InMemoryEndpointRegistry implements EndpointRegistry {
  private readonly byKey = new Map<string, RegisteredEndpoint>();
  private readonly byAddress = new Map<string, string>();

  register(ep: RegisteredEndpoint): Promise<void> {
    const k = key(ep.containerId, ep.ifname);
    for (const a of addressesOf(ep)) {
      const holder = this.byAddress.get(a);
      if (holder !== undefined && holder !== k) {
        const other = this.byKey.get(holder);
        return Promise.reject(
          new RegistryConflictError(
            `address ${a} is registered to container ${other?.containerId ?? '?'} (${other?.ifname ?? '?'})`,
          ),
        );
      }
    }
    const previous = this.byKey.get(k);
    if (previous) for (const a of addressesOf(previous)) this.byAddress.delete(a);
    this.byKey.set(k, ep);
    for (const a of addressesOf(ep)) this.byAddress.set(a, k);
    return Promise.resolve();
  }

  deregister(containerId: string, ifname: string): Promise<boolean> {
    const k = key(containerId, ifname);
    const ep = this.byKey.get(k);
    if (!ep) return Promise.resolve(false);
    for (const a of addressesOf(ep)) this.byAddress.delete(a);
    this.byKey.delete(k);
    return Promise.resolve(true);
  }

  get(containerId: string, ifname: string): Promise<RegisteredEndpoint | undefined> {
    return Promise.resolve(this.byKey.get(key(containerId, ifname)));
  }

  list(): Promise<readonly RegisteredEndpoint[]> {
    return Promise.resolve([...this.byKey.values()]);
  }
}
