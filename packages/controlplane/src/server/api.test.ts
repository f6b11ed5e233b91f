// The API handler without a socket (inject): CRUD and optimistic concurrency, the all-or-nothing
// apply, tier-scoped RBAC refused and audited, watch resume and 410, hostile bodies, the audit
// chain, and two servers on one store.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { verifyAudit } from '../audit/audit-log.js';
import { auditEntryKey, AUDIT_HEAD_KEY } from '../resources/keys.js';
import { MemoryStore } from '../store/memory-store.js';
import type { Store } from '../store/store.js';
import { ApiServer } from './api.js';
import { issueToken } from './bootstrap.js';

interface Fixture {
  store: MemoryStore;
  api: ApiServer;
  admin: string;
  viewer: string;
  platform: string;
  node1: string;
  logs: string[];
}

const TIERS = `
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: platform}
spec: {order: 200}
`;

const PLATFORM_ROLE = `
apiVersion: palisade.dev/v1
kind: Role
metadata: {name: platform-team}
rules:
  - verbs: ['*']
    kinds: [GlobalNetworkPolicy, NetworkPolicy]
    tiers: [platform]
  - verbs: [get, list, watch]
    kinds: ['*']
---
apiVersion: palisade.dev/v1
kind: RoleBinding
metadata: {name: platform-team}
subjects: [{kind: Group, name: team-platform}]
roleRef: {kind: Role, name: platform-team}
---
apiVersion: palisade.dev/v1
kind: RoleBinding
metadata: {name: viewers}
subjects: [{kind: User, name: vera}]
roleRef: {kind: Role, name: viewer}
`;

function gnp(name: string, tier: string | undefined, extra = ''): string {
  return `apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: ${name}}
spec:
${tier ? `  tier: ${tier}\n` : ''}  selector: app == 'x'
  ingress: [{action: Allow}]
${extra}`;
}

async function fixture(store = new MemoryStore()): Promise<Fixture> {
  const logs: string[] = [];
  const api = new ApiServer({ store, log: (l) => logs.push(JSON.stringify(l)), rateLimit: false });
  const admin = (await issueToken(store, { kind: 'User', name: 'admin' }, ['system:admins'])).token;
  const viewer = (await issueToken(store, { kind: 'User', name: 'vera' }, [])).token;
  const platform = (await issueToken(store, { kind: 'User', name: 'pat' }, ['team-platform']))
    .token;
  const node1 = (await issueToken(store, { kind: 'Node', name: 'node-1' }, [])).token;
  const r = await api.inject({
    method: 'POST',
    url: '/api/v1/apply',
    token: admin,
    body: TIERS + '---' + PLATFORM_ROLE,
  });
  assert.equal(r.status, 200, r.body);
  return { store, api, admin, viewer, platform, node1, logs };
}

async function apply(f: Fixture, token: string, yaml: string, dryRun = false) {
  return f.api.inject({
    method: 'POST',
    url: `/api/v1/apply${dryRun ? '?dryRun=1' : ''}`,
    token,
    body: yaml,
    headers: { 'content-type': 'application/yaml' },
  });
}

async function refusedEntries(store: Store, user: string) {
  const { queryAudit } = await import('../audit/audit-log.js');
  return (await queryAudit(store, { user, outcome: 'refused' })).length;
}

describe('authentication', () => {
  test('no credential is 401 with a hint', async () => {
    const f = await fixture();
    const r = await f.api.inject({ method: 'GET', url: '/api/v1/projectcalico.org/Tier' });
    assert.equal(r.status, 401);
    const b = r.json() as { code: string; hint: string };
    assert.equal(b.code, 'AUTH_ERR_UNAUTHENTICATED');
    assert.match(b.hint, /token/);
  });

  test('an unknown or malformed token is 401 and never echoed in the log', async () => {
    const f = await fixture();
    const fake = 'pal_' + 'A'.repeat(43);
    for (const t of [fake, 'garbage', f.admin + 'x']) {
      const r = await f.api.inject({
        method: 'GET',
        url: '/api/v1/projectcalico.org/Tier',
        token: t,
      });
      assert.equal(r.status, 401);
      assert.equal((r.json() as { code: string }).code, 'AUTH_ERR_INVALID_TOKEN');
      assert.ok(!r.body.includes(t));
    }
    const all = f.logs.join('\n');
    for (const t of [fake, f.admin, f.viewer])
      assert.ok(!all.includes(t), 'a token reached the log');
  });

  test('an expired token is refused and the attempt audited under its principal', async () => {
    const store = new MemoryStore();
    const f = await fixture(store);
    const old = await issueToken(store, { kind: 'User', name: 'olga' }, ['system:admins'], {
      now: new Date(Date.now() - 7200_000),
      ttlSeconds: 3600,
    });
    const r = await f.api.inject({
      method: 'GET',
      url: '/api/v1/projectcalico.org/Tier',
      token: old.token,
    });
    assert.equal(r.status, 401);
    assert.match((r.json() as { message: string }).message, /expired/);
    assert.equal(await refusedEntries(store, 'olga'), 1);
  });

  test('tokens are stored only as hashes', async () => {
    const f = await fixture();
    const all = await f.store.list('/palisade/');
    const dump = all.items.map((kv) => kv.key + kv.value).join('\n');
    for (const t of [f.admin, f.viewer, f.platform, f.node1]) assert.ok(!dump.includes(t));
  });
});

