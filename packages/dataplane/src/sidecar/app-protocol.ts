// The application protocols `palisade sidecar --app-protocol PORT=NAME` accepts, and what the
// inbound listener speaks to the application for each (`tcp`: the L4 listener of tcp-inbound.ts).
// Owns: that mapping. Must never: hand a port to a listener that would handle its protocol as
// something else.

import { DataplaneError } from '../errors.js';
import type { AppProtocol } from './h2.js';

export const APP_PROTOCOL_NAMES = ['http', 'http2', 'grpc', 'tcp'] as const;
export type AppProtocolName = (typeof APP_PROTOCOL_NAMES)[number];

export const isAppProtocolName = (s: string): s is AppProtocolName =>
  (APP_PROTOCOL_NAMES as readonly string[]).includes(s);

/** Whether the port is relayed at L4 (one decision per connection, no HTTP parsing). */
export const isL4Protocol = (name: AppProtocolName): boolean => name === 'tcp';

/**
 * The inbound listener's protocol to the application on an HTTP port. L4 ports (`tcp`) have
 * their own listener (tcp-inbound.ts) and are never handed to the HTTP one.
 */
export function inboundAppProtocol(name: AppProtocolName, port: number): AppProtocol {
  switch (name) {
    case 'http':
      return 'http/1.1';
    case 'http2':
    case 'grpc':
      return 'h2c';
    case 'tcp':
      // Parsing a non-HTTP stream as HTTP would only break it: a caller's bug, not user input.
      throw new DataplaneError(
        'DATAPLANE_ERR_SIDECAR_START',
        `port ${port}: tcp is relayed at L4 by its own listener, not the HTTP one`,
      );
  }
}
