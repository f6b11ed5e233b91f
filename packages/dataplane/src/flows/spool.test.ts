// The flow spool: an aggregator process killed with SIGKILL mid-interval (its server
// unreachable, so one batch is also pending) leaves what it held on disk, and the next
// aggregator ships every observation of it — records and shed counts — before its own; the
// spool is bounded (records beyond it survive as counts), a torn or hostile spool file is
// reported and never throws, and what the server took leaves the spool.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { FlowAggregator } from './aggregator.js';
import type { FlowObservation, WireBatch } from './observation.js';
import { FlowSpool } from './spool.js';

const dir = mkdtempSync(join(tmpdir(), `palisade-spool-${process.pid}-`));
after(() => rmSync(dir, { recursive: true, force: true }));

function ob(i: number): FlowObservation {
  return {
    timeMs: Date.now() - 1000,
    point: i % 3 === 0 ? 'l7' : 'kernel',
    direction: 'ingress',
    srcIp: `10.2.0.${1 + (i % 5)}`,
    dstIp: '10.2.1.1',
    dstPort: 80,
    protocol: 'TCP',
    verdict: i % 2 === 0 ? 'allow' : 'deny',
    provenance: { kind: 'tier-default', tier: 'default' },
    packets: 1,
    bytes: 60,
  };
}

const counted = (batches: readonly WireBatch[]) =>
  batches.reduce((a, b) => a + b.records.reduce((x, r) => x + r.count, 0), 0);
const shedOf = (batches: readonly WireBatch[]) =>
  batches.reduce((a, b) => a + (b.shed ?? []).reduce((x, s) => x + s.count, 0), 0);

test('a SIGKILLed aggregator loses nothing uncounted: the next one ships its pending batch, its current interval and its shed counts', async () => {
  const file = join(dir, 'killed', 'flows-spool.json');
  // The child: a server that refuses every batch, 40 observations in a first interval (flushed,
  // so pending), 60 in the current one, 7 shed; then it waits to be killed.
  const child = `
    import { FlowAggregator } from ${JSON.stringify(new URL('./aggregator.ts', import.meta.url).href)};
    import { FlowSpool } from ${JSON.stringify(new URL('./spool.ts', import.meta.url).href)};
    const ob = ${ob.toString()};
    const agg = new FlowAggregator({
      send: () => Promise.reject(new Error('server unreachable')),
      spool: new FlowSpool(${JSON.stringify(file)}),
      spoolEveryMs: 50,
      intervalMs: 3_600_000,
    });
    agg.start();
    for (let i = 0; i < 40; i++) agg.observe(ob(i));
    await agg.flush();
    for (let i = 0; i < 60; i++) agg.observe(ob(i + 100));
    agg.shed('kernel', 'kernel-untraced', 7);
    setTimeout(() => process.stdout.write('held\\n'), 300);
    setInterval(() => undefined, 1000);
  `;
  const p = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', child], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  try {
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('the child never held its records')), 60_000);
      p.stdout.on('data', (d: Buffer) => {
        if (/held/.test(d.toString())) {
          clearTimeout(t);
          resolve();
        }
      });
      p.once('exit', (code) => reject(new Error(`the child exited with ${code}`)));
    });
  } finally {
    p.kill('SIGKILL');
  }
  await new Promise((r) => p.once('close', r));
  const sent: WireBatch[] = [];
  const logs: Record<string, unknown>[] = [];
  const next = new FlowAggregator({
    send: (b) => Promise.resolve(void sent.push(b)),
    spool: new FlowSpool(file),
    log: (l) => logs.push({ ...l }),
  });
  next.start();
  next.observe(ob(1000));
  await next.stop();
  // 100 observations of the killed run, the new one, and the 7 shed.
  assert.equal(counted(sent), 101);
  assert.equal(shedOf(sent), 7);
  // The killed run's pending batch goes out first.
  assert.equal(counted(sent.slice(0, 1)), 40);
  assert.ok(logs.some((l) => /restored/.test(String(l['msg']))));
  // What the server took has left the spool.
  const left = JSON.parse(readFileSync(file, 'utf8')) as { batches: unknown[]; shed: unknown[] };
  assert.deepEqual([left.batches, left.shed], [[], []]);
});

test('the spool is bounded: records beyond it are kept as counts (send-failed), and nothing is counted twice', async () => {
  const file = join(dir, 'bounded.json');
  const first = new FlowAggregator({
    send: () => Promise.reject(new Error('down')),
    spool: new FlowSpool(file, 3),
  });
  for (let i = 0; i < 10; i++) first.observe({ ...ob(i), dstPort: 1000 + i });
  await first.flush();
  const sent: WireBatch[] = [];
  const next = new FlowAggregator({
    send: (b) => Promise.resolve(void sent.push(b)),
    spool: new FlowSpool(file, 3),
  });
  assert.equal(next.restore(), 3);
  await next.flush();
  assert.equal(counted(sent), 3);
  assert.equal(shedOf(sent), 7);
  assert.ok(sent.every((b) => (b.shed ?? []).every((s) => s.reason === 'send-failed')));
});

test('a torn, hostile or foreign spool is reported, never thrown, and replaced by the next write', async () => {
  const file = join(dir, 'torn.json');
  for (const text of [
    '{"version":1,"batches":[{"records":[{"point":"kern',
    '{"version":99}',
    '[]',
    '{"version":1,"batches":[{"records":[{"point":"x","count":1},null,7]}],"shed":[{"point":"kernel","reason":"bogus","count":5},{"point":"l7","reason":"parse","count":-3}]}',
  ]) {
    writeFileSync(file, text);
    const logs: Record<string, unknown>[] = [];
    const sent: WireBatch[] = [];
    const agg = new FlowAggregator({
      send: (b) => Promise.resolve(void sent.push(b)),
      spool: new FlowSpool(file),
      log: (l) => logs.push({ ...l }),
    });
    assert.equal(agg.restore(), 0, text);
    assert.ok(
      logs.some((l) => /not fully readable/.test(String(l['msg']))),
      text,
    );
    await agg.flush();
    assert.equal(shedOf(sent), 0, text);
    assert.equal(counted(sent), 0, text);
  }
  assert.ok(existsSync(file));
  assert.equal((JSON.parse(readFileSync(file, 'utf8')) as { version: number }).version, 1);
  // A spool that cannot be written is counted; the records stay in memory.
  const blocked = new FlowSpool(join(file, 'not-a-dir', 'spool.json'));
  const agg = new FlowAggregator({ send: () => Promise.resolve(), spool: blocked });
  agg.observe(ob(1));
  await agg.flush();
  assert.ok(blocked.failures >= 1);
  assert.match(agg.metricsText(), /palisade_node_flow_spool_write_failures_total [1-9]/);
});
