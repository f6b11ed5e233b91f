// The sidecar's side of policy sync (agent-socket/protocol.ts): one long-lived stream from the
// agent's socket for this endpoint, each view loaded through the core loader again and built into
// a PolicyView, swapped into the holder; CSRs sent to the agent for the SVID.
// Fail static: when the agent goes away (stream ends, silence past three heartbeats, malformed
// line) the holder keeps the last view and the link reconnects with capped backoff; the snapshot
// it gets then replaces the view if newer. Owns: the stream, its framing and validation, and the
// reconnect schedule. Must never: install a view of another endpoint or one that does not load
// and compile, or pass the private key anywhere (only CSRs leave).

import { request } from 'node:http';
import type { IncomingMessage } from 'node:http';
import { hasErrors, loadText } from '@palisade/core';
import {
  INTERCEPT_PREFIX,
  MAX_POLICYSYNC_LINE_BYTES,
  POLICYSYNC_PREFIX,
  SVID_PREFIX,
  parsePolicySyncMessage,
  validateSvidResponse,
} from '../agent-socket/protocol.js';
import type {
  InterceptAnnouncement,
  InterceptReply,
  PolicySyncView,
  SvidResponse,
} from '../agent-socket/protocol.js';
import { PolicyView, PolicyViewHolder } from './policy-view.js';
import type { ViewResult } from './policy-view.js';

export interface AgentLinkOptions {
  readonly socketPath: string;
  /** `namespace/name` of this sidecar's endpoint. */
  readonly endpoint: string;
  /** The application ports the sidecar fronts (the agent picks the callers by them). */
  readonly ports: readonly number[];
  /** Reconnect backoff bounds (default 100 ms .. 5 s). */
  readonly backoffMinMs?: number;
  readonly backoffMaxMs?: number;
  /** A stream silent this long is dead (default 35 s: three heartbeats and a margin). */
  readonly idleMs?: number;
  readonly say?: (line: string) => void;
}

export interface AgentLinkStatus {
  readonly connected: boolean;
  readonly version: number | undefined;
  readonly views: number;
  readonly refusedViews: number;
  readonly reconnects: number;
  readonly lastError: string | undefined;
}

export class AgentRequestError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'AgentRequestError';
  }
}

/** Builds a view from a policy sync message: loaded and compiled afresh, for this endpoint only. */
export function viewFromSync(view: PolicySyncView, version: number, endpoint: string): ViewResult {
  if (view.endpoint !== endpoint)
    return { ok: false, reason: `the agent sent a view of ${view.endpoint}, not of ${endpoint}` };
  const loaded = loadText(
    JSON.stringify({ apiVersion: 'v1', kind: 'List', items: view.resources }),
    `policysync:${endpoint}@${version}`,
  );
  if (hasErrors(loaded.diagnostics)) {
    const first = loaded.diagnostics.find((d) => d.severity === 'error');
    return {
      ok: false,
      reason: `the view does not load: ${first?.code ?? ''} ${first?.message ?? ''}`.trim(),
    };
  }
  const r = PolicyView.fromResources(loaded.resources, endpoint, version, {
    trustDomain: view.trustDomain,
    istioRootNamespace: view.istioRootNamespace,
  });
  if (r.ok && r.view.identity !== view.identity)
    return {
      ok: false,
      reason: `the view makes ${endpoint} run as ${r.view.identity}, the agent says ${view.identity}`,
    };
  return r;
}

export class AgentLink {
  private holderRef: PolicyViewHolder | undefined;
  private connected = false;
  private views = 0;
  private refused = 0;
  private reconnects = 0;
  private lastError: string | undefined;
  private readonly stopper = new AbortController();
  private loop: Promise<void> | undefined;
  private readonly firstWaiters: ((h: PolicyViewHolder) => void)[] = [];
  private readonly bundleListeners = new Set<(pem: string) => void>();
  private readonly viewListeners = new Set<(v: PolicyView) => void>();
  private readonly connectListeners = new Set<() => void>();
  private bundle: string | undefined;

  constructor(private readonly options: AgentLinkOptions) {}

  get holder(): PolicyViewHolder | undefined {
    return this.holderRef;
  }

  /** The last trust bundle the agent sent. */
  get trustBundle(): string | undefined {
    return this.bundle;
  }

  status(): AgentLinkStatus {
    return {
      connected: this.connected,
      version: this.holderRef?.current.version,
      views: this.views,
      refusedViews: this.refused,
      reconnects: this.reconnects,
      lastError: this.lastError,
    };
  }

  start(): void {
    this.loop ??= this.run();
  }

  async stop(): Promise<void> {
    this.stopper.abort();
    await this.loop;
  }

