// Differential test of the L7 point against `palisade check`: pods in network namespaces with
// service accounts and labels drawn from a seed, random Calico policies with `http` and
// `serviceAccounts` rules, Istio AuthorizationPolicies and sometimes a STRICT PeerAuthentication;
// real HTTP requests from client pods (with their own SVID, a certificate taken from another
// pod, or none) through the destination's real inbound sidecar, each outcome compared with the
// L7 verdict of `palisade check --probes` (the real CLI) over the same YAML. The kernel is out of
// scope: no nft table is installed, so every connection reaches the sidecar.
// Replay a run with PALISADE_AGREE_SEED=<seed printed on failure>.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { loadText } from '@palisade/core';
import { certificateChainPem } from '@palisade/pki';
import { TestNode, canUseNetns } from '../testing/netns.js';
import type { TestPod } from '../testing/netns.js';
import { issue, newCa, tempDir } from './test-fixtures.js';

const CHILD = fileURLToPath(new URL('./test-agree-child.ts', import.meta.url));
const CLIENT = fileURLToPath(new URL('./test-agree-client.mjs', import.meta.url));
const BIN = fileURLToPath(new URL('../../../cli/bin/palisade.js', import.meta.url));

const SEED = Number(process.env.PALISADE_AGREE_SEED ?? Math.floor(Math.random() * 2 ** 31));
const WORLDS = 3;
const REQUESTS_PER_WORLD = 40;
const PORT = 8080;
const NS = 'agree';
const SAS = ['sa-0', 'sa-1', 'sa-2'];
const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH'];
const PATHS = ['/', '/a', '/a/b', '/api', '/api/v1/x', '/b', '/bx', '/admin'];
const PREFIXES = ['/a', '/api/', '/b', '/'];

/** mulberry32: a small seeded PRNG, so a failing run can be replayed exactly. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const rand = prng(SEED);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
const chance = (p: number): boolean => rand() < p;
const someOf = <T>(xs: readonly T[], max = 2): T[] => {
  const n = 1 + Math.floor(rand() * max);
  return [...new Set(Array.from({ length: n }, () => pick(xs)))];
};
const spiffe = (sa: string): string => `spiffe://cluster.local/ns/${NS}/sa/${sa}`;

interface PodSpec {
  readonly name: string;
  readonly sa: string;
  readonly pod: TestPod;
  readonly server: boolean;
}

function calicoPolicy(i: number): unknown {
  const rules = Array.from({ length: 1 + Math.floor(rand() * 3) }, () => {
    const r: Record<string, unknown> = { action: chance(0.75) ? 'Allow' : 'Deny' };
    if (chance(0.5)) r.protocol = 'TCP';
    if (chance(0.6))
      r.source = chance(0.6)
        ? { serviceAccounts: { names: someOf(SAS) } }
        : { serviceAccounts: { selector: `role == '${pick(['r0', 'r1'])}'` } };
    const http: Record<string, unknown> = {};
    if (chance(0.6)) http.methods = someOf(METHODS, 3);
    if (chance(0.6))
      http.paths = Array.from({ length: 1 + Math.floor(rand() * 2) }, () =>
        chance(0.5) ? { exact: pick(PATHS) } : { prefix: pick(PREFIXES) },
      );
    if (Object.keys(http).length > 0 || chance(0.7)) r.http = http;
    return r;
  });
  return {
    apiVersion: 'projectcalico.org/v3',
    kind: 'NetworkPolicy',
    metadata: { name: `np-${i}`, namespace: NS },
    spec: {
      selector: pick([`app == 'a'`, `app == 'b'`, 'all()']),
      ...(chance(0.7) ? { order: Math.floor(rand() * 100) } : {}),
      types: ['Ingress'],
      ingress: rules,
    },
  };
}

function istioPolicy(i: number): unknown {
  const rules = Array.from({ length: 1 + Math.floor(rand() * 2) }, () => {
    const r: Record<string, unknown> = {};
    if (chance(0.6))
      r.from = [
        {
          source: chance(0.7)
            ? { principals: someOf(SAS).map((s) => `cluster.local/ns/${NS}/sa/${s}`) }
            : { notPrincipals: someOf(SAS).map((s) => `cluster.local/ns/${NS}/sa/${s}`) },
        },
      ];
    const op: Record<string, unknown> = {};
    if (chance(0.6)) op.methods = someOf(METHODS, 3);
    if (chance(0.6))
      op.paths = someOf(
        PATHS.map((p) => (chance(0.3) && p !== '/' ? `${p}*` : p)),
        2,
      );
    if (Object.keys(op).length > 0) r.to = [{ operation: op }];
    return r;
  });
  return {
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: `ap-${i}`, namespace: NS },
    spec: {
      ...(chance(0.6) ? { selector: { matchLabels: { app: pick(['a', 'b']) } } } : {}),
      action: chance(0.6) ? 'ALLOW' : 'DENY',
      rules,
    },
  };
}

/** One world: the pods (fixed identities, fresh labels) and fresh policies, as one YAML text. */
function world(pods: readonly PodSpec[], saRoles: Readonly<Record<string, string>>): string {
  const docs: unknown[] = [
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } },
    ...SAS.map((sa) => ({
      apiVersion: 'v1',
      kind: 'ServiceAccount',
      metadata: { name: sa, namespace: NS, labels: { role: saRoles[sa] } },
    })),
    ...pods.map((p) => ({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: p.name, namespace: NS, labels: { app: pick(['a', 'b']) } },
      spec: {
        serviceAccountName: p.sa,
        containers: [
          {
            name: 'c',
            ...(p.server ? { ports: [{ name: 'http', containerPort: PORT }] } : {}),
          },
        ],
      },
      status: { podIP: p.pod.ip },
    })),
  ];
  const calico = Math.floor(rand() * 4);
  for (let i = 0; i < calico; i++) docs.push(calicoPolicy(i));
  const istio = Math.floor(rand() * 3);
  for (let i = 0; i < istio; i++) docs.push(istioPolicy(i));
  if (chance(0.3))
    docs.push({
      apiVersion: 'security.istio.io/v1',
      kind: 'PeerAuthentication',
      metadata: { name: 'strict', namespace: NS },
      spec: { mtls: { mode: 'STRICT' } },
    });
  return docs.map((d) => stringify(d)).join('---\n');
}

