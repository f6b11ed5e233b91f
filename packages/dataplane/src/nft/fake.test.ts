// The driver's decisions, against the fake nft: when it updates elements, when it re-applies in
// full, how it fails, and that every command it sends names only its own table.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { DesiredState } from '../calc/types.js';
import { NftDriver } from './driver.js';
import { FakeNft } from './fake.js';
import { render } from './render.js';

function state(members: string[]): DesiredState {
  return {
    endpoints: [],
    unknown: [],
    sets: [{ kind: 'address', name: 's_one', describe: 'selector x', v4: members, v6: [] }],
  };
}

function commandsNameOnly(fake: FakeNft, table: string): void {
  for (const c of fake.commands) {
    const text = `${c.args.join(' ')}\n${c.stdin}`;
    for (const m of text.matchAll(/\b(?:table|element) (\w+) (\w+)/g))
      assert.equal(`${m[1]} ${m[2]}`, `inet ${table}`, `command names another table: ${text}`);
  }
}

test('only membership changes are applied as element updates; unchanged state sends nothing', async () => {
  const fake = new FakeNft();
  fake.addForeignTable('other');
  const d = new NftDriver({ runner: fake.runner });
  assert.equal((await d.apply(render(state(['10.0.0.1'])))).kind, 'full');
  assert.equal((await d.apply(render(state(['10.0.0.1', '10.0.0.2'])))).kind, 'elements');
  assert.deepEqual(fake.elements('palisade', 's_one_v4'), ['10.0.0.1', '10.0.0.2']);
  assert.equal((await d.apply(render(state(['10.0.0.2'])))).kind, 'elements');
  assert.deepEqual(fake.elements('palisade', 's_one_v4'), ['10.0.0.2']);
  const n = fake.commands.length;
  assert.equal((await d.apply(render(state(['10.0.0.2'])))).kind, 'unchanged');
  assert.equal(fake.commands.length, n, 'nothing sent');
  assert.ok(fake.has('other'), 'the foreign table survives');
  commandsNameOnly(fake, 'palisade');
});

test('a failed element update falls back to one full transaction', async () => {
  const fake = new FakeNft();
  const d = new NftDriver({ runner: fake.runner });
  await d.apply(render(state(['10.0.0.1'])));
  await d.settled();
  fake.failNext = 1;
  assert.equal((await d.apply(render(state(['10.0.0.3'])))).kind, 'full');
  assert.deepEqual(fake.elements('palisade', 's_one_v4'), ['10.0.0.3']);
});

test('a refused full transaction reports DATAPLANE_ERR_NFT and keeps the previous table', async () => {
  const fake = new FakeNft();
  const d = new NftDriver({ runner: fake.runner });
  await d.apply(render(state(['10.0.0.1'])));
  await d.settled();
  fake.failNext = 2;
  await assert.rejects(d.apply(render(state(['10.0.0.9']))), { code: 'DATAPLANE_ERR_NFT' });
  assert.deepEqual(fake.elements('palisade', 's_one_v4'), ['10.0.0.1']);
});

test('resync repairs an element added behind the driver, and an empty resync does nothing', async () => {
  const fake = new FakeNft();
  const d = new NftDriver({ runner: fake.runner, table: 'custom' });
  await d.apply(render(state(['10.0.0.1']), { table: 'custom' }));
  assert.deepEqual(await d.resync(), { drift: false, repaired: false });
  fake.tamper('custom', 's_one_v4', '10.6.6.6');
  assert.deepEqual(await d.resync(), { drift: true, repaired: true });
  assert.deepEqual(fake.elements('custom', 's_one_v4'), ['10.0.0.1']);
  commandsNameOnly(fake, 'custom');
  assert.deepEqual(await new NftDriver({ runner: fake.runner }).resync(), {
    drift: false,
    repaired: false,
  });
});

test('a rendering for another table is refused before reaching nft', async () => {
  const fake = new FakeNft();
  const d = new NftDriver({ runner: fake.runner });
  await assert.rejects(d.apply(render(state([]), { table: 'someone_else' })), {
    code: 'DATAPLANE_ERR_FOREIGN',
  });
  assert.equal(fake.commands.length, 0);
});

test('unsafe names are refused: table, namespace', () => {
  assert.throws(() => new NftDriver({ table: 'a b' }), { code: 'DATAPLANE_ERR_INVALID_NAME' });
  assert.throws(() => new NftDriver({ netns: '../x; rm' }), { code: 'DATAPLANE_ERR_INVALID_NAME' });
});

test('the periodic resync repairs tampering without being asked', async () => {
  const fake = new FakeNft();
  const d = new NftDriver({ runner: fake.runner });
  await d.apply(render(state(['10.0.0.1'])));
  await d.settled();
  const errors: unknown[] = [];
  d.startResync(10, (e) => errors.push(e));
  try {
    fake.tamper('palisade', 's_one_v4', '10.6.6.6');
    for (let i = 0; i < 100 && fake.elements('palisade', 's_one_v4').length !== 1; i++)
      await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(fake.elements('palisade', 's_one_v4'), ['10.0.0.1']);
    assert.deepEqual(errors, []);
  } finally {
    d.stopResync();
  }
});
