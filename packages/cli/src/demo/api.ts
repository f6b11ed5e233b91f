// The demo's client of the API server: HTTPS to the loopback server with the Palisade CA as the
// only trust anchor, one bearer token per caller (admin, node, platform team). Applies take the
// YAML text as users write it. Owns: nothing but the calls. Must never: log a token.

import { request } from 'node:https';

export interface Reply {
  readonly status: number;
  readonly body: unknown;
}

export class DemoApi {
  constructor(
    readonly server: string,
    private readonly token: string,
    private readonly ca: string,
    readonly who: string,
  ) {}

  call(method: string, path: string, body?: unknown, contentType?: string): Promise<Reply> {
    const url = new URL(path, this.server);
    const text =
      body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = request(url, {
        method,
        ca: this.ca,
        timeout: 15_000,
        headers: {
          authorization: `Bearer ${this.token}`,
          accept: 'application/json',
          ...(text !== undefined ? { 'content-type': contentType ?? 'application/json' } : {}),
        },
      });
      req.on('timeout', () => req.destroy(new Error(`${method} ${url.pathname} timed out`)));
      req.on('error', reject);
      req.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const t = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = t;
          try {
            parsed = t === '' ? undefined : JSON.parse(t);
          } catch {
            // text
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
      });
      req.end(text);
    });
  }

  /** POST /api/v1/apply of multi-document YAML; throws unless the server accepted all of it. */
  async apply(yaml: string, what: string): Promise<Reply> {
    const r = await this.call('POST', '/api/v1/apply', yaml, 'application/yaml');
    if (r.status !== 200 && r.status !== 201)
      throw new Error(`applying ${what} as ${this.who}: HTTP ${r.status} ${short(r.body)}`);
    return r;
  }

  async must(method: string, path: string, body?: unknown): Promise<unknown> {
    const r = await this.call(method, path, body);
    if (r.status < 200 || r.status > 299)
      throw new Error(`${method} ${path} as ${this.who}: HTTP ${r.status} ${short(r.body)}`);
    return r.body;
  }
}

export function short(v: unknown): string {
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  return (s ?? '').slice(0, 400);
}
