// The online commands of DESIGN §5: login, apply -f [--dry-run], get, describe, delete, label,
// audit, audit verify, token create — and `palisade server`. kubectl-like output (table, wide,
// yaml, json) and exit codes: 0 ok, 1 refused or failed, 2 usage or connection error.
// Owns: argv → API calls → text. Must never: print a token except the one `token create` mints.

import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { stringify as toYaml } from 'yaml';
import { resolveKindName, runServer, ServerStartError } from '@palisade/controlplane';
import type { ServerKind } from '@palisade/controlplane';
import { loadMany } from '@palisade/core';
import type { Parsed } from '../args.js';
import { UsageError } from '../args.js';
import type { Io } from '../input.js';
import { InputError } from '../input.js';
import { readPassphrase } from '../ca.js';
import { expectOk, OnlineError, resolveConnection, send } from './client.js';
import type { Connection } from './client.js';
import { configPath, readConfig, writeConfig } from './config.js';

type ApiObject = {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    resourceVersion?: string;
    creationTimestamp?: string;
    uid?: string;
  };
  spec?: Record<string, unknown>;
} & Record<string, unknown>;

function kindArg(s: string | undefined): ServerKind {
  if (s === undefined) throw new UsageError('give a kind, e.g. palisade get globalnetworkpolicies');
  const k = resolveKindName(s);
  if (!k)
    throw new UsageError(
      `unknown kind ${JSON.stringify(s)}; kinds: tiers, gnp, networkpolicies (Calico), netpol (Kubernetes), pods, namespaces, serviceaccounts, hostendpoints, wep, roles, rolebindings, ...`,
    );
  return k;
}

function objectPath(k: ServerKind, ns: string | undefined, name?: string): string {
  const base = `/api/v1/${k.group}/${k.kind}`;
  const n = name === undefined ? '' : `/${encodeURIComponent(name)}`;
  if (!k.namespaced) return `${base}${n}`;
  if (ns === undefined) return base;
  return `${base}/${encodeURIComponent(ns)}${n}`;
}

function namespaceOf(p: Parsed, k: ServerKind): string | undefined {
  if (!k.namespaced) return undefined;
  if (p.values['all-namespaces']) return undefined;
  return (p.values.namespace as string | undefined) ?? 'default';
}

