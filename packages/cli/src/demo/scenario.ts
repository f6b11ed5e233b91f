// The story the live demo plays, check by check, in the order of the source documents: a wide
// open cluster, the seeds' policies, bookinfo's legitimate calls, the attacker (plain, with a
// stolen certificate, with copied labels), the L7 rules, PCI isolation, the zone-based "firewall
// change", tiers and team permissions, the agent's death, and the removal of the policies.
// Owns: what is checked and what outcome is expected. Must never: decide an outcome from
// anything but an observation of real traffic or a real API answer.

import type { DemoApi } from './api.js';
import { short } from './api.js';
import type { Observation, Probes, Verdict } from './probes.js';
import { viewsQuiet } from './sidecars.js';
import type { Sidecar, Svid } from './sidecars.js';
import type { Topology } from './topology.js';
import { POD_PORT, readExample } from './topology.js';

export interface Check {
  readonly name: string;
  readonly expected: 'allow' | 'deny';
  readonly observed: Verdict;
  readonly enforcedBy: string;
  readonly provenance: Observation['provenance'] & { readonly api?: string };
  readonly pass: boolean;
  readonly detail: string;
  /** For the firewall change: milliseconds from the write to the first successful call. */
  readonly measuredMs?: number;
}

export const POLICY_FILES = [
  'policies/10-tiers.yaml',
  'policies/20-security.yaml',
  'policies/30-default-deny.yaml',
  'policies/40-bookinfo.yaml',
  'policies/50-bank.yaml',
];

export interface ScenarioContext {
  readonly topo: Topology;
  readonly probes: Probes;
  readonly sidecars: readonly Sidecar[];
  /** The SVID the attacker stole from reviews v2 (its key and certificate). */
  readonly stolen: Svid;
  readonly say: (line: string) => void;
  readonly restartAgent: () => Promise<void>;
}

function check(
  name: string,
  expected: 'allow' | 'deny',
  o: Observation,
  extra?: Partial<Check>,
): Check {
  return {
    name,
    expected,
    observed: o.observed,
    enforcedBy: o.enforcedBy,
    provenance: o.provenance,
    detail: o.detail,
    pass: o.observed === expected,
    ...extra,
  };
}

/** Combines several observations of one check: all must match `expected`. */
function all(
  name: string,
  expected: 'allow' | 'deny',
  obs: readonly { what: string; o: Observation }[],
): Check {
  const bad = obs.find((x) => x.o.observed !== expected);
  const points = [...new Set(obs.map((x) => x.o.enforcedBy))];
  const kernel = [...new Set(obs.flatMap((x) => x.o.provenance.kernel))];
  const l7 = [
    ...new Set(obs.map((x) => x.o.provenance.l7).filter((x): x is string => x !== undefined)),
  ];
  return {
    name,
    expected,
    observed: bad ? bad.o.observed : expected,
    enforcedBy: points.join(', '),
    provenance: { kernel, ...(l7.length > 0 ? { l7: l7.join('; ') } : {}) },
    detail: bad
      ? `${bad.what}: ${bad.o.detail}`
      : obs.map((x) => `${x.what} ${x.o.detail}`).join('; '),
    pass: bad === undefined,
  };
}

