// Error codes of the api area (one file per area so parallel work does not collide; errors.ts
// merges every area into the one catalogue).
import type { ErrorSpec } from '../errors.js';

export const API_ERRORS = {} as const satisfies Record<string, ErrorSpec>;