describe('RBAC: tier-scoped as in Calico, deny by default, refusals audited', () => {
  test('the platform team writes in tier platform and is refused in tier security (refused AND audited)', async () => {
    const f = await fixture();
    assert.equal((await apply(f, f.platform, gnp('platform.allow-x', 'platform'))).status, 200);
    const before = await refusedEntries(f.store, 'pat');
    const r = await apply(f, f.platform, gnp('security.block', 'security'));
    assert.equal(r.status, 403, r.body);
    assert.equal((r.json() as { code: string }).code, 'AUTH_ERR_FORBIDDEN');
    assert.match((r.json() as { message: string }).message, /tier "security"/);
    assert.equal(await refusedEntries(f.store, 'pat'), before + 1);
    const g = await f.api.inject({
      method: 'GET',
      url: '/api/v1/projectcalico.org/GlobalNetworkPolicy/security.block',
      token: f.admin,
    });
    assert.equal(g.status, 404, 'nothing was written');
  });

  test('the platform team cannot change or delete a security-tier policy, nor move one into security', async () => {
    const f = await fixture();
    assert.equal((await apply(f, f.admin, gnp('security.block', 'security'))).status, 200);
    assert.equal((await apply(f, f.platform, gnp('platform.p', 'platform'))).status, 200);
    const put = await f.api.inject({
      method: 'PUT',
      url: '/api/v1/projectcalico.org/GlobalNetworkPolicy/security.block',
      token: f.platform,
      body: gnp('security.block', 'security', '  types: [Ingress]'),
    });
    assert.equal(put.status, 403);
    const del = await f.api.inject({
      method: 'DELETE',
      url: '/api/v1/projectcalico.org/GlobalNetworkPolicy/security.block',
      token: f.platform,
    });
    assert.equal(del.status, 403);
    const move = await apply(f, f.platform, gnp('platform.p', 'security'));
    assert.equal(move.status, 403, 'moving into a tier needs permission on the new tier');
    const moveOut = await apply(f, f.platform, gnp('security.block', 'platform'));
    assert.equal(moveOut.status, 403, 'moving out of a tier needs permission on the old tier');
    const tier = await apply(
      f,
      f.platform,
      'apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: security}\nspec: {order: 1}\n',
    );
    assert.equal(tier.status, 403, 'the tier resource itself is not theirs');
    assert.equal(await refusedEntries(f.store, 'pat'), 5);
  });

  test('a policy without spec.tier is in tier default', async () => {
    const f = await fixture();
    const r = await apply(f, f.platform, gnp('no-tier', undefined));
    assert.equal(r.status, 403);
    assert.match(r.body, /tier \\"default\\"/);
  });

  test('lists are filtered to the tiers a role may read', async () => {
    const f = await fixture();
    await apply(
      f,
      f.admin,
      gnp('security.block', 'security') + '---\n' + gnp('platform.p', 'platform'),
    );
    const tierOnly = await issueToken(f.store, { kind: 'User', name: 'tina' }, ['tier-readers']);
    await apply(
      f,
      f.admin,
      `apiVersion: palisade.dev/v1
kind: Role
metadata: {name: platform-reader}
rules: [{verbs: [list, get], kinds: [GlobalNetworkPolicy], tiers: [platform]}]
---
apiVersion: palisade.dev/v1
kind: RoleBinding
metadata: {name: tier-readers}
subjects: [{kind: Group, name: tier-readers}]
roleRef: {name: platform-reader}
`,
    );
    const r = await f.api.inject({
      method: 'GET',
      url: '/api/v1/projectcalico.org/GlobalNetworkPolicy',
      token: tierOnly.token,
    });
    assert.equal(r.status, 200);
    const names = (r.json() as { items: { metadata: { name: string } }[] }).items.map(
      (i) => i.metadata.name,
    );
    assert.deepEqual(names, ['platform.p']);
  });

  test('the viewer reads but cannot write, and the refusal is audited', async () => {
    const f = await fixture();
    const get = await f.api.inject({
      method: 'GET',
      url: '/api/v1/projectcalico.org/Tier',
      token: f.viewer,
    });
    assert.equal(get.status, 200);
    assert.equal((get.json() as { items: unknown[] }).items.length, 2);
    const w = await apply(f, f.viewer, gnp('x', 'platform'));
    assert.equal(w.status, 403);
    assert.equal(await refusedEntries(f.store, 'vera'), 1);
  });

  test('a principal with no binding is denied everything', async () => {
    const f = await fixture();
    const nobody = await issueToken(f.store, { kind: 'User', name: 'nobody' }, []);
    const r = await f.api.inject({
      method: 'GET',
      url: '/api/v1/projectcalico.org/Tier',
      token: nobody.token,
    });
    assert.equal(r.status, 403);
    const t = await f.api.inject({
      method: 'POST',
      url: '/api/v1/tokens',
      token: nobody.token,
      body: { user: 'nobody', groups: ['system:admins'] },
    });
    assert.equal(t.status, 403, 'no self-promotion through tokens');
  });

  test('a node writes only its own endpoints and reads policy', async () => {
    const f = await fixture();
    const wep = (node: string, name = 'pod-a') => `apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata: {name: ${name}, namespace: prod, labels: {app: a}}
spec: {node: ${node}, pod: ${name}, ipNetworks: [10.0.0.5/32]}
`;
    assert.equal((await apply(f, f.node1, wep('node-1'))).status, 200);
    assert.equal((await apply(f, f.node1, wep('node-2', 'pod-b'))).status, 403);
    assert.equal((await apply(f, f.admin, wep('node-2', 'pod-c'))).status, 200);
    // Taking over another node's endpoint by rewriting spec.node is refused (the old node counts).
    assert.equal((await apply(f, f.node1, wep('node-1', 'pod-c'))).status, 403);
    assert.equal(
      (
        await f.api.inject({
          method: 'DELETE',
          url: '/api/v1/projectcalico.org/WorkloadEndpoint/prod/pod-c',
          token: f.node1,
        })
      ).status,
      403,
    );
    assert.equal((await apply(f, f.node1, gnp('platform.n', 'platform'))).status, 403);
    const read = await f.api.inject({
      method: 'GET',
      url: '/api/v1/projectcalico.org/Tier',
      token: f.node1,
    });
    assert.equal(read.status, 200);
    const roles = await f.api.inject({
      method: 'GET',
      url: '/api/v1/palisade.dev/Role',
      token: f.node1,
    });
    assert.equal(roles.status, 403);
    const sa = await apply(
      f,
      f.node1,
      'apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: s, namespace: prod, labels: {pci: "true"}}\n',
    );
    assert.equal(sa.status, 403, "service-account labels are not the node's to set");
  });

  test('service-account labels change only for those RBAC allows', async () => {
    const f = await fixture();
    await apply(
      f,
      f.admin,
      'apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: pay, namespace: prod}\n',
    );
    const url = '/api/v1/core/ServiceAccount/prod/pay';
    const byPlatform = await f.api.inject({
      method: 'PATCH',
      url,
      token: f.platform,
      body: { metadata: { labels: { pci: 'true' } } },
    });
    assert.equal(byPlatform.status, 403);
    const byAdmin = await f.api.inject({
      method: 'PATCH',
      url,
      token: f.admin,
      body: { metadata: { labels: { pci: 'true' } } },
    });
    assert.equal(byAdmin.status, 200, byAdmin.body);
    assert.deepEqual((byAdmin.json() as { metadata: { labels: unknown } }).metadata.labels, {
      pci: 'true',
    });
  });

  test('"everything" in a tier does not cover tokens or access control', async () => {
    const f = await fixture();
    await apply(
      f,
      f.admin,
      `apiVersion: palisade.dev/v1
kind: Role
metadata: {name: all-in-platform}
rules: [{verbs: ['*'], kinds: ['*'], tiers: [platform]}]
---
apiVersion: palisade.dev/v1
kind: RoleBinding
metadata: {name: all-in-platform}
subjects: [{kind: User, name: wide}]
roleRef: {name: all-in-platform}
`,
    );
    const wide = await issueToken(f.store, { kind: 'User', name: 'wide' }, []);
    const bind = await apply(
      f,
      wide.token,
      `apiVersion: palisade.dev/v1
kind: RoleBinding
metadata: {name: me-admin}
subjects: [{kind: User, name: wide}]
roleRef: {name: admin}
`,
    );
    assert.equal(bind.status, 403);
    const tok = await f.api.inject({
      method: 'POST',
      url: '/api/v1/tokens',
      token: wide.token,
      body: { user: 'x', groups: ['system:admins'] },
    });
    assert.equal(tok.status, 403);
    assert.equal((await apply(f, wide.token, gnp('platform.ok', 'platform'))).status, 200);
  });

  test('a delegated admin cannot grant more than it holds (escalation refused and audited)', async () => {
    const f = await fixture();
    await apply(
      f,
      f.admin,
      `apiVersion: palisade.dev/v1
kind: Role
metadata: {name: platform-lead}
rules:
  - {verbs: ['*'], kinds: [GlobalNetworkPolicy], tiers: [platform]}
  - {verbs: ['*'], kinds: [Role, RoleBinding]}
---
apiVersion: palisade.dev/v1
kind: RoleBinding
metadata: {name: platform-lead}
subjects: [{kind: User, name: lead}]
roleRef: {name: platform-lead}
`,
    );
    const lead = await issueToken(f.store, { kind: 'User', name: 'lead' }, []);
    const ok = await apply(
      f,
      lead.token,
      `apiVersion: palisade.dev/v1
kind: Role
metadata: {name: platform-dev}
rules: [{verbs: [get, create, update], kinds: [GlobalNetworkPolicy], tiers: [platform]}]
---
apiVersion: palisade.dev/v1
kind: RoleBinding
metadata: {name: platform-dev}
subjects: [{kind: User, name: dev}]
roleRef: {name: platform-dev}
`,
    );
    assert.equal(ok.status, 200, ok.body);
    const before = await refusedEntries(f.store, 'lead');
    const toAdmin = await apply(
      f,
      lead.token,
      `apiVersion: palisade.dev/v1
kind: RoleBinding
metadata: {name: dev-admin}
subjects: [{kind: User, name: dev}]
roleRef: {name: admin}
`,
    );
    assert.equal(toAdmin.status, 403);
    assert.match(toAdmin.body, /more than you hold/);
    const security = await apply(
      f,
      lead.token,
      `apiVersion: palisade.dev/v1
kind: Role
metadata: {name: sneaky}
rules: [{verbs: [update], kinds: [GlobalNetworkPolicy], tiers: [security]}]
`,
    );
    assert.equal(security.status, 403);
    const allTiers = await apply(
      f,
      lead.token,
      `apiVersion: palisade.dev/v1
kind: Role
metadata: {name: sneaky}
rules: [{verbs: [update], kinds: [GlobalNetworkPolicy]}]
`,
    );
    assert.equal(allTiers.status, 403, 'all tiers is more than one tier');
    assert.equal(await refusedEntries(f.store, 'lead'), before + 3);
  });

  test('built-in role names cannot be redefined', async () => {
    const f = await fixture();
    const r = await apply(
      f,
      f.admin,
      'apiVersion: palisade.dev/v1\nkind: Role\nmetadata: {name: viewer}\nrules: [{verbs: ["*"], kinds: ["*"]}]\n',
    );
    assert.equal(r.status, 422);
  });
});

