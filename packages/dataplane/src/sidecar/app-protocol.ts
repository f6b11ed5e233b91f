// The application protocols `palisade sidecar --app-protocol PORT=NAME` accepts, and what the
// inbound listener speaks to the application for each. Owns: that mapping. Must never: accept a
// protocol the inbound listener would handle as something else.

import { DataplaneError } from '../errors.js';
import type { AppProtocol } from './h2.js';

export const APP_PROTOCOL_NAMES = ['http', 'http2', 'grpc', 'tcp'] as const;
export type AppProtocolName = (typeof APP_PROTOCOL_NAMES)[number];

export const isAppProtocolName = (s: string): s is AppProtocolName =>
  (APP_PROTOCOL_NAMES as readonly string[]).includes(s);

/** The inbound listener's protocol to the application on `port`. */
export function inboundAppProtocol(name: AppProtocolName, port: number): AppProtocol {
  switch (name) {
    case 'http':
      return 'http/1.1';
    case 'http2':
    case 'grpc':
      return 'h2c';
    case 'tcp':
      // Refused rather than judged as HTTP: an L4 pass-through with the identity check is not
      // built yet, and parsing a non-HTTP stream as HTTP would only break it.
      throw new DataplaneError(
        'DATAPLANE_ERR_SIDECAR_START',
        `port ${port}: tcp (L4 pass-through) is not supported by this sidecar yet; leave the port out of --app-port so it is not intercepted`,
      );
  }
}
