// Bearer tokens (DESIGN §7): 256 random bits, shown once, stored only as their SHA-256 under
// /palisade/tokens/<hash>. Owns: minting, hashing and the stored record. Must never: store,
// log or return a token after minting it; compare secrets other than by their hashes.

import { createHash, randomBytes } from 'node:crypto';
import type { Principal, SubjectKind } from './principal.js';
import { tokenKey } from '../resources/keys.js';
import type { Store } from '../store/store.js';

const TOKEN_PREFIX = 'pal_';
const TOKEN_RE = /^pal_[A-Za-z0-9_-]{43}$/;

export interface TokenRecord {
  readonly id: string;
  readonly subject: { readonly kind: SubjectKind; readonly name: string };
  readonly groups: readonly string[];
  readonly createdAt: string;
  readonly createdBy: string;
  /** ISO time after which the token is refused; absent = no expiry. */
  readonly expiresAt?: string;
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

export function mintToken(): { token: string; hash: string; id: string } {
  const token = TOKEN_PREFIX + randomBytes(32).toString('base64url');
  return { token, hash: hashToken(token), id: `tok-${randomBytes(6).toString('hex')}` };
}

export function looksLikeToken(s: string): boolean {
  return TOKEN_RE.test(s);
}

export type TokenLookup =
  | { readonly ok: true; readonly principal: Principal }
  /** `principal` is set when the token was known (expired): such refusals are audited. */
  | { readonly ok: false; readonly reason: string; readonly principal?: Principal };

/** The principal behind a presented token, by its hash. */
export async function lookupToken(store: Store, token: string, now: Date): Promise<TokenLookup> {
  if (!looksLikeToken(token)) return { ok: false, reason: 'the token is malformed' };
  const kv = await store.get(tokenKey(hashToken(token)));
  if (!kv) return { ok: false, reason: 'the token is not known (revoked, or from another server)' };
  const rec = JSON.parse(kv.value) as TokenRecord;
  const principal: Principal = {
    kind: rec.subject.kind,
    name: rec.subject.name,
    groups: rec.groups,
    via: 'token',
    tokenId: rec.id,
  };
  if (rec.expiresAt !== undefined && Date.parse(rec.expiresAt) <= now.getTime())
    return { ok: false, reason: `the token expired at ${rec.expiresAt}`, principal };
  return { ok: true, principal };
}
