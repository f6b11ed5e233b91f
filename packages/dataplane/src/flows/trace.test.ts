// The trace grammar: real `nft monitor trace` lines become observations with the deciding rule,
// every verdict comment the renderer writes reads back as a known provenance, and hostile lines
// are ignored without growing state.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import type { FlowObservation } from './observation.js';
import {
  directionOfChain,
  parseTraceLine,
  provenanceFromComment,
  TraceAssembler,
} from './trace.js';

// Lines as nft 1.0.6 prints them (captured in a namespace), table renamed to the renderer's.
const REFUSED = [
  'trace id b2f7a96c inet palisade forward_egress packet: iif "plh1" oif "plh2" ether saddr 2a:1b:3c:4d:5e:6f ether daddr 6a:5b:4c:3d:2e:1f ip saddr 10.7.0.2 ip daddr 10.7.0.3 ip dscp cs0 ip ecn not-ect ip ttl 63 ip id 17881 ip protocol tcp ip length 60 tcp sport 49262 tcp dport 5432 tcp flags == syn tcp window 64240 ',
  'trace id b2f7a96c inet palisade forward_egress rule counter packets 3 bytes 180 iifname vmap @workload_from comment "egress of the sending workload" (verdict goto weg-shop_web-1a2b3c4d)',
  'trace id b2f7a96c inet palisade weg-shop_web-1a2b3c4d rule counter packets 0 bytes 0 accept comment "no policy selects shop/web" (verdict accept)',
  'trace id b2f7a96c inet palisade forward_ingress packet: iif "plh1" oif "plh2" ip saddr 10.7.0.2 ip daddr 10.7.0.3 ip protocol tcp ip length 60 tcp sport 49262 tcp dport 5432 tcp flags == syn',
  'trace id b2f7a96c inet palisade win-db_pg-9f8e7d6c rule counter packets 0 bytes 0 jump tin-security-0a0b0c0d comment "tier security: security.lockdown" (verdict jump tin-security-0a0b0c0d)',
  'trace id b2f7a96c inet palisade tin-security-0a0b0c0d rule counter packets 0 bytes 0 drop comment "default deny of tier security" (verdict drop)',
];

function collect(lines: readonly string[], table = 'palisade'): FlowObservation[] {
  const out: FlowObservation[] = [];
  const a = new TraceAssembler(
    table,
    (o) => out.push(o),
    () => 1000,
  );
  for (const l of lines) a.line(l);
  return out;
}

test('a forwarded connection yields the egress decision of the sender and the ingress decision of the receiver', () => {
  const got = collect(REFUSED);
  assert.deepEqual(got, [
    {
      timeMs: 1000,
      point: 'kernel',
      direction: 'egress',
      srcIp: '10.7.0.2',
      dstIp: '10.7.0.3',
      protocol: 'TCP',
      srcPort: 49262,
      dstPort: 5432,
      verdict: 'allow',
      provenance: { kind: 'no-policy', reason: 'no policy selects shop/web' },
      packets: 1,
      bytes: 60,
    },
    {
      timeMs: 1000,
      point: 'kernel',
      direction: 'ingress',
      srcIp: '10.7.0.2',
      dstIp: '10.7.0.3',
      protocol: 'TCP',
      srcPort: 49262,
      dstPort: 5432,
      verdict: 'deny',
      provenance: {
        kind: 'tier-default',
        tier: 'security',
        reason: 'default deny of tier security',
      },
      packets: 1,
      bytes: 60,
    },
  ]);
});

test("another table's trace lines are not this table's decisions", () => {
  assert.deepEqual(collect(REFUSED, 'other'), []);
});

test('IPv6 and UDP packet lines are read', () => {
  const p = parseTraceLine(
    'trace id 00ff inet palisade output packet: oif "plh3" ip6 saddr fd00::1 ip6 daddr fd00::2 ip6 dscp cs0 ip6 ecn not-ect ip6 hoplimit 64 ip6 flowlabel 0 ip6 nexthdr udp ip6 length 40 udp sport 5353 udp dport 53 udp length 40',
  );
  assert.deepEqual(p, {
    kind: 'packet',
    id: '00ff',
    table: 'palisade',
    chain: 'output',
    packet: {
      srcIp: 'fd00::1',
      dstIp: 'fd00::2',
      protocol: 'UDP',
      srcPort: 5353,
      dstPort: 53,
      length: 40,
    },
  });
});

