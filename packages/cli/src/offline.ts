// The offline commands of DESIGN §5: validate, matrix, check (one probe or many), explain,
// selector match and selector fmt. Exit codes: check 0 allow, 1 deny, 2 error.

import { stringify as toYaml } from 'yaml';
import {
  compile,
  formatDiagnostic,
  hasErrors,
  parseSelector,
  printSelector,
  matchSelector,
} from '@palisade/core';
import type { CheckResult, Diagnostic, DirectionVerdict, Engine, Probe } from '@palisade/core';
import type { Parsed } from './args.js';
import { UsageError } from './args.js';
import type { Io } from './input.js';
import { readInputs } from './input.js';

type Format = 'table' | 'json' | 'yaml';

export function outputFormat(
  p: Parsed,
  allowed: readonly Format[] = ['table', 'json', 'yaml'],
): Format {
  const o = (p.values.output as string | undefined) ?? 'table';
  if (!allowed.includes(o as Format))
    throw new UsageError(`-o ${o} is not a format here; use ${allowed.join(', ')}`);
  return o as Format;
}

function printDiagnostics(ds: readonly Diagnostic[], io: Io): void {
  for (const d of ds) io.stderr.write(`${formatDiagnostic(d)}\n`);
}

/** Loads the inputs and compiles them; prints diagnostics; undefined when there are errors. */
async function loadEngine(p: Parsed, io: Io): Promise<Engine | undefined> {
  const r = await readInputs((p.values.file as string[] | undefined) ?? [], io);
  if (hasErrors(r.diagnostics)) {
    printDiagnostics(r.diagnostics, io);
    io.stderr.write(
      `refusing to judge: ${r.diagnostics.filter((d) => d.severity === 'error').length} error(s) in the input (run palisade validate)\n`,
    );
    return undefined;
  }
  const root = p.values['istio-root-namespace'] as string | undefined;
  return compile(r.resources, root ? { istioRootNamespace: root } : {});
}

// ------------------------------------------------------------------ validate

export async function validateCommand(p: Parsed, io: Io): Promise<number> {
  const format = outputFormat(p, ['table', 'json']);
  const r = await readInputs((p.values.file as string[] | undefined) ?? [], io);
  const diagnostics = [...r.diagnostics];
  if (!hasErrors(diagnostics)) diagnostics.push(...compile(r.resources).diagnostics());
  const errors = diagnostics.filter((d) => d.severity === 'error').length;
  const warnings = diagnostics.length - errors;
  if (format === 'json') {
    io.stdout.write(
      `${JSON.stringify({ files: r.files, resources: r.resources.length, errors, warnings, diagnostics }, null, 2)}\n`,
    );
  } else {
    for (const d of diagnostics) io.stdout.write(`${formatDiagnostic(d)}\n`);
    io.stderr.write(
      `${r.files} file(s), ${r.resources.length} resource(s), ${errors} error(s), ${warnings} warning(s)\n`,
    );
  }
  return errors > 0 ? 1 : 0;
}

// ------------------------------------------------------------------ matrix