describe('optimistic concurrency', () => {
  test('a stale resourceVersion is 409 and changes nothing', async () => {
    const f = await fixture();
    const c = await apply(f, f.admin, gnp('platform.p', 'platform'));
    assert.equal(c.status, 200);
    const url = '/api/v1/projectcalico.org/GlobalNetworkPolicy/platform.p';
    const v1 = (await f.api.inject({ method: 'GET', url, token: f.admin })).json() as {
      metadata: { resourceVersion: string; uid: string };
    };
    const body = (order: string) =>
      gnp('platform.p', 'platform', `  order: ${order}`).replace(
        'metadata: {name: platform.p}',
        `metadata: {name: platform.p, resourceVersion: "${v1.metadata.resourceVersion}"}`,
      );
    const u1 = await f.api.inject({ method: 'PUT', url, token: f.admin, body: body('10') });
    assert.equal(u1.status, 200, u1.body);
    const u2 = await f.api.inject({ method: 'PUT', url, token: f.admin, body: body('20') });
    assert.equal(u2.status, 409);
    assert.equal((u2.json() as { code: string }).code, 'API_ERR_CONFLICT');
    const now = (await f.api.inject({ method: 'GET', url, token: f.admin })).json() as {
      spec: { order: number };
      metadata: { uid: string };
    };
    assert.equal(now.spec.order, 10);
    assert.equal(now.metadata.uid, v1.metadata.uid, 'uid is kept across updates');
    const del = await f.api.inject({
      method: 'DELETE',
      url: `${url}?resourceVersion=${v1.metadata.resourceVersion}`,
      token: f.admin,
    });
    assert.equal(del.status, 409);
  });

  test('concurrent writers with the same resourceVersion: exactly one wins', async () => {
    const f = await fixture();
    await apply(f, f.admin, gnp('platform.p', 'platform'));
    const url = '/api/v1/projectcalico.org/GlobalNetworkPolicy/platform.p';
    const rv = (
      (await f.api.inject({ method: 'GET', url, token: f.admin })).json() as {
        metadata: { resourceVersion: string };
      }
    ).metadata.resourceVersion;
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        f.api.inject({
          method: 'PUT',
          url,
          token: f.admin,
          body: gnp('platform.p', 'platform', `  order: ${i + 1}`).replace(
            'metadata: {name: platform.p}',
            `metadata: {name: platform.p, resourceVersion: "${rv}"}`,
          ),
        }),
      ),
    );
    assert.equal(results.filter((r) => r.status === 200).length, 1);
    assert.equal(results.filter((r) => r.status === 409).length, 7);
    assert.ok((await verifyAudit(f.store)).ok);
  });

  test('concurrent writers without a resourceVersion all succeed, one after the other', async () => {
    const f = await fixture();
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        apply(f, f.admin, gnp('platform.p', 'platform', `  order: ${i + 1}`)),
      ),
    );
    assert.ok(results.every((r) => r.status === 200));
    const audit = await verifyAudit(f.store);
    assert.ok(audit.ok);
  });

  test('an apply naming a stale resourceVersion in one document of many writes nothing', async () => {
    const f = await fixture();
    await apply(f, f.admin, gnp('platform.a', 'platform'));
    await apply(f, f.admin, gnp('platform.a', 'platform', '  order: 2'));
    const before = (await f.store.status()).revision;
    const docs = [
      gnp('platform.b', 'platform'),
      gnp('platform.a', 'platform', '  order: 3').replace(
        'metadata: {name: platform.a}',
        'metadata: {name: platform.a, resourceVersion: "2"}',
      ),
    ];
    const r = await apply(f, f.admin, docs.join('---\n'));
    assert.equal(r.status, 409);
    assert.equal((await f.store.status()).revision, before);
  });

  test('create of an existing object is 409 ALREADY_EXISTS', async () => {
    const f = await fixture();
    const r = await f.api.inject({
      method: 'POST',
      url: '/api/v1/projectcalico.org/Tier',
      token: f.admin,
      body: 'apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata: {name: security}\n',
    });
    assert.equal(r.status, 409);
    assert.equal((r.json() as { code: string }).code, 'API_ERR_ALREADY_EXISTS');
  });
});

