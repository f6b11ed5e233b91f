// Calico's selector language (projectcalico.org/v3): parser, canonical printer, evaluator and an
// inverted index. See docs/design/selector.md.

export type {
  AllSelector,
  BoolSelector,
  CompareSelector,
  GlobalSelector,
  HasSelector,
  Labels,
  NotSelector,
  ParseSelectorResult,
  Selector,
  SelectorError,
  SelectorKind,
  SetSelector,
} from './ast.js';
export {
  isAllSelector,
  labelValue,
  MAX_SELECTOR_DEPTH,
  MAX_SELECTOR_LENGTH,
  NAMESPACE_LABEL,
} from './ast.js';
export { isValidLabelKey, labelKeyProblem, validLabelKey } from './keys.js';
export { parseSelector } from './parser.js';
export { printSelector, quoteSelectorString } from './printer.js';
export {
  compileSelector,
  evaluateSelector,
  matchSelector,
  type LabelPredicate,
} from './evaluate.js';
export { SelectorIndex } from './selector-index.js';
