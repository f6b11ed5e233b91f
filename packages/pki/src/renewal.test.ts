import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { renewalTime } from './renewal.js';
import { parseDuration, workloadTtlProblem } from './duration.js';

const notBefore = new Date('2030-01-01T00:00:00Z');
const notAfter = new Date('2030-01-02T00:00:00Z');

test('renewal at half the lifetime when the jitter draw is centred', () => {
  assert.equal(
    renewalTime({ notBefore, notAfter }, () => 0.5).toISOString(),
    '2030-01-01T12:00:00.000Z',
  );
});

test('renewal jitter stays within 40%..60% of the lifetime, strictly before expiry', () => {
  fc.assert(
    fc.property(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (r) => {
      const t = renewalTime({ notBefore, notAfter }, () => r).getTime();
      const life = notAfter.getTime() - notBefore.getTime();
      assert.ok(t >= notBefore.getTime() + 0.4 * life - 1);
      assert.ok(t <= notBefore.getTime() + 0.6 * life);
      assert.ok(t < notAfter.getTime());
    }),
  );
  const early = renewalTime({ notBefore, notAfter }, () => 0).getTime();
  const late = renewalTime({ notBefore, notAfter }, () => 0.999).getTime();
  assert.ok(late - early > 4 * 3600_000, 'the jitter spreads a fleet over hours');
});

test('renewal never goes out of the window for hostile random sources', () => {
  for (const r of [-5, 7, Number.NaN]) {
    const t = renewalTime({ notBefore, notAfter }, () => r).getTime();
    assert.ok(
      Number.isNaN(t) === false && t >= notBefore.getTime() && t < notAfter.getTime(),
      String(r),
    );
  }
});

test('durations: 24h, 90d, 1h30m parse; garbage, zero and oversized lifetimes are refused', () => {
  assert.deepEqual(parseDuration('24h'), { ok: true, ms: 86_400_000 });
  assert.deepEqual(parseDuration('1h30m'), { ok: true, ms: 5_400_000 });
  for (const bad of ['', '24', 'h', '-1h', '1.5h', '0s', '1y', '9'.repeat(30) + 'd'])
    assert.equal(parseDuration(bad).ok, false, bad);
  assert.equal(workloadTtlProblem(90 * 86_400_000), undefined);
  assert.match(workloadTtlProblem(90 * 86_400_000 + 1) ?? '', /90 days/);
  assert.match(workloadTtlProblem(1000) ?? '', /1 minute/);
});
