import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { SelectorIndex } from './selector-index.js';
import { matchSelector, parseSelector, type Labels, type Selector } from './selector.js';
import { arbLabels, arbSelector } from './arbitraries.test.js';

function parse(text: string): Selector {
  const r = parseSelector(text);
  if (!r.ok) assert.fail(r.error.message);
  return r.selector;
}

function bruteForce(items: ReadonlyMap<number, Labels>, s: Selector): Set<number> {
  const out = new Set<number>();
  for (const [id, labels] of items) if (matchSelector(s, labels)) out.add(id);
  return out;
}

type Op =
  | { readonly op: 'set'; readonly id: number; readonly labels: Labels }
  | { readonly op: 'remove'; readonly id: number };

const arbOp: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({ op: fc.constant('set' as const), id: fc.nat(15), labels: arbLabels }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('remove' as const), id: fc.nat(15) }) },
);

test('SelectorIndex: matching equals a brute-force scan after any add/update/remove sequence', () => {
  fc.assert(
    fc.property(
      fc.array(arbOp, { maxLength: 40 }),
      fc.array(arbSelector, { minLength: 1, maxLength: 5 }),
      (ops, sels) => {
        const index = new SelectorIndex<number>();
        const model = new Map<number, Labels>();
        for (const o of ops) {
          if (o.op === 'set') {
            index.update(o.id, o.labels);
            model.set(o.id, { ...o.labels });
          } else {
            assert.equal(index.remove(o.id), model.delete(o.id));
          }
        }
        assert.equal(index.size, model.size);
        for (const s of sels) assert.deepEqual(index.matching(s), bruteForce(model, s));
      },
    ),
    { numRuns: 1000 },
  );
});

test('SelectorIndex: posting lists follow label changes', () => {
  const index = new SelectorIndex();
  index.add('a', { app: 'web', tier: 'fe' });
  index.add('b', { app: 'db' });
  index.add('c', {});
  assert.deepEqual(index.matching(parse("app == 'web'")), new Set(['a']));
  assert.deepEqual(index.matching(parse('has(app)')), new Set(['a', 'b']));
  assert.deepEqual(index.matching(parse("app != 'web'")), new Set(['b', 'c']));
  index.update('a', { app: 'db' });
  assert.deepEqual(index.matching(parse("app == 'web'")), new Set());
  assert.deepEqual(index.matching(parse("app in {'db', 'x'} && !has(tier)")), new Set(['a', 'b']));
  assert.equal(index.remove('b'), true);
  assert.equal(index.remove('b'), false);
  assert.deepEqual(index.matching(parse('all()')), new Set(['a', 'c']));
  assert.deepEqual(index.matching(parse('app in {}')), new Set());
});

test('SelectorIndex: stored labels are a copy', () => {
  const index = new SelectorIndex();
  const labels: Record<string, string> = { app: 'web' };
  index.add('x', labels);
  labels['app'] = 'db';
  assert.deepEqual(index.matching(parse("app == 'web'")), new Set(['x']));
  assert.deepEqual(index.labels('x'), { app: 'web' });
});
