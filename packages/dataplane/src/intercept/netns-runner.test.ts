// The namespace the agent enters for a pod's interception table: only namespace files, never a
// path that climbs out, never the agent's own namespace (a WorkloadEndpoint annotation pointing
// at /proc/self/ns/net or the node's namespace must not make the agent redirect node traffic).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { netnsPathProblem, netnsPathRunner } from './netns-runner.js';

test("only namespace files are entered, and never the agent's own namespace", () => {
  for (const p of [
    '',
    'relative/netns',
    '/etc/passwd',
    '/run/netns/../../etc/passwd',
    '/run/netns/a/b',
    '/run/netns/x;rm -rf',
    '/proc/self/ns/net',
    '/proc/1/ns/mnt',
    `/proc/${process.pid}/ns/net`,
  ])
    assert.ok(netnsPathProblem(p) !== undefined, p);
  assert.match(
    netnsPathProblem(`/proc/${process.pid}/ns/net`) ?? '',
    /agent's own network namespace/,
  );
  assert.match(netnsPathProblem('/run/netns/palisade-no-such-ns-for-test') ?? '', /does not exist/);
  assert.throws(() => netnsPathRunner('/proc/self/ns/net'), {
    code: 'DATAPLANE_ERR_INTERCEPT_SPEC',
  });
});
