import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { arbLabels, arbSelector } from './arbitraries.test.js';
import {
  compileSelector,
  evaluateSelector,
  isAllSelector,
  matchSelector,
  MAX_SELECTOR_DEPTH,
  parseSelector,
  printSelector,
  type Labels,
  type Selector,
} from './selector.js';

function parse(text: string): Selector {
  const r = parseSelector(text);
  if (!r.ok) assert.fail(`${text}: ${r.error.message} at ${r.error.position}`);
  return r.selector;
}

function parseError(text: string): { message: string; position: number } {
  const r = parseSelector(text);
  if (r.ok) assert.fail(`${text} parsed as ${printSelector(r.selector)}`);
  return r.error;
}

// ------------------------------------------------------------------ properties

test('printer: parse(print(x)) deep-equals x for generated trees', () => {
  fc.assert(
    fc.property(arbSelector, (s) => {
      const printed = printSelector(s);
      const r = parseSelector(printed);
      assert.ok(r.ok, `${printed}: ${r.ok ? '' : r.error.message}`);
      assert.deepEqual(r.selector, s, printed);
    }),
    { numRuns: 3000 },
  );
});

test('printer: printing is idempotent over parse', () => {
  fc.assert(
    fc.property(arbSelector, (s) => {
      const once = printSelector(s);
      assert.equal(printSelector(parse(once)), once);
    }),
    { numRuns: 1000 },
  );
});

test('parser: arbitrary text never throws, error positions lie inside the text', () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 80, unit: 'binary' }), (t) => {
      const r = parseSelector(t);
      if (!r.ok) assert.ok(r.error.position >= 0 && r.error.position <= t.length, t);
    }),
    { numRuns: 5000 },
  );
  const parts = fc.constantFrom(
    'a',
    "'x'",
    '"y',
    '==',
    '!=',
    '(',
    ')',
    '!',
    '&&',
    '||',
    'in',
    'not',
    'starts',
    'with',
    'contains',
    '{',
    '}',
    ',',
    'has',
    'has(',
    'all()',
    'global(',
    ' ',
    '/',
  );
  fc.assert(
    fc.property(fc.array(parts, { maxLength: 24 }), fc.boolean(), (ps, spaced) => {
      const t = ps.join(spaced ? ' ' : '');
      const r = parseSelector(t);
      if (!r.ok) assert.ok(r.error.position >= 0 && r.error.position <= t.length, t);
    }),
    { numRuns: 10000 },
  );
});

test('evaluation: compiled closures, the cached matcher and the interpreter agree', () => {
  fc.assert(
    fc.property(arbSelector, arbLabels, (s, l) => {
      const expected = evaluateSelector(s, l);
      assert.equal(compileSelector(s)(l), expected);
      assert.equal(matchSelector(s, l), expected);
    }),
    { numRuns: 3000 },
  );
});

test('evaluation: De Morgan holds for parsed selectors', () => {
  fc.assert(
    fc.property(arbSelector, arbSelector, arbLabels, (a, b, l) => {
      const pa = printSelector(a);
      const pb = printSelector(b);
      const lhs = parse(`!((${pa}) && (${pb}))`);
      const rhs = parse(`!(${pa}) || !(${pb})`);
      assert.equal(matchSelector(lhs, l), matchSelector(rhs, l));
    }),
    { numRuns: 500 },
  );
});

// ------------------------------------------------------------------ examples

test('parser: the empty selector and whitespace are all()', () => {
  for (const t of ['', '   ', '\n\t', 'all()', 'all( )']) {
    const s = parse(t);
    assert.ok(isAllSelector(s), t);
    assert.equal(printSelector(s), 'all()');
  }
});

test('printer: canonical spelling', () => {
  const cases: [string, string][] = [
    ["app=='web'&&(a in {'y','x','x'}||has( b ))", 'app == "web" && (a in {"x", "y"} || has(b))'],
    ['(a == "1" && b == "2") && c == "3"', 'a == "1" && b == "2" && c == "3"'],
    ['a == "1" || (b == "2" || c == "3")', 'a == "1" || b == "2" || c == "3"'],
    ["!(a == 'x' || has(b))", '!(a == "x" || has(b))'],
    ['! ! has(a)', '!!has(a)'],
    ['v == \'say "hi"\'', 'v == \'say "hi"\''],
    ['k not   in {}', 'k not in {}'],
    ["k starts  with 'a' && k ends\twith 'z'", 'k starts with "a" && k ends with "z"'],
    ['((global()))', 'global()'],
  ];
  for (const [input, canonical] of cases) assert.equal(printSelector(parse(input)), canonical);
});

