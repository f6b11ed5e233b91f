import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { ERRORS, renderErrorCatalogue } from './errors.js';

const DOC = new URL('../../../docs/errors.md', import.meta.url);

test('error catalogue: docs/errors.md lists exactly the catalogue', () => {
  const want = renderErrorCatalogue();
  if (process.env.PALISADE_WRITE_DOCS === '1') writeFileSync(DOC, want);
  assert.equal(readFileSync(DOC, 'utf8'), want, 'run with PALISADE_WRITE_DOCS=1 to regenerate');
});

test('error catalogue: codes are UPPER_SNAKE with a subsystem prefix and a 4xx/5xx status', () => {
  for (const [code, e] of Object.entries(ERRORS)) {
    assert.match(code, /^[A-Z]+_ERR_[A-Z_]+$/);
    assert.ok(e.status >= 400 && e.status < 600, code);
    assert.ok(e.summary.length > 10, code);
  }
});
