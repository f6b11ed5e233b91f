// The long-lived nft session against the real kernel, in network namespaces this file creates:
// a script is one atomic batch through the library exactly as through `nft -f`, a failure names
// the failing line and changes nothing, a killed worker is replaced and the next apply is a full
// reconcile, an unloadable library falls back to `nft` processes with a log line, and a foreign
// table is never touched.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { canUseNetns } from '../testing/netns.js';
import { FrameReader, encodeFrame } from './frames.js';
import { libraryRequest } from './libnft.js';
import { NftDriver } from './driver.js';
import { openSession } from './session.js';
import type { Rendered } from './render.js';

const skip = canUseNetns() ? false : 'needs root and network namespaces';
const ns = `plsess${process.pid % 100000}`;
const table = `palisade_s${process.pid % 100000}`;
const nft = (args: string[], input?: string) =>
  execFileSync('ip', ['netns', 'exec', ns, 'nft', ...args], {
    encoding: 'utf8',
    ...(input !== undefined ? { input } : {}),
  });

/** A minimal rendering of the owned table: one plain and one interval set, one chain. */
function rendering(members: string[], port = 80): Rendered {
  const skeleton = `table inet ${table} {
\tset s_a_v4 {
\t\ttype ipv4_addr
\t\tcomment "selector app == 'a'"
\t}
\tset n_b_v4 {
\t\ttype ipv4_addr
\t\tflags interval
\t\tcomment "nets"
\t}
\tchain input {
\t\ttype filter hook input priority 0; policy accept;
\t\tcounter jump tin-x comment "tier x"
\t}
\tchain tin-x {
\t\tip saddr @s_a_v4 tcp dport ${port} counter accept comment "x/p/rule 0"
\t\tip saddr @n_b_v4 counter drop comment "x/p/rule 1"
\t}
}
`;
  const elements = new Map<string, readonly string[]>([
    ['s_a_v4', members],
    ['n_b_v4', ['10.99.0.0/16']],
  ]);
  const els = [...elements]
    .filter(([, v]) => v.length > 0)
    .map(([k, v]) => `add element inet ${table} ${k} { ${v.join(', ')} }\n`)
    .join('');
  return { table, skeleton, elements, script: skeleton + els };
}

