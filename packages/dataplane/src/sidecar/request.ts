// Request-level helpers shared by the inbound listener and the outbound proxy: the request path
// check, header flattening, hop-by-hop header removal and request ids. Owns: what a judged path
// may look like. Must never: let a path reach the application in a form other than the one judged.

import { randomUUID } from 'node:crypto';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';

export const MAX_PATH_BYTES = 8192;

/**
 * The request target as it will be judged and forwarded, or why it is refused. Only
 * origin-form targets are accepted, and only in a normal form: a dot segment, an empty segment
 * (`//`), a backslash or an encoded slash, backslash or dot could be read by the application as a
 * different path than the one the policy matched, so they are refused instead of rewritten.
 */
export function checkRequestPath(
  target: string | undefined,
): { ok: true; path: string } | { ok: false; reason: string } {
  if (target === undefined || target.length === 0)
    return { ok: false, reason: 'empty request target' };
  if (target.length > MAX_PATH_BYTES) return { ok: false, reason: 'request target too long' };
  if (!target.startsWith('/'))
    return { ok: false, reason: 'only origin-form request targets are accepted' };
  if (/[^\x21-\x7e]/.test(target))
    return { ok: false, reason: 'request target has control or non-ASCII characters' };
  if (target.includes('#')) return { ok: false, reason: 'request target has a fragment' };
  const q = target.indexOf('?');
  const path = q === -1 ? target : target.slice(0, q);
  if (path.includes('\\')) return { ok: false, reason: 'path has a backslash' };
  if (/%(2f|5c|2e)/i.test(path))
    return { ok: false, reason: 'path has an encoded slash, backslash or dot' };
  if (/%(?![0-9a-f]{2})/i.test(path))
    return { ok: false, reason: 'path has a malformed percent escape' };
  const segments = path.split('/').slice(1);
  for (const [i, s] of segments.entries()) {
    if (s === '.' || s === '..') return { ok: false, reason: 'path has a dot segment' };
    if (s === '' && i < segments.length - 1)
      return { ok: false, reason: 'path has an empty segment (//)' };
  }
  return { ok: true, path: target };
}

/** Lower-case single-valued headers for the engine (repeated values joined as HTTP allows). */
export function flattenHeaders(h: IncomingHttpHeaders): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) {
    if (v === undefined) continue;
    out[k.toLowerCase()] = Array.isArray(v) ? v.join(', ') : v;
  }
  return out;
}

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/** Headers to pass on, without hop-by-hop ones (also those the Connection header names). */
export function forwardHeaders(
  h: IncomingHttpHeaders,
  drop: readonly string[] = [],
): OutgoingHttpHeaders {
  const named = new Set(
    String(h.connection ?? '')
      .split(',')
      .map((s) => s.trim().toLowerCase())
      .filter((s) => s.length > 0),
  );
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(h)) {
    const key = k.toLowerCase();
    if (v === undefined || HOP_BY_HOP.has(key) || named.has(key) || drop.includes(key)) continue;
    out[key] = v;
  }
  return out;
}

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** The caller's `x-request-id` when it is well-formed (ids are propagated), else a new one. */
export function requestId(h: IncomingHttpHeaders): string {
  const v = h['x-request-id'];
  return typeof v === 'string' && REQUEST_ID.test(v) ? v : randomUUID();
}

/** `::ffff:1.2.3.4` → `1.2.3.4`; undefined stays undefined. */
export function plainAddress(a: string | undefined): string | undefined {
  if (a === undefined) return undefined;
  return a.startsWith('::ffff:') && a.includes('.') ? a.slice(7) : a;
}
