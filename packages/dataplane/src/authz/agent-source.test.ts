import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { endpointSocketPath } from '../agent-socket/protocol.js';
import { FakeNft } from '../nft/fake.js';
import { SyncWorld, until } from '../sidecar/test-sync-fixture.js';
import { loopbackPrefix } from '../sidecar/test-fixtures.js';
import { L7FlowReporter } from '../flows/l7-reporter.js';
import { AccessLog } from '../sidecar/access-log.js';
import { AgentSource } from './agent-source.js';
import { AuthzServer } from './server.js';
import { RPC_CODE } from './proto.js';
import { checkClient, checkRequest, metadataField } from './test-client.js';
import type { CheckClient } from './test-client.js';

const NODE = `authz-node-${process.pid}`;
const SA = (s: string): string => `spiffe://cluster.local/ns/default/sa/${s}`;

describe(
  "authz-server fed by the agent's policy sync (real API server and agent)",
  { timeout: 120_000 },
  () => {
    const dir = mkdtempSync(join(tmpdir(), `palisade-authz-agent-${process.pid}-`));
    const socketDir = join(dir, 'endpoints');
    const world = new SyncWorld(join(dir, 'server'), NODE, socketDir);
    const prefix = loopbackPrefix();
    const ip = { ratings: `${prefix}.2`, reviews: `${prefix}.3` };
    const sock = endpointSocketPath(socketDir, 'default', 'ratings-v1');
    let server: AuthzServer;
    let client: CheckClient;
    let reporter: L7FlowReporter;

    before(async () => {
      await world.startServer();
      await world.applyBookinfo([
        { pod: 'default/ratings-v1', ip: ip.ratings, iface: 'lo1' },
        { pod: 'default/reviews-v2', ip: ip.reviews, iface: 'lo2' },
      ]);
      await world.startAgent({ runner: new FakeNft().runner }, undefined, { flows: true });
      await until('the endpoint socket', () => existsSync(sock));
      // As `palisade authz-server --agent-socket` wires it: every decision to the agent.
      const log = new AccessLog(undefined);
      reporter = new L7FlowReporter({ socketPath: sock, endpoint: 'default/ratings-v1' });
      log.onRecord((r) => reporter.record(r));
      server = new AuthzServer({
        log,
        source: new AgentSource({
          socketPath: sock,
          endpoint: 'default/ratings-v1',
          ports: [9080],
          backoffMinMs: 50,
          backoffMaxMs: 300,
        }),
        endpoint: 'default/ratings-v1',
        listener: { kind: 'plaintext' },
      });
      const port = await server.start('127.0.0.1:0');
      client = checkClient(`127.0.0.1:${port}`);
      await until(
        'the first view from the agent',
        () => server.views.status().endpoints.length === 1,
        30_000,
      );
    });
    after(async () => {
      client.close();
      await server?.close(500);
      await world.stop();
      rmSync(dir, { recursive: true, force: true });
    });

    const ask = (method: string, from = ip.reviews, principal = SA('bookinfo-reviews')) =>
      client.check(
        checkRequest({
          sourceIp: from,
          principal,
          destinationIp: ip.ratings,
          port: 9080,
          method,
          path: '/ratings/1',
        }),
      );

    test('decides with the view the agent pushed: reviews may GET ratings, not POST; a stolen certificate is refused', async () => {
      assert.equal((await ask('GET')).status.code, RPC_CODE.OK);
      const post = await ask('POST');
      assert.equal(post.status.code, RPC_CODE.PERMISSION_DENIED);
      assert.equal(metadataField(post, 'policy'), 'default/ratings-readers-get-only');
      const stolen = await ask('GET', `${prefix}.9`);
      assert.equal(metadataField(stolen, 'kind'), 'identity-mismatch');
    });

    test("its decisions reach the agent's flow records over the endpoint socket, named from the agent's view", async () => {
      assert.equal((await ask('POST')).status.code, RPC_CODE.PERMISSION_DENIED);
      await reporter.flush();
      await until(
        'the L7 refusal in a shipped batch',
        () =>
          world.flowBatches.some((b) =>
            b.records.some((r) => r.point === 'l7' && r.verdict === 'deny' && r.method === 'POST'),
          ),
        10_000,
      );
      const r = world.flowBatches
        .flatMap((b) => b.records)
        .find((x) => x.point === 'l7' && x.verdict === 'deny' && x.method === 'POST');
      assert.equal(r?.destination.name, 'ratings-v1');
      assert.equal(r?.destination.ip, ip.ratings);
      assert.equal(r?.source.name, 'reviews-v2');
      assert.equal(r?.source.identity, SA('bookinfo-reviews'));
      assert.equal(r?.provenance.policy, 'default/ratings-readers-get-only');
      assert.equal(r?.path, '/ratings/1');
    });

    test('a policy change applied through the API reaches the server through the agent; the agent going away keeps the last view', async () => {
      const before = server.views.status().endpoints[0]?.version ?? 0;
      await world.apply([world.ratingsPolicy(['GET', 'POST'])]);
      await until(
        'the new view',
        () => (server.views.status().endpoints[0]?.version ?? 0) > before,
        30_000,
      );
      assert.equal((await ask('POST')).status.code, RPC_CODE.OK);
      await world.stopAgent();
      assert.equal(
        (await ask('POST')).status.code,
        RPC_CODE.OK,
        'fail static: the last view still judges',
      );
      assert.equal((await ask('DELETE')).status.code, RPC_CODE.PERMISSION_DENIED);
    });
  },
);