describe('the long-lived nft session', { skip, timeout: 120_000 }, () => {
  let foreignBefore = '';
  before(() => {
    execFileSync('ip', ['netns', 'add', ns]);
    nft(
      ['-f', '-'],
      'table inet foreign {\n\tchain keep {\n\t\tcounter comment "not ours"\n\t}\n}\n',
    );
    foreignBefore = nft(['list', 'table', 'inet', 'foreign']);
  });
  after(() => {
    spawnSync('ip', ['netns', 'del', ns]);
  });

  test('a script is one atomic batch and a failure names the failing line', async () => {
    const s = openSession({ netns: ns, listingsInSession: true });
    try {
      const ok = await s.run(
        ['-f', '-'],
        `add table inet ${table}\nadd set inet ${table} x { type ipv4_addr; }\n`,
      );
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(s.kind(), 'worker');
      // The third command refers to a set that does not exist: none of the three may land.
      const bad = await s.run(
        ['-f', '-'],
        `add element inet ${table} x { 10.0.0.1 }\nadd chain inet ${table} c1\nadd element inet ${table} nosuch { 10.0.0.2 }\n`,
      );
      assert.notEqual(bad.code, 0);
      assert.match(bad.stderr, /^batch:3:\d+-\d+: Error:/, 'the line number, as nft -f gives it');
      assert.match(bad.stderr, /\nadd element inet \S+ nosuch \{ 10\.0\.0\.2 \}\n/, 'its text');
      const listing = nft(['list', 'table', 'inet', table]);
      assert.doesNotMatch(listing, /10\.0\.0\.1/, 'the first command was not committed');
      assert.doesNotMatch(listing, /chain c1/, 'nor the second');
      // A listing through the library is nft's JSON, the same as `nft -j`.
      const viaLib = await s.run(['-j', 'list', 'table', 'inet', table]);
      assert.equal(viaLib.code, 0);
      const objects = (text: string) =>
        (JSON.parse(text) as { nftables: unknown[] }).nftables.slice(1);
      assert.deepEqual(
        objects(viaLib.stdout),
        objects(nft(['-j', 'list', 'table', 'inet', table])),
      );
      // A request of any other shape never reaches the library.
      assert.equal((await s.run(['flush', 'ruleset;', 'list'])).code, 2);
      assert.equal((await s.run(['-f', '/etc/passwd'])).code, 2);
      nft(['delete', 'table', 'inet', table]);
    } finally {
      s.close();
    }
    assert.equal(nft(['list', 'table', 'inet', 'foreign']), foreignBefore);
  });

  test('a killed worker is replaced and the next apply is a full reconcile', async () => {
    const d = new NftDriver({ table, netns: ns });
    try {
      assert.equal((await d.apply(rendering(['10.1.0.1']))).kind, 'full');
      assert.equal(d.sessionKind(), 'worker');
      assert.equal((await d.apply(rendering(['10.1.0.1', '10.1.0.2']))).kind, 'elements');
      // Find the worker (the node process in the namespace running session-worker.ts) and kill it.
      const pids = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' })
        .split('\n')
        .filter((p) => /^\d+$/.test(p))
        .filter((p) => {
          const cmd = spawnSync('cat', [`/proc/${p}/cmdline`], { encoding: 'utf8' }).stdout;
          return cmd.includes('session-worker.ts');
        });
      assert.equal(pids.length, 1, 'one worker in the namespace');
      process.kill(Number(pids[0]), 'SIGKILL');
      // Meanwhile someone removes an element by hand: only a full apply can notice.
      nft(['delete', 'element', 'inet', table, 's_a_v4', '{ 10.1.0.2 }']);
      const deadline = Date.now() + 10_000;
      while (Date.now() < deadline && spawnSync('kill', ['-0', pids[0] ?? '']).status === 0)
        await new Promise((r) => setTimeout(r, 50));
      const r = await d.apply(rendering(['10.1.0.1', '10.1.0.2', '10.1.0.3']));
      assert.equal(r.kind, 'full', 'after a restart nothing is assumed about the kernel');
      const listing = nft(['list', 'set', 'inet', table, 's_a_v4']);
      for (const a of ['10.1.0.1', '10.1.0.2', '10.1.0.3']) assert.match(listing, new RegExp(a));
      assert.equal((await d.apply(rendering(['10.1.0.1']))).kind, 'elements');
      // A rule change still goes as a delta through the new worker.
      assert.equal((await d.apply(rendering(['10.1.0.1'], 81))).kind, 'delta');
      assert.match(nft(['list', 'chain', 'inet', table, 'tin-x']), /dport 81/);
      await d.removeTable();
    } finally {
      d.close();
    }
    assert.equal(nft(['list', 'table', 'inet', 'foreign']), foreignBefore);
  });

  test('an unloadable library falls back to one nft process per change, with a log line', async () => {
    const lines: string[] = [];
    const d = new NftDriver({
      table,
      netns: ns,
      library: '/nonexistent/libnftables.so.1',
      log: (l) => lines.push(l),
    });
    try {
      assert.equal((await d.apply(rendering(['10.2.0.1']))).kind, 'full');
      assert.equal(d.sessionKind(), 'process');
      assert.equal(lines.length, 1);
      assert.match(lines[0] ?? '', /falling back to one nft process per change/);
      assert.equal((await d.apply(rendering(['10.2.0.1', '10.2.0.2']))).kind, 'elements');
      assert.match(nft(['list', 'set', 'inet', table, 's_a_v4']), /10\.2\.0\.2/);
      await d.removeTable();
    } finally {
      d.close();
    }
    assert.equal(nft(['list', 'table', 'inet', 'foreign']), foreignBefore);
  });

  test('in its own namespace the agent uses the library in process', () => {
    // A process started inside the namespace, as the agent on a node: no worker, no nft process.
    const session = new URL('./session.ts', import.meta.url).href;
    const code = `
      import { openSession } from ${JSON.stringify(session)};
      const s = openSession({});
      const a = await s.run(['-f', '-'], 'add table inet ${table}\\nadd chain inet ${table} c\\n');
      const b = await s.run(['-f', '-'], 'add rule inet ${table} nosuch counter\\n');
      const c = await s.run(['-j', 'list', 'table', 'inet', '${table}']);
      const d = await s.run(['-f', '-'], 'delete table inet ${table}\\n');
      s.close();
      console.log(JSON.stringify({ kind: s.kind(), a: a.code, b: b.code, berr: b.stderr, c: JSON.parse(c.stdout).nftables.length, d: d.code }));
    `;
    const out = execFileSync(
      'ip',
      [
        'netns',
        'exec',
        ns,
        process.execPath,
        '--import',
        import.meta.resolve('tsx'),
        '--input-type=module',
        '-e',
        code,
      ],
      { encoding: 'utf8', timeout: 60_000 },
    );
    const r = JSON.parse(out.trim().split('\n').pop() ?? '{}') as Record<string, unknown>;
    assert.equal(r['kind'], 'library');
    assert.equal(r['a'], 0);
    assert.equal(r['b'], 1);
    assert.match(String(r['berr']), /nosuch/);
    assert.equal(r['c'], 3, 'metainfo, table, chain');
    assert.equal(r['d'], 0);
    assert.equal(nft(['list', 'table', 'inet', 'foreign']), foreignBefore);
  });

  test('a worker given a malformed frame exits instead of guessing', async () => {
    const worker = fileURLToPath(new URL('./session-worker.ts', import.meta.url));
    const inputs = [
      Buffer.from([0xff, 0xff, 0xff, 0xff]),
      Buffer.concat([Buffer.from([0, 0, 0, 3]), Buffer.from('{x]')]),
      encodeFrame({ id: 'one', args: ['list', 'tables'] }),
      encodeFrame({ id: 1, args: [1, 2] }),
    ];
    // In parallel: each worker start costs a Node start with tsx.
    const status = await Promise.all(
      inputs.map(
        (input) =>
          new Promise<number | null>((resolve) => {
            const child = spawn(
              'ip',
              [
                'netns',
                'exec',
                ns,
                process.execPath,
                '--import',
                import.meta.resolve('tsx'),
                worker,
              ],
              { stdio: ['pipe', 'ignore', 'ignore'], timeout: 60_000 },
            );
            child.on('exit', (code) => resolve(code));
            child.stdin.on('error', () => undefined);
            // Held open: the worker must exit because of the frame, not because input ended.
            child.stdin.write(input);
          }),
      ),
    );
    assert.deepEqual(status, [2, 2, 2, 2]);
  });
});

