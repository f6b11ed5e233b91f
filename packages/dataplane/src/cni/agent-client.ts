// The plugin's side of the agent socket. Owns: the `AgentClient` port and its HTTP-over-unix-socket
// implementation, and telling apart "the agent certainly did not act" (it refused, or could not
// be reached) from "it may have" (the connection broke after the request was sent). Must never:
// wait for the agent without a deadline.

import { request } from 'node:http';
import { endpointPath, API_PREFIX } from '../agent-socket/protocol.js';
import type { RegisterRequest, RegisteredEndpoint } from '../agent-socket/protocol.js';
import { CNI_NUMERIC_CODES, CniError } from './cni-error.js';
import type { CniErrorCode } from './cni-error.js';

/** A failed agent call; `mayHaveApplied` when the request may have reached the agent and acted. */
export class AgentCallError extends CniError {
  readonly mayHaveApplied: boolean;

  constructor(code: CniErrorCode, message: string, mayHaveApplied: boolean) {
    super(code, message);
    this.name = 'AgentCallError';
    this.mayHaveApplied = mayHaveApplied;
  }
}

export interface AgentClient {
  register(req: RegisterRequest): Promise<RegisteredEndpoint>;
  /** Succeeds whether or not the endpoint was registered. */
  deregister(containerId: string, ifname: string): Promise<void>;
  get(containerId: string, ifname: string): Promise<RegisteredEndpoint | undefined>;
}

interface HttpReply {
  readonly status: number;
  readonly body: unknown;
}

const MAX_REPLY_BYTES = 1024 * 1024;

function isCniCode(s: unknown): s is CniErrorCode {
  return typeof s === 'string' && Object.hasOwn(CNI_NUMERIC_CODES, s);
}

export class UnixSocketAgentClient implements AgentClient {
  private readonly socketPath: string;
  private readonly timeoutMs: number;

  constructor(socketPath: string, options: { timeoutMs?: number } = {}) {
    this.socketPath = socketPath;
    this.timeoutMs = options.timeoutMs ?? 10_000;
  }

  private call(method: string, path: string, body?: unknown): Promise<HttpReply> {
    const text = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      let sent = false;
      const req = request(
        {
          socketPath: this.socketPath,
          // One connection per call: a plugin run makes one or two calls and then exits.
          agent: false,
          method,
          path,
          headers:
            text === undefined
              ? {}
              : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) },
          timeout: this.timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (c: Buffer) => {
            size += c.length;
            if (size <= MAX_REPLY_BYTES) chunks.push(c);
          });
          res.on('end', () => {
            let parsed: unknown;
            try {
              parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
            } catch {
              parsed = undefined;
            }
            resolve({ status: res.statusCode ?? 0, body: parsed });
          });
          res.on('error', (e) => reject(this.unavailable(e, true)));
        },
      );
      req.on('socket', (s) => s.once('connect', () => (sent = true)));
      req.on('timeout', () => req.destroy(new Error(`no answer within ${this.timeoutMs} ms`)));
      req.on('error', (e) => reject(this.unavailable(e, sent)));
      req.end(text);
    });
  }

  private unavailable(e: Error, mayHaveApplied: boolean): AgentCallError {
    return new AgentCallError(
      'CNI_ERR_AGENT_UNAVAILABLE',
      `the agent socket ${this.socketPath} did not answer: ${e.message}`,
      mayHaveApplied,
    );
  }

  private refused(reply: HttpReply, fallback: CniErrorCode): AgentCallError {
    const err = (reply.body as { error?: { code?: unknown; message?: unknown } } | undefined)
      ?.error;
    const code = isCniCode(err?.code) ? err.code : fallback;
    const message =
      typeof err?.message === 'string' ? err.message : `the agent answered HTTP ${reply.status}`;
    // The agent answered with an error: it did not apply the request.
    return new AgentCallError(code, message, false);
  }

  async register(req: RegisterRequest): Promise<RegisteredEndpoint> {
    const reply = await this.call('POST', `${API_PREFIX}/endpoints`, req);
    if (reply.status !== 201) throw this.refused(reply, 'CNI_ERR_REGISTRATION');
    const ep = (reply.body as { endpoint?: RegisteredEndpoint } | undefined)?.endpoint;
    if (!ep)
      throw new AgentCallError(
        'CNI_ERR_REGISTRATION',
        'the agent answered without the endpoint',
        true,
      );
    return ep;
  }

  async deregister(containerId: string, ifname: string): Promise<void> {
    const reply = await this.call('DELETE', endpointPath(containerId, ifname));
    if (reply.status !== 200) throw this.refused(reply, 'CNI_ERR_AGENT_UNAVAILABLE');
  }

  async get(containerId: string, ifname: string): Promise<RegisteredEndpoint | undefined> {
    const reply = await this.call('GET', endpointPath(containerId, ifname));
    if (reply.status === 404) return undefined;
    if (reply.status !== 200) throw this.refused(reply, 'CNI_ERR_AGENT_UNAVAILABLE');
    return (reply.body as { endpoint?: RegisteredEndpoint } | undefined)?.endpoint;
  }
}