export async function playScenario(c: ScenarioContext, record: (k: Check) => void): Promise<void> {
  const { topo, probes, say } = c;
  const admin = topo.admin as DemoApi;
  const p = (n: string) => topo.pod(n);
  const settle = async (kernel: boolean) => {
    const rv = await topo.revision();
    if (kernel) await topo.kernelAt(rv);
    await viewsQuiet(c.sidecars, topo.viewsSent);
    return rv;
  };

  // 1. Wide open: no policy yet, as in the zone webinar's first look from the attacking pod.
  say('no policy yet: the attacking pod looks around');
  record(
    check(
      'before any policy, the attacker reaches the restricted zone (ratings): the cluster is wide open',
      'allow',
      await probes.tcp(p('attacker'), p('ratings-v1')),
    ),
  );

  // 2. The seeds' policies, through the API, as the admin.
  const t0 = Date.now();
  for (const f of POLICY_FILES) await admin.apply(readExample(f), f);
  const rv = await settle(true);
  say(
    `applied ${POLICY_FILES.length} policy files from examples/demo/policies (revision ${rv}); kernel and sidecars updated in ${Date.now() - t0} ms`,
  );

  // 3. Legitimate traffic: bookinfo as Istio runs it.
  say('legitimate calls');
  const page = await probes.http(p('istio-ingress'), p('productpage-v1'), {
    path: '/productpage',
    timeoutMs: 20_000,
  });
  record(
    pageCheck(
      'the ingress gateway gets the product page (productpage → details, reviews v1/v2/v3 → ratings)',
      page,
    ),
  );
  record(
    check(
      'productpage reads details',
      'allow',
      await probes.http(p('productpage-v1'), p('details-v1'), { path: '/details/0' }),
    ),
  );
  record(
    all('productpage reads every reviews version', 'allow', [
      {
        what: 'v1',
        o: await probes.http(p('productpage-v1'), p('reviews-v1'), { path: '/reviews/0' }),
      },
      {
        what: 'v2',
        o: await probes.http(p('productpage-v1'), p('reviews-v2'), { path: '/reviews/0' }),
      },
      {
        what: 'v3',
        o: await probes.http(p('productpage-v1'), p('reviews-v3'), { path: '/reviews/0' }),
      },
    ]),
  );
  record(
    all('reviews v2 and v3 (service accounts labelled ratings-reader) GET ratings', 'allow', [
      {
        what: 'v2',
        o: await probes.http(p('reviews-v2'), p('ratings-v1'), { path: '/ratings/0' }),
      },
      {
        what: 'v3',
        o: await probes.http(p('reviews-v3'), p('ratings-v1'), { path: '/ratings/0' }),
      },
    ]),
  );
  record(
    check(
      'PCI to PCI: card-processor calls payments-api',
      'allow',
      await probes.http(p('card-processor'), p('payments-api'), { path: '/charge' }),
    ),
  );
  record(
    check(
      'trusted zone to restricted zone with a policy: summary reads the bank database',
      'allow',
      await probes.http(p('summary'), p('database'), { path: '/accounts' }),
    ),
  );

  // 4. The attacker.
  say('the attacker');
  const targets = topo.pods.filter((x) => x.spec.name !== 'attacker');
  const tries: { what: string; o: Observation }[] = [];
  for (const t of targets) tries.push({ what: t.ref, o: await probes.tcp(p('attacker'), t) });
  record(all(`the attacker pod reaches none of the ${targets.length} other pods`, 'deny', tries));
  const tls = { cert: `${c.stolen.certPem}${c.stolen.chainPem}`, key: c.stolen.keyPem };
  record(
    check(
      'the attacker presents the certificate stolen from reviews v2 to ratings: wrong network identity',
      'deny',
      await probes.http(p('attacker'), p('ratings-v1'), {
        path: '/ratings/0',
        tls,
        timeoutMs: 500,
      }),
    ),
  );
  record(
    check(
      "the stolen certificate from a pod the kernel lets through (productpage's labels) is refused at L7",
      'deny',
      await probes.http(p('productpage-rogue'), p('details-v1'), { path: '/details/0', tls }),
    ),
  );
  record(
    check(
      "a pod with productpage's labels but another service account gets 403 from details",
      'deny',
      await probes.http(p('productpage-rogue'), p('details-v1'), { path: '/details/0' }),
    ),
  );

  // 5. L7 rules and the kernel's share of them.
  say('L7 rules');
  record(
    check(
      'POST to ratings from reviews v2 (a ratings reader) gets 403',
      'deny',
      await probes.http(p('reviews-v2'), p('ratings-v1'), { method: 'POST', path: '/ratings/0' }),
    ),
  );
  record(
    check(
      'reviews v1 (not a ratings reader) cannot reach ratings: network identity in the kernel',
      'deny',
      await probes.tcp(p('reviews-v1'), p('ratings-v1')),
    ),
  );
  record(
    check(
      'the DMZ (productpage) cannot reach the restricted zone (ratings) directly',
      'deny',
      await probes.tcp(p('productpage-v1'), p('ratings-v1')),
    ),
  );
  record(
    check(
      'PCI isolation: productpage cannot reach payments-api',
      'deny',
      await probes.tcp(p('productpage-v1'), p('payments-api')),
    ),
  );
  record(
    check(
      'PCI isolation: card-processor cannot send to a non-PCI pod (details)',
      'deny',
      await probes.tcp(p('card-processor'), p('details-v1')),
    ),
  );

  // 6. The zone webinar's firewall change.
  say('the bank-info "firewall change"');
  record(
    check(
      'before the firewall change, bank-info cannot reach the database',
      'deny',
      await probes.tcp(p('bank-info'), p('database')),
    ),
  );
  record(await firewallChange(c));

  // 7. Tiers and team permissions.
  say('the platform team');
  record(await platformTeam(c));

  // 8. The agent dies.
  say('the agent is killed');
  // Killed at rest: the platform team's last write is in the kernel and the views.
  await settle(true);
  const rules = await probes.kernel.ruleCount();
  await topo.agent?.kill();
  const afterKill = await probes.tcp(p('attacker'), p('productpage-v1'));
  record(
    check(
      `with the agent killed (SIGKILL), the attacker is still refused (${rules} rules stay in the kernel)`,
      'deny',
      afterKill,
    ),
  );
  // Once seen in CI as a 403 from ratings: the platform team's policy (then without its Pass
  // rule) ended in its tier's implicit deny for every caller of the restricted zone, and the agent
  // was killed before the view without it reached ratings' sidecar, which rightly kept enforcing
  // the view it had. The example now passes other traffic on, and the wait before the kill
  // (settle) checks that every sidecar runs the last view the agent sent it.
  const afterKillPage = pageCheck(
    'with the agent killed, the product page still renders',
    await probes.http(p('istio-ingress'), p('productpage-v1'), {
      path: '/productpage',
      timeoutMs: 20_000,
    }),
  );
  record(afterKillPage);
  await c.restartAgent();
  await topo.until(
    'every sidecar is linked to the new agent',
    () => c.sidecars.every((s) => s.linked),
    30_000,
  );
  say('agent restarted: it resynced from the API, and every sidecar is linked to it again');

  // 9. Remove every policy: traffic flows again.
  say('removing the policies');
  await removePolicies(admin);
  await settle(true);
  record(
    all(
      'with the policies removed, traffic flows again (the attacker reaches ratings, sleep reads it)',
      'allow',
      [
        { what: 'attacker → ratings', o: await probes.tcp(p('attacker'), p('ratings-v1')) },
        {
          what: 'sleep → ratings',
          o: await probes.http(p('sleep'), p('ratings-v1'), { path: '/ratings/0' }),
        },
      ],
    ),
  );
}

