// The L4 (tcp) sidecar in network namespaces: pods joined by real veth interfaces, a raw line
// protocol (not HTTP) to the database pod's L4 inbound relay, from the api pod's L4 outbound
// relay (mTLS originated with secure naming) and from clients showing their own certificate,
// another pod's (stolen) certificate, or none. The source address the relay binds to the
// identity is the one the kernel routed. Each outcome is compared with `palisade check` (the
// real CLI) for the same YAML (DESIGN §4.6; Calico `http` rules cannot match non-HTTP traffic).
// The kernel is out of scope (no nft table). Skipped where namespaces are not available.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { certificateChainPem } from '@palisade/pki';
import { TestNode, canUseNetns } from '../testing/netns.js';
import type { TestPod } from '../testing/netns.js';
import type { AccessRecord } from './access-log.js';
import { issue, newCa, tempDir } from './test-fixtures.js';
import { CALICO, DB_PORT, NS, STRICT, spiffe, world } from './tcp-world.js';

const CHILD = fileURLToPath(new URL('./test-tcp-child.ts', import.meta.url));
const BIN = fileURLToPath(new URL('../../../cli/bin/palisade.js', import.meta.url));
type Who = 'db' | 'api' | 'web' | 'intruder';

class Child {
  readonly records: AccessRecord[] = [];
  readonly #waiting: ((m: Record<string, unknown>) => boolean)[] = [];
  #stderr = '';
  constructor(readonly proc: ChildProcessWithoutNullStreams) {
    readline.createInterface({ input: proc.stderr }).on('line', (line) => {
      // The access log goes to stderr; anything else is kept for failure messages.
      try {
        const r = JSON.parse(line) as AccessRecord;
        if (typeof r.verdict === 'string') this.records.push(r);
      } catch {
        this.#stderr = (this.#stderr + line + '\n').slice(-4000);
      }
    });
    readline.createInterface({ input: proc.stdout }).on('line', (line) => {
      const m = JSON.parse(line) as Record<string, unknown>;
      const i = this.#waiting.findIndex((w) => w(m));
      if (i >= 0) this.#waiting.splice(i, 1);
    });
  }
  next(
    match: (m: Record<string, unknown>) => boolean,
    ms = 30_000,
  ): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no answer in ${ms} ms: ${this.#stderr}`)), ms);
      this.#waiting.push((m) => {
        if (!match(m)) return false;
        clearTimeout(t);
        resolve(m);
        return true;
      });
    });
  }
  send(o: unknown): void {
    this.proc.stdin.write(`${JSON.stringify(o)}\n`);
  }
  stop(): void {
    this.proc.stdin.end();
    setTimeout(() => this.proc.kill(), 2_000).unref();
  }
}

interface CheckLine {
  readonly l7: { readonly verdict: string; readonly provenance: { readonly kind: string } };
}

