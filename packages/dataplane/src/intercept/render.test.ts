// The interception renderer: golden output (PALISADE_UPDATE_GOLDEN=1 rewrites testdata/*.nft,
// review the diff), nft's own parser in check mode, and refusal of specifications that could loop
// the sidecar's traffic, shadow its ports or smuggle text into the rules.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { canUseNetns } from '../testing/netns.js';
import { DataplaneError } from '../errors.js';
import { assignOutboundPorts, renderInterception } from './render.js';
import type { InterceptionSpec } from './render.js';

const DIR = fileURLToPath(new URL('./testdata/', import.meta.url));
const UPDATE = process.env['PALISADE_UPDATE_GOLDEN'] === '1';

const CASES: Record<string, InterceptionSpec> = {
  'inbound-and-outbound': {
    inbound: [
      { appPort: 9080, sidecarPort: 15006 },
      { appPort: 8080, sidecarPort: 15007 },
    ],
    outbound: [
      { ip: '10.1.2.3', port: 9080, sidecarPort: 15101 },
      { ip: 'FD00:0::0:1', port: 443, sidecarPort: 15102 },
      { ip: '10.1.2.4', port: 9080, sidecarPort: 15100 },
    ],
    sidecarUid: 1337,
    otherOutbound: 'reject',
    passOutboundPorts: [53, 53],
  },
  'inbound-only-pass': {
    inbound: [{ appPort: 9080, sidecarPort: 15006 }],
    outbound: [],
    sidecarUid: 1337,
    otherOutbound: 'pass',
  },
};

describe('interception golden rulesets', () => {
  for (const [name, spec] of Object.entries(CASES)) {
    test(`${name}: the rendered table equals testdata/${name}.nft`, () => {
      const got = renderInterception(spec).script;
      const file = `${DIR}${name}.nft`;
      if (UPDATE) writeFileSync(file, got);
      assert.equal(got, readFileSync(file, 'utf8'));
    });
    test(
      `${name}: nft accepts the table (check mode, scratch namespace)`,
      { skip: !canUseNetns() },
      () => {
        const ns = `plicchk${process.pid % 100000}`;
        execFileSync('ip', ['netns', 'add', ns]);
        try {
          execFileSync('ip', ['netns', 'exec', ns, 'nft', '-c', '-f', '-'], {
            input: renderInterception(spec).script,
          });
        } finally {
          execFileSync('ip', ['netns', 'del', ns]);
        }
      },
    );
  }

  test('the rendering is independent of the order of the lists', () => {
    const spec = CASES['inbound-and-outbound']!;
    const reversed = {
      ...spec,
      inbound: [...spec.inbound].reverse(),
      outbound: [...spec.outbound].reverse(),
    };
    assert.equal(renderInterception(reversed).script, renderInterception(spec).script);
  });

  test('every rule names only the owned table', () => {
    const r = renderInterception({ ...CASES['inbound-and-outbound']!, table: 'pl_ic_x' });
    assert.equal(r.table, 'pl_ic_x');
    assert.deepEqual(r.script.match(/table \S+ \S+/g), ['table inet pl_ic_x']);
  });
});

describe('interception specifications that are refused', () => {
  const base: InterceptionSpec = CASES['inbound-only-pass']!;
  const refused: Record<string, Partial<InterceptionSpec> & Record<string, unknown>> = {
    'root as the sidecar uid (the application would be exempt too)': { sidecarUid: 0 },
    'a fractional uid': { sidecarUid: 1.5 },
    'a sidecar port that is also an application port (loop)': {
      inbound: [
        { appPort: 9080, sidecarPort: 15006 },
        { appPort: 15006, sidecarPort: 15007 },
      ],
    },
    'one sidecar port for two redirects': {
      inbound: [{ appPort: 9080, sidecarPort: 15006 }],
      outbound: [{ ip: '10.0.0.1', port: 80, sidecarPort: 15006 }],
    },
    'an application port listed twice': {
      inbound: [
        { appPort: 9080, sidecarPort: 15006 },
        { appPort: 9080, sidecarPort: 15007 },
      ],
    },
    'a destination listed twice (same address in two spellings)': {
      outbound: [
        { ip: 'fd00::1', port: 80, sidecarPort: 15100 },
        { ip: 'FD00:0:0::1', port: 80, sidecarPort: 15101 },
      ],
    },
    'a loopback destination': { outbound: [{ ip: '127.0.0.5', port: 80, sidecarPort: 15100 }] },
    'an IPv4-mapped destination': {
      outbound: [{ ip: '::ffff:10.0.0.1', port: 80, sidecarPort: 15100 }],
    },
    'a host name as destination': {
      outbound: [{ ip: 'ratings.default', port: 80, sidecarPort: 15100 }],
    },
    'nft syntax in an address': {
      outbound: [{ ip: '10.0.0.1 } ; flush ruleset ; {', port: 80, sidecarPort: 15100 }],
    },
    'port 0': { inbound: [{ appPort: 0, sidecarPort: 15006 }] },
    'port 65536': { inbound: [{ appPort: 9080, sidecarPort: 65536 }] },
    'a port given as text': {
      inbound: [{ appPort: '9080' as unknown as number, sidecarPort: 15006 }],
    },
    'an unknown otherOutbound mode': { otherOutbound: 'allow' as 'pass' },
    'a table name with nft syntax': { table: 'x; flush ruleset' },
    'a pass port out of range': { passOutboundPorts: [70000] },
  };
  for (const [name, change] of Object.entries(refused))
    test(`refused: ${name}`, () => {
      assert.throws(
        () => renderInterception({ ...base, ...change }),
        (e: unknown) => e instanceof DataplaneError && e.code === 'DATAPLANE_ERR_INTERCEPT_SPEC',
      );
    });
});

describe('outbound port assignment', () => {
  test('is stable, deduplicated and skips reserved ports', () => {
    const a = assignOutboundPorts(
      [
        { ip: '10.0.0.2', port: 80 },
        { ip: '10.0.0.1', port: 9080 },
        { ip: '10.0.0.1', port: 80 },
        { ip: '10.0.0.2', port: 80 },
      ],
      15100,
      [15101],
    );
    assert.deepEqual(a, [
      { ip: '10.0.0.1', port: 80, sidecarPort: 15100 },
      { ip: '10.0.0.1', port: 9080, sidecarPort: 15102 },
      { ip: '10.0.0.2', port: 80, sidecarPort: 15103 },
    ]);
    const b = assignOutboundPorts([...a].reverse(), 15100, [15101]);
    assert.deepEqual(b, a);
  });

  test('refuses to run past the last port', () => {
    assert.throws(() =>
      assignOutboundPorts(
        [
          { ip: '10.0.0.1', port: 1 },
          { ip: '10.0.0.1', port: 2 },
        ],
        65535,
      ),
    );
  });
});