test('frames: split and joined chunks, hostile lengths and bodies', () => {
  const got: unknown[] = [];
  const errors: string[] = [];
  const r = new FrameReader(
    (m) => got.push(m),
    (e) => errors.push(e),
  );
  const a = encodeFrame({ id: 1, text: 'x'.repeat(100_000) });
  const b = encodeFrame({ id: 2 });
  const all = Buffer.concat([a, b]);
  for (let i = 0; i < all.length; i += 777) r.push(all.subarray(i, i + 777));
  assert.deepEqual(
    got.map((m) => (m as { id: number }).id),
    [1, 2],
  );
  const bad = new FrameReader(
    () => assert.fail('no message from a hostile frame'),
    (e) => errors.push(e),
  );
  bad.push(Buffer.from([0x7f, 0xff, 0xff, 0xff, 1, 2]));
  bad.push(encodeFrame({ id: 3 }));
  assert.deepEqual(errors, ['frame of 2147483647 bytes is too large']);
});

test("only the driver's two request shapes reach the library", () => {
  assert.deepEqual(libraryRequest(['-f', '-'], 'add table inet t\n'), {
    script: 'add table inet t\n',
    command: '',
    json: false,
  });
  assert.deepEqual(libraryRequest(['-j', 'list', 'table', 'inet', 't']), {
    command: 'list table inet t\n',
    json: true,
  });
  assert.equal(libraryRequest(['-f', '/etc/passwd']), undefined);
  assert.equal(libraryRequest(['list', 'table;', 'flush', 'ruleset']), undefined);
  assert.equal(libraryRequest(['-j']), undefined);
  assert.equal(libraryRequest(['list', 'table "x"']), undefined);
});
