// `palisade flows`: query the server's flow records with filters, or follow them live
// (`--follow` reads the server's NDJSON stream until interrupted). `palisade flows stats` shows
// the store's size, retention and what the nodes shed. Owns: argument checks and the rendering
// of records. Must never: print a token.

import { request as httpRequest } from 'node:http';
import type { IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Parsed } from './args.js';
import { UsageError } from './args.js';
import type { Io } from './input.js';
import type { Connection } from './online/client.js';
import {
  describeFailure,
  expectOk,
  OnlineError,
  resolveConnection,
  send,
} from './online/client.js';

interface FlowEndpointView {
  ip: string;
  port?: number;
  namespace?: string;
  name?: string;
  identity?: string;
}

export interface FlowView {
  id: number;
  node: string;
  start: string;
  end: string;
  source: FlowEndpointView;
  destination: FlowEndpointView;
  protocol: string;
  method?: string;
  path?: string;
  verdict: string;
  point: string;
  direction?: string;
  provenance: {
    kind: string;
    tier?: string;
    policy?: string;
    rule?: number;
    profile?: string;
    reason?: string;
  };
  staged?: { policy: string; verdict: string }[];
  packets: number;
  bytes: number;
  count: number;
}

function who(e: FlowEndpointView, withPort: boolean): string {
  const n = e.name !== undefined ? `${e.namespace ?? ''}/${e.name}` : e.ip;
  return withPort && e.port !== undefined ? `${n}:${e.port}` : n;
}

/** The deciding rule as a person reads it: `security/deny-db rule 0`, `default deny of tier X`. */
export function decidedBy(p: FlowView['provenance']): string {
  switch (p.kind) {
    case 'rule':
      return `${p.policy ?? '?'} rule ${p.rule ?? '?'}${p.tier !== undefined ? ` (tier ${p.tier})` : ''}`;
    case 'tier-default':
      return `default deny of tier ${p.tier ?? '?'}`;
    case 'no-policy':
      return 'no policy selects this endpoint';
    case 'profile':
    case 'profile-default':
      return `profile ${p.profile ?? p.policy ?? '?'}${p.rule !== undefined ? ` rule ${p.rule}` : ''}`;
    default:
      return p.policy !== undefined ? `${p.kind} ${p.policy}` : (p.reason ?? p.kind);
  }
}

function row(r: FlowView): string[] {
  const l7 = r.method !== undefined ? `${r.method} ${r.path ?? ''}` : '';
  return [
    r.end.replace('T', ' ').replace(/\.\d+Z$/, 'Z'),
    r.node,
    who(r.source, false),
    who(r.destination, true),
    r.protocol,
    l7,
    r.point,
    r.verdict.toUpperCase(),
    decidedBy(r.provenance),
    String(r.count),
    r.staged && r.staged.length > 0
      ? r.staged.map((s) => `${s.policy}=${s.verdict}`).join(',')
      : '',
  ];
}

const HEAD = [
  'TIME',
  'NODE',
  'SOURCE',
  'DESTINATION',
  'PROTO',
  'L7',
  'POINT',
  'VERDICT',
  'DECIDED BY',
  'COUNT',
  'STAGED',
];

function table(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows
    .map((r) =>
      r
        .map((c, i) => (i === r.length - 1 ? c : c.padEnd((widths[i] ?? 0) + 2)))
        .join('')
        .trimEnd(),
    )
    .join('\n')
    .concat('\n');
}

function query(p: Parsed): URLSearchParams {
  const v = p.values;
  const q = new URLSearchParams();
  const put = (flag: string, param = flag) => {
    const x = v[flag];
    if (typeof x === 'string') q.set(param, x);
  };
  put('since');
  put('until');
  put('endpoint');
  put('namespace');
  put('policy');
  put('point');
  put('node');
  if (typeof v.verdict === 'string') {
    if (v.verdict !== 'allow' && v.verdict !== 'deny')
      throw new UsageError('--verdict must be allow or deny');
    q.set('verdict', v.verdict);
  }
  if (typeof v.point === 'string' && v.point !== 'kernel' && v.point !== 'l7')
    throw new UsageError('--point must be kernel or l7');
  if (typeof v.endpoint === 'string' && !/^[^/]+\/[^/]+$/.test(v.endpoint))
    throw new UsageError('--endpoint must be NAMESPACE/NAME');
  const limit = typeof v.limit === 'string' ? v.limit : '100';
  if (!/^\d{1,5}$/.test(limit) || Number(limit) < 1 || Number(limit) > 10000)
    throw new UsageError('--limit must be 1..10000');
  q.set('limit', limit);
  return q;
}

