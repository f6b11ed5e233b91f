// The inbound sidecar in a pod network namespace, reached over real veth interfaces from other
// pods' namespaces: the source address the sidecar binds to an identity is the one the kernel
// routed (DESIGN §4.6–7). Skipped where network namespaces are not available.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { TestNode, canUseNetns } from '../testing/netns.js';
import { issue, newCa, tempDir } from './test-fixtures.js';

const CHILD = fileURLToPath(new URL('./test-netns-child.ts', import.meta.url));
const id = (sa: string): string => `spiffe://cluster.local/ns/default/sa/${sa}`;

/** curl from inside a namespace; the client side does not check the server (the server is under test). */
function curl(ns: string, args: readonly string[]): Promise<{ code: number; body: string }> {
  return new Promise((resolve, reject) => {
    execFile(
      'ip',
      ['netns', 'exec', ns, 'curl', '-sk', '--max-time', '10', '-w', '\n%{http_code}', ...args],
      { timeout: 20_000 },
      (err, stdout) => {
        if (err && !stdout) return reject(new Error(String(err.message)));
        const i = stdout.lastIndexOf('\n');
        resolve({ code: Number(stdout.slice(i + 1)), body: stdout.slice(0, i) });
      },
    );
  });
}

describe('inbound sidecar in network namespaces', { timeout: 60_000, skip: !canUseNetns() }, () => {
  const dir = tempDir('sidecar-netns');
  let node: TestNode | undefined;
  let child: ChildProcessWithoutNullStreams | undefined;
  let url = '';
  let reviewsNs = '';
  let attackerNs = '';
  let certArgs: string[] = [];

  before(async () => {
    node = new TestNode('sc');
    const ratings = node.addPod(1);
    const reviews = node.addPod(2);
    const attacker = node.addPod(3);
    reviewsNs = reviews.ns;
    attackerNs = attacker.ns;
    const ca = await newCa(join(dir.path, 'ca'));
    const rv = await issue(ca, id('bookinfo-reviews'));
    const rt = await issue(ca, id('bookinfo-ratings'));
    writeFileSync(join(dir.path, 'reviews.pem'), `${rv.certPem}`);
    writeFileSync(join(dir.path, 'reviews.key'), rv.keyPem, { mode: 0o600 });
    certArgs = ['--cert', join(dir.path, 'reviews.pem'), '--key', join(dir.path, 'reviews.key')];
    const cfgPath = join(dir.path, 'child.json');
    writeFileSync(
      cfgPath,
      JSON.stringify({
        listenHost: ratings.ip,
        endpoint: 'default/ratings-v1',
        ips: {
          'default/ratings-v1': ratings.ip,
          'default/reviews-v2': reviews.ip,
          'default/attacker': attacker.ip,
        },
        keyPem: rt.keyPem,
        certPem: rt.certPem,
        chainPem: rt.chainPem,
        bundlePem: rt.bundlePem,
      }),
      { mode: 0o600 },
    );
    const c = spawn(
      'ip',
      ['netns', 'exec', ratings.ns, process.execPath, '--import', 'tsx', CHILD, cfgPath],
      {
        stdio: ['pipe', 'pipe', 'pipe'],
      },
    );
    child = c;
    const port = await new Promise<number>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error('sidecar child did not start')), 30_000);
      let err = '';
      c.stderr.on('data', (d: Buffer) => (err += d.toString()));
      c.on('exit', (code) => reject(new Error(`sidecar child exited ${code}: ${err}`)));
      readline.createInterface({ input: c.stdout }).on('line', (line) => {
        const m = JSON.parse(line) as { ready?: boolean; port?: number };
        if (m.ready && m.port) {
          clearTimeout(t);
          resolve(m.port);
        }
      });
    });
    url = `https://${ratings.ip}:${port}`;
  });

  after(() => {
    child?.stdin.end();
    child?.kill();
    node?.destroy();
    dir.cleanup();
  });

  test('GET from the reviews pod with its certificate is allowed across the veths', async () => {
    const r = await curl(reviewsNs, [...certArgs, `${url}/ratings/1`]);
    assert.equal(r.code, 200, r.body);
    assert.match(
      r.body,
      /"xfcc":"URI=spiffe:\/\/cluster.local\/ns\/default\/sa\/bookinfo-reviews"/,
    );
  });

  test('POST from the reviews pod is refused by the policy rule', async () => {
    const r = await curl(reviewsNs, [...certArgs, '-X', 'POST', `${url}/ratings/1`]);
    assert.equal(r.code, 403);
    assert.match(r.body, /ratings-readers-get-only rule 1/);
  });

  test("the reviews certificate used from the attacker pod's namespace is refused (stolen certificate)", async () => {
    const r = await curl(attackerNs, [...certArgs, `${url}/ratings/1`]);
    assert.equal(r.code, 403);
    assert.match(r.body, /identity-mismatch/);
  });
});