export async function matrixCommand(p: Parsed, io: Io): Promise<number> {
  const format = outputFormat(p);
  const port = parsePort((p.values.port as string | undefined) ?? '80');
  const protocol = ((p.values.protocol as string | undefined) ?? 'TCP').toUpperCase();
  if (!['TCP', 'UDP', 'SCTP'].includes(protocol))
    throw new UsageError('--protocol must be TCP, UDP or SCTP');
  const engine = await loadEngine(p, io);
  if (!engine) return 1;
  const endpoints = engine.workloadEndpoints();
  // N×N decisions: by endpoint handles (no name lookups), by name where a name has none.
  const handles = endpoints.map((e) => engine.endpointHandle(e));
  const allows = (i: number, j: number): boolean => {
    const a = handles[i];
    const b = handles[j];
    return a !== undefined && b !== undefined
      ? engine.kernelAllowsByHandle(a, b, protocol, port)
      : engine.kernelAllows(endpoints[i] as string, endpoints[j] as string, protocol, port);
  };
  const n = endpoints.length;
  if (format === 'yaml') {
    const reachability: Record<string, Record<string, boolean>> = {};
    for (let i = 0; i < n; i++) {
      const row: Record<string, boolean> = {};
      for (let j = 0; j < n; j++) row[endpoints[j] as string] = allows(i, j);
      reachability[endpoints[i] as string] = row;
    }
    io.stdout.write(toYaml({ port, protocol, endpoints, reachability }));
  } else if (format === 'json') {
    // Row by row, exactly as `JSON.stringify({ port, protocol, endpoints, reachability })`
    // (endpoint ids hold a slash, so no key is an array index that the object would reorder):
    // a 10k-endpoint matrix is larger than the longest string the runtime can build.
    const keys = endpoints.map((e) => JSON.stringify(e));
    io.stdout.write(
      `{"port":${port},"protocol":${JSON.stringify(protocol)},"endpoints":[${keys.join(',')}],"reachability":{`,
    );
    for (let i = 0; i < n; i++) {
      const cells: string[] = new Array<string>(n);
      for (let j = 0; j < n; j++)
        cells[j] = `${keys[j] as string}:${allows(i, j) ? 'true' : 'false'}`;
      await writeRow(io, `${i === 0 ? '' : ','}${keys[i] as string}:{${cells.join(',')}}`);
    }
    io.stdout.write('}}\n');
  } else {
    io.stdout.write(
      `kernel reachability, ${protocol} port ${port} (rows: from, columns: to; . allowed, X denied)\n\n`,
    );
    endpoints.forEach((e, i) => io.stdout.write(`${String(i + 1).padStart(4)}  ${e}\n`));
    io.stdout.write(
      `\n${'from \\ to'.padEnd(10)}${endpoints.map((_, i) => String(i + 1).padStart(4)).join('')}\n`,
    );
    for (let i = 0; i < n; i++) {
      let cells = '';
      for (let j = 0; j < n; j++) cells += allows(i, j) ? '   .' : '   X';
      await writeRow(
        io,
        `${String(i + 1)
          .padStart(4)
          .padEnd(10)}${cells}\n`,
      );
    }
  }
  return 0;
}

/**
 * Writes one row of a matrix, waiting while a stream's buffer is full: a 10k matrix is gigabytes
 * of text, which a pipe must not hold in memory.
 */
async function writeRow(io: Io, s: string): Promise<void> {
  const out = io.stdout as { write(s: string): unknown; once?: (e: string, f: () => void) => void };
  if (out.write(s) === false && typeof out.once === 'function') {
    const once = out.once.bind(out);
    await new Promise<void>((resolve) => once('drain', resolve));
  }
}

// ------------------------------------------------------------------ check / explain

function parsePort(s: string): number {
  if (!/^\d+$/.test(s) || Number(s) < 0 || Number(s) > 65535)
    throw new UsageError(`port ${JSON.stringify(s)} must be a number 0-65535`);
  return Number(s);
}

function probeFromFlags(p: Parsed): Probe {
  const v = p.values;
  const from = v.from as string | undefined;
  const to = v.to as string | undefined;
  if (!from || !to) throw new UsageError('check needs --from A and --to B (or --probes FILE)');
  if (v.principal !== undefined && v['no-mtls'])
    throw new UsageError('--principal and --no-mtls exclude each other');
  const headers: Record<string, string> = {};
  for (const h of (v.header as string[] | undefined) ?? []) {
    const i = h.indexOf(':');
    if (i <= 0) throw new UsageError(`--header ${JSON.stringify(h)} must be NAME:VALUE`);
    headers[h.slice(0, i).trim()] = h.slice(i + 1).trim();
  }
  const icmpType = v['icmp-type'] as string | undefined;
  const icmpCode = v['icmp-code'] as string | undefined;
  const probe: Record<string, unknown> = {
    from,
    to,
    protocol: v.protocol ?? 'TCP',
  };
  if (v.port !== undefined) probe.port = parsePort(v.port as string);
  if (icmpType !== undefined || icmpCode !== undefined)
    probe.icmp = {
      ...(icmpType !== undefined ? { type: Number(icmpType) } : {}),
      ...(icmpCode !== undefined ? { code: Number(icmpCode) } : {}),
    };
  for (const k of ['method', 'path', 'host', 'sni'] as const)
    if (v[k] !== undefined) probe[k] = v[k];
  if (Object.keys(headers).length > 0) probe.headers = headers;
  if (v.http2) probe.http2 = true;
  if (v['remote-ip'] !== undefined) probe.remoteIp = v['remote-ip'];
  if (v['via-in'] !== undefined) probe.viaIn = v['via-in'];
  if (v['via-out'] !== undefined) probe.viaOut = v['via-out'];
  if (v.principal !== undefined) probe.principal = v.principal;
  if (v['no-mtls']) probe.principal = null;
  return probe as unknown as Probe;
}