function age(ts: string | undefined, now = Date.now()): string {
  if (!ts) return '<unknown>';
  const s = Math.max(0, Math.floor((now - Date.parse(ts)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

function table(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return (
    rows
      .map((r) =>
        r
          .map((c, i) => (i === r.length - 1 ? c : c.padEnd((widths[i] ?? 0) + 3)))
          .join('')
          .trimEnd(),
      )
      .join('\n') + '\n'
  );
}

function tierOf(k: ServerKind, o: ApiObject): string {
  if (k.tiered === 'spec.tier') return typeof o.spec?.tier === 'string' ? o.spec.tier : 'default';
  if (k.tiered === 'default') return 'default';
  return '';
}

function printObjects(
  io: Io,
  k: ServerKind,
  items: readonly ApiObject[],
  format: string,
  allNs: boolean,
): void {
  if (format === 'json') {
    io.stdout.write(
      `${JSON.stringify(items.length === 1 ? items[0] : { apiVersion: 'v1', kind: 'List', items }, null, 2)}\n`,
    );
    return;
  }
  if (format === 'yaml') {
    io.stdout.write(
      items.length === 1 ? toYaml(items[0]) : toYaml({ apiVersion: 'v1', kind: 'List', items }),
    );
    return;
  }
  if (items.length === 0) {
    io.stderr.write(`No ${k.plural} found.\n`);
    return;
  }
  const wide = format === 'wide';
  const head = [
    ...(k.namespaced && allNs ? ['NAMESPACE'] : []),
    'NAME',
    ...(k.tiered === 'spec.tier' || k.tiered === 'default' ? ['TIER'] : []),
    ...(k.tiered === 'spec.tier' ? ['ORDER'] : []),
    'AGE',
    ...(wide ? ['RESOURCE-VERSION', 'SELECTOR', 'LABELS'] : []),
  ];
  const rows = items.map((o) => [
    ...(k.namespaced && allNs ? [o.metadata.namespace ?? ''] : []),
    o.metadata.name,
    ...(k.tiered === 'spec.tier' || k.tiered === 'default' ? [tierOf(k, o)] : []),
    ...(k.tiered === 'spec.tier'
      ? [o.spec?.order === undefined ? '<none>' : String(o.spec.order as number)]
      : []),
    age(o.metadata.creationTimestamp),
    ...(wide
      ? [
          o.metadata.resourceVersion ?? '',
          typeof o.spec?.selector === 'string' ? o.spec.selector : '',
          Object.entries(o.metadata.labels ?? {})
            .map(([a, b]) => `${a}=${b}`)
            .join(',') || '<none>',
        ]
      : []),
  ]);
  io.stdout.write(table([head, ...rows]));
}

function format(p: Parsed, allowed: readonly string[]): string {
  const o = (p.values.output as string | undefined) ?? 'table';
  if (!allowed.includes(o))
    throw new UsageError(`-o ${o} is not a format here; use ${allowed.join(', ')}`);
  return o;
}

/** Runs an online command, mapping failures to messages and exit codes. */
async function online(io: Io, fn: () => Promise<number>): Promise<number> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof OnlineError) {
      io.stderr.write(`${e.message}\n`);
      return e.exitCode;
    }
    throw e;
  }
}

// ------------------------------------------------------------------ login

export function loginCommand(p: Parsed, io: Io): Promise<number> {
  return online(io, async () => {
    const v = p.values;
    const server = (v.server as string | undefined) ?? process.env.PALISADE_SERVER;
    if (!server) throw new UsageError('login needs --server https://HOST:PORT');
    const c = resolveConnection({ values: { ...v, server }, positionals: [] });
    if (!c.token) throw new UsageError('login needs --token-file FILE (or PALISADE_TOKEN)');
    const who = expectOk<{ kind: string; name: string }>(await send(c, 'GET', '/api/v1/whoami'));
    const path = configPath();
    const cfg = readConfig(path);
    const name = (v.name as string | undefined) ?? 'default';
    const caFile = (v['ca-file'] as string | undefined) ?? process.env.PALISADE_CA_FILE;
    writeConfig(path, {
      current: name,
      contexts: {
        ...cfg.contexts,
        [name]: {
          server: c.server,
          token: c.token,
          ...(caFile ? { caFile: resolve(caFile) } : {}),
        },
      },
    });
    io.stdout.write(
      `logged in to ${c.server} as ${who.kind} ${who.name}; context ${JSON.stringify(name)} saved in ${path}\n`,
    );
    return 0;
  });
}

// ------------------------------------------------------------------ apply

interface ApplyReply {
  dryRun: boolean;
  resourceVersion: string;
  results: { kind: string; namespace?: string; name: string; action: string }[];
  connectivity?: {
    routeChanges: {
      from: string;
      to: string;
      port: number;
      method: string;
      path: string;
      change: string;
      after: { verdict: string; reason: string };
    }[];
    addedEndpoints: string[];
    removedEndpoints: string[];
    affectedEndpoints: number;
    endpoints: number;
    ports: { protocol: string; port: number }[];
    checks: number;
    truncated: boolean;
    changes: {
      from: string;
      to: string;
      protocol: string;
      port: number;
      change: string;
      before: { verdict: string; reason: string };
      after: { verdict: string; reason: string };
    }[];
  };
}

const APPLY_EXTENSIONS = /\.(ya?ml|json)$/i;

/** Files of a directory, recursively, in sorted order (as the offline commands read them). */
function walkDir(dir: string, out: string[]): void {
  for (const name of readdirSync(dir).sort()) {
    if (name.startsWith('.')) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walkDir(p, out);
    else if (APPLY_EXTENSIONS.test(name)) out.push(p);
  }
}

async function readApplyInputs(
  paths: readonly string[],
  io: Io,
): Promise<{ name: string; text: string }[]> {
  if (paths.length === 0)
    throw new InputError('no input: give -f FILE, -f DIRECTORY or -f - (stdin)');
  const out: { name: string; text: string }[] = [];
  for (const f of paths) {
    if (f === '-') {
      out.push({ name: '<stdin>', text: await io.readStdin() });
      continue;
    }
    try {
      const files: string[] = [];
      if (statSync(f).isDirectory()) {
        walkDir(f, files);
        if (files.length === 0) throw new InputError(`${f} holds no .yaml, .yml or .json file`);
      } else files.push(f);
      for (const x of files) out.push({ name: x, text: readFileSync(x, 'utf8') });
    } catch (e) {
      if (e instanceof InputError) throw e;
      throw new InputError(
        `cannot read ${f}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      );
    }
  }
  return out;
}

export function applyCommand(p: Parsed, io: Io): Promise<number> {
  return online(io, async () => {
    const fmt = format(p, ['table', 'json']);
    const files = await readApplyInputs((p.values.file as string[] | undefined) ?? [], io);
    // Validate locally first: the same loader as the server, with each file's own name.
    const local = loadMany(files, { accessKinds: true });
    const errors = local.diagnostics.filter((d) => d.severity === 'error');
    if (errors.length > 0) {
      for (const d of errors)
        io.stderr.write(
          `${d.file}:${d.line}:${d.column}: error ${d.code}: ${d.message}${d.hint ? `\n  hint: ${d.hint}` : ''}\n`,
        );
      io.stderr.write(`${errors.length} error(s); nothing was applied\n`);
      return 1;
    }
    // One body, so the server applies every file in one transaction; lines are mapped back.
    const starts: { name: string; line: number }[] = [];
    let line = 1;
    const parts: string[] = [];
    for (const f of files) {
      if (parts.length > 0) {
        parts.push('---\n');
        line += 1;
      }
      starts.push({ name: f.name, line });
      const text = f.text.endsWith('\n') ? f.text : `${f.text}\n`;
      parts.push(text);
      line += text.split('\n').length - 1;
    }
    const c = resolveConnection(p);
    const r = await send(
      c,
      'POST',
      `/api/v1/apply${p.values['dry-run'] ? '?dryRun=1' : ''}`,
      parts.join(''),
      'application/yaml',
    );
    if (r.status === 422) {
      const b = JSON.parse(r.body) as {
        diagnostics?: {
          file: string;
          line: number;
          column: number;
          code: string;
          message: string;
          hint?: string;
        }[];
        message?: string;
      };
      for (const d of b.diagnostics ?? []) {
        const s = [...starts].reverse().find((x) => x.line <= d.line);
        const file = s?.name ?? d.file;
        io.stderr.write(
          `${file}:${s ? d.line - s.line + 1 : d.line}:${d.column}: error ${d.code}: ${d.message}${d.hint ? `\n  hint: ${d.hint}` : ''}\n`,
        );
      }
      io.stderr.write(`${b.message ?? 'invalid input; nothing was applied'}\n`);
      return 1;
    }
    const out = expectOk<ApplyReply>(r);
    if (fmt === 'json') {
      io.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
      return 0;
    }
    const suffix = out.dryRun ? ' (dry run)' : '';
    for (const x of out.results)
      io.stdout.write(
        `${x.kind}/${x.namespace ? `${x.namespace}/` : ''}${x.name} ${x.action}${suffix}\n`,
      );
    const d = out.connectivity;
    if (d) {
      io.stdout.write(
        `\nconnectivity diff: ${d.changes.length} change(s)${d.truncated ? ' (truncated)' : ''} — ${d.checks} probe(s) over ${d.affectedEndpoints} affected of ${d.endpoints} endpoint(s); ports ${d.ports.map((x) => `${x.protocol}/${x.port}`).join(', ')}\n`,
      );
      if (d.addedEndpoints.length > 0)
        io.stdout.write(`  new endpoints (no before to compare): ${d.addedEndpoints.join(', ')}\n`);
      if (d.removedEndpoints.length > 0)
        io.stdout.write(`  removed endpoints: ${d.removedEndpoints.join(', ')}\n`);
      for (const ch of d.changes) {
        const mark = ch.change === 'newly-allowed' ? '+' : '-';
        const why = ch.after.reason;
        io.stdout.write(
          `  ${mark} ${ch.from} -> ${ch.to} ${ch.protocol}/${ch.port} ${ch.change.replace('-', ' ')}: ${why}\n`,
        );
      }
      for (const ch of d.routeChanges) {
        const mark = ch.change === 'newly-allowed' ? '+' : '-';
        io.stdout.write(
          `  ${mark} ${ch.from} -> ${ch.to} ${ch.method} :${ch.port}${ch.path} ${ch.change.replace('-', ' ')}: ${ch.after.reason}\n`,
        );
      }
    }
    return 0;
  });
}

// ------------------------------------------------------------------ get / describe

export function getCommand(p: Parsed, io: Io): Promise<number> {
  return online(io, async () => {
    const fmt = format(p, ['table', 'wide', 'yaml', 'json']);
    const k = kindArg(p.positionals[0]);
    const name = p.positionals[1];
    if (p.positionals.length > 2)
      throw new UsageError(`unexpected argument ${JSON.stringify(p.positionals[2])}`);
    const ns = namespaceOf(p, k);
    if (name !== undefined && k.namespaced && ns === undefined)
      throw new UsageError('give -n NAMESPACE with a name (not -A)');
    const c = resolveConnection(p);
    if (name !== undefined) {
      const o = expectOk<ApiObject>(await send(c, 'GET', objectPath(k, ns, name)));
      printObjects(io, k, [o], fmt, false);
    } else {
      const l = expectOk<{ items: ApiObject[] }>(await send(c, 'GET', objectPath(k, ns)));
      printObjects(io, k, l.items, fmt, Boolean(p.values['all-namespaces']));
    }
    return 0;
  });
}

export function describeCommand(p: Parsed, io: Io): Promise<number> {
  return online(io, async () => {
    const k = kindArg(p.positionals[0]);
    const name = p.positionals[1];
    if (name === undefined) throw new UsageError('describe needs KIND NAME');
    const ns = namespaceOf(p, k) ?? (k.namespaced ? 'default' : undefined);
    const c = resolveConnection(p);
    const o = expectOk<ApiObject>(await send(c, 'GET', objectPath(k, ns, name)));
    const m = o.metadata;
    const lines = [
      `Name:              ${m.name}`,
      ...(m.namespace ? [`Namespace:         ${m.namespace}`] : []),
      `Kind:              ${o.kind} (${o.apiVersion})`,
      ...(k.tiered ? [`Tier:              ${k.tiered === 'self' ? m.name : tierOf(k, o)}`] : []),
      `Labels:            ${
        Object.entries(m.labels ?? {})
          .map(([a, b]) => `${a}=${b}`)
          .join('\n                   ') || '<none>'
      }`,
      `Created:           ${m.creationTimestamp ?? '<unknown>'} (${age(m.creationTimestamp)} ago)`,
      `ResourceVersion:   ${m.resourceVersion ?? ''}`,
      `UID:               ${m.uid ?? ''}`,
    ];
    io.stdout.write(`${lines.join('\n')}\n`);
    const body = Object.fromEntries(
      Object.entries(o).filter(([x]) => !['apiVersion', 'kind', 'metadata'].includes(x)),
    );
    if (Object.keys(body).length > 0) io.stdout.write(`${toYaml(body).replace(/^(?=.)/gm, '')}`);
    // Recent changes, when the caller may read the audit log.
    const a = await send(
      c,
      'GET',
      `/api/v1/audit?name=${encodeURIComponent(m.name)}&kind=${encodeURIComponent(k.kind)}&limit=5`,
    );
    if (a.status === 200) {
      const entries = (
        JSON.parse(a.body) as {
          entries: {
            time: string;
            verb: string;
            outcome: string;
            principal?: { kind: string; name: string };
          }[];
        }
      ).entries;
      if (entries.length > 0) {
        io.stdout.write('History (audit log):\n');
        for (const e of entries)
          io.stdout.write(
            `  ${e.time}  ${e.verb.padEnd(10)} ${e.outcome.padEnd(8)} ${e.principal ? `${e.principal.kind} ${e.principal.name}` : 'server'}\n`,
          );
      }
    }
    return 0;
  });
}

// ------------------------------------------------------------------ delete / label

export function deleteCommand(p: Parsed, io: Io): Promise<number> {
  return online(io, async () => {
    const k = kindArg(p.positionals[0]);
    const names = p.positionals.slice(1);
    if (names.length === 0) throw new UsageError('delete needs KIND NAME...');
    const ns = k.namespaced ? ((p.values.namespace as string | undefined) ?? 'default') : undefined;
    const rv = p.values['resource-version'] as string | undefined;
    const c = resolveConnection(p);
    for (const n of names) {
      expectOk(
        await send(
          c,
          'DELETE',
          `${objectPath(k, ns, n)}${rv ? `?resourceVersion=${encodeURIComponent(rv)}` : ''}`,
        ),
      );
      io.stdout.write(`${k.kind}.${k.group}/${ns ? `${ns}/` : ''}${n} deleted\n`);
    }
    return 0;
  });
}

export function labelCommand(p: Parsed, io: Io): Promise<number> {
  return online(io, async () => {
    const k = kindArg(p.positionals[0]);
    const name = p.positionals[1];
    const changes = p.positionals.slice(2);
    if (name === undefined || changes.length === 0)
      throw new UsageError('label needs KIND NAME key=value... (key- removes a label)');
    const labels: Record<string, string | null> = {};
    for (const ch of changes) {
      if (ch.endsWith('-') && !ch.includes('=')) labels[ch.slice(0, -1)] = null;
      else {
        const i = ch.indexOf('=');
        if (i <= 0) throw new UsageError(`${JSON.stringify(ch)} must be key=value or key-`);
        labels[ch.slice(0, i)] = ch.slice(i + 1);
      }
    }
    const ns = k.namespaced ? ((p.values.namespace as string | undefined) ?? 'default') : undefined;
    const rv = p.values['resource-version'] as string | undefined;
    const c = resolveConnection(p);
    const body = JSON.stringify({ metadata: { labels, ...(rv ? { resourceVersion: rv } : {}) } });
    expectOk(await send(c, 'PATCH', objectPath(k, ns, name), body, 'application/merge-patch+json'));
    io.stdout.write(`${k.kind}.${k.group}/${ns ? `${ns}/` : ''}${name} labeled\n`);
    return 0;
  });
}

// ------------------------------------------------------------------ audit

function sinceArg(s: string): string {
  const m = /^(\d+)(s|m|h|d)$/.exec(s);
  if (m) {
    const mult = { s: 1, m: 60, h: 3600, d: 86400 }[m[2] as 's' | 'm' | 'h' | 'd'];
    return new Date(Date.now() - Number(m[1]) * mult * 1000).toISOString();
  }
  if (Number.isNaN(Date.parse(s)))
    throw new UsageError(`--since ${JSON.stringify(s)} must be an ISO time or a duration like 2h`);
  return new Date(Date.parse(s)).toISOString();
}

interface AuditEntryView {
  seq: number;
  time: string;
  principal?: { kind: string; name: string; tokenId?: string };
  remote: string;
  verb: string;
  kind?: string;
  namespace?: string;
  name?: string;
  outcome: string;
  status: number;
  message?: string;
  changes?: { verb: string; kind: string; namespace?: string; name: string }[];
}

export function auditCommand(p: Parsed, io: Io): Promise<number> {
  return online(io, async () => {
    const c = resolveConnection(p);
    if (p.positionals[0] === 'verify') {
      const r = expectOk<{
        ok: boolean;
        entries: number;
        problems: { seq: number; problem: string }[];
      }>(await send(c, 'GET', '/api/v1/audit/verify'));
      if (p.values.output === 'json') io.stdout.write(`${JSON.stringify(r)}\n`);
      else if (r.ok)
        io.stdout.write(`audit log intact: ${r.entries} entries, hash chain verified\n`);
      else {
        io.stdout.write(
          `audit log TAMPERED: ${r.problems.length} problem(s) in ${r.entries} entries\n`,
        );
        for (const x of r.problems) io.stdout.write(`  entry ${x.seq}: ${x.problem}\n`);
      }
      return r.ok ? 0 : 1;
    }
    if (p.positionals.length > 0)
      throw new UsageError(
        `unexpected argument ${JSON.stringify(p.positionals[0])} (did you mean palisade audit verify?)`,
      );
    const fmt = format(p, ['table', 'json']);
    const q = new URLSearchParams();
    const v = p.values;
    if (v.user) q.set('user', v.user as string);
    if (v.kind) q.set('kind', resolveKindName(v.kind as string)?.kind ?? (v.kind as string));
    if (v.name) q.set('name', v.name as string);
    if (v.since) q.set('since', sinceArg(v.since as string));
    if (v.refused) q.set('outcome', 'refused');
    if (v.limit) q.set('limit', v.limit as string);
    const r = expectOk<{ entries: AuditEntryView[] }>(
      await send(c, 'GET', `/api/v1/audit?${q.toString()}`),
    );
    if (fmt === 'json') {
      io.stdout.write(`${JSON.stringify(r.entries, null, 2)}\n`);
      return 0;
    }
    const rows = r.entries.map((e) => {
      const target =
        e.name !== undefined
          ? `${e.kind ?? ''} ${e.namespace ? `${e.namespace}/` : ''}${e.name}`
          : e.changes && e.changes.length > 0
            ? `${e.changes.length} object(s): ${e.changes
                .slice(0, 3)
                .map((x) => `${x.kind.split('.')[0] ?? x.kind}/${x.name}`)
                .join(', ')}${e.changes.length > 3 ? ', ...' : ''}`
            : (e.kind ?? '');
      return [
        String(e.seq),
        e.time,
        e.principal ? `${e.principal.kind} ${e.principal.name}` : '-',
        e.remote,
        e.verb,
        target,
        e.outcome === 'refused' ? `REFUSED ${e.status}` : 'ok',
      ];
    });
    io.stdout.write(table([['SEQ', 'TIME', 'WHO', 'FROM', 'VERB', 'WHAT', 'OUTCOME'], ...rows]));
    return 0;
  });
}

// ------------------------------------------------------------------ token create

export function tokenCommand(p: Parsed, io: Io): Promise<number> {
  return online(io, async () => {
    if (p.positionals[0] !== 'create' || p.positionals.length > 1)
      throw new UsageError('usage: palisade token create --user U | --node N [--group G]...');
    const v = p.values;
    if ((v.user === undefined) === (v.node === undefined))
      throw new UsageError('give exactly one of --user U and --node N');
    let ttlSeconds: number | undefined;
    if (v.ttl !== undefined) {
      const m = /^(\d+)(m|h|d)$/.exec(v.ttl as string);
      if (!m) throw new UsageError('--ttl must look like 90m, 24h or 30d');
      ttlSeconds = Number(m[1]) * { m: 60, h: 3600, d: 86400 }[m[2] as 'm' | 'h' | 'd'];
    }
    const c = resolveConnection(p);
    const body = {
      ...(v.user !== undefined ? { user: v.user } : { node: v.node }),
      groups: (v.group as string[] | undefined) ?? [],
      ...(ttlSeconds !== undefined ? { ttlSeconds } : {}),
    };
    const r = expectOk<{
      token: string;
      id: string;
      subject: { kind: string; name: string };
      expiresAt?: string;
    }>(await send(c, 'POST', '/api/v1/tokens', JSON.stringify(body)));
    if (v.output === 'json') io.stdout.write(`${JSON.stringify(r)}\n`);
    else {
      io.stdout.write(`${r.token}\n`);
      io.stderr.write(
        `token ${r.id} for ${r.subject.kind} ${r.subject.name}${r.expiresAt ? `, expires ${r.expiresAt}` : ''}; it is shown only once\n`,
      );
    }
    return 0;
  });
}

// ------------------------------------------------------------------ server

function caPassphraseOption(file: string | undefined): { caPassphrase?: string } {
  const passphrase = readPassphrase(file);
  return passphrase === undefined ? {} : { caPassphrase: passphrase };
}

export async function serverCommand(p: Parsed, io: Io): Promise<number> {
  let running;
  try {
    running = await runServer({
      listen: (p.values.listen as string | undefined) ?? '127.0.0.1:9443',
      dataDir: (p.values['data-dir'] as string | undefined) ?? './palisade-data',
      ...(p.values.store !== undefined ? { store: p.values.store as string } : {}),
      insecurePlaintext: Boolean(p.values['insecure-plaintext']),
      ...caPassphraseOption(p.values['ca-passphrase-file'] as string | undefined),
      log: (l) => io.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), ...l })}\n`),
      say: (l) => io.stdout.write(`${l}\n`),
    });
  } catch (e) {
    if (e instanceof ServerStartError) {
      io.stderr.write(`error: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
  const server = running;
  await new Promise<void>((resolveStop) => {
    const stop = (sig: string) => {
      io.stdout.write(`${sig}: shutting down\n`);
      process.off('SIGTERM', onTerm);
      process.off('SIGINT', onInt);
      void server.stop().then(resolveStop);
    };
    const onTerm = () => stop('SIGTERM');
    const onInt = () => stop('SIGINT');
    process.on('SIGTERM', onTerm);
    process.on('SIGINT', onInt);
  });
  return 0;
}

export type { Connection };