describe('apply is all or nothing', () => {
  test('the same resource twice in one apply is refused by name and nothing is written', async () => {
    const f = await fixture();
    const before = (await f.store.status()).revision;
    const r = await apply(
      f,
      f.admin,
      [
        gnp('platform.a', 'platform'),
        gnp('platform.b', 'platform'),
        gnp('platform.a', 'platform'),
      ].join('---\n'),
    );
    assert.equal(r.status, 422, r.body);
    const b = r.json() as { code: string; diagnostics: { message: string; line: number }[] };
    assert.equal(b.code, 'API_ERR_INVALID');
    assert.equal(b.diagnostics.length, 1, JSON.stringify(b.diagnostics));
    assert.match(b.diagnostics[0]?.message ?? '', /platform\.a/);
    assert.equal((await f.store.status()).revision, before, 'nothing was written');
  });

  test('one bad document in 50: nothing written, diagnostics with line and column', async () => {
    const f = await fixture();
    const docs = Array.from({ length: 50 }, (_, i) =>
      i === 37
        ? `apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: bad}\nspec:\n  tier: platform\n  selectr: all()\n`
        : gnp(`platform.p${i}`, 'platform'),
    );
    const before = (await f.store.status()).revision;
    const r = await f.api.inject({
      method: 'POST',
      url: '/api/v1/apply?file=policies.yaml',
      token: f.admin,
      body: docs.join('---\n'),
    });
    assert.equal(r.status, 422);
    const b = r.json() as {
      code: string;
      diagnostics: { code: string; file: string; line: number; column: number; hint?: string }[];
    };
    assert.equal(b.code, 'API_ERR_INVALID');
    assert.equal(b.diagnostics.length, 1);
    const d = b.diagnostics[0];
    assert.equal(d?.code, 'POLICY_ERR_UNKNOWN_FIELD');
    assert.equal(d?.file, 'policies.yaml');
    const text = docs.join('---\n');
    const expectedLine = text.slice(0, text.indexOf('selectr')).split('\n').length;
    assert.equal(d?.line, expectedLine);
    assert.equal(d?.column, 3);
    assert.match(d?.hint ?? '', /selector/);
    assert.equal((await f.store.status()).revision, before, 'the store did not move');
  });

  test('a refused document refuses the whole apply', async () => {
    const f = await fixture();
    const r = await apply(
      f,
      f.platform,
      gnp('platform.a', 'platform') + '---\n' + gnp('security.b', 'security'),
    );
    assert.equal(r.status, 403);
    const g = await f.api.inject({
      method: 'GET',
      url: '/api/v1/projectcalico.org/GlobalNetworkPolicy/platform.a',
      token: f.admin,
    });
    assert.equal(g.status, 404);
  });

  test('apply reports created, configured and unchanged', async () => {
    const f = await fixture();
    const a = await apply(
      f,
      f.admin,
      gnp('platform.a', 'platform') + '---\n' + gnp('platform.b', 'platform'),
    );
    assert.deepEqual(
      (a.json() as { results: { action: string }[] }).results.map((x) => x.action),
      ['created', 'created'],
    );
    const b = await apply(
      f,
      f.admin,
      gnp('platform.a', 'platform') + '---\n' + gnp('platform.b', 'platform', '  order: 5'),
    );
    assert.deepEqual(
      (b.json() as { results: { action: string }[] }).results.map((x) => x.action),
      ['unchanged', 'configured'],
    );
  });
});