/** The page check: allowed, and every hop behind productpage answered. */
function pageCheck(name: string, o: Observation): Check {
  if (o.observed !== 'allow') return check(name, 'allow', o);
  let problems: string[] = [];
  try {
    const b = JSON.parse(o.body ?? '{}') as {
      details?: { status?: number };
      reviews?: Record<
        string,
        { status?: number; error?: string; body?: { ratings?: { status?: number } } }
      >;
    };
    if (b.details?.status !== 200) problems.push(`details ${b.details?.status ?? 'no answer'}`);
    for (const v of ['v1', 'v2', 'v3']) {
      const r = b.reviews?.[v];
      if (r?.status !== 200)
        problems.push(`reviews ${v} ${r?.status ?? `no answer (${r?.error ?? '?'})`}`);
      else if (v !== 'v1' && r.body?.ratings?.status !== 200)
        problems.push(`ratings from reviews ${v} ${r.body?.ratings?.status ?? 'no answer'}`);
    }
  } catch {
    problems = ['the page is not JSON'];
  }
  return check(
    name,
    'allow',
    problems.length
      ? { ...o, observed: 'deny', detail: problems.join(', ') }
      : {
          ...o,
          detail: `${o.detail}; details, reviews v1/v2/v3 and ratings (v2, v3) all answered 200`,
        },
  );
}

async function firewallChange(c: ScenarioContext): Promise<Check> {
  const { topo } = c;
  const admin = topo.admin as DemoApi;
  const from = topo.pod('bank-info');
  const to = topo.pod('database');
  const polling = from.ask(
    {
      op: 'poll',
      host: to.ip,
      port: POD_PORT,
      url: `http://${to.ip}:${POD_PORT}/accounts`,
      deadlineMs: 6000,
    },
    10_000,
  );
  await new Promise((r) => setTimeout(r, 200)); // the poll is running: the "before" state is observed
  const written = Date.now();
  await admin.apply(readExample('changes/firewall-change.yaml'), 'changes/firewall-change.yaml');
  const r = await polling;
  const ok = r.ok === true;
  const ms = ok ? Number(r.okAt) - written : undefined;
  const tcpMs = r.tcpAt !== undefined ? Number(r.tcpAt) - written : undefined;
  const audit = (await admin.must('GET', '/api/v1/audit?name=database-from-bank-info')) as {
    entries: {
      seq: number;
      time: string;
      verb: string;
      outcome: string;
      principal?: { name: string };
    }[];
  };
  const entry = audit.entries.find((e) => e.outcome === 'allowed');
  const fast = ms !== undefined && ms <= 1000;
  const confirm = await c.probes.http(from, to, { path: '/accounts' });
  return {
    name: 'the bank-info "firewall change" takes effect within 1 s and is in the audit log',
    expected: 'allow',
    observed: ok && fast && entry !== undefined && confirm.observed === 'allow' ? 'allow' : 'deny',
    enforcedBy: confirm.enforcedBy,
    provenance: {
      ...confirm.provenance,
      api: entry
        ? `audit entry #${entry.seq} ${entry.verb} by ${entry.principal?.name ?? '?'} at ${entry.time}`
        : 'no audit entry found',
    },
    detail: ok
      ? `bank-info got through ${ms} ms after the write (kernel let it through after ${tcpMs ?? '?'} ms, ${String(r.attempts)} attempts)`
      : `no success within the deadline (${String(r.error)})`,
    pass: ok && fast && entry !== undefined && confirm.observed === 'allow',
    ...(ms !== undefined ? { measuredMs: ms } : {}),
  };
}

