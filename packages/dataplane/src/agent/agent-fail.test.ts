// The agent's failure paths with a real API server and a fake nft (STYLE 8): a failed kernel
// transaction is reported and leaves the applied revision where it was (never a partial
// ruleset), and it is retried until nft works again.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runServer } from '@palisade/controlplane';
import type { RunningServer } from '@palisade/controlplane';
import { FakeNft } from '../nft/fake.js';
import { Agent } from './agent.js';
import { ApiClient } from './api-client.js';

async function until(what: string, f: () => boolean, ms = 10_000) {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('agent failure paths', { timeout: 30_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), `palisade-agentfail-${process.pid}-`));
  let server: RunningServer;
  let agent: Agent;
  let admin: ApiClient;
  const fake = new FakeNft();

  before(async () => {
    server = await runServer({
      listen: '127.0.0.1:0',
      dataDir: dir,
      store: 'memory:',
      insecurePlaintext: true,
      rateLimit: false,
      log: () => undefined,
      say: () => undefined,
    });
    const token = readFileSync(join(dir, 'admin.token'), 'utf8').trim();
    admin = new ApiClient({ server: server.url, token });
    agent = new Agent({
      server: server.url,
      token,
      node: 'n1',
      runner: fake.runner,
      resyncMs: 0,
      retryMs: 100,
    });
    agent.start();
  });
  after(async () => {
    await agent?.stop();
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const wep = (name: string, ip: string) =>
    admin.call('POST', '/api/v1/projectcalico.org/WorkloadEndpoint/default', {
      apiVersion: 'projectcalico.org/v3',
      kind: 'WorkloadEndpoint',
      metadata: { name: `n1-k8s-${name}-eth0`, namespace: 'default' },
      spec: { node: 'n1', pod: name, interfaceName: `plf${name}`, ipNetworks: [`${ip}/32`] },
    });

  test('a failed nft transaction is reported and the applied revision stays', async () => {
    await until('first apply', () => agent.status().applies === 1);
    const first = agent.status().appliedRevision;
    assert.ok(first !== undefined);
    fake.failNext = 1000;
    const r = await wep('one', '10.9.0.1');
    assert.equal(r.status, 201, JSON.stringify(r.body));
    await until('failure reported', () =>
      agent.status().errors.some((e) => e.message.startsWith('apply failed')),
    );
    assert.equal(agent.status().appliedRevision, first);
    assert.equal(agent.status().applies, 1);

    // Once nft works again the failed apply is retried without another change.
    fake.failNext = 0;
    const rv1 = (r.body as { metadata: { resourceVersion: string } }).metadata.resourceVersion;
    await until('retried', () => agent.status().appliedRevision === rv1);

    const r2 = await wep('two', '10.9.0.2');
    assert.equal(r2.status, 201);
    const rv = (r2.body as { metadata: { resourceVersion: string } }).metadata.resourceVersion;
    await until('applied again', () => agent.status().appliedRevision === rv);
    assert.equal(agent.status().connected, true);
    assert.equal(agent.status().localEndpoints, 2);
    assert.ok(agent.status().lastSync instanceof Date);
  });
});