test('parser: keywords are label keys where a key is expected', () => {
  assert.deepEqual(parse("in == 'x'"), { kind: 'eq', key: 'in', value: 'x' });
  assert.deepEqual(parse("has == 'x'"), { kind: 'eq', key: 'has', value: 'x' });
  assert.deepEqual(parse('has(has)'), { kind: 'has', key: 'has' });
  assert.deepEqual(parse("not not in {'a'}"), { kind: 'notIn', key: 'not', values: ['a'] });
});

test('evaluation: absent labels and inherited properties', () => {
  const none: Labels = {};
  assert.equal(matchSelector(parse("k != 'v'"), none), true);
  assert.equal(matchSelector(parse("k not in {'v'}"), none), true);
  assert.equal(matchSelector(parse("k contains ''"), none), false);
  assert.equal(matchSelector(parse("k starts with ''"), none), false);
  assert.equal(matchSelector(parse('has(constructor)'), none), false);
  assert.equal(matchSelector(parse("toString != 'x'"), none), true);
  assert.equal(matchSelector(parse('global()'), { 'projectcalico.org/namespace': 'prod' }), false);
  assert.equal(matchSelector(parse('global()'), { app: 'x' }), true);
});

test('parser: error messages and positions', () => {
  const cases: [string, number, RegExp][] = [
    ["app == 'web' && tier ==", 23, /quoted string after '=='/],
    ["app == 'web", 7, /unterminated string/],
    ["app == 'web' tier == 'x'", 13, /after a complete expression/],
    ["app == 'web')", 12, /no matching/],
    ["(app == 'web'", 13, /expected '\)' to close/],
    ["&& a == 'b'", 0, /expected an expression/],
    ["a == 'b' ||", 11, /after '\|\|' but reached the end/],
    ["a = 'b'", 2, /'=='/],
    ['a & b', 2, /'&&'/],
    ["-a == 'b'", 0, /invalid label key/],
    ["Example.com/a == 'b'", 0, /DNS subdomain/],
    ["a/b/c == 'b'", 0, /at most one/],
    [`${'a'.repeat(64)} == 'b'`, 0, /longer than 63/],
    ["a in {'x' 'y'}", 10, /',' or '\}'/],
    ["a in 'x'", 5, /'\{'/],
    ["a starts 'x'", 9, /'with'/],
    ['has()', 4, /label key/],
    ['foo(a)', 0, /unknown function/],
    ['a', 1, /expected an operator/],
    ['a == b', 5, /quoted string/],
    ['()', 1, /empty parentheses/],
    ["'x' == a", 0, /a string must follow/],
    ['a == `b`', 5, /single or double quotes/],
  ];
  for (const [text, position, message] of cases) {
    const e = parseError(text);
    assert.match(e.message, message, text);
    assert.equal(e.position, position, `${text}: ${e.message}`);
  }
});

test('parser: deep nesting is refused with an error, not a stack overflow', () => {
  const deep = parseError('('.repeat(2000) + 'has(a)' + ')'.repeat(2000));
  assert.match(deep.message, /nested too deeply/);
  assert.equal(deep.position, MAX_SELECTOR_DEPTH);
  assert.match(parseError('!'.repeat(1000) + 'has(a)').message, /nested too deeply/);
  const ok = '('.repeat(MAX_SELECTOR_DEPTH) + 'has(a)' + ')'.repeat(MAX_SELECTOR_DEPTH);
  assert.ok(parseSelector(ok).ok);
});

test('parser: selectors over the length limit are refused', () => {
  const e = parseError(`a == '${'x'.repeat(5000)}'`);
  assert.match(e.message, /limit is 4096/);
  assert.equal(e.position, 4096);
  const long = Array.from({ length: 300 }, (_, i) => `has(k${i})`).join('&&');
  assert.ok(long.length <= 4096);
  const s = parse(long);
  assert.equal(s.kind === 'and' ? s.operands.length : 0, 300);
});