export async function flowsCommand(p: Parsed, io: Io): Promise<number> {
  const fmt = (p.values.output as string | undefined) ?? 'table';
  if (fmt !== 'table' && fmt !== 'json') throw new UsageError('-o must be table or json');
  try {
    const c = resolveConnection(p);
    if (p.positionals[0] === 'stats') {
      const s = expectOk<{
        records: number;
        oldestMs: number | null;
        newestMs: number | null;
        evicted: number;
        shedTotal: number;
        shed: { node: string; point: string; reason: string; count: number }[];
      }>(await send(c, 'GET', '/api/v1/flows/stats'));
      if (fmt === 'json') io.stdout.write(`${JSON.stringify(s)}\n`);
      else {
        io.stdout.write(
          `${s.records} flow records${s.oldestMs !== null ? ` from ${new Date(s.oldestMs).toISOString()}` : ''}${s.newestMs !== null ? ` to ${new Date(s.newestMs).toISOString()}` : ''}; ${s.evicted} deleted by retention\n`,
        );
        io.stdout.write(`shed by the nodes (not stored, counted): ${s.shedTotal}\n`);
        if (s.shed.length > 0)
          io.stdout.write(
            table([
              ['NODE', 'POINT', 'REASON', 'COUNT'],
              ...s.shed.map((x) => [x.node, x.point, x.reason, String(x.count)]),
            ]),
          );
      }
      return 0;
    }
    if (p.positionals.length > 0)
      throw new UsageError(
        `unexpected argument ${JSON.stringify(p.positionals[0])} (did you mean palisade flows stats?)`,
      );
    const q = query(p);
    if (p.values.follow) return await follow(c, q, fmt, io);
    const r = expectOk<{ records: FlowView[] }>(
      await send(c, 'GET', `/api/v1/flows?${q.toString()}`),
    );
    // Newest first from the server; printed oldest first like a log.
    const records = [...r.records].reverse();
    if (fmt === 'json') for (const x of records) io.stdout.write(`${JSON.stringify(x)}\n`);
    else if (records.length === 0) io.stdout.write('no flow records match\n');
    else io.stdout.write(table([HEAD, ...records.map(row)]));
    return 0;
  } catch (e) {
    if (e instanceof OnlineError) {
      io.stderr.write(`${e.message}\n`);
      return e.exitCode;
    }
    throw e;
  }
}

function follow(c: Connection, q: URLSearchParams, fmt: string, io: Io): Promise<number> {
  q.set('follow', '1');
  q.delete('limit');
  const url = `${c.server}/api/v1/flows?${q.toString()}`;
  const headers: Record<string, string> = c.token ? { authorization: `Bearer ${c.token}` } : {};
  return new Promise<number>((resolve, reject) => {
    let headerDone = false;
    const onRes = (res: IncomingMessage) => {
      if ((res.statusCode ?? 0) !== 200) {
        const chunks: Buffer[] = [];
        res.on('data', (d: Buffer) => chunks.push(d));
        res.on('end', () => {
          io.stderr.write(
            `${describeFailure({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') })}\n`,
          );
          resolve(1);
        });
        return;
      }
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        buf += d;
        if (buf.length > 16 * 1024 * 1024) {
          req.destroy();
          reject(
            new OnlineError(
              'error API_ERR_BAD_REQUEST: the follow stream sent an oversized line',
              1,
            ),
          );
          return;
        }
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          let ev: { type?: string; record?: FlowView };
          try {
            ev = JSON.parse(line) as typeof ev;
          } catch {
            continue;
          }
          if (ev.type !== 'FLOW' || !ev.record) continue;
          if (fmt === 'json') io.stdout.write(`${JSON.stringify(ev.record)}\n`);
          else {
            if (!headerDone) io.stdout.write(table([HEAD]));
            headerDone = true;
            io.stdout.write(row(ev.record).join('  ').trimEnd() + '\n');
          }
        }
      });
      res.on('end', () => stop());
      res.on('error', () => stop());
    };
    const req = url.startsWith('https:')
      ? httpsRequest(url, { method: 'GET', headers, ...(c.ca ? { ca: c.ca } : {}) }, onRes)
      : httpRequest(url, { method: 'GET', headers }, onRes);
    req.on('error', (e: NodeJS.ErrnoException) =>
      reject(
        new OnlineError(
          `error API_ERR_CONNECTION: cannot reach ${c.server}: ${e.code ?? e.message}`,
          2,
        ),
      ),
    );
    const stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      req.destroy();
      resolve(0);
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
    req.end();
  });
}
