// The agent's view of the API server (DESIGN §5): one cluster-wide watch (`GET /api/v1/watch`)
// that starts with the full state (ADDED events up to the first BOOKMARK) and then streams
// changes; on a disconnect it resumes from the last revision seen, on 410 it relists. Owns: the
// HTTP(S) transport, the bearer token, the newline-delimited JSON framing and the resume state.
// Must never: log the token, hand the caller a line it could not parse as an object event, or
// call `reset` with a snapshot that was cut short (a snapshot is only complete at its BOOKMARK).

import { request as httpRequest } from 'node:http';
import type { IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';

export interface ApiClientOptions {
  /** `https://host:port` (or `http://` on loopback with a plaintext server). */
  readonly server: string;
  readonly token: string;
  /** PEM of the CA that signed the server's certificate (HTTPS). */
  readonly ca?: string;
  /** Per-request timeout of non-watch calls (default 10 s). */
  readonly timeoutMs?: number;
  /**
   * A watch silent this long is dead and is reconnected (default 45 s: three of the server's
   * 15 s bookmarks), so a peer that vanished without closing the connection is noticed.
   */
  readonly watchIdleMs?: number;
}

/** An object as the API serves it (validated by the server's loader on write). */
export interface ApiObject {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: {
    readonly name: string;
    readonly namespace?: string;
    readonly resourceVersion?: string;
    readonly [k: string]: unknown;
  };
  readonly [k: string]: unknown;
}

export type ObjectEventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface ApiReply {
  readonly status: number;
  readonly body: unknown;
}

export class ApiRequestError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function isApiObject(v: unknown): v is ApiObject {
  if (typeof v !== 'object' || v === null) return false;
  const o = v as Record<string, unknown>;
  const m = o.metadata as Record<string, unknown> | undefined;
  return (
    typeof o.apiVersion === 'string' &&
    typeof o.kind === 'string' &&
    typeof m === 'object' &&
    m !== null &&
    typeof m.name === 'string' &&
    (m.namespace === undefined || typeof m.namespace === 'string')
  );
}

function revisionOf(v: unknown): string | undefined {
  if (typeof v !== 'object' || v === null) return undefined;
  const m = (v as { metadata?: { resourceVersion?: unknown } }).metadata;
  const rv = m?.resourceVersion;
  return typeof rv === 'string' && /^[0-9]{1,20}$/.test(rv) ? rv : undefined;
}

export class ApiClient {
  private readonly base: URL;

  constructor(private readonly options: ApiClientOptions) {
    this.base = new URL(options.server);
    if (this.base.protocol !== 'https:' && this.base.protocol !== 'http:')
      throw new Error(`server URL ${JSON.stringify(options.server)} is not http(s)`);
    if (!/^[\x21-\x7e]{1,4096}$/.test(options.token))
      throw new Error('the token is empty or has characters a bearer token cannot have');
  }

  private open(
    method: string,
    path: string,
    body: string | undefined,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
  ): Promise<IncomingMessage> {
    const url = new URL(path, this.base);
    const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, {
      method,
      headers: {
        authorization: `Bearer ${this.options.token}`,
        accept: 'application/json',
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      ...(this.options.ca !== undefined ? { ca: this.options.ca } : {}),
      ...(signal ? { signal } : {}),
      ...(timeoutMs !== undefined ? { timeout: timeoutMs } : {}),
    });
    return new Promise((resolve, reject) => {
      req.on('response', resolve);
      req.on('error', reject);
      req.on('timeout', () => req.destroy(new Error(`${method} ${url.pathname} timed out`)));
      if (body !== undefined) req.write(body);
      req.end();
    });
  }

  /** One JSON call; rejects on transport errors, resolves with any HTTP status. */
  async call(method: string, path: string, body?: unknown): Promise<ApiReply> {
    const res = await this.open(
      method,
      path,
      body === undefined ? undefined : JSON.stringify(body),
      undefined,
      this.options.timeoutMs ?? 10_000,
    );
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of res as AsyncIterable<Buffer>) {
      size += c.length;
      if (size > 64 * 1024 * 1024) {
        res.destroy();
        throw new Error(`${method} ${path}: reply larger than 64 MiB`);
      }
      chunks.push(c);
    }
    const text = Buffer.concat(chunks).toString('utf8');
    let parsed: unknown = text;
    try {
      parsed = text === '' ? undefined : JSON.parse(text);
    } catch {
      // not JSON: keep the text
    }
    return { status: res.statusCode ?? 0, body: parsed };
  }

  /**
   * Streams the cluster-wide watch once: from `fromRevision`, or (undefined) from a fresh
   * snapshot delivered whole through `onReset`. Resolves when the stream ends (the caller
   * resumes from `lastRevision()`), rejects on transport errors; `ApiRequestError` 410 means the
   * revision is gone and the caller must relist.
   */
  async watchOnce(
    fromRevision: string | undefined,
    handlers: {
      onReset: (objects: readonly ApiObject[], revision: string) => void;
      onEvent: (type: ObjectEventType, o: ApiObject, revision: string) => void;
      onRevision: (revision: string) => void;
    },
    signal: AbortSignal,
  ): Promise<void> {
    const q = fromRevision === undefined ? '' : `?resourceVersion=${fromRevision}`;
    const res = await this.open(
      'GET',
      `/api/v1/watch${q}`,
      undefined,
      signal,
      this.options.watchIdleMs ?? 45_000,
    );
    if (res.statusCode !== 200) {
      const chunks: Buffer[] = [];
      for await (const c of res as AsyncIterable<Buffer>) chunks.push(c);
      let message = `watch: HTTP ${res.statusCode ?? 0}`;
      try {
        const b = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { message?: unknown };
        if (typeof b.message === 'string') message = `${message}: ${b.message.slice(0, 300)}`;
      } catch {
        // keep the status only
      }
      throw new ApiRequestError(res.statusCode ?? 0, message);
    }
    let snapshot: ApiObject[] | undefined = fromRevision === undefined ? [] : undefined;
    let buf = '';
    const line = (text: string): void => {
      if (text.trim() === '') return;
      if (text.length > 16 * 1024 * 1024) throw new Error('watch: an event line over 16 MiB');
      const ev = JSON.parse(text) as { type?: unknown; object?: unknown };
      const rv = revisionOf(ev.object);
      switch (ev.type) {
        case 'BOOKMARK':
          if (rv === undefined) throw new Error('watch: a BOOKMARK without a resourceVersion');
          if (snapshot) {
            handlers.onReset(snapshot, rv);
            snapshot = undefined;
          } else handlers.onRevision(rv);
          return;
        case 'ERROR': {
          const o = (ev.object ?? {}) as { status?: unknown; message?: unknown };
          const status = typeof o.status === 'number' ? o.status : 500;
          throw new ApiRequestError(
            status,
            `watch: ${typeof o.message === 'string' ? o.message.slice(0, 300) : 'error event'}`,
          );
        }
        case 'ADDED':
        case 'MODIFIED':
        case 'DELETED':
          if (!isApiObject(ev.object) || rv === undefined)
            throw new Error(`watch: a ${ev.type} event without a well-formed object`);
          if (snapshot) {
            if (ev.type === 'ADDED') snapshot.push(ev.object);
            else throw new Error(`watch: a ${ev.type} event inside the initial snapshot`);
          } else handlers.onEvent(ev.type, ev.object, rv);
          return;
        default:
          throw new Error(`watch: unknown event type ${JSON.stringify(ev.type).slice(0, 40)}`);
      }
    };
    for await (const c of res as AsyncIterable<Buffer>) {
      buf += c.toString('utf8');
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const text = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try {
          line(text);
        } catch (e) {
          res.destroy();
          throw e;
        }
      }
      if (buf.length > 16 * 1024 * 1024) {
        res.destroy();
        throw new Error('watch: an event line over 16 MiB');
      }
    }
    if (snapshot) throw new Error('watch: the stream ended inside the initial snapshot');
  }
}