const PROBE_KEYS = new Set([
  'from',
  'to',
  'protocol',
  'port',
  'icmp',
  'method',
  'path',
  'host',
  'headers',
  'http2',
  'principal',
  'sni',
  'remoteIp',
  'viaIn',
  'viaOut',
]);

/** Validates one `--probes` line; returns a message when it is malformed. */
export function probeProblem(x: unknown): string | undefined {
  if (typeof x !== 'object' || x === null || Array.isArray(x))
    return 'a probe must be a JSON object';
  const o = x as Record<string, unknown>;
  for (const k of Object.keys(o))
    if (!PROBE_KEYS.has(k)) return `unknown probe field ${JSON.stringify(k)}`;
  if (typeof o.from !== 'string' || typeof o.to !== 'string')
    return 'a probe needs string fields "from" and "to"';
  if (o.protocol !== undefined && typeof o.protocol !== 'string' && typeof o.protocol !== 'number')
    return '"protocol" must be a string or a number';
  if (
    o.port !== undefined &&
    (typeof o.port !== 'number' || !Number.isInteger(o.port) || o.port < 0 || o.port > 65535)
  )
    return '"port" must be an integer 0-65535';
  for (const k of ['method', 'path', 'host', 'sni', 'remoteIp', 'viaIn', 'viaOut'])
    if (o[k] !== undefined && typeof o[k] !== 'string') return `"${k}" must be a string`;
  if (o.principal !== undefined && o.principal !== null && typeof o.principal !== 'string')
    return '"principal" must be a string or null';
  if (
    o.headers !== undefined &&
    (typeof o.headers !== 'object' ||
      o.headers === null ||
      Object.values(o.headers).some((v) => typeof v !== 'string'))
  )
    return '"headers" must map names to strings';
  if (o.http2 !== undefined && typeof o.http2 !== 'boolean') return '"http2" must be true or false';
  if (o.icmp !== undefined && (typeof o.icmp !== 'object' || o.icmp === null))
    return '"icmp" must be an object with type and code';
  return undefined;
}

function partLine(label: string, d: { verdict: string; provenance: { reason: string } }): string {
  return `  ${label.padEnd(16)}${d.verdict.toUpperCase().padEnd(7)}${d.provenance.reason}`;
}

function humanCheck(probe: Probe, r: CheckResult): string {
  const lines = [
    `${r.verdict.toUpperCase()}  ${probe.from} -> ${probe.to}${probe.port !== undefined ? `:${probe.port}` : ''} ${String(probe.protocol ?? 'TCP')}${probe.method ? ` ${probe.method} ${probe.path ?? '/'}` : ''}`,
    partLine('kernel egress', r.kernel.egress),
    ...(r.kernel.forward ?? []).map((f) =>
      partLine(f.provenance.direction === 'egress' ? 'kernel fwd out' : 'kernel fwd in', f),
    ),
    partLine('kernel ingress', r.kernel.ingress),
    ...(r.kernel.reply ? [partLine('kernel reply', r.kernel.reply)] : []),
    partLine('L7', r.l7),
  ];
  return `${lines.join('\n')}\n`;
}

