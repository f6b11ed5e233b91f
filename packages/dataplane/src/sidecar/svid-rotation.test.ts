// The SVID schedule on its own: renewal at the configured point of the lifetime, retries with
// growing backoff while the agent refuses, refused credentials never installed, and a bundle
// that the current SVID does not chain to starting a renewal at once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { SvidResponse } from '../agent-socket/protocol.js';
import type { Credentials } from './credentials.js';
import { SvidRotation } from './svid-rotation.js';

const PEM = '-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n';

function answer(lifeMs: number, tag: string): SvidResponse {
  const now = Date.now();
  return {
    spiffeId: 'spiffe://cluster.local/ns/a/sa/b',
    certPem: `${PEM}${tag}`,
    chainPem: '',
    bundlePem: PEM,
    notBefore: new Date(now).toISOString(),
    notAfter: new Date(now + lifeMs).toISOString(),
  };
}

const until = async (f: () => boolean, ms = 5_000): Promise<void> => {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
};

test('a failed renewal is retried with growing backoff until the agent answers', async () => {
  let calls = 0;
  const said: string[] = [];
  const installed: Credentials[] = [];
  const r = new SvidRotation({
    request: () => {
      calls++;
      if (calls === 1) return Promise.resolve(answer(60_000, 'first'));
      if (calls <= 4) return Promise.reject(new Error('agent unreachable'));
      return Promise.resolve(answer(60_000, `n${calls}`));
    },
    install: (c) => {
      installed.push(c);
      return undefined;
    },
    renewalFraction: 0.002, // 120 ms
    retryMinMs: 20,
    retryMaxMs: 1_000,
    say: (l) => said.push(l),
  });
  try {
    const first = await r.first();
    assert.match(first.svid.certPem, /first$/);
    assert.equal(installed.length, 0, 'the first SVID is handed to the listeners, not installed');
    await until(() => installed.length >= 1);
    const s = r.status();
    assert.equal(s.failures, 3);
    assert.equal(s.rotations, 1);
    assert.match(installed[0]?.svid.certPem ?? '', /n5$/);
    const delays = said.flatMap((l) => /retrying in (\d+) ms/.exec(l)?.slice(1) ?? []);
    assert.deepEqual(delays, ['20', '40', '80'], 'the backoff doubles');
  } finally {
    r.stop();
  }
});

test('credentials the listeners refuse are not adopted, and the renewal is retried', async () => {
  let installs = 0;
  const r = new SvidRotation({
    request: () => Promise.resolve(answer(60_000, 'x')),
    install: () => (++installs < 3 ? 'not for this identity' : undefined),
    renewalFraction: 0.9,
    retryMinMs: 10,
  });
  try {
    await r.first();
    await r.rotateNow();
    assert.equal(r.status().rotations, 0);
    assert.match(r.status().lastError ?? '', /not usable: not for this identity/);
    await until(() => r.status().rotations === 1);
  } finally {
    r.stop();
  }
});

test('a trust bundle the current SVID does not chain to starts a renewal at once', async () => {
  let calls = 0;
  const bundles: string[] = [];
  const r = new SvidRotation({
    request: () => Promise.resolve(answer(3_600_000, `c${++calls}`)),
    install: (c) => {
      if (c.svid.certPem.endsWith('c1')) return 'does not chain to the new bundle';
      bundles.push(c.trustBundlePem);
      return undefined;
    },
  });
  try {
    await r.first();
    r.setBundle(`${PEM}${PEM}`);
    await until(() => r.status().rotations === 1);
    assert.equal(calls, 2);
    assert.equal(bundles[0], `${PEM}${PEM}`, 'the renewed SVID comes with the new bundle');
  } finally {
    r.stop();
  }
});
