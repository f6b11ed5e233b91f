// Minting a token outside a request: the first admin token at first start, and tests. The token
// record and its audit entry go in one transaction, as for POST /api/v1/tokens.
// Must never: return the token anywhere but to the caller.

import { appendOps, readHead } from '../audit/audit-log.js';
import type { SubjectKind } from '../auth/principal.js';
import type { TokenRecord } from '../auth/tokens.js';
import { hashToken, mintToken } from '../auth/tokens.js';
import { tokenKey } from '../resources/keys.js';
import type { Store } from '../store/store.js';

export async function issueToken(
  store: Store,
  subject: { kind: SubjectKind; name: string },
  groups: readonly string[],
  options: { createdBy?: string; now?: Date; token?: string; ttlSeconds?: number } = {},
): Promise<{ token: string; id: string }> {
  const now = options.now ?? new Date();
  const minted = options.token
    ? { token: options.token, hash: hashToken(options.token), id: mintToken().id }
    : mintToken();
  const rec: TokenRecord = {
    id: minted.id,
    subject,
    groups,
    createdAt: now.toISOString(),
    createdBy: options.createdBy ?? 'server bootstrap',
    ...(options.ttlSeconds !== undefined
      ? { expiresAt: new Date(now.getTime() + options.ttlSeconds * 1000).toISOString() }
      : {}),
  };
  const key = tokenKey(minted.hash);
  for (let attempt = 0; attempt < 50; attempt++) {
    const existing = await store.get(key);
    if (existing)
      return { token: minted.token, id: (JSON.parse(existing.value) as TokenRecord).id };
    const head = await readHead(store);
    const audit = appendOps(head.head, [
      {
        time: now.toISOString(),
        principal: undefined,
        remote: 'local',
        verb: 'token.create',
        kind: 'Token.palisade.dev',
        name: `${subject.kind} ${subject.name}`,
        outcome: 'allowed',
        status: 201,
        message: `token ${rec.id} for ${subject.kind} ${subject.name} (${rec.createdBy})`,
      },
    ]);
    const r = await store.txn({
      compares: [head.compare, { key, modRevision: 0 }],
      success: [{ kind: 'put', key, value: JSON.stringify(rec) }, ...audit.ops],
    });
    if (r.succeeded) return { token: minted.token, id: rec.id };
  }
  throw new Error('could not record the token');
}