describe('hostile input', () => {
  test('invalid JSON and YAML are 422 with diagnostics, not 500', async () => {
    const f = await fixture();
    for (const body of ['{"apiVersion": ', 'a: [\n', '::: - {', '\u0000']) {
      const r = await apply(f, f.admin, body);
      assert.ok(r.status === 422 || r.status === 400, `${r.status} ${r.body}`);
    }
  });

  test('more documents than one transaction holds is 413, nothing written', async () => {
    const f = await fixture();
    const api = new ApiServer({ store: f.store, rateLimit: false, maxApplyDocuments: 20 });
    const r = await api.inject({
      method: 'POST',
      url: '/api/v1/apply',
      token: f.admin,
      body: Array.from({ length: 21 }, (_, i) => gnp(`platform.p${i}`, 'platform')).join('---\n'),
    });
    assert.equal(r.status, 413);
  });

  test('failed authentications are rate limited per address', async () => {
    const store = new MemoryStore();
    const api = new ApiServer({ store });
    const codes = new Set<number>();
    for (let i = 0; i < 30; i++)
      codes.add(
        (
          await api.inject({
            method: 'GET',
            url: '/api/v1/whoami',
            token: 'pal_' + String(i).padStart(43, 'x'),
            remoteAddress: '10.9.9.9',
          })
        ).status,
      );
    assert.ok(codes.has(401) && codes.has(429), [...codes].join(','));
    const other = await api.inject({
      method: 'GET',
      url: '/api/v1/whoami',
      token: 'pal_' + 'y'.repeat(43),
      remoteAddress: '10.9.9.8',
    });
    assert.equal(other.status, 401, 'another address is not affected');
  });

  test('a 9 MiB body is 413', async () => {
    const f = await fixture();
    const r = await apply(f, f.admin, '#'.repeat(9 * 1024 * 1024));
    assert.equal(r.status, 413);
    assert.equal((r.json() as { code: string }).code, 'API_ERR_TOO_LARGE');
  });

  test('deep nesting is refused by the loader limit', async () => {
    const f = await fixture();
    const deep = '['.repeat(5000) + ']'.repeat(5000);
    const r = await apply(
      f,
      f.admin,
      `apiVersion: v1\nkind: Namespace\nmetadata: {name: x, annotations: {a: b}}\nspec: ${deep}\n`,
    );
    assert.equal(r.status, 422);
    // The loader refuses it (its depth limit, or the parser's own stack guard), never a 500.
    assert.match(r.body, /POLICY_ERR_LIMIT_EXCEEDED|POLICY_ERR_YAML_SYNTAX/);
  });

  test('names with path characters are refused in paths and bodies', async () => {
    const f = await fixture();
    for (const p of ['..', '%2e%2e', 'a%2Fb', 'a%00b', 'A', 'x'.repeat(300)]) {
      const r = await f.api.inject({
        method: 'GET',
        url: `/api/v1/projectcalico.org/Tier/${p}`,
        token: f.admin,
      });
      assert.ok(r.status === 400 || r.status === 404, `${p}: ${r.status}`);
      if (r.status === 400)
        assert.equal((r.json() as { code: string }).code, 'API_ERR_INVALID_NAME');
    }
    const r = await f.api.inject({
      method: 'GET',
      url: '/api/v1/projectcalico.org/Tier/%E0%A4%A',
      token: f.admin,
    });
    assert.equal(r.status, 400);
    const wep = await apply(
      f,
      f.admin,
      'apiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata: {name: "../../tokens/x", namespace: prod}\nspec: {}\n',
    );
    assert.equal(wep.status, 422);
    assert.match(wep.body, /API_ERR_INVALID_NAME/);
    const keys = (await f.store.list('/palisade/')).items.map((kv) => kv.key);
    assert.ok(keys.every((k) => !k.includes('..')));
  });

  test('unknown kinds are refused with a suggestion', async () => {
    const f = await fixture();
    const r = await apply(
      f,
      f.admin,
      'apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolcy\nmetadata: {name: x}\n',
    );
    assert.equal(r.status, 422);
    assert.match(r.body, /GlobalNetworkPolicy/);
    const p = await f.api.inject({
      method: 'GET',
      url: '/api/v1/projectcalico.org/Nope',
      token: f.admin,
    });
    assert.equal(p.status, 404);
    assert.equal((p.json() as { code: string }).code, 'API_ERR_UNKNOWN_KIND');
  });

  test('a wrong content type is 415, a wrong method 405', async () => {
    const f = await fixture();
    const r = await f.api.inject({
      method: 'POST',
      url: '/api/v1/apply',
      token: f.admin,
      body: 'x',
      headers: { 'content-type': 'image/png' },
    });
    assert.equal(r.status, 415);
    const m = await f.api.inject({ method: 'DELETE', url: '/api/v1/apply', token: f.admin });
    assert.equal(m.status, 405);
  });

  test('a store that fails mid-request leaves nothing half-written and answers 503', async () => {
    const f = await fixture();
    const before = await f.store.list('/palisade/');
    const failing = new Proxy(f.store, {
      get(target, prop, recv) {
        if (prop === 'txn')
          return () =>
            Promise.reject(Object.assign(new (class extends Error {})('etcd: no leader'), {}));
        return Reflect.get(target, prop, recv) as unknown;
      },
    });
    const { StoreError } = await import('../store/store.js');
    const unavailable = new Proxy(f.store, {
      get(target, prop, recv) {
        if (prop === 'txn')
          return () => Promise.reject(new StoreError('STORE_ERR_UNAVAILABLE', 'no leader'));
        return Reflect.get(target, prop, recv) as unknown;
      },
    });
    const api1 = new ApiServer({ store: unavailable, rateLimit: false });
    const r = await api1.inject({
      method: 'POST',
      url: '/api/v1/apply',
      token: f.admin,
      body: gnp('platform.z', 'platform'),
    });
    assert.equal(r.status, 503);
    assert.equal((r.json() as { code: string }).code, 'API_ERR_UNAVAILABLE');
    const api2 = new ApiServer({ store: failing, rateLimit: false });
    const r2 = await api2.inject({
      method: 'POST',
      url: '/api/v1/apply',
      token: f.admin,
      body: gnp('platform.z', 'platform'),
    });
    assert.equal(r2.status, 500);
    const after = await f.store.list('/palisade/');
    assert.deepEqual(after.items, before.items);
  });

  test('rate limit per principal answers 429 with Retry-After', async () => {
    const store = new MemoryStore();
    const api = new ApiServer({ store, rateLimit: { perSecond: 1, burst: 3 } });
    const t = (await issueToken(store, { kind: 'User', name: 'admin' }, ['system:admins'])).token;
    const codes: number[] = [];
    for (let i = 0; i < 5; i++)
      codes.push((await api.inject({ method: 'GET', url: '/api/v1/whoami', token: t })).status);
    assert.deepEqual(codes, [200, 200, 200, 429, 429]);
    const r = await api.inject({ method: 'GET', url: '/api/v1/whoami', token: t });
    assert.ok(Number(r.headers['retry-after']) >= 1);
  });
});