test('the rule comment grammar: tier/policy/rule N (policy names may hold a slash), defaults, profiles, guards', () => {
  assert.deepEqual(provenanceFromComment('default/shop/api-from-frontend/rule 2'), {
    kind: 'rule',
    tier: 'default',
    policy: 'shop/api-from-frontend',
    rule: 2,
    reason: 'default/shop/api-from-frontend/rule 2',
  });
  assert.equal(provenanceFromComment('profile kns.shop/rule 0').kind, 'profile');
  assert.equal(
    provenanceFromComment('no rule of the profiles of shop/db matched').kind,
    'profile-default',
  );
  assert.equal(provenanceFromComment('source is not an address of shop/frontend').kind, 'guard');
  assert.equal(provenanceFromComment('host endpoint node1-eth0: default deny').kind, 'no-policy');
  assert.equal(provenanceFromComment(undefined).kind, 'unmanaged');
  assert.equal(directionOfChain('tin-x-00000000'), 'ingress');
  assert.equal(directionOfChain('peg-x-00000000'), 'egress');
  assert.equal(directionOfChain('somewhere'), undefined);
});

test("every accept or drop comment of the renderer's golden rulesets reads back as a known provenance", () => {
  const known = new Set([
    'established and related: decided at the first packet',
    'IPv6 neighbour discovery with the host',
  ]);
  let checked = 0;
  for (const f of ['tiers.nft', 'no-policy.nft']) {
    const text = readFileSync(new URL(`../nft/testdata/${f}`, import.meta.url), 'utf8');
    for (const m of text.matchAll(/ (?:accept|drop) comment "([^"]*)"/g)) {
      const c = m[1] ?? '';
      if (known.has(c)) continue;
      checked++;
      assert.notEqual(provenanceFromComment(c).kind, 'unmanaged', c);
    }
  }
  assert.ok(checked > 20, `only ${checked} comments`);
});

test('hostile lines are ignored, and pending traces stay bounded', () => {
  const out: FlowObservation[] = [];
  const a = new TraceAssembler('palisade', (o) => out.push(o), Date.now, 100);
  for (let i = 0; i < 10_000; i++)
    a.line(
      `trace id ${i.toString(16)} inet palisade forward_egress packet: ip saddr 10.0.0.1 ip daddr 10.0.0.2 ip protocol tcp ip length 60 tcp sport 1 tcp dport 2`,
    );
  for (const l of [
    '',
    'x'.repeat(100_000),
    'trace id zz inet palisade',
    'trace id 1 inet pal"isade x rule y (verdict accept)',
    '\u0000trace',
  ])
    a.line(l);
  a.line(
    'trace id ffffff inet palisade tin-a-0 rule drop comment "default deny of tier a" (verdict drop)',
  );
  assert.deepEqual(out, []);
  assert.equal(a.orphans, 1);
  assert.equal(
    parseTraceLine('trace id 1 inet palisade tin-a-0 rule drop (verdict drop)').kind,
    'rule',
  );
});

test('a rule added after the monitor started (printed as an unknown handle) is named by the comment listed for its handle', () => {
  const out: FlowObservation[] = [];
  const a = new TraceAssembler(
    'palisade',
    (o) => out.push(o),
    () => 2000,
  );
  let listed = new Map<string, string | null>();
  let refreshes = 0;
  a.comments = {
    comment: (chain, handle) => listed.get(`${chain}#${handle}`),
    refresh: () => void refreshes++,
  };
  const lines = [
    REFUSED[0] ?? '',
    'trace id b2f7a96c inet palisade weg-shop_web-1a2b3c4d unknown rule handle 37 (verdict accept)',
    REFUSED[3] ?? '',
    'trace id b2f7a96c inet palisade tin-security-0a0b0c0d unknown rule handle 52 (verdict drop)',
  ];
  for (const l of lines) a.line(l);
  // Not known yet: held, and a listing asked for.
  assert.equal(out.length, 0);
  assert.equal(a.heldDecisions, 2);
  assert.ok(refreshes >= 1);
  listed = new Map([
    ['weg-shop_web-1a2b3c4d#37', 'no policy selects shop/web'],
    // handle 52 is gone from the table by the time it is listed: counted, not guessed
  ]);
  a.replay();
  assert.equal(out.length, 1);
  assert.deepEqual(out[0]?.provenance, { kind: 'no-policy', reason: 'no policy selects shop/web' });
  assert.equal(out[0]?.timeMs, 2000);
  assert.equal(a.orphans, 1);
  // Once listed, later traces of the same rule resolve at once.
  a.line(REFUSED[0]?.replace('b2f7a96c', 'c0ffee01') ?? '');
  a.line(
    'trace id c0ffee01 inet palisade weg-shop_web-1a2b3c4d unknown rule handle 37 (verdict accept)',
  );
  assert.equal(out.length, 2);
  assert.equal(a.heldDecisions, 0);
});
