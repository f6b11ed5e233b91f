// The sidecar's side of interception against a scripted agent and proxy: a destination's
// listener is open before any announcement names it, a listener leaves only after an accepted
// announcement without it, application ports are never used for listeners, a refused
// announcement is retried, and a reconnection to the agent announces again.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PolicyView, PolicyViewHolder } from './policy-view.js';
import { InterceptionLink } from './interception.js';
import type { InterceptAnnouncement, InterceptReply } from '../agent-socket/protocol.js';
import { bookinfo } from './test-fixtures.js';
import { until } from './test-sync-fixture.js';

const IPS = {
  'default/productpage-v1': '10.7.0.2',
  'default/reviews-v2': '10.7.0.3',
  'default/ratings-v1': '10.7.0.4',
  'default/details-v1': '10.7.0.5',
};

function view(version: number, ips: Record<string, string>): PolicyView {
  const r = PolicyView.fromResources(bookinfo(ips), 'default/reviews-v2', version);
  if (!r.ok) throw new Error(r.reason);
  return r.view;
}

class Script {
  readonly events: string[] = [];
  readonly open = new Set<number>();
  refuse = 0;
  connected: (() => void)[] = [];
  views: ((v: PolicyView) => void)[] = [];
  link = {
    announceInterception: (a: InterceptAnnouncement): Promise<InterceptReply> => {
      for (const d of a.outbound)
        if (!this.open.has(d.sidecarPort)) this.events.push(`ANNOUNCED CLOSED ${d.sidecarPort}`);
      this.events.push(`announce ${a.outbound.map((d) => `${d.ip}=${d.sidecarPort}`).join(',')}`);
      if (this.refuse > 0) {
        this.refuse--;
        return Promise.reject(new Error('agent away'));
      }
      return Promise.resolve({
        table: 't',
        inbound: a.inbound.length,
        outbound: a.outbound.length,
        skipped: [],
      });
    },
    onConnected: (f: () => void) => {
      this.connected.push(f);
      return () => undefined;
    },
    onView: (f: (v: PolicyView) => void) => {
      this.views.push(f);
      return () => undefined;
    },
  };
  proxy = {
    addDestination: (d: { ip: string; port: number; listenPort: number }) => {
      this.open.add(d.listenPort);
      this.events.push(`open ${d.ip}=${d.listenPort}`);
      return Promise.resolve({ address: '127.0.0.1', family: 'IPv4', port: d.listenPort });
    },
    removeDestination: (p: number) => {
      this.open.delete(p);
      this.events.push(`close ${p}`);
      return Promise.resolve();
    },
  };
}

test('listeners open before they are announced and close only after an announcement without them', async () => {
  const s = new Script();
  const holder = new PolicyViewHolder(view(1, IPS));
  const link = new InterceptionLink({
    link: s.link,
    proxy: s.proxy,
    holder,
    inbound: [{ appPort: 9080, sidecarPort: 15006 }],
    uid: 1337,
    firstPort: 9079,
    reserved: [15000, 15001],
    retryMinMs: 10,
  });
  await link.start();
  assert.ok(link.status().announced);
  const ports = [...s.open];
  assert.ok(!ports.includes(9080), 'an application port is never a listener');
  assert.ok(ports.length >= 1);
  // ratings leaves the view (its pod is gone): announced without it first, then closed.
  const rest = Object.fromEntries(Object.entries(IPS).filter(([k]) => k !== 'default/ratings-v1'));
  assert.ok(holder.update({ ok: true, view: view(2, rest) }));
  const mark = s.events.length;
  for (const f of s.views) f(holder.current);
  await until('the sync', () => link.status().announced);
  const after = s.events.slice(mark);
  const ann = after.findIndex((e) => e.startsWith('announce') && !e.includes('10.7.0.4'));
  const close = after.findIndex((e) => e.startsWith('close'));
  assert.ok(ann >= 0 && close > ann, after.join(' | '));
  assert.ok(!s.events.some((e) => e.startsWith('ANNOUNCED CLOSED')), s.events.join(' | '));
  await link.stop();
});

test('a refused announcement is retried, and a reconnection announces again', async () => {
  const s = new Script();
  s.refuse = 2;
  const link = new InterceptionLink({
    link: s.link,
    proxy: s.proxy,
    holder: new PolicyViewHolder(view(1, IPS)),
    inbound: [{ appPort: 9080, sidecarPort: 15006 }],
    uid: 1337,
    retryMinMs: 10,
  });
  await link.start();
  await until('retried until accepted', () => link.status().announced, 5_000);
  assert.equal(s.events.filter((e) => e.startsWith('announce')).length, 3);
  const n = s.events.length;
  for (const f of s.connected) f();
  await until('announced again', () => s.events.slice(n).some((e) => e.startsWith('announce')));
  await link.stop();
});