describe(
  'the L4 (tcp) sidecar in network namespaces',
  { timeout: 90_000, skip: !canUseNetns() },
  () => {
    const dir = tempDir('tcp-netns');
    let node: TestNode | undefined;
    const pods = new Map<Who, TestPod>();
    const children = new Map<Who, Child>();
    const creds = new Map<Who, { cert: string; key: string }>();
    let bundle = '';
    let yaml = '';
    let dbPort = 0;
    let apiRelay = 0;
    let webRelay = 0;

    before(async () => {
      node = new TestNode('tc');
      for (const [i, who] of (['db', 'api', 'web', 'intruder'] as const).entries())
        pods.set(who, node.addPod(i + 1));
      const ip = (w: Who): string => pods.get(w)?.ip ?? '';
      yaml = world(
        { db: ip('db'), api: ip('api'), web: ip('web'), intruder: ip('intruder') },
        CALICO,
        STRICT,
      );
      const ca = await newCa(join(dir.path, 'ca'));
      for (const [who, pod] of pods) {
        const svid = await issue(ca, spiffe(who));
        bundle = svid.bundlePem;
        creds.set(who, { cert: certificateChainPem(svid), key: svid.keyPem });
        const cfg = join(dir.path, `${who}.json`);
        writeFileSync(
          cfg,
          JSON.stringify({
            endpoint: `${NS}/${who}`,
            yaml,
            keyPem: svid.keyPem,
            certPem: svid.certPem,
            chainPem: svid.chainPem,
            bundlePem: svid.bundlePem,
            podIp: pod.ip,
            ...(who === 'db' ? { inbound: { port: DB_PORT } } : {}),
            ...(who === 'api' || who === 'web'
              ? { outbound: { ip: ip('db'), port: DB_PORT } }
              : {}),
          }),
          { mode: 0o600 },
        );
        children.set(
          who,
          new Child(
            spawn(
              'ip',
              ['netns', 'exec', pod.ns, process.execPath, '--import', 'tsx', CHILD, cfg],
              {
                stdio: ['pipe', 'pipe', 'pipe'],
              },
            ),
          ),
        );
      }
      const ready = await Promise.all(
        [...children.entries()].map(
          async ([who, c]) => [who, await c.next((m) => m.ready === true, 60_000)] as const,
        ),
      );
      for (const [who, m] of ready) {
        if (who === 'db') dbPort = Number(m.inbound);
        if (who === 'api') apiRelay = Number(m.outbound);
        if (who === 'web') webRelay = Number(m.outbound);
      }
    });

    after(() => {
      for (const c of children.values()) c.stop();
      node?.destroy();
      dir.cleanup();
    });

    let seq = 0;
    /** One connection from pod `from`, to the db (or to its own relay on loopback). */
    async function talk(from: Who, shows: Who | null, viaRelay = false): Promise<string> {
      const c = children.get(from);
      assert.ok(c);
      const id = ++seq;
      const got = c.next((m) => m.id === id);
      const cred = shows === null ? undefined : creds.get(shows);
      c.send({
        id,
        host: viaRelay ? '127.0.0.1' : (pods.get('db')?.ip ?? ''),
        port: viaRelay ? (from === 'api' ? apiRelay : webRelay) : dbPort,
        cert: viaRelay ? null : (cred?.cert ?? null),
        key: viaRelay ? null : (cred?.key ?? null),
        ca: bundle,
      });
      const m = await got;
      return typeof m.data === 'string' ? m.data : '';
    }

    function check(probes: readonly Record<string, unknown>[]): Promise<CheckLine[]> {
      const wf = join(dir.path, 'world.yaml');
      const pf = join(dir.path, 'probes.jsonl');
      writeFileSync(wf, yaml);
      writeFileSync(pf, probes.map((p) => JSON.stringify(p)).join('\n') + '\n');
      return new Promise((resolve, reject) => {
        execFile(
          process.execPath,
          [BIN, 'check', '-f', wf, '--probes', pf, '-o', 'json'],
          { timeout: 30_000 },
          (err, stdout, stderr) => {
            if (err && err.code !== 1) return reject(new Error(`palisade check: ${stderr}`));
            resolve(
              stdout
                .split('\n')
                .filter((l) => l.trim() !== '')
                .map((l) => JSON.parse(l) as CheckLine),
            );
          },
        );
      });
    }

    test('a raw TCP protocol reaches the database for the right identity (from its outbound relay and with its own certificate) and is refused for the wrong identity, for a stolen certificate from another pod and for plaintext under STRICT, each exactly as palisade check predicts and with its provenance in the access log', async () => {
      const cases: readonly {
        readonly name: string;
        readonly from: Who;
        readonly shows: Who | null;
        readonly relay?: boolean;
        readonly allowed: boolean;
        readonly kind: string;
      }[] = [
        {
          name: 'api through its L4 outbound relay (mTLS, secure naming)',
          from: 'api',
          shows: 'api',
          relay: true,
          allowed: true,
          kind: 'rule',
        },
        {
          name: 'api with its own certificate',
          from: 'api',
          shows: 'api',
          allowed: true,
          kind: 'rule',
        },
        {
          name: 'web (wrong identity) through its relay: its only rule has an http match',
          from: 'web',
          shows: 'web',
          relay: true,
          allowed: false,
          kind: 'tier-default',
        },
        {
          name: 'web with its own certificate',
          from: 'web',
          shows: 'web',
          allowed: false,
          kind: 'tier-default',
        },
        {
          name: "the intruder's pod presenting api's stolen certificate",
          from: 'intruder',
          shows: 'api',
          allowed: false,
          kind: 'identity-mismatch',
        },
        {
          name: 'api in plaintext under STRICT',
          from: 'api',
          shows: null,
          allowed: false,
          kind: 'peer-authentication',
        },
      ];
      const checked = await check(
        cases.map((c) => ({
          from: `${NS}/${c.from}`,
          to: `${NS}/db`,
          protocol: 'TCP',
          port: DB_PORT,
          principal: c.shows === null ? null : spiffe(c.shows),
        })),
      );
      const db = children.get('db');
      assert.ok(db);
      for (const [i, c] of cases.entries()) {
        const n: number = db.records.length;
        const data = await talk(c.from, c.shows, c.relay === true);
        const k = checked[i];
        assert.ok(k);
        assert.equal(k.l7.verdict, c.allowed ? 'allow' : 'deny', `${c.name}: palisade check`);
        assert.equal(k.l7.provenance.kind, c.kind, `${c.name}: palisade check provenance`);
        assert.equal(data, c.allowed ? 'hello ping\nbye\n' : '', `${c.name}: what came back`);
        const end = Date.now() + 5_000;
        while (db.records.length === n && Date.now() < end)
          await new Promise((res) => setTimeout(res, 20));
        const r: AccessRecord | undefined = db.records[n];
        assert.ok(r, `${c.name}: the db's access record`);
        assert.equal(r.verdict, c.allowed ? 'allow' : 'deny', `${c.name}: ${r.provenance.reason}`);
        assert.equal(r.provenance.kind, c.kind, `${c.name}: ${r.provenance.reason}`);
        assert.equal(r.source.ip, pods.get(c.from)?.ip, `${c.name}: the routed source address`);
        assert.equal(r.stage, 'connection');
      }
    });
  },
);
