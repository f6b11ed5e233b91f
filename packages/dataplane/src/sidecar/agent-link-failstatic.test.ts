// Fail static of the sidecar's policy sync client (agent-link.ts) when the agent dies mid-push:
// a real HTTP stream on a real unix socket, served by a scripted agent whose connection is torn
// down in the middle of a view line (what the kernel does to the stream of a SIGKILLed agent),
// then a "restarted" agent that sends an empty snapshot, a stale one, another endpoint's view and
// a malformed line. The view in force — including the identity ↔ address binding the source
// address check reads — must stay the last complete one throughout, and decisions with it.

import { after, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { ServerResponse } from 'node:http';
import { join } from 'node:path';
import { loadText } from '@palisade/core';
import { POLICYSYNC_PREFIX } from '../agent-socket/protocol.js';
import type { PolicySyncMessage, PolicySyncView } from '../agent-socket/protocol.js';
import { AgentLink } from './agent-link.js';
import { tempDir } from './test-fixtures.js';
import { CALICO, DB_PORT, NS, spiffe, world } from './tcp-world.js';

const IPS = { db: '10.246.0.10', api: '10.246.0.11', web: '10.246.0.12', intruder: '10.246.0.13' };
const ENDPOINT = `${NS}/db`;

/** The view as the agent sends it: resources as JSON, without the loader's source reference. */
function view(yaml: string, endpoint = ENDPOINT): PolicySyncView {
  const loaded = loadText(yaml, 'agent.yaml');
  return {
    endpoint,
    identity: spiffe(endpoint.split('/')[1] ?? ''),
    trustDomain: 'cluster.local',
    istioRootNamespace: 'istio-system',
    resources: loaded.resources.map((r) => {
      const copy: Record<string, unknown> = { ...r };
      delete copy['source'];
      return copy;
    }),
  };
}

const line = (m: PolicySyncMessage | Record<string, unknown>): string => `${JSON.stringify(m)}\n`;

async function until(f: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('policy sync fail static when the agent dies mid-push', { timeout: 60_000 }, () => {
  const dir = tempDir('failstatic');
  after(() => dir.cleanup());

  test('a view line cut by the agent dying, then an empty, a stale, a foreign and a malformed snapshot from the next agent: the last complete view stays in force with its identity bindings, and the link installs the next good view', async () => {
    const socketPath = join(dir.path, 'agent.sock');
    const full = world(IPS, CALICO);
    // What the agent was pushing when it died: a view in which api no longer appears.
    const without = world({ ...IPS, api: '10.246.0.99' }, CALICO).replace(
      /apiVersion: v1\nkind: Pod\nmetadata: \{name: api[^]*?---\n/,
      '',
    );
    const streams: ServerResponse[] = [];
    const server = createServer((req, res) => {
      if (!req.url?.startsWith(`${POLICYSYNC_PREFIX}/${ENDPOINT}?`)) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.flushHeaders();
      streams.push(res);
    });
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
    const lines: string[] = [];
    const link = new AgentLink({
      socketPath,
      endpoint: ENDPOINT,
      ports: [DB_PORT],
      backoffMinMs: 20,
      backoffMaxMs: 50,
      say: (l) => lines.push(l),
    });
    link.start();
    try {
      await until(() => streams.length === 1, 'the first stream');
      streams[0]?.write(line({ type: 'snapshot', version: 1, view: view(full) }));
      const holder = await link.firstView();
      const allowed = (): string =>
        holder.current.decideInboundConnection({
          sourceIp: IPS.api,
          principal: spiffe('api'),
          port: DB_PORT,
        }).verdict;
      assert.equal(holder.current.version, 1);
      assert.equal(holder.current.identityAt(IPS.api), spiffe('api'));
      assert.equal(allowed(), 'allow');

      // The agent dies in the middle of the next view's line: half of it, then the socket goes.
      const next = line({ type: 'update', version: 2, view: view(without) });
      const s0 = streams[0];
      assert.ok(s0);
      await new Promise<void>((resolve) =>
        s0.write(next.slice(0, next.length >> 1), () => resolve()),
      );
      s0.socket?.destroy();
      await until(() => link.status().reconnects >= 1 && streams.length === 2, 'the reconnection');
      assert.equal(holder.current.version, 1, 'the cut line was not applied');
      assert.equal(holder.current.identityAt(IPS.api), spiffe('api'), 'the binding stays');
      assert.equal(allowed(), 'allow');

      // The next agent: an empty snapshot (a view that cannot be this endpoint's), then the
      // version in force again (a resync: nothing to do), then another endpoint's view.
      const s1 = streams[1];
      assert.ok(s1);
      s1.write(
        line({
          type: 'snapshot',
          version: 3,
          view: { ...view(full), resources: [] },
        }),
      );
      s1.write(line({ type: 'snapshot', version: 1, view: view(full) }));
      s1.write(line({ type: 'update', version: 4, view: view(full, `${NS}/api`) }));
      await until(() => link.status().refusedViews >= 2, 'the refusals');
      assert.equal(holder.current.version, 1, 'empty and foreign views refused');
      assert.equal(allowed(), 'allow');
      assert.ok(
        lines.some((l) => /view 3 refused/.test(l)),
        lines.join('\n'),
      );

      // A malformed line drops the stream (reconnect), still without touching the view.
      s1.write('{"type":"update","version":5,"view":{"endpoint":1}}\n');
      await until(() => streams.length === 3, 'the reconnection after a malformed line');
      assert.equal(holder.current.version, 1);

      // The link is alive: the next complete view is installed.
      streams[2]?.write(line({ type: 'snapshot', version: 6, view: view(without) }));
      await until(() => holder.current.version === 6, 'view 6');
      assert.equal(holder.current.identityAt(IPS.api), undefined);
      assert.equal(
        allowed(),
        'deny',
        'the agent removed api: its source address binds no identity',
      );
    } finally {
      await link.stop();
      for (const s of streams) s.socket?.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});
