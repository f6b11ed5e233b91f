// Splits selector text into tokens. Words (label keys and keywords) are told apart by the parser
// from context, so a label may be called `in`, `has` or `contains`.

import type { SelectorError } from './ast.js';

export type TokenKind =
  | 'word'
  | 'string'
  | 'lparen'
  | 'rparen'
  | 'lbrace'
  | 'rbrace'
  | 'comma'
  | 'and'
  | 'or'
  | 'not'
  | 'eq'
  | 'neq'
  | 'eof';

export interface Token {
  readonly kind: TokenKind;
  /** Word text, or a string literal's value without its quotes. */
  readonly text: string;
  /** 0-based offset of the token's first character. */
  readonly position: number;
}

export type TokenizeResult =
  | { readonly ok: true; readonly tokens: readonly Token[] }
  | { readonly ok: false; readonly error: SelectorError };

const WORD_CHAR = /[A-Za-z0-9_./-]/;
const SPACE = /\s/;

const SINGLE: Readonly<Record<string, TokenKind>> = {
  '(': 'lparen',
  ')': 'rparen',
  '{': 'lbrace',
  '}': 'rbrace',
  ',': 'comma',
};

/** Describes a character for an error message. */
export function describeChar(c: string): string {
  const code = c.codePointAt(0) ?? 0;
  if (code < 0x20 || code === 0x7f)
    return `control character U+${code.toString(16).padStart(4, '0')}`;
  return `'${c}'`;
}

export function tokenize(text: string): TokenizeResult {
  const tokens: Token[] = [];
  const fail = (message: string, position: number): TokenizeResult => ({
    ok: false,
    error: { message, position },
  });
  let i = 0;
  while (i < text.length) {
    const c = text.charAt(i);
    if (SPACE.test(c)) {
      i++;
      continue;
    }
    const single = SINGLE[c];
    if (single !== undefined) {
      tokens.push({ kind: single, text: c, position: i });
      i++;
      continue;
    }
    const next = text.charAt(i + 1);
    switch (c) {
      case '&':
        if (next !== '&') return fail("expected '&&' but found a single '&'", i);
        tokens.push({ kind: 'and', text: '&&', position: i });
        i += 2;
        continue;
      case '|':
        if (next !== '|') return fail("expected '||' but found a single '|'", i);
        tokens.push({ kind: 'or', text: '||', position: i });
        i += 2;
        continue;
      case '=':
        if (next !== '=') return fail("expected '==' but found a single '=' (equality is '==')", i);
        tokens.push({ kind: 'eq', text: '==', position: i });
        i += 2;
        continue;
      case '!':
        if (next === '=') {
          tokens.push({ kind: 'neq', text: '!=', position: i });
          i += 2;
        } else {
          tokens.push({ kind: 'not', text: '!', position: i });
          i++;
        }
        continue;
      case '"':
      case "'": {
        const end = text.indexOf(c, i + 1);
        if (end < 0) {
          return fail(`unterminated string: the ${c} opened here is never closed`, i);
        }
        tokens.push({ kind: 'string', text: text.slice(i + 1, end), position: i });
        i = end + 1;
        continue;
      }
      default:
        break;
    }
    if (!WORD_CHAR.test(c)) {
      const hint = c === '`' ? ' (strings use single or double quotes)' : '';
      return fail(`unexpected character ${describeChar(c)}${hint}`, i);
    }
    const start = i;
    while (i < text.length && WORD_CHAR.test(text.charAt(i))) i++;
    tokens.push({ kind: 'word', text: text.slice(start, i), position: start });
  }
  tokens.push({ kind: 'eof', text: '', position: text.length });
  return { ok: true, tokens };
}