function traceBlock(title: string, d: DirectionVerdict | undefined): string[] {
  if (!d) return [];
  const out = [`${title}: ${d.verdict.toUpperCase()} — ${d.provenance.reason}`];
  for (const t of d.trace) out.push(`    ${t}`);
  for (const s of d.staged ?? [])
    out.push(
      `    staged ${s.policy} (tier ${s.tier}) would: ${s.verdict}${s.rule !== undefined ? ` (rule ${s.rule})` : ''}`,
    );
  if (d.deferredToL7) out.push('    the matching rule needs HTTP attributes: the L7 point decides');
  return out;
}

function explainText(probe: Probe, r: CheckResult): string {
  const out = [
    `probe: ${JSON.stringify(probe)}`,
    `verdict: ${r.verdict.toUpperCase()} (a connection needs the source's egress and the destination's ingress in the kernel, and L7)`,
    '',
    ...traceBlock('kernel, egress at the source', r.kernel.egress),
    ...(r.kernel.forward ?? []).flatMap((f) =>
      traceBlock(
        `kernel, forwarded ${f.provenance.direction === 'egress' ? 'out' : 'in'} through host endpoint ${f.provenance.hostEndpoint ?? ''}`,
        f,
      ),
    ),
    ...traceBlock('kernel, ingress at the destination', r.kernel.ingress),
    ...traceBlock('kernel, the reply (untracked policy)', r.kernel.reply),
    `L7: ${r.l7.verdict.toUpperCase()} — ${r.l7.provenance.reason}`,
    `    caller: ${r.l7.mtls === 'mutual' ? `mTLS as ${r.l7.principal ?? ''}` : 'plaintext'}`,
    ...r.l7.trace.map((t) => `    ${t}`),
    ...traceBlock('  L7 egress rules at the source', r.l7.egress).map((l) => `  ${l}`),
    ...traceBlock('  L7 ingress rules at the destination', r.l7.ingress).map((l) => `  ${l}`),
    ...(r.l7.istio
      ? [
          `    Istio authorization: ${r.l7.istio.verdict.toUpperCase()} — ${r.l7.istio.provenance.reason}`,
        ]
      : []),
  ];
  return `${out.join('\n')}\n`;
}

export async function checkCommand(p: Parsed, io: Io, explain: boolean): Promise<number> {
  const format = outputFormat(p);
  if (p.values.probes !== undefined) return probesCommand(p, io);
  const probe = probeFromFlags(p);
  const engine = await loadEngine(p, io);
  if (!engine) return 2;
  const r = engine.check(probe, true);
  if (!r.ok) {
    io.stderr.write(`error ${r.code}: ${r.message}\n`);
    return 2;
  }
  if (format === 'json') io.stdout.write(`${JSON.stringify(r.result)}\n`);
  else if (format === 'yaml') io.stdout.write(toYaml(r.result));
  else io.stdout.write(explain ? explainText(probe, r.result) : humanCheck(probe, r.result));
  return r.result.verdict === 'allow' ? 0 : 1;
}

/**
 * `check --probes FILE`: one result line per probe line, in order. Exit 0 when every probe was
 * judged and allowed, 1 when every probe was judged and one was denied, 2 when a line was
 * malformed or named an unknown endpoint (its output line is `{"error":{...}}`).
 */
