// The online CLI's connection to the server: resolving it (flags, then the environment, then the
// saved context), one HTTPS request, and turning failures into messages that say what to do.
// Exit codes: 1 when the server refused or failed the request, 2 for usage and connection errors.

import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import type { IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Parsed } from '../args.js';
import { UsageError } from '../args.js';
import { configPath, readConfig } from './config.js';

export interface Connection {
  readonly server: string;
  readonly token: string | undefined;
  readonly ca: string | undefined;
}

/** A failure talking to the server: exit code 2 (connection) or 1 (the server said no). */
export class OnlineError extends Error {
  constructor(
    message: string,
    readonly exitCode: 1 | 2,
  ) {
    super(message);
  }
}

function readFile(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new OnlineError(
      `cannot read the ${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      2,
    );
  }
}

export function resolveConnection(p: Parsed, env: NodeJS.ProcessEnv = process.env): Connection {
  const v = p.values;
  const cfg = readConfig(configPath(env));
  const ctxName = (v.context as string | undefined) ?? cfg.current;
  const ctx = ctxName !== undefined ? cfg.contexts[ctxName] : undefined;
  if (v.context !== undefined && !ctx)
    throw new UsageError(
      `no saved context ${JSON.stringify(v.context)}; run palisade login --name ${String(v.context)}`,
    );
  const server = (v.server as string | undefined) ?? env.PALISADE_SERVER ?? ctx?.server;
  if (!server)
    throw new OnlineError(
      'error API_ERR_NO_SERVER: no server to talk to\n  hint: pass --server https://HOST:9443, set PALISADE_SERVER, or run palisade login',
      2,
    );
  if (!/^https?:\/\/[^/]+\/?$/.test(server))
    throw new UsageError(`--server ${JSON.stringify(server)} must be https://HOST:PORT`);
  const tokenFile = v['token-file'] as string | undefined;
  const token =
    tokenFile !== undefined
      ? readFile(tokenFile, 'token file').trim()
      : (env.PALISADE_TOKEN ?? ctx?.token);
  const caFile = (v['ca-file'] as string | undefined) ?? env.PALISADE_CA_FILE ?? ctx?.caFile;
  const ca = caFile !== undefined ? readFile(caFile, 'CA file') : undefined;
  return { server: server.replace(/\/$/, ''), token, ca };
}

export interface Reply {
  readonly status: number;
  readonly body: string;
}

export interface ErrorBody {
  readonly code?: string;
  readonly message?: string;
  readonly hint?: string;
  readonly diagnostics?: readonly {
    file: string;
    line: number;
    column: number;
    severity: string;
    code: string;
    message: string;
    hint?: string;
  }[];
}

const TLS_TRUST = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'CERT_HAS_EXPIRED',
]);

export function send(
  c: Connection,
  method: string,
  path: string,
  body?: string,
  contentType = 'application/json',
): Promise<Reply> {
  const url = `${c.server}${path}`;
  const https = url.startsWith('https:');
  const headers: Record<string, string> = {};
  if (c.token) headers.authorization = `Bearer ${c.token}`;
  if (body !== undefined) {
    headers['content-type'] = contentType;
    headers['content-length'] = String(Buffer.byteLength(body));
  }
  return new Promise<Reply>((resolve, reject) => {
    const onRes = (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }),
      );
      res.on('error', reject);
    };
    const req = https
      ? httpsRequest(
          url,
          { method, headers, timeout: 60_000, ...(c.ca ? { ca: c.ca } : {}) },
          onRes,
        )
      : httpRequest(url, { method, headers, timeout: 60_000 }, onRes);
    req.on('timeout', () =>
      req.destroy(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' })),
    );
    req.on('error', (e: NodeJS.ErrnoException) => {
      const code = e.code ?? '';
      if (TLS_TRUST.has(code))
        reject(
          new OnlineError(
            `error API_ERR_CONNECTION: the server's certificate is not trusted (${code})\n  hint: pass --ca-file <data-dir>/ca.pem of that server (or set PALISADE_CA_FILE)`,
            2,
          ),
        );
      else
        reject(
          new OnlineError(
            `error API_ERR_CONNECTION: cannot reach ${c.server}: ${code || e.message}\n  hint: is palisade server running there? check --server / PALISADE_SERVER`,
            2,
          ),
        );
    });
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** A readable error for a non-2xx reply, with a hint. */
export function describeFailure(r: Reply): string {
  let b: ErrorBody = {};
  try {
    b = JSON.parse(r.body) as ErrorBody;
  } catch {
    b = { message: r.body.slice(0, 500) };
  }
  const lines: string[] = [];
  for (const d of b.diagnostics ?? []) {
    lines.push(`${d.file}:${d.line}:${d.column}: ${d.severity} ${d.code}: ${d.message}`);
    if (d.hint) lines.push(`  hint: ${d.hint}`);
  }
  const hint =
    r.status === 401
      ? 'the credential is not valid — run `palisade login` (or check --token-file / PALISADE_TOKEN)'
      : r.status === 403
        ? (b.hint ?? 'ask an admin for a RoleBinding that grants it')
        : b.hint;
  lines.push(
    `error ${b.code ?? `HTTP_${r.status}`} (${r.status}): ${b.message ?? 'request failed'}`,
  );
  if (hint) lines.push(`  hint: ${hint}`);
  return lines.join('\n');
}

/** Parses a 2xx JSON reply, or throws the readable failure (exit 1). */
export function expectOk<T>(r: Reply): T {
  if (r.status < 200 || r.status > 299) throw new OnlineError(describeFailure(r), 1);
  return JSON.parse(r.body) as T;
}