describe('watch', () => {
  async function readLines(api: ApiServer, url: string, token: string, n: number) {
    const ac = new AbortController();
    const res = await api.handle({
      method: 'GET',
      url,
      headers: { authorization: `Bearer ${token}` },
      body: Buffer.alloc(0),
      remoteAddress: '127.0.0.1',
      signal: ac.signal,
    });
    assert.equal(res.status, 200);
    assert.ok('stream' in res);
    const lines: {
      type: string;
      object: { metadata: { name?: string; resourceVersion: string } };
    }[] = [];
    const it = res.stream[Symbol.asyncIterator]();
    while (lines.length < n) {
      const r = await it.next();
      if (r.done) break;
      lines.push(JSON.parse(r.value) as (typeof lines)[number]);
    }
    ac.abort();
    await it.return?.();
    return lines;
  }

  test('watch resumes from a resourceVersion and delivers ADDED, MODIFIED, DELETED in order', async () => {
    const f = await fixture();
    const l = (
      await f.api.inject({
        method: 'GET',
        url: '/api/v1/projectcalico.org/GlobalNetworkPolicy',
        token: f.admin,
      })
    ).json() as { metadata: { resourceVersion: string } };
    await apply(f, f.admin, gnp('platform.a', 'platform'));
    await apply(f, f.admin, gnp('platform.a', 'platform', '  order: 3'));
    await f.api.inject({
      method: 'DELETE',
      url: '/api/v1/projectcalico.org/GlobalNetworkPolicy/platform.a',
      token: f.admin,
    });
    const lines = await readLines(
      f.api,
      `/api/v1/projectcalico.org/GlobalNetworkPolicy?watch=1&resourceVersion=${l.metadata.resourceVersion}`,
      f.admin,
      4,
    );
    assert.deepEqual(
      lines.map((x) => x.type),
      ['BOOKMARK', 'ADDED', 'MODIFIED', 'DELETED'],
    );
    assert.ok(lines.slice(1).every((x) => x.object.metadata.name === 'platform.a'));
    const revs = lines.slice(1).map((x) => Number(x.object.metadata.resourceVersion));
    assert.deepEqual(
      [...revs].sort((a, b) => a - b),
      revs,
    );
  });

  test('a compacted resourceVersion is 410 Gone: relist', async () => {
    const f = await fixture();
    await apply(f, f.admin, gnp('platform.a', 'platform'));
    await apply(f, f.admin, gnp('platform.a', 'platform', '  order: 3'));
    const s = await f.store.status();
    await f.store.compact(s.revision);
    const r = await f.api.inject({
      method: 'GET',
      url: '/api/v1/projectcalico.org/GlobalNetworkPolicy?watch=1&resourceVersion=2',
      token: f.admin,
    });
    assert.equal(r.status, 410);
    assert.equal((r.json() as { code: string }).code, 'API_ERR_GONE');
  });

  test('the watch is filtered by tier like a list', async () => {
    const f = await fixture();
    const rv = (await f.store.status()).revision;
    await apply(f, f.admin, gnp('security.s', 'security'));
    await apply(f, f.admin, gnp('platform.p', 'platform'));
    const reader = await issueToken(f.store, { kind: 'User', name: 'r' }, ['tier-readers']);
    await apply(
      f,
      f.admin,
      `apiVersion: palisade.dev/v1
kind: Role
metadata: {name: pr}
rules: [{verbs: [watch], kinds: [GlobalNetworkPolicy], tiers: [platform]}]
---
apiVersion: palisade.dev/v1
kind: RoleBinding
metadata: {name: pr}
subjects: [{kind: Group, name: tier-readers}]
roleRef: {name: pr}
`,
    );
    const lines = await readLines(
      f.api,
      `/api/v1/projectcalico.org/GlobalNetworkPolicy?watch=1&resourceVersion=${rv}`,
      reader.token,
      2,
    );
    assert.deepEqual(
      lines.map((x) => [x.type, x.object.metadata.name]),
      [
        ['BOOKMARK', undefined],
        ['ADDED', 'platform.p'],
      ],
    );
  });

  test('two servers on one store serve the same data and the same watches', async () => {
    const f = await fixture();
    const other = new ApiServer({ store: f.store, rateLimit: false });
    const rv = (await f.store.status()).revision;
    const watching = readLines(other, `/api/v1/watch?resourceVersion=${rv}`, f.node1, 3);
    await apply(f, f.admin, gnp('platform.a', 'platform'));
    await apply(f, f.admin, 'apiVersion: v1\nkind: Namespace\nmetadata: {name: prod}\n');
    const lines = await watching;
    assert.deepEqual(
      lines.map((x) => x.object.metadata.name),
      [undefined, 'platform.a', 'prod'],
    );
    const g = await other.inject({
      method: 'GET',
      url: '/api/v1/projectcalico.org/GlobalNetworkPolicy/platform.a',
      token: f.admin,
    });
    assert.equal(g.status, 200);
    // A write on the second server conflicts with a stale version read on the first.
    const rv1 = (g.json() as { metadata: { resourceVersion: string } }).metadata.resourceVersion;
    await other.inject({
      method: 'PATCH',
      url: '/api/v1/projectcalico.org/GlobalNetworkPolicy/platform.a',
      token: f.admin,
      body: { metadata: { labels: { a: 'b' } } },
    });
    const stale = await f.api.inject({
      method: 'PATCH',
      url: '/api/v1/projectcalico.org/GlobalNetworkPolicy/platform.a',
      token: f.admin,
      body: { metadata: { labels: { a: 'c' }, resourceVersion: rv1 } },
    });
    assert.equal(stale.status, 409);
    assert.ok((await verifyAudit(f.store)).ok, 'both servers extend one chain');
  });

  test('a store failure mid-watch ends the stream with an ERROR event', async () => {
    const f = await fixture();
    const { StoreError } = await import('../store/store.js');
    const broken = new Proxy(f.store, {
      get(target, prop, recv) {
        if (prop === 'watch')
          return () =>
            (async function* () {
              await Promise.resolve();
              yield* [];
              throw new StoreError('STORE_ERR_UNAVAILABLE', 'lost the etcd leader');
            })();
        return Reflect.get(target, prop, recv) as unknown;
      },
    });
    const api = new ApiServer({ store: broken, rateLimit: false });
    const lines = await readLines(api, '/api/v1/watch?resourceVersion=1', f.admin, 5);
    assert.deepEqual(
      lines.map((x) => x.type),
      ['BOOKMARK', 'ERROR'],
    );
    assert.equal((lines[1]?.object as unknown as { code: string }).code, 'API_ERR_UNAVAILABLE');
  });

  test('watch heartbeats with bookmarks', async () => {
    const store = new MemoryStore();
    const api = new ApiServer({ store, rateLimit: false, watchHeartbeatMs: 20 });
    const t = (await issueToken(store, { kind: 'User', name: 'admin' }, ['system:admins'])).token;
    const lines = await readLines(api, '/api/v1/watch?resourceVersion=1', t, 3);
    assert.deepEqual(
      lines.map((x) => x.type),
      ['BOOKMARK', 'BOOKMARK', 'BOOKMARK'],
    );
  });
});