  /** Resolves with the holder once a first usable view is installed. */
  firstView(): Promise<PolicyViewHolder> {
    if (this.holderRef) return Promise.resolve(this.holderRef);
    return new Promise((resolve) => this.firstWaiters.push(resolve));
  }

  onBundle(f: (pem: string) => void): () => void {
    this.bundleListeners.add(f);
    return () => this.bundleListeners.delete(f);
  }

  /** Called whenever the stream to the agent is (re)established (a new agent knows nothing). */
  onConnected(f: () => void): () => void {
    this.connectListeners.add(f);
    return () => this.connectListeners.delete(f);
  }

  /** Called after every installed view (tests, progress lines). */
  onView(f: (v: PolicyView) => void): () => void {
    this.viewListeners.add(f);
    return () => this.viewListeners.delete(f);
  }

  private problem(message: string): void {
    this.lastError = message;
    this.options.say?.(`policy sync: ${message}`);
  }

  private async run(): Promise<void> {
    const min = this.options.backoffMinMs ?? 100;
    const max = this.options.backoffMaxMs ?? 5_000;
    let delay = min;
    const signal = this.stopper.signal;
    while (!signal.aborted) {
      try {
        const got = await this.streamOnce(signal);
        if (got) delay = min;
        if (signal.aborted) break;
        this.problem('the agent closed the stream; the last view stays in force');
      } catch (e) {
        if (signal.aborted) break;
        this.problem(
          `agent unreachable, the last view stays in force: ${e instanceof Error ? e.message : String(e)}`,
        );
      }
      this.connected = false;
      this.reconnects++;
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(t);
          signal.removeEventListener('abort', done);
          resolve();
        };
        const t = setTimeout(done, delay);
        signal.addEventListener('abort', done, { once: true });
      });
      delay = Math.min(max, delay * 2);
    }
    this.connected = false;
  }

  /** One stream; resolves true when at least one message arrived. */
  private async streamOnce(signal: AbortSignal): Promise<boolean> {
    const path = `${POLICYSYNC_PREFIX}/${this.options.endpoint}?ports=${this.options.ports.join(',')}`;
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = request({
        socketPath: this.options.socketPath,
        path,
        method: 'GET',
        signal,
        timeout: this.options.idleMs ?? 35_000,
      });
      req.on('response', resolve);
      req.on('error', reject);
      req.on('timeout', () => req.destroy(new Error('the agent is silent (no heartbeat)')));
      req.end();
    });
    if (res.statusCode !== 200) {
      const chunks: Buffer[] = [];
      for await (const c of res as AsyncIterable<Buffer>) chunks.push(c);
      throw new Error(
        `HTTP ${res.statusCode ?? 0}: ${Buffer.concat(chunks).toString('utf8').slice(0, 300)}`,
      );
    }
    this.connected = true;
    for (const f of this.connectListeners) f();
    let got = false;
    let buf = '';
    for await (const c of res as AsyncIterable<Buffer>) {
      buf += c.toString('utf8');
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (line.trim() === '') continue;
        got = true;
        if (!this.message(line)) {
          res.destroy();
          throw new Error('DATAPLANE_ERR_POLICYSYNC_STREAM: a malformed message; reconnecting');
        }
      }
      if (buf.length > MAX_POLICYSYNC_LINE_BYTES) {
        res.destroy();
        throw new Error('DATAPLANE_ERR_POLICYSYNC_STREAM: a line over the size limit');
      }
    }
    return got;
  }

  /** False when the line is malformed (the stream is then dropped). */
  private message(line: string): boolean {
    const m = parsePolicySyncMessage(line);
    if (!m.ok) {
      this.problem(`malformed message from the agent: ${m.problems.join('; ')}`);
      return false;
    }
    const msg = m.value;
    switch (msg.type) {
      case 'heartbeat':
        return true;
      case 'bundle':
        if (msg.bundlePem !== this.bundle) {
          this.bundle = msg.bundlePem;
          for (const f of this.bundleListeners) f(msg.bundlePem);
        }
        return true;
      case 'snapshot':
      case 'update': {
        const current = this.holderRef?.current.version;
        // A resync after a reconnect repeats the version we have: nothing to do.
        if (msg.type === 'snapshot' && current !== undefined && msg.version === current)
          return true;
        const r = viewFromSync(msg.view, msg.version, this.options.endpoint);
        if (!this.holderRef) {
          if (!r.ok) {
            this.refused++;
            this.problem(`view ${msg.version} refused: ${r.reason}`);
            return true;
          }
          this.holderRef = new PolicyViewHolder(r.view);
          this.views++;
          for (const w of this.firstWaiters.splice(0)) w(this.holderRef);
          for (const f of this.viewListeners) f(r.view);
          return true;
        }
        if (this.holderRef.update(r)) {
          this.views++;
          this.lastError = undefined;
          for (const f of this.viewListeners) f(this.holderRef.current);
        } else {
          this.refused++;
          this.problem(
            `view ${msg.version} refused, version ${this.holderRef.current.version} kept: ${this.holderRef.status().lastError ?? ''}`,
          );
        }
        return true;
      }
    }
  }

  /**
   * Tells the agent which listeners are open (PUT, the whole set); resolves once the agent has
   * installed the redirects.
   */
  async announceInterception(a: InterceptAnnouncement): Promise<InterceptReply> {
    const body = JSON.stringify(a);
    const { status, doc } = await this.call('PUT', INTERCEPT_PREFIX, body);
    if (status !== 200) throw agentError(status, doc);
    const r = doc as Partial<InterceptReply>;
    if (
      typeof r.table !== 'string' ||
      typeof r.inbound !== 'number' ||
      typeof r.outbound !== 'number' ||
      !Array.isArray(r.skipped)
    )
      throw new AgentRequestError(502, 'DATAPLANE_ERR_POLICYSYNC_STREAM', 'a malformed answer');
    return r as InterceptReply;
  }

  /** One JSON request on the endpoint's socket. */
  private async call(
    method: string,
    prefix: string,
    body: string,
  ): Promise<{ status: number; doc: unknown }> {
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = request({
        socketPath: this.options.socketPath,
        path: `${prefix}/${this.options.endpoint}`,
        method,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        timeout: 20_000,
      });
      req.on('response', resolve);
      req.on('error', reject);
      req.on('timeout', () => req.destroy(new Error('the agent did not answer in time')));
      req.end(body);
    });
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of res as AsyncIterable<Buffer>) {
      size += c.length;
      if (size > 4 << 20) {
        res.destroy();
        throw new Error('the agent answered more than 4 MiB');
      }
      chunks.push(c);
    }
    try {
      return {
        status: res.statusCode ?? 0,
        doc: JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown,
      };
    } catch {
      throw new AgentRequestError(
        res.statusCode ?? 0,
        'DATAPLANE_ERR_POLICYSYNC_STREAM',
        'the agent answered something that is not JSON',
      );
    }
  }

  /** Sends a CSR (made in this process) to the agent; the answer is the chain and the bundle. */
  async requestSvid(csrPem: string, ttlSeconds?: number): Promise<SvidResponse> {
    const body = JSON.stringify({
      csr: csrPem,
      ...(ttlSeconds !== undefined ? { ttlSeconds } : {}),
    });
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = request({
        socketPath: this.options.socketPath,
        path: `${SVID_PREFIX}/${this.options.endpoint}`,
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        timeout: 20_000,
      });
      req.on('response', resolve);
      req.on('error', reject);
      req.on('timeout', () => req.destroy(new Error('the agent did not answer the CSR in time')));
      req.end(body);
    });
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of res as AsyncIterable<Buffer>) {
      size += c.length;
      if (size > 4 << 20) {
        res.destroy();
        throw new Error('the agent answered more than 4 MiB');
      }
      chunks.push(c);
    }
    let doc: unknown;
    try {
      doc = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch {
      throw new AgentRequestError(
        res.statusCode ?? 0,
        'DATAPLANE_ERR_POLICYSYNC_STREAM',
        'the agent answered something that is not JSON',
      );
    }
    if (res.statusCode !== 201) {
      const e = (doc as { error?: { code?: unknown; message?: unknown } }).error;
      throw new AgentRequestError(
        res.statusCode ?? 0,
        typeof e?.code === 'string' ? e.code : 'DATAPLANE_ERR_POLICYSYNC_UNAVAILABLE',
        typeof e?.message === 'string' ? e.message : `HTTP ${res.statusCode ?? 0}`,
      );
    }
    const v = validateSvidResponse(doc);
    if (!v.ok)
      throw new AgentRequestError(502, 'DATAPLANE_ERR_POLICYSYNC_STREAM', v.problems.join('; '));
    return v.value;
  }
}

function agentError(status: number, doc: unknown): AgentRequestError {
  const e = (doc as { error?: { code?: unknown; message?: unknown } } | null)?.error;
  return new AgentRequestError(
    status,
    typeof e?.code === 'string' ? e.code : 'DATAPLANE_ERR_POLICYSYNC_UNAVAILABLE',
    typeof e?.message === 'string' ? e.message : `HTTP ${status}`,
  );
}
