// The live demo's flow records and console: the agent traces the kernel's decisions and takes
// the sidecars' L7 decisions over their endpoint sockets, and ships both to the control plane
// (docs/design/flows.md); this module waits until the story's traffic is in the flow store,
// summarises it, and mints the read-only token a person signs in to the console with.
// Owns: the demo's view of the flow store and the console access it prints. Must never: count a
// flow the server does not hold, or hand out a token that can write.

import type { DemoApi } from './api.js';

export interface FlowSummary {
  /** Records in the server's flow store. */
  readonly records: number;
  readonly kernel: number;
  readonly l7: number;
  readonly refused: number;
  /** Observations the node could not keep or send (counted, shown by the console). */
  readonly shed: number;
}

interface FlowRow {
  readonly point: string;
  readonly verdict: string;
  readonly source: { readonly namespace?: string; readonly name?: string };
  readonly destination: { readonly namespace?: string; readonly name?: string };
  readonly method?: string;
  readonly provenance: { readonly kind: string; readonly policy?: string; readonly tier?: string };
}

async function rows(admin: DemoApi, query: string): Promise<FlowRow[]> {
  const r = await admin.call('GET', `/api/v1/flows?since=1h&limit=10000${query}`);
  if (r.status !== 200) throw new Error(`GET /api/v1/flows: HTTP ${r.status}`);
  return (r.body as { records: FlowRow[] }).records;
}

/**
 * Waits (up to `timeoutMs`) until the store holds the story's signature flows — the attacker
 * refused in the kernel and a request refused by a sidecar — then summarises the store.
 */
export async function awaitStoryFlows(admin: DemoApi, timeoutMs = 30_000): Promise<FlowSummary> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const all = await rows(admin, '');
    const attackerRefused = all.some(
      (f) => f.point === 'kernel' && f.verdict === 'deny' && f.source.name === 'attacker',
    );
    const l7Refused = all.some((f) => f.point === 'l7' && f.verdict === 'deny');
    if ((attackerRefused && l7Refused) || Date.now() > deadline) {
      const st = await admin.call('GET', '/api/v1/flows/stats');
      const stats = (st.body ?? {}) as { records?: number; shedTotal?: number };
      return {
        records: stats.records ?? all.length,
        kernel: all.filter((f) => f.point === 'kernel').length,
        l7: all.filter((f) => f.point === 'l7').length,
        refused: all.filter((f) => f.verdict === 'deny').length,
        shed: stats.shedTotal ?? 0,
      };
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

export interface ConsoleAccess {
  readonly url: string;
  /** A viewer token (read-only: resources, flows, audit log), valid for 12 hours. */
  readonly token: string;
}

/** The console's address and a read-only sign-in token for it. */
export async function consoleAccess(admin: DemoApi, serverUrl: string): Promise<ConsoleAccess> {
  const t = (await admin.must('POST', '/api/v1/tokens', {
    user: 'demo-viewer',
    groups: ['system:viewers'],
    ttlSeconds: 12 * 3600,
  })) as { token: string };
  return { url: `${serverUrl}/console/`, token: t.token };
}

export function formatFlowSummary(s: FlowSummary): string {
  return `flow store: ${s.records} records (${s.kernel} kernel, ${s.l7} L7 in the last hour; ${s.refused} refused), ${s.shed} observations shed`;
}