describe('audit log', () => {
  test('every write is audited with who, where, what, before and after', async () => {
    const f = await fixture();
    await apply(f, f.admin, gnp('platform.a', 'platform'));
    await f.api.inject({
      method: 'PATCH',
      url: '/api/v1/projectcalico.org/GlobalNetworkPolicy/platform.a',
      token: f.admin,
      body: { metadata: { labels: { x: 'y' } } },
      remoteAddress: '10.1.2.3',
    });
    const r = await f.api.inject({
      method: 'GET',
      url: '/api/v1/audit?name=platform.a',
      token: f.admin,
    });
    const entries = (
      r.json() as {
        entries: {
          verb: string;
          remote: string;
          principal: { name: string; tokenId: string };
          changes: {
            before?: unknown;
            after?: unknown;
            beforeDigest?: string;
            afterDigest?: string;
          }[];
        }[];
      }
    ).entries;
    assert.deepEqual(
      entries.map((e) => e.verb),
      ['apply', 'label'],
    );
    const label = entries[1];
    assert.equal(label?.remote, '10.1.2.3');
    assert.equal(label?.principal.name, 'admin');
    assert.match(label?.principal.tokenId ?? '', /^tok-/);
    assert.ok(label?.changes[0]?.before && label.changes[0].after);
    assert.notEqual(label?.changes[0]?.beforeDigest, label?.changes[0]?.afterDigest);
  });

  test('verify detects an edited, a removed and a reordered entry', async () => {
    for (const tamper of ['edit', 'remove', 'reorder', 'truncate'] as const) {
      const f = await fixture();
      await apply(f, f.admin, gnp('platform.a', 'platform'));
      await apply(f, f.admin, gnp('platform.b', 'platform'));
      await apply(f, f.viewer, gnp('platform.c', 'platform'));
      const ok = await f.api.inject({ method: 'GET', url: '/api/v1/audit/verify', token: f.admin });
      assert.equal((ok.json() as { ok: boolean }).ok, true, tamper);
      const head = JSON.parse((await f.store.get(AUDIT_HEAD_KEY))?.value ?? '{}') as {
        seq: number;
      };
      const k3 = auditEntryKey(3);
      const k4 = auditEntryKey(4);
      const v3 = (await f.store.get(k3))?.value ?? '';
      const v4 = (await f.store.get(k4))?.value ?? '';
      switch (tamper) {
        case 'edit':
          await f.store.txn({
            compares: [],
            success: [
              {
                kind: 'put',
                key: k3,
                value: JSON.stringify({ ...(JSON.parse(v3) as object), remote: '6.6.6.6' }),
              },
            ],
          });
          break;
        case 'remove':
          await f.store.txn({ compares: [], success: [{ kind: 'delete', key: k3 }] });
          break;
        case 'reorder':
          await f.store.txn({
            compares: [],
            success: [
              { kind: 'put', key: k3, value: v4 },
              { kind: 'put', key: k4, value: v3 },
            ],
          });
          break;
        case 'truncate':
          await f.store.txn({
            compares: [],
            success: [{ kind: 'delete', key: auditEntryKey(head.seq) }],
          });
          break;
      }
      const r = await f.api.inject({ method: 'GET', url: '/api/v1/audit/verify', token: f.admin });
      const b = r.json() as { ok: boolean; problems: { problem: string }[] };
      assert.equal(b.ok, false, `${tamper} was not detected`);
      assert.ok(b.problems.length > 0);
    }
  });
});

