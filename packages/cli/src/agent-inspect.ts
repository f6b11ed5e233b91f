// `palisade agent status`, `palisade agent describe REF` and `palisade describe endpoint REF`:
// ask the local agent over its root-only admin socket and print what it enforces (-o table, json
// or yaml). Owns: the output formats. Must never: load the engine or the agent (a status query
// stays fast), or talk to anything but the local admin socket.

import type { Parsed } from './args.js';
import { UsageError } from './args.js';
import type { Io } from './input.js';

interface Summary {
  ref: string;
  kind: string;
  iface: string;
  addresses: string[];
  ingressPolicies: number;
  egressPolicies: number;
}
interface ErrorRow {
  at: string;
  message: string;
}
interface Status {
  node: string;
  table: string;
  connected: boolean;
  revision: string | null;
  appliedRevision: string | null;
  lastSync: string | null;
  lastApply: string | null;
  applies: number;
  ruleCount: number;
  endpoints: Summary[];
  podsWithoutEndpoint: string[];
  errors: ErrorRow[];
}
interface PolicyRow {
  tier: string;
  order: number | null;
  name: string;
  kind: string;
  apiVersion: string;
  staged: boolean;
}
interface Report {
  endpoint: Summary;
  labels: Record<string, string>;
  policies: { ingress: PolicyRow[]; egress: PolicyRow[] };
  profiles: { ingress: string[]; egress: string[] };
  chains: {
    name: string;
    role: string;
    rules: { rule: string; packets: number | null; bytes: number | null; drift: boolean }[];
  }[];
  revision: string | null;
  appliedRevision: string | null;
  lastSync: string | null;
  lastApply: string | null;
  errors: ErrorRow[];
}

function table(rows: string[][]): string {
  const w = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(w[i] ?? 0))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

function formatOf(p: Parsed): 'table' | 'json' | 'yaml' {
  const o = (p.values['output'] as string | undefined) ?? 'table';
  if (o !== 'table' && o !== 'json' && o !== 'yaml')
    throw new UsageError(`-o must be table, json or yaml, not ${JSON.stringify(o)}`);
  return o;
}

async function dump(io: Io, fmt: 'json' | 'yaml', body: unknown): Promise<void> {
  if (fmt === 'json') io.stdout.write(`${JSON.stringify(body, null, 2)}\n`);
  else io.stdout.write((await import('yaml')).stringify(body));
}

function socketOf(p: Parsed): string {
  return (
    (p.values['admin-socket'] as string | undefined) ??
    process.env['PALISADE_AGENT_ADMIN_SOCKET'] ??
    '/run/palisade/agent-admin.sock'
  );
}

async function get(p: Parsed, io: Io, path: string): Promise<unknown> {
  const { adminGet, AdminCallError } = await import('@palisade/dataplane/admin-client');
  try {
    return await adminGet(socketOf(p), path);
  } catch (e) {
    if (e instanceof AdminCallError) {
      io.stderr.write(`error CLI_ERR_AGENT: ${e.message}\n`);
      return undefined;
    }
    throw e;
  }
}

const dash = (s: string | null) => s ?? '-';

