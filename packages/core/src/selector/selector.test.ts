import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  compileSelector,
  matchSelector,
  parseSelector,
  printSelector,
  type Selector,
} from './selector.js';

const key = fc.constantFrom('app', 'tier', 'version', 'example.com/team', 'a.b-c_d', 'x9');
const value = fc.constantFrom('', 'web', 'db', "it's", 'a b', 'v1', 'x"y');

function normalize(s: Selector): Selector {
  switch (s.kind) {
    case 'and':
    case 'or': {
      const ops = s.operands.map(normalize).flatMap((o) => (o.kind === s.kind ? o.operands : [o]));
      return ops.length === 1 ? (ops[0] as Selector) : { kind: s.kind, operands: ops };
    }
    case 'not':
      return { kind: 'not', operand: normalize(s.operand) };
    default:
      return s;
  }
}

const { selector: arbSelector } = fc.letrec<{ selector: Selector }>((tie) => ({
  selector: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constant<Selector>({ kind: 'all' }),
    fc.constant<Selector>({ kind: 'global' }),
    key.map((k): Selector => ({ kind: 'has', key: k })),
    fc.record({ key, value }).map((r): Selector => ({ kind: 'eq', ...r })),
    fc.record({ key, value }).map((r): Selector => ({ kind: 'ne', ...r })),
    fc
      .record({ key, values: fc.array(value, { maxLength: 3 }) })
      .map((r): Selector => ({ kind: 'in', ...r })),
    fc
      .record({ key, values: fc.array(value, { maxLength: 3 }) })
      .map((r): Selector => ({ kind: 'notin', ...r })),
    fc.record({ key, value }).map((r): Selector => ({ kind: 'contains', ...r })),
    fc.record({ key, value }).map((r): Selector => ({ kind: 'startswith', ...r })),
    fc.record({ key, value }).map((r): Selector => ({ kind: 'endswith', ...r })),
    tie('selector').map((o): Selector => ({ kind: 'not', operand: o })),
    fc
      .array(tie('selector'), { minLength: 2, maxLength: 3 })
      .map((ops): Selector => ({ kind: 'and', operands: ops })),
    fc
      .array(tie('selector'), { minLength: 2, maxLength: 3 })
      .map((ops): Selector => ({ kind: 'or', operands: ops })),
  ),
}));

const labels = fc.dictionary(key, fc.constantFrom('web', 'db', 'v1', "it's", ''), { maxKeys: 4 });

test('selector printer: parse(print(x)) equals x for every normalized tree', () => {
  fc.assert(
    fc.property(arbSelector, (s) => {
      const n = normalize(s);
      const printed = printSelector(n);
      const r = parseSelector(printed);
      assert.ok(r.ok, `${printed}: ${r.ok ? '' : r.error.message}`);
      assert.deepEqual(r.selector, n, printed);
    }),
    { numRuns: 2000 },
  );
});

test('selector parser: arbitrary text never throws, only returns errors', () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 80 }), (t) => {
      const r = parseSelector(t);
      if (!r.ok) assert.ok(r.error.position >= 0 && r.error.position <= t.length);
    }),
    { numRuns: 5000 },
  );
  fc.assert(
    fc.property(
      fc.array(
        fc.constantFrom(
          'a',
          "'x'",
          '==',
          '!=',
          '(',
          ')',
          '!',
          '&&',
          '||',
          'in',
          '{',
          '}',
          ',',
          'has',
          'not',
          'all()',
          ' ',
        ),
        { maxLength: 20 },
      ),
      (parts) => {
        parseSelector(parts.join(' '));
      },
    ),
    { numRuns: 5000 },
  );
});

test('selector evaluation: compiled closures agree with the interpreter', () => {
  fc.assert(
    fc.property(arbSelector, labels, (s, l) => {
      assert.equal(compileSelector(s)(l), matchSelector(s, l));
    }),
    { numRuns: 3000 },
  );
});

test('selector parser: deep nesting is refused with an error, not a stack overflow', () => {
  const deep = '('.repeat(2000) + 'has(a)' + ')'.repeat(2000);
  const r = parseSelector(deep);
  assert.equal(r.ok, false);
  assert.match(r.ok ? '' : r.error.message, /nests deeper/);
  const bangs = parseSelector('!'.repeat(1000) + 'has(a)');
  assert.equal(bangs.ok, false);
});

test('selector parser: selectors over the length limit are refused', () => {
  const r = parseSelector(`a == '${'x'.repeat(5000)}'`);
  assert.equal(r.ok, false);
  assert.match(r.ok ? '' : r.error.message, /limit/);
});

test('selector parser: error positions point at the offending token', () => {
  const r = parseSelector("app == 'web' && tier ==");
  assert.equal(r.ok, false);
  if (!r.ok) {
    assert.equal(r.error.position, 23);
    assert.match(r.error.message, /quoted value/);
  }
  const u = parseSelector("app == 'web");
  assert.equal(u.ok ? -1 : u.error.position, 7);
});
