// The node commands' flow flags: defaults (flows on, kernel tracing on, 10 s, no metrics
// listener, the spool beside the endpoint record), each flag's effect, and refusals of values that are not what the flag takes.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseArgs, UsageError } from './args.js';
import { AGENT_FLOWS_FLAGS, agentFlowFlags } from './node-flows-flags.js';

const parse = (argv: string[]) => agentFlowFlags(parseArgs(argv, AGENT_FLOWS_FLAGS));

test('by default the agent records flows, traces the kernel, ships every 10 s and serves no metrics', () => {
  assert.deepEqual(parse([]), {
    enabled: true,
    kernel: true,
    intervalMs: 10_000,
    traceRate: undefined,
    metrics: undefined,
    spool: undefined,
  });
});

test('each flow flag of the agent has its effect', () => {
  const f = parse([
    '--flow-interval',
    '2.5',
    '--no-kernel-flows',
    '--flow-trace-rate',
    '500',
    '--metrics',
    '[::1]:9464',
    '--flow-spool',
    '/var/lib/x/spool.json',
  ]);
  assert.deepEqual(f, {
    enabled: true,
    kernel: false,
    intervalMs: 2500,
    traceRate: 500,
    metrics: { host: '::1', port: 9464 },
    spool: '/var/lib/x/spool.json',
  });
  assert.equal(parse(['--no-flows']).enabled, false);
  assert.equal(parse(['--metrics', 'none']).metrics, undefined);
});

test('flow flag values that are not what the flag takes are usage errors', () => {
  for (const argv of [
    ['--flow-interval', '0'],
    ['--flow-spool', ' '],
    ['--flow-interval', '10s'],
    ['--flow-interval', '99999'],
    ['--flow-trace-rate', '0'],
    ['--flow-trace-rate', '-1'],
    ['--metrics', '9464'],
    ['--metrics', 'host:99999'],
  ])
    assert.throws(() => parse(argv), UsageError, argv.join(' '));
});