export async function agentStatusCommand(p: Parsed, io: Io): Promise<number> {
  const fmt = formatOf(p);
  const s = (await get(p, io, '/v1/status')) as Status | undefined;
  if (!s) return 2;
  if (fmt !== 'table') {
    await dump(io, fmt, s);
    return 0;
  }
  const lines = [
    `Node:              ${s.node}`,
    `Table:             inet ${s.table} (${s.ruleCount} rules, ${s.applies} applies)`,
    `API:               ${s.connected ? 'connected' : 'NOT CONNECTED (rules in the kernel kept)'}`,
    `Revision:          ${dash(s.revision)} seen, ${dash(s.appliedRevision)} applied`,
    `Last sync:         ${dash(s.lastSync)}`,
    `Last apply:        ${dash(s.lastApply)}`,
    '',
    `Endpoints (${s.endpoints.length}):`,
    s.endpoints.length === 0
      ? '  none'
      : table([
          ['  ENDPOINT', 'KIND', 'INTERFACE', 'ADDRESSES', 'INGRESS', 'EGRESS'],
          ...s.endpoints.map((e) => [
            `  ${e.ref}`,
            e.kind,
            e.iface,
            e.addresses.join(',') || '-',
            String(e.ingressPolicies),
            String(e.egressPolicies),
          ]),
        ]),
    ...(s.podsWithoutEndpoint.length > 0
      ? [
          '',
          `Pods of this node without an endpoint (not programmed; their interface drops all traffic):`,
          ...s.podsWithoutEndpoint.map((p) => `  ${p}`),
        ]
      : []),
    '',
    `Errors (${s.errors.length}):`,
    ...(s.errors.length === 0 ? ['  none'] : s.errors.map((e) => `  ${e.at}  ${e.message}`)),
  ];
  io.stdout.write(`${lines.join('\n')}\n`);
  return s.errors.length > 0 && !s.connected ? 1 : 0;
}

export async function agentDescribeCommand(
  p: Parsed,
  io: Io,
  ref: string | undefined,
): Promise<number> {
  const fmt = formatOf(p);
  if (!ref) throw new UsageError('give the endpoint: NAMESPACE/POD or a host endpoint name');
  const r = (await get(p, io, `/v1/endpoints/${encodeURIComponent(ref)}`)) as Report | undefined;
  if (!r) return 1;
  if (fmt !== 'table') {
    await dump(io, fmt, r);
    return 0;
  }
  const e = r.endpoint;
  const pol = (rows: PolicyRow[]) =>
    rows.length === 0
      ? ['  none']
      : table([
          ['  #', 'TIER', 'ORDER', 'NAME', 'KIND'],
          ...rows.map((x, i) => [
            `  ${i + 1}`,
            x.tier,
            x.order === null ? '-' : String(x.order),
            x.name,
            `${x.kind}${x.apiVersion === 'networking.k8s.io/v1' ? ' (Kubernetes)' : ''}${x.staged ? ' (staged, not enforced)' : ''}`,
          ]),
        ]).split('\n');
  const lines = [
    `Endpoint:          ${e.ref} (${e.kind})`,
    `Interface:         ${e.iface}`,
    `Addresses:         ${e.addresses.join(', ') || '-'}`,
    `Labels:            ${
      Object.entries(r.labels)
        .map(([k, v]) => `${k}=${v}`)
        .join(', ') || '-'
    }`,
    `Revision:          ${dash(r.revision)} seen, ${dash(r.appliedRevision)} applied`,
    `Last sync:         ${dash(r.lastSync)}`,
    `Last apply:        ${dash(r.lastApply)}`,
    '',
    'Ingress policies (evaluation order):',
    ...pol(r.policies.ingress),
    ...(r.profiles.ingress.length > 0 ? [`  then profiles: ${r.profiles.ingress.join(', ')}`] : []),
    '',
    'Egress policies (evaluation order):',
    ...pol(r.policies.egress),
    ...(r.profiles.egress.length > 0 ? [`  then profiles: ${r.profiles.egress.join(', ')}`] : []),
  ];
  for (const c of r.chains) {
    lines.push('', `Chain ${c.name} — ${c.role}:`);
    lines.push(
      table([
        ['  PACKETS', 'BYTES', 'RULE'],
        ...c.rules.map((x) => [
          `  ${x.packets === null ? '-' : String(x.packets)}`,
          x.bytes === null ? '-' : String(x.bytes),
          `${x.drift ? '[DRIFT: not in the kernel as rendered] ' : ''}${x.rule}`,
        ]),
      ]),
    );
  }
  lines.push('', `Errors (${r.errors.length}):`);
  lines.push(
    ...(r.errors.length === 0 ? ['  none'] : r.errors.map((x) => `  ${x.at}  ${x.message}`)),
  );
  io.stdout.write(`${lines.join('\n')}\n`);
  return 0;
}