async function probesCommand(p: Parsed, io: Io): Promise<number> {
  const file = p.values.probes as string;
  const engine = await loadEngine(p, io);
  if (!engine) return 2;
  let text: string;
  if (file === '-') text = await io.readStdin();
  else {
    const { readFileSync } = await import('node:fs');
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      throw new UsageError(`cannot read --probes ${file}: ${(e as Error).message}`);
    }
  }
  let status = 0;
  const lines = text.split('\n');
  if (lines.at(-1) === '') lines.pop();
  const out: string[] = [];
  lines.forEach((line, i) => {
    if (line.trim() === '') return;
    let x: unknown;
    try {
      x = JSON.parse(line);
    } catch (e) {
      out.push(
        JSON.stringify({
          error: {
            code: 'ENGINE_ERR_BAD_PROBE',
            message: `not JSON: ${(e as Error).message}`,
            line: i + 1,
          },
        }),
      );
      status = 2;
      return;
    }
    const problem = probeProblem(x);
    if (problem) {
      out.push(
        JSON.stringify({ error: { code: 'ENGINE_ERR_BAD_PROBE', message: problem, line: i + 1 } }),
      );
      status = 2;
      return;
    }
    const r = engine.check(x as Probe, false);
    if (!r.ok) {
      out.push(JSON.stringify({ error: { code: r.code, message: r.message, line: i + 1 } }));
      status = 2;
      return;
    }
    if (r.result.verdict === 'deny' && status === 0) status = 1;
    out.push(JSON.stringify(r.result));
  });
  io.stdout.write(out.length > 0 ? `${out.join('\n')}\n` : '');
  return status;
}

// ------------------------------------------------------------------ selector

function selectorError(expr: string, e: { message: string; position: number }, io: Io): number {
  io.stderr.write(
    `error POLICY_ERR_INVALID_SELECTOR: ${e.message}\n  ${expr}\n  ${' '.repeat(e.position)}^\n`,
  );
  return 2;
}

export async function selectorCommand(p: Parsed, io: Io): Promise<number> {
  const [verb, expr] = p.positionals;
  if (verb === 'fmt') {
    if (expr === undefined)
      throw new UsageError("selector fmt needs an expression: palisade selector fmt 'EXPR'");
    const r = parseSelector(expr);
    if (!r.ok) return selectorError(expr, r.error, io);
    io.stdout.write(`${printSelector(r.selector)}\n`);
    return 0;
  }
  if (verb !== 'match')
    throw new UsageError(
      'use: palisade selector match EXPR --labels JSON | selector match --jsonl | selector fmt EXPR',
    );
  if (p.values.jsonl) {
    const text = await io.readStdin();
    const out: string[] = [];
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue;
      let x: { selector?: unknown; labels?: unknown };
      try {
        x = JSON.parse(line) as typeof x;
      } catch (e) {
        out.push(`error: not JSON: ${(e as Error).message}`);
        continue;
      }
      if (typeof x !== 'object' || x === null || typeof x.selector !== 'string') {
        out.push('error: each line needs {"selector": "...", "labels": {...}}');
        continue;
      }
      const labels = x.labels ?? {};
      if (
        typeof labels !== 'object' ||
        labels === null ||
        Array.isArray(labels) ||
        Object.values(labels).some((v) => typeof v !== 'string')
      ) {
        out.push('error: labels must map names to strings');
        continue;
      }
      const r = parseSelector(x.selector);
      out.push(
        r.ok
          ? String(matchSelector(r.selector, labels as Record<string, string>))
          : `error: ${r.error.message} (at ${r.error.position})`,
      );
    }
    io.stdout.write(out.length > 0 ? `${out.join('\n')}\n` : '');
    return 0;
  }
  if (expr === undefined)
    throw new UsageError(
      'selector match needs an expression: palisade selector match \'EXPR\' --labels \'{"k":"v"}\'',
    );
  let labels: unknown = {};
  if (p.values.labels !== undefined) {
    try {
      labels = JSON.parse(p.values.labels as string);
    } catch {
      throw new UsageError('--labels must be a JSON object of strings, e.g. \'{"app":"web"}\'');
    }
  }
  if (
    typeof labels !== 'object' ||
    labels === null ||
    Array.isArray(labels) ||
    Object.values(labels).some((v) => typeof v !== 'string')
  )
    throw new UsageError('--labels must be a JSON object of strings, e.g. \'{"app":"web"}\'');
  const r = parseSelector(expr);
  if (!r.ok) return selectorError(expr, r.error, io);
  io.stdout.write(`${String(matchSelector(r.selector, labels as Record<string, string>))}\n`);
  return 0;
}
