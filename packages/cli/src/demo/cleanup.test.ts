import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CleanupRegistry } from './cleanup.js';

test('cleanup undoes newest first and carries on past a failing step', async () => {
  const r = new CleanupRegistry();
  const order: string[] = [];
  r.add('a', () => void order.push('a'));
  r.add('b', () => {
    throw new Error('boom');
  });
  r.add('c', async () => {
    await new Promise((res) => setTimeout(res, 5));
    order.push('c');
  });
  const said: string[] = [];
  const failed = await r.runAll((l) => said.push(l));
  assert.deepEqual(order, ['c', 'a']);
  assert.deepEqual(failed, ['b']);
  assert.match(said.join('\n'), /cleanup: b: boom/);
  assert.equal(r.size, 0);
});

test('cleanup runs consecutive steps of one batch together, and bounds every step', async () => {
  const r = new CleanupRegistry();
  const events: string[] = [];
  r.add('dir', () => void events.push('dir'));
  for (const n of ['p1', 'p2', 'p3'])
    r.add(
      n,
      async () => {
        events.push(`${n} start`);
        await new Promise((res) => setTimeout(res, 20));
        events.push(`${n} end`);
      },
      'processes',
    );
  r.add('hangs', () => new Promise<void>(() => undefined));
  const failed = await r.runAll(() => undefined, 100);
  assert.deepEqual(failed, ['hangs']);
  // All three processes started before any ended; the directory went last.
  assert.deepEqual(events.slice(0, 3).sort(), ['p1 start', 'p2 start', 'p3 start']);
  assert.equal(events.at(-1), 'dir');
});

test('a resource recorded after cleaning started is removed at once', async () => {
  const r = new CleanupRegistry();
  let removed = false;
  const running = r.runAll();
  r.add('late netns', () => {
    removed = true;
  });
  await running;
  assert.deepEqual(await r.drain(), []);
  assert.equal(removed, true);
  // runAll is idempotent: a second call does not run anything again.
  assert.deepEqual(await r.runAll(), []);
});
