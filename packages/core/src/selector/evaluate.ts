// Evaluation. `compileSelector` turns a tree into nested closures once (sets become `Set`s), so the
// hot path does no dispatch on `kind`. `matchSelector` compiles on first use and caches per tree.
//
// Semantics for an absent label: `==`, `in`, `has`, `contains`, `starts with` and `ends with` are
// false; `!=` and `not in` are true. `global()` holds when `projectcalico.org/namespace` is absent.

import { labelValue, NAMESPACE_LABEL, type Labels, type Selector } from './ast.js';

export type LabelPredicate = (labels: Labels) => boolean;

const TRUE: LabelPredicate = () => true;

function compileSet(key: string, values: readonly string[]): LabelPredicate {
  if (values.length === 0) return () => false;
  if (values.length === 1) {
    const only = values[0];
    return (l) => labelValue(l, key) === only;
  }
  const set = new Set(values);
  return (l) => {
    const v = labelValue(l, key);
    return v !== undefined && set.has(v);
  };
}

/** Compiles a selector into a predicate over labels. */
export function compileSelector(s: Selector): LabelPredicate {
  switch (s.kind) {
    case 'all':
      return TRUE;
    case 'global':
      return (l) => !Object.hasOwn(l, NAMESPACE_LABEL);
    case 'has': {
      const { key } = s;
      return (l) => Object.hasOwn(l, key);
    }
    case 'eq': {
      const { key, value } = s;
      return (l) => labelValue(l, key) === value;
    }
    case 'neq': {
      const { key, value } = s;
      return (l) => labelValue(l, key) !== value;
    }
    case 'contains': {
      const { key, value } = s;
      return (l) => labelValue(l, key)?.includes(value) ?? false;
    }
    case 'startsWith': {
      const { key, value } = s;
      return (l) => labelValue(l, key)?.startsWith(value) ?? false;
    }
    case 'endsWith': {
      const { key, value } = s;
      return (l) => labelValue(l, key)?.endsWith(value) ?? false;
    }
    case 'in':
      return compileSet(s.key, s.values);
    case 'notIn': {
      const inSet = compileSet(s.key, s.values);
      return (l) => !inSet(l);
    }
    case 'not': {
      const inner = compileSelector(s.operand);
      return (l) => !inner(l);
    }
    case 'and': {
      const parts = s.operands.map(compileSelector);
      if (parts.length === 2) {
        const [a, b] = parts as [LabelPredicate, LabelPredicate];
        return (l) => a(l) && b(l);
      }
      return (l) => parts.every((p) => p(l));
    }
    case 'or': {
      const parts = s.operands.map(compileSelector);
      if (parts.length === 2) {
        const [a, b] = parts as [LabelPredicate, LabelPredicate];
        return (l) => a(l) || b(l);
      }
      return (l) => parts.some((p) => p(l));
    }
  }
}

const compiled = new WeakMap<Selector, LabelPredicate>();

/** Whether `labels` satisfy `s`. Compiles `s` on first use and reuses the closure afterwards. */
export function matchSelector(s: Selector, labels: Labels): boolean {
  let p = compiled.get(s);
  if (p === undefined) {
    p = compileSelector(s);
    compiled.set(s, p);
  }
  return p(labels);
}

/** A direct tree-walking evaluator: the reference the compiled form is tested against. */
export function evaluateSelector(s: Selector, labels: Labels): boolean {
  switch (s.kind) {
    case 'all':
      return true;
    case 'global':
      return labelValue(labels, NAMESPACE_LABEL) === undefined;
    case 'has':
      return labelValue(labels, s.key) !== undefined;
    case 'eq':
      return labelValue(labels, s.key) === s.value;
    case 'neq':
      return labelValue(labels, s.key) !== s.value;
    case 'contains':
      return labelValue(labels, s.key)?.includes(s.value) ?? false;
    case 'startsWith':
      return labelValue(labels, s.key)?.startsWith(s.value) ?? false;
    case 'endsWith':
      return labelValue(labels, s.key)?.endsWith(s.value) ?? false;
    case 'in': {
      const v = labelValue(labels, s.key);
      return v !== undefined && s.values.includes(v);
    }
    case 'notIn': {
      const v = labelValue(labels, s.key);
      return v === undefined || !s.values.includes(v);
    }
    case 'not':
      return !evaluateSelector(s.operand, labels);
    case 'and':
      return s.operands.every((o) => evaluateSelector(o, labels));
    case 'or':
      return s.operands.some((o) => evaluateSelector(o, labels));
  }
}
