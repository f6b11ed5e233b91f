// Canonical printer. One spelling per tree:
//   - strings in double quotes; single quotes only when the value itself holds a double quote;
//   - one space around binary operators and after set commas: `a in {"x", "y"}`;
//   - set members sorted and unique (the parser already normalises them);
//   - `&&` and `||` chains flattened; parentheses only where precedence needs them
//     (an `||` inside `&&` or under `!`, an `&&` under `!`);
//   - the match-everything selector prints as `all()`.
// `parseSelector(printSelector(s))` deep-equals `s` for every tree the parser can produce.

import type { Selector } from './ast.js';

export function quoteSelectorString(value: string): string {
  if (!value.includes('"')) return `"${value}"`;
  if (!value.includes("'")) return `'${value}'`;
  throw new RangeError(
    `selector strings cannot hold both ' and ": ${JSON.stringify(value)} has no selector spelling`,
  );
}

function printSet(values: readonly string[]): string {
  return `{${[...new Set(values)].sort().map(quoteSelectorString).join(', ')}}`;
}

function printOperand(s: Selector, parent: 'and' | 'or' | 'not'): string {
  const text = printSelector(s);
  switch (s.kind) {
    case 'or':
      return parent === 'or' ? text : `(${text})`;
    case 'and':
      return parent === 'not' ? `(${text})` : text;
    case 'all':
    case 'global':
    case 'has':
    case 'eq':
    case 'neq':
    case 'contains':
    case 'startsWith':
    case 'endsWith':
    case 'in':
    case 'notIn':
    case 'not':
      return text;
  }
}

/** Prints the canonical form of a selector. Throws RangeError for a value holding both quote kinds. */
export function printSelector(s: Selector): string {
  switch (s.kind) {
    case 'all':
      return 'all()';
    case 'global':
      return 'global()';
    case 'has':
      return `has(${s.key})`;
    case 'eq':
      return `${s.key} == ${quoteSelectorString(s.value)}`;
    case 'neq':
      return `${s.key} != ${quoteSelectorString(s.value)}`;
    case 'contains':
      return `${s.key} contains ${quoteSelectorString(s.value)}`;
    case 'startsWith':
      return `${s.key} starts with ${quoteSelectorString(s.value)}`;
    case 'endsWith':
      return `${s.key} ends with ${quoteSelectorString(s.value)}`;
    case 'in':
      return `${s.key} in ${printSet(s.values)}`;
    case 'notIn':
      return `${s.key} not in ${printSet(s.values)}`;
    case 'not':
      return `!${printOperand(s.operand, 'not')}`;
    case 'and':
      return s.operands.map((o) => printOperand(o, 'and')).join(' && ');
    case 'or':
      return s.operands.map((o) => printOperand(o, 'or')).join(' || ');
  }
}