describe('dry run', () => {
  test('the dry run writes nothing and reports the pairs and ports newly denied with provenance', async () => {
    const f = await fixture();
    await apply(
      f,
      f.admin,
      `apiVersion: v1
kind: Namespace
metadata: {name: prod}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: prod, labels: {app: web}}
spec: {containers: [{name: c, ports: [{containerPort: 8080}]}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: prod, labels: {app: db}}
spec: {containers: [{name: c, ports: [{containerPort: 5432}]}]}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: cache, namespace: prod, labels: {app: cache}}
spec: {containers: [{name: c}]}
status: {podIP: 10.0.0.3}
`,
    );
    const before = (await f.store.status()).revision;
    const r = await apply(
      f,
      f.admin,
      `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-only-web, namespace: prod}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
    - from: [{podSelector: {matchLabels: {app: web}}}]
      ports: [{port: 5432}]
`,
      true,
    );
    assert.equal(r.status, 200, r.body);
    assert.equal((await f.store.status()).revision, before);
    const c = (
      r.json() as {
        dryRun: boolean;
        connectivity: {
          changes: {
            from: string;
            to: string;
            port: number;
            change: string;
            after: { ingress: string };
          }[];
        };
      }
    ).connectivity;
    assert.ok(c.changes.length > 0);
    assert.ok(c.changes.every((x) => x.change === 'newly-denied' && x.to === 'prod/db'));
    assert.ok(c.changes.some((x) => x.from === 'prod/cache' && x.port === 5432));
    assert.ok(
      !c.changes.some((x) => x.from === 'prod/web' && x.port === 5432),
      'web may still reach db:5432',
    );
    assert.ok(
      c.changes.every((x) => x.after.ingress.length > 0),
      'provenance is given',
    );
  });
});

describe('dry run at L7', () => {
  test('the routes of http rules are judged before and after, with provenance', async () => {
    const f = await fixture();
    await apply(
      f,
      f.admin,
      `apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: shop, labels: {app: api}}
spec: {containers: [{name: c, ports: [{containerPort: 8080}]}]}
status: {podIP: 10.0.1.1}
---
apiVersion: v1
kind: Pod
metadata: {name: ui, namespace: shop, labels: {app: ui}}
spec: {containers: [{name: c}]}
status: {podIP: 10.0.1.2}
`,
    );
    const r = await apply(
      f,
      f.admin,
      `apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: api-read-only, namespace: shop}
spec:
  selector: app == 'api'
  ingress:
    - action: Allow
      protocol: TCP
      destination: {ports: [8080]}
      http: {methods: [GET], paths: [{prefix: /items}]}
    - action: Deny
      protocol: TCP
      destination: {ports: [8080]}
      http: {methods: [DELETE], paths: [{prefix: /items}]}
`,
      true,
    );
    assert.equal(r.status, 200, r.body);
    const c = (
      r.json() as {
        connectivity: {
          routes: { method: string }[];
          routeChanges: {
            from: string;
            to: string;
            method: string;
            path: string;
            change: string;
            after: { reason: string };
          }[];
        };
      }
    ).connectivity;
    assert.deepEqual(c.routes.map((x) => x.method).sort(), ['DELETE', 'GET']);
    const del = c.routeChanges.find((x) => x.from === 'shop/ui' && x.method === 'DELETE');
    assert.equal(del?.change, 'newly-denied');
    assert.ok((del?.after.reason.length ?? 0) > 0);
    assert.ok(
      !c.routeChanges.some((x) => x.from === 'shop/ui' && x.method === 'GET'),
      'GET /items stays allowed',
    );
  });
});

describe('discovery', () => {
  test('healthz, readyz, metrics and openapi answer without credentials', async () => {
    const f = await fixture();
    assert.equal((await f.api.inject({ method: 'GET', url: '/healthz' })).status, 200);
    assert.equal((await f.api.inject({ method: 'GET', url: '/readyz' })).status, 200);
    const m = await f.api.inject({ method: 'GET', url: '/metrics' });
    assert.match(
      m.body,
      /palisade_api_requests_total\{route="\/api\/v1\/apply",method="POST",code="200"\} \d+/,
    );
    assert.match(m.body, /palisade_api_apply_seconds_count \d+/);
    const o = (await f.api.inject({ method: 'GET', url: '/openapi.json' })).json() as {
      openapi: string;
      paths: Record<string, unknown>;
    };
    assert.equal(o.openapi, '3.1.0');
    assert.ok(o.paths['/api/v1/projectcalico.org/GlobalNetworkPolicy/{name}']);
    assert.ok(o.paths['/api/v1/core/Pod/{namespace}/{name}']);
  });

  test('readyz is 503 when the store is closed', async () => {
    const store = new MemoryStore();
    const api = new ApiServer({ store });
    await store.close();
    assert.equal((await api.inject({ method: 'GET', url: '/readyz' })).status, 503);
  });
});

describe('Service endpoints for Calico service rules', () => {
  test('EndpointSlice (discovery.k8s.io/v1) and Endpoints (v1) are stored, read back and validated like every kind', async () => {
    const f = await fixture();
    const slice = `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-abc, namespace: prod, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
endpoints: [{addresses: [10.1.2.3], conditions: {ready: true}}]
ports: [{name: pg, port: 5432, protocol: TCP}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: db, namespace: prod}
subsets: [{addresses: [{ip: 10.1.2.3}], ports: [{port: 5432}]}]
`;
    const r = await apply(f, f.admin, slice);
    assert.equal(r.status, 200, r.body);
    const got = await f.api.inject({
      method: 'GET',
      url: '/api/v1/discovery.k8s.io/EndpointSlice/prod/db-abc',
      token: f.viewer,
    });
    assert.equal(got.status, 200, got.body);
    assert.deepEqual((got.json() as { ports: unknown }).ports, [
      { name: 'pg', port: 5432, protocol: 'TCP' },
    ]);
    const eps = await f.api.inject({
      method: 'GET',
      url: '/api/v1/core/Endpoints/prod/db',
      token: f.viewer,
    });
    assert.equal(eps.status, 200, eps.body);
    const bad = await apply(
      f,
      f.admin,
      'apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: x, namespace: prod}\naddressType: IPv4\nendpoints: [{addresses: [not-an-ip]}]\n',
    );
    assert.equal(bad.status, 422, bad.body);
  });
});
