// fast-check generators shared by the selector tests (no tests of its own). The `.test.ts` suffix
// keeps it out of the core build.

import fc from 'fast-check';
import type { Labels, Selector } from './selector.js';

const nameChar = fc.constantFrom(...'abcXYZ019-_.');
const alnum = fc.constantFrom(...'abcxyzABZ0189');
/** Valid label keys, sometimes with a DNS prefix, sometimes spelled like keywords. */
export const arbKey: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom('app', 'tier', 'in', 'not', 'has', 'all', 'contains', 'starts', 'with', 'ends'),
  fc
    .tuple(alnum, fc.array(nameChar, { maxLength: 8 }), alnum)
    .map(([a, mid, b]) => a + mid.join('') + b),
  fc.constantFrom('example.com/team', 'projectcalico.org/namespace', 'a-b.c/x_y', 'k8s.io/app'),
);

/** Values with every kind of character except values that hold both quote kinds. */
export const arbValue: fc.Arbitrary<string> = fc
  .oneof(
    fc.constantFrom('', 'web', 'db', "it's", 'say "hi"', 'a b', '&& ||', '(){}', 'ü', '\n'),
    fc.string({ maxLength: 8, unit: 'grapheme' }),
  )
  .filter((v) => !(v.includes('"') && v.includes("'")));

const arbValues = fc
  .uniqueArray(arbValue, { maxLength: 4 })
  .map((vs) => Object.freeze([...vs].sort()));

const arbLeaf: fc.Arbitrary<Selector> = fc.oneof(
  fc.constant<Selector>({ kind: 'all' }),
  fc.constant<Selector>({ kind: 'global' }),
  arbKey.map((key): Selector => ({ kind: 'has', key })),
  fc
    .record({
      kind: fc.constantFrom('eq', 'neq', 'contains', 'startsWith', 'endsWith'),
      key: arbKey,
      value: arbValue,
    })
    .map(({ kind, key, value }): Selector => ({ kind, key, value })),
  fc
    .record({ kind: fc.constantFrom('in', 'notIn'), key: arbKey, values: arbValues })
    .map(({ kind, key, values }): Selector => ({ kind, key, values })),
);

/** Trees in the parser's normal form: no `and` directly under `and`, no `or` under `or`. */
export const { selector: arbSelector } = fc.letrec<{
  selector: Selector;
  nonAnd: Selector;
  nonOr: Selector;
}>((tie) => ({
  selector: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    arbLeaf,
    tie('selector').map((operand): Selector => ({ kind: 'not', operand })),
    fc
      .array(tie('nonAnd'), { minLength: 2, maxLength: 3 })
      .map((ops): Selector => ({ kind: 'and', operands: ops as [Selector, Selector] })),
    fc
      .array(tie('nonOr'), { minLength: 2, maxLength: 3 })
      .map((ops): Selector => ({ kind: 'or', operands: ops as [Selector, Selector] })),
  ),
  nonAnd: tie('selector').filter((s) => s.kind !== 'and'),
  nonOr: tie('selector').filter((s) => s.kind !== 'or'),
}));

export const arbLabels: fc.Arbitrary<Labels> = fc.dictionary(
  fc.constantFrom('app', 'tier', 'in', 'has', 'projectcalico.org/namespace', 'example.com/team'),
  fc.constantFrom('', 'web', 'db', "it's", 'say "hi"', 'a b', 'ü'),
  { maxKeys: 4 },
);
