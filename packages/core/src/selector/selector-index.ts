// An inverted index from labels to item ids, for "which endpoints does this selector pick?".
// Posting lists per key and per key=value give a candidate set that over-approximates the answer;
// the compiled selector then filters the candidates. Selectors with no indexable leaf (`!=`,
// `not in`, `!`, `all()`, `global()`) fall back to scanning every item.

import { labelValue, type Labels, type Selector } from './ast.js';
import { matchSelector } from './evaluate.js';

/** Candidate ids, or `undefined` for "every item". */
type Candidates<Id> = ReadonlySet<Id> | undefined;

const EMPTY: ReadonlySet<never> = new Set<never>();

export class SelectorIndex<Id = string> {
  private readonly items = new Map<Id, Labels>();
  private readonly byKey = new Map<string, Set<Id>>();
  private readonly byKeyValue = new Map<string, Map<string, Set<Id>>>();

  /** Number of items indexed. */
  get size(): number {
    return this.items.size;
  }

  has(id: Id): boolean {
    return this.items.has(id);
  }

  /** The labels stored for `id` (a frozen copy), if any. */
  labels(id: Id): Labels | undefined {
    return this.items.get(id);
  }

  /** Adds `id`, or replaces its labels when it is already present. */
  add(id: Id, labels: Labels): void {
    this.update(id, labels);
  }

  /** Sets the labels of `id`, adding it when absent. Only changed labels touch the postings. */
  update(id: Id, labels: Labels): void {
    const copy: Labels = Object.freeze({ ...labels });
    const old = this.items.get(id);
    if (old !== undefined) {
      for (const [k, v] of Object.entries(old)) {
        if (labelValue(copy, k) !== v) this.unpost(id, k, v, !Object.hasOwn(copy, k));
      }
    }
    for (const [k, v] of Object.entries(copy)) {
      if (old === undefined || labelValue(old, k) !== v) this.post(id, k, v);
    }
    this.items.set(id, copy);
  }

  /** Removes `id`; returns whether it was present. */
  remove(id: Id): boolean {
    const old = this.items.get(id);
    if (old === undefined) return false;
    for (const [k, v] of Object.entries(old)) this.unpost(id, k, v, true);
    this.items.delete(id);
    return true;
  }

  /** Ids of the items whose labels satisfy `selector`. */
  matching(selector: Selector): Set<Id> {
    const candidates = this.candidates(selector);
    const out = new Set<Id>();
    if (candidates === undefined) {
      for (const [id, labels] of this.items) if (matchSelector(selector, labels)) out.add(id);
      return out;
    }
    for (const id of candidates) {
      const labels = this.items.get(id);
      if (labels !== undefined && matchSelector(selector, labels)) out.add(id);
    }
    return out;
  }

  private post(id: Id, key: string, value: string): void {
    let ids = this.byKey.get(key);
    if (ids === undefined) this.byKey.set(key, (ids = new Set<Id>()));
    ids.add(id);
    let values = this.byKeyValue.get(key);
    if (values === undefined) this.byKeyValue.set(key, (values = new Map<string, Set<Id>>()));
    let vids = values.get(value);
    if (vids === undefined) values.set(value, (vids = new Set<Id>()));
    vids.add(id);
  }

  private unpost(id: Id, key: string, value: string, keyGone: boolean): void {
    const values = this.byKeyValue.get(key);
    const vids = values?.get(value);
    if (values !== undefined && vids !== undefined) {
      vids.delete(id);
      if (vids.size === 0) values.delete(value);
      if (values.size === 0) this.byKeyValue.delete(key);
    }
    if (keyGone) {
      const ids = this.byKey.get(key);
      if (ids !== undefined) {
        ids.delete(id);
        if (ids.size === 0) this.byKey.delete(key);
      }
    }
  }

  private withKey(key: string): ReadonlySet<Id> {
    return this.byKey.get(key) ?? EMPTY;
  }

  private withValue(key: string, value: string): ReadonlySet<Id> {
    return this.byKeyValue.get(key)?.get(value) ?? EMPTY;
  }

  /** A superset of the matching ids, read from the postings; `undefined` means "scan all". */
  private candidates(s: Selector): Candidates<Id> {
    switch (s.kind) {
      case 'eq':
        return this.withValue(s.key, s.value);
      case 'in': {
        const [only, ...more] = s.values;
        if (only === undefined) return EMPTY;
        if (more.length === 0) return this.withValue(s.key, only);
        const union = new Set<Id>();
        for (const v of s.values) for (const id of this.withValue(s.key, v)) union.add(id);
        return union;
      }
      case 'has':
      case 'contains':
      case 'startsWith':
      case 'endsWith':
        return this.withKey(s.key);
      case 'and': {
        // The smallest operand's candidates bound the conjunction.
        let best: Candidates<Id> = undefined;
        for (const o of s.operands) {
          const c = this.candidates(o);
          if (c !== undefined && (best === undefined || c.size < best.size)) best = c;
          if (best?.size === 0) break;
        }
        return best;
      }
      case 'or': {
        const parts: ReadonlySet<Id>[] = [];
        for (const o of s.operands) {
          const c = this.candidates(o);
          if (c === undefined) return undefined;
          parts.push(c);
        }
        const union = new Set<Id>();
        for (const part of parts) for (const id of part) union.add(id);
        return union;
      }
      case 'all':
      case 'global':
      case 'neq':
      case 'notIn':
      case 'not':
        return undefined;
    }
  }
}
