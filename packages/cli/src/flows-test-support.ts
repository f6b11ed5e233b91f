// Test support: a node token minted on a running server, as `palisade token create --node` does.

import { readFileSync } from 'node:fs';
import type { RunningServer } from '@palisade/controlplane';

export async function issueNodeToken(
  server: RunningServer,
  adminTokenFile: string,
  node: string,
): Promise<string> {
  const r = await server.api.inject({
    method: 'POST',
    url: '/api/v1/tokens',
    token: readFileSync(adminTokenFile, 'utf8').trim(),
    body: { node },
  });
  if (r.status !== 201 && r.status !== 200) throw new Error(`token create: ${r.status} ${r.body}`);
  return (r.json() as { token: string }).token;
}