async function platformTeam(c: ScenarioContext): Promise<Check> {
  const { topo } = c;
  const admin = topo.admin as DemoApi;
  await admin.apply(readExample('access/platform-team.yaml'), 'access/platform-team.yaml');
  const t = (await admin.must('POST', '/api/v1/tokens', { user: 'platform-team' })) as {
    token: string;
  };
  const { DemoApi: Api } = await import('./api.js');
  const platform = new Api(admin.server, t.token, topo.ca, 'platform-team');
  const attempt = await platform.call(
    'POST',
    '/api/v1/apply',
    readExample('changes/platform-override-attempt.yaml'),
    'application/yaml',
  );
  const audit = (await admin.must('GET', '/api/v1/audit?user=platform-team&outcome=refused')) as {
    entries: { seq: number; status: number; code?: string }[];
  };
  const refusal = audit.entries.at(-1);
  // Its own tier is writable, and cannot override the security tier either.
  const own = await platform.call(
    'POST',
    '/api/v1/apply',
    readExample('changes/platform-tier-allow.yaml'),
    'application/yaml',
  );
  const rv = await topo.revision();
  await topo.kernelAt(rv);
  const still = await c.probes.tcp(topo.pod('attacker'), topo.pod('ratings-v1'));
  await platform.call(
    'DELETE',
    '/api/v1/projectcalico.org/GlobalNetworkPolicy/platform.allow-attacker',
  );
  const refused = attempt.status === 403;
  const ownOk = own.status === 200 || own.status === 201;
  const pass = refused && refusal !== undefined && ownOk && still.observed === 'deny';
  return {
    name: 'a platform-team token cannot override the security tier (refused by the API, audited; its own tier cannot either)',
    expected: 'deny',
    observed: pass ? 'deny' : refused ? 'error' : 'allow',
    enforcedBy: `API (RBAC by tier) and ${still.enforcedBy}`,
    provenance: {
      kernel: still.provenance.kernel,
      api: `HTTP ${attempt.status} ${short((attempt.body as { code?: string } | undefined)?.code ?? attempt.body)}; ${refusal ? `audit entry #${refusal.seq} (refused, ${refusal.code ?? refusal.status})` : 'no audit entry'}`,
    },
    detail: `security-tier write: HTTP ${attempt.status}; platform-tier allow: HTTP ${own.status}, then attacker → ratings ${still.observed} (${still.detail})`,
    pass,
  };
}

const POLICY_KINDS: readonly { path: string; namespaced: boolean }[] = [
  { path: 'projectcalico.org/GlobalNetworkPolicy', namespaced: false },
  { path: 'projectcalico.org/NetworkPolicy', namespaced: true },
  { path: 'networking.k8s.io/NetworkPolicy', namespaced: true },
  { path: 'security.istio.io/AuthorizationPolicy', namespaced: true },
];

export async function removePolicies(admin: DemoApi): Promise<number> {
  let n = 0;
  for (const k of POLICY_KINDS) {
    const list = (await admin.must('GET', `/api/v1/${k.path}`)) as {
      items?: { metadata: { name: string; namespace?: string } }[];
    };
    for (const o of list.items ?? []) {
      const at = k.namespaced
        ? `${o.metadata.namespace ?? 'default'}/${o.metadata.name}`
        : o.metadata.name;
      await admin.must('DELETE', `/api/v1/${k.path}/${at}`);
      n += 1;
    }
  }
  return n;
}