/** A child process speaking JSON lines. */
class Lines {
  readonly #waiting: ((m: Record<string, unknown>) => boolean)[] = [];
  #stderr = '';
  constructor(readonly proc: ChildProcessWithoutNullStreams) {
    proc.stderr.on(
      'data',
      (d: Buffer) => (this.#stderr = (this.#stderr + d.toString()).slice(-4000)),
    );
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
    this.proc.kill();
  }
}

function inPod(ns: string, args: readonly string[]): Lines {
  return new Lines(
    spawn('ip', ['netns', 'exec', ns, process.execPath, ...args], {
      stdio: ['pipe', 'pipe', 'pipe'],
    }),
  );
}

interface CheckLine {
  readonly verdict: string;
  readonly l7: {
    readonly verdict: 'allow' | 'deny';
    readonly provenance: { readonly kind: string; readonly reason: string };
    readonly egress?: { readonly verdict: string };
  };
}

/** `palisade check -f WORLD --probes FILE -o json`, the real CLI. */
function palisadeCheck(worldFile: string, probesFile: string): Promise<CheckLine[]> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [BIN, 'check', '-f', worldFile, '--probes', probesFile, '-o', 'json'],
      { timeout: 30_000, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        // Exit 1 means "a probe was denied"; anything else is a failure of the check itself.
        if (err && err.code !== 1)
          return reject(new Error(`palisade check: ${err.message} ${stderr}`));
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

describe(
  `sidecar agreement with palisade check in network namespaces, kernel not enforced (no nft table), seed ${SEED}`,
  { timeout: 120_000, skip: !canUseNetns() },
  () => {
    const dir = tempDir('agree');
    let node: TestNode | undefined;
    const sidecars = new Map<string, Lines>();
    const clients = new Map<string, Lines>();
    const pods: PodSpec[] = [];
    const saRoles: Record<string, string> = {};
    const creds = new Map<string, { cert: string; key: string }>();
    let bundle = '';
    let firstYaml = '';
    const stats = {
      requests: 0,
      allowed: 0,
      refused: 0,
      plaintext: 0,
      foreign: 0,
      ms: 0,
      setupMs: 0,
      checkWaitMs: 0,
    };
    const kinds = new Map<string, number>();

    before(async () => {
      const setupFrom = Date.now();
      node = new TestNode('ag');
      for (const sa of SAS) saRoles[sa] = pick(['r0', 'r1']);
      // Every service account is used (so identities differ), in a seeded order.
      const offset = Math.floor(rand() * SAS.length);
      for (let i = 1; i <= 5; i++)
        pods.push({
          name: `p${i}`,
          sa: SAS[(i + offset) % SAS.length] ?? 'sa-0',
          pod: node.addPod(i),
          server: i <= 2,
        });
      const ca = await newCa(join(dir.path, 'ca'));
      firstYaml = world(pods, saRoles);
      for (const p of pods) {
        const svid = await issue(ca, spiffe(p.sa));
        bundle = svid.bundlePem;
        creds.set(p.name, { cert: certificateChainPem(svid), key: svid.keyPem });
        if (!p.server) continue;
        const cfg = join(dir.path, `${p.name}.json`);
        writeFileSync(
          cfg,
          JSON.stringify({
            listenHost: p.pod.ip,
            listenPort: PORT,
            endpoint: `${NS}/${p.name}`,
            yaml: firstYaml,
            keyPem: svid.keyPem,
            certPem: svid.certPem,
            chainPem: svid.chainPem,
            bundlePem: svid.bundlePem,
          }),
          { mode: 0o600 },
        );
        sidecars.set(p.name, inPod(p.pod.ns, ['--import', 'tsx', CHILD, cfg]));
      }
      for (const p of pods) clients.set(p.name, inPod(p.pod.ns, [CLIENT]));
      await Promise.all([
        ...[...sidecars.values()].map((s) => s.next((m) => m.ready === true, 60_000)),
        ...[...clients.values()].map((c) => c.next((m) => m.ready === true)),
      ]);
      stats.setupMs = Date.now() - setupFrom;
    });

    after(() => {
      for (const l of [...sidecars.values(), ...clients.values()]) l.stop();
      node?.destroy();
      dir.cleanup();
    });

    test(`every real request through a real sidecar (Calico http methods, exact/prefix paths and serviceAccounts rules, Istio ALLOW/DENY principals, methods and paths, STRICT PeerAuthentication, own, foreign or no client certificate) is forwarded (200) or refused (403) exactly as palisade check judges it at L7 (seed ${SEED})`, async () => {
      const started = Date.now();
      const mismatches: string[] = [];
      const servers = pods.filter((p) => p.server);
      // Every world and its requests up front (one seeded sequence), so the `palisade check`
      // runs overlap with the traffic.
      const plans = Array.from({ length: WORLDS }, (_, w) => {
        const worldYaml = w === 0 ? firstYaml : world(pods, saRoles);
        const loaded = loadText(worldYaml, `world-${w}.yaml`);
        const errors = loaded.diagnostics.filter((d) => d.severity === 'error');
        assert.deepEqual(errors, [], `seed ${SEED}: world ${w} must load (a bug of the generator)`);
        const worldFile = join(dir.path, `world-${w}.yaml`);
        writeFileSync(worldFile, worldYaml);
        // The requests: client, server, method, path, and which certificate the client shows.
        const reqs = Array.from({ length: REQUESTS_PER_WORLD }, () => {
          const server = pick(servers);
          const client = pick(pods.filter((p) => p !== server));
          const r = rand();
          const shown: PodSpec | null =
            r < 0.75 ? client : r < 0.87 ? null : pick(pods.filter((p) => p !== client));
          return { client, server, method: pick(METHODS), path: pick(PATHS), shown };
        });
        const probesFile = join(dir.path, `probes-${w}.jsonl`);
        writeFileSync(
          probesFile,
          reqs
            .map((q) =>
              JSON.stringify({
                from: `${NS}/${q.client.name}`,
                to: `${NS}/${q.server.name}`,
                protocol: 'TCP',
                port: PORT,
                method: q.method,
                path: q.path,
                principal: q.shown === null ? null : spiffe(q.shown.sa),
              }),
            )
            .join('\n') + '\n',
        );
        return { worldYaml, reqs, checked: palisadeCheck(worldFile, probesFile) };
      });
      // A rejected check must not be reported as unhandled while an earlier world is running.
      for (const p of plans) p.checked.catch(() => undefined);
      let seq = 0;
      for (const [w, { worldYaml, reqs, checked: pending }] of plans.entries()) {
        if (w > 0)
          await Promise.all(
            [...sidecars.values()].map(async (s) => {
              const got = s.next((m) => m.installed === w + 1 || m.refused === w + 1);
              s.send({ version: w + 1, yaml: worldYaml });
              const m = await got;
              assert.equal(m.installed, w + 1, `seed ${SEED}: view refused: ${String(m.reason)}`);
            }),
          );
        // Every request of the world at once, each on its own connection.
        const outcomes = await Promise.all(
          reqs.map(async (q) => {
            const lines = clients.get(q.client.name);
            assert.ok(lines);
            const id = ++seq;
            const got = lines.next((m) => m.id === id);
            const cred = q.shown ? creds.get(q.shown.name) : undefined;
            lines.send({
              id,
              host: q.server.pod.ip,
              port: PORT,
              method: q.method,
              path: q.path,
              cert: cred?.cert ?? null,
              key: cred?.key ?? null,
              ca: bundle,
            });
            const m = await got;
            return {
              status: typeof m.status === 'number' ? m.status : undefined,
              body: typeof m.body === 'string' ? m.body : '',
              error: typeof m.error === 'string' ? m.error : undefined,
            };
          }),
        );
        const waitFrom = Date.now();
        const checked = await pending;
        stats.checkWaitMs += Date.now() - waitFrom;
        assert.equal(checked.length, reqs.length, `seed ${SEED}: one check line per probe`);
        for (const [i, q] of reqs.entries()) {
          const c = checked[i];
          const o = outcomes[i];
          if (!c || !o) continue;
          stats.requests++;
          if (q.shown === null) stats.plaintext++;
          else if (q.shown !== q.client) stats.foreign++;
          kinds.set(c.l7.provenance.kind, (kinds.get(c.l7.provenance.kind) ?? 0) + 1);
          const expected = c.l7.verdict === 'allow' ? 200 : 403;
          if (o.status === 200) stats.allowed++;
          if (o.status === 403) stats.refused++;
          const forwarded =
            o.status === 200 &&
            (JSON.parse(o.body ?? '{}') as { method?: string; url?: string }).url === q.path;
          const ok = expected === 200 ? forwarded : o.status === 403;
          if (!ok || c.l7.egress?.verdict === 'deny')
            mismatches.push(
              `world ${w}: ${q.client.name}(${q.client.sa}) -> ${q.server.name} ${q.method} ${q.path} cert=${q.shown?.name ?? 'none'}: sidecar ${o.status ?? o.error ?? '?'} ${(o.body ?? '').trim().slice(0, 160)}; check l7 ${c.l7.verdict} (${c.l7.provenance.reason})`,
            );
        }
        if (mismatches.length > 0)
          assert.fail(
            `seed ${SEED} (replay with PALISADE_AGREE_SEED=${SEED}): ${mismatches.length} disagreement(s)\n${mismatches.join('\n')}\n--- world ${w} ---\n${worldYaml}`,
          );
      }
      stats.ms = Date.now() - started;
      process.stdout.write(
        `# agreement: seed ${SEED}, ${WORLDS} worlds, ${stats.requests} requests (${stats.allowed} forwarded, ${stats.refused} refused; ${stats.plaintext} plaintext, ${stats.foreign} with a foreign certificate) in ${stats.ms} ms (setup ${stats.setupMs} ms before; ${stats.checkWaitMs} ms of it waiting for palisade check); check provenance kinds ${JSON.stringify(Object.fromEntries(kinds))}\n`,
      );
    });

    test('the random worlds exercise both outcomes (some requests forwarded, some refused)', () => {
      assert.ok(stats.requests === WORLDS * REQUESTS_PER_WORLD, `${stats.requests} requests`);
      assert.ok(stats.allowed > 0 && stats.refused > 0, `seed ${SEED}: ${JSON.stringify(stats)}`);
    });
  },
);
