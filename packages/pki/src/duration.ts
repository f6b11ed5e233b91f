// Durations as operators write them (`24h`, `90d`, `1h30m`, `45s`) and the lifetime bounds of
// issue 4: workload certificates 24 h by default, at most 90 days. Never throws on user input.

import type { PkiFailure } from './errors.js';
import { fail } from './errors.js';

export const MINUTE_MS = 60_000;
export const HOUR_MS = 60 * MINUTE_MS;
export const DAY_MS = 24 * HOUR_MS;

export const DEFAULT_WORKLOAD_TTL_MS = 24 * HOUR_MS;
export const MAX_WORKLOAD_TTL_MS = 90 * DAY_MS;
export const MIN_WORKLOAD_TTL_MS = MINUTE_MS;
export const DEFAULT_ROOT_TTL_MS = 3650 * DAY_MS;
export const DEFAULT_ROTATION_OVERLAP_MS = 24 * HOUR_MS;

const UNITS: Readonly<Record<string, number>> = { s: 1000, m: MINUTE_MS, h: HOUR_MS, d: DAY_MS };

export type DurationResult = { readonly ok: true; readonly ms: number } | PkiFailure;

/** Parses `1d12h`, `24h`, `30m`, `90s`. Only positive whole units; at most 20 characters. */
export function parseDuration(text: string): DurationResult {
  if (text.length === 0 || text.length > 20 || !/^(\d+[smhd])+$/.test(text))
    return fail(
      'PKI_ERR_BAD_TTL',
      `${JSON.stringify(text)} is not a duration like 24h, 90d or 1h30m`,
    );
  let ms = 0;
  for (const m of text.matchAll(/(\d+)([smhd])/g)) ms += Number(m[1]) * (UNITS[m[2] ?? ''] ?? 0);
  if (!Number.isSafeInteger(ms) || ms <= 0)
    return fail('PKI_ERR_BAD_TTL', `${JSON.stringify(text)} is not a positive duration`);
  return { ok: true, ms };
}

/** Checks a workload certificate lifetime against the bounds. */
export function workloadTtlProblem(ms: number): string | undefined {
  if (!Number.isFinite(ms) || !Number.isInteger(ms))
    return 'the lifetime must be a whole number of milliseconds';
  if (ms < MIN_WORKLOAD_TTL_MS) return 'the lifetime must be at least 1 minute';
  if (ms > MAX_WORKLOAD_TTL_MS) return 'the lifetime must be at most 90 days';
  return undefined;
}

export function formatDuration(ms: number): string {
  const parts: string[] = [];
  let rest = Math.round(ms / 1000);
  for (const [u, s] of [
    ['d', 86400],
    ['h', 3600],
    ['m', 60],
    ['s', 1],
  ] as const) {
    const n = Math.floor(rest / s);
    if (n > 0) parts.push(`${n}${u}`);
    rest -= n * s;
  }
  return parts.join('') || '0s';
}
