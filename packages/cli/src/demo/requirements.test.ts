// Without root the live demo creates nothing: it says what it needs and offers --simulate. Run as
// an unprivileged user through setpriv (skipped where the test itself is not root).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../../bin/palisade.js', import.meta.url));
const canDrop =
  process.getuid?.() === 0 && spawnSync('setpriv', ['--version'], { stdio: 'ignore' }).status === 0;

test(
  'palisade demo without root says what it needs and offers --simulate (exit 2)',
  { skip: canDrop ? false : 'needs root and setpriv to run as another user', timeout: 60_000 },
  () => {
    const r = spawnSync(
      'setpriv',
      ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, BIN, 'demo'],
      { encoding: 'utf8', env: { ...process.env, HOME: '/tmp' }, timeout: 50_000 },
    );
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /needs: root/);
    assert.match(r.stderr, /palisade demo --simulate/);
    assert.equal(r.stdout, '');
  },
);
