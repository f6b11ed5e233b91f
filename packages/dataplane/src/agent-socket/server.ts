// The local agent's CNI endpoint: JSON over HTTP on a unix socket (default
// /run/palisade/agent.sock, mode 0600). Owns: turning a plugin's register request into a
// projectcalico.org/v3 WorkloadEndpoint with the pod's labels, service account and named ports,
// and the socket's life cycle. Must never: register a pod scheduled to another node, register an
// unknown pod without labels given for it, or listen on a socket file another agent still serves.

import { existsSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { dirname } from 'node:path';
import { CNI_ERRORS } from '@palisade/core';
import type { WorkloadEndpoint } from '@palisade/core';
import { CniError } from '../cni/cni-error.js';
import type { CniErrorCode } from '../cni/cni-error.js';
import { RegistryConflictError } from './endpoint-registry.js';
import type { EndpointRegistry } from './endpoint-registry.js';
import type { PodSource } from './pod-source.js';
import {
  API_PREFIX,
  MAX_BODY_BYTES,
  isContainerId,
  isIfname,
  validateRegisterRequest,
} from './protocol.js';
import type { ErrorBody, RegisterRequest, RegisteredEndpoint } from './protocol.js';
import { claimSocketPath, listenRootOnly } from './root-socket.js';

export const DEFAULT_AGENT_SOCKET_PATH = '/run/palisade/agent.sock';

export interface CniEndpointServiceOptions {
  /** This agent's node name; pods scheduled elsewhere are refused. */
  readonly node: string;
  readonly pods: PodSource;
  readonly registry: EndpointRegistry;
  readonly now?: () => Date;
}

/** Calico's WorkloadEndpoint naming: node, orchestrator, pod, endpoint, each with `-` doubled. */
export function workloadEndpointName(node: string, pod: string, ifname: string): string {
  const esc = (s: string): string => s.replace(/-/g, '--');
  return `${esc(node)}-k8s-${esc(pod)}-${esc(ifname)}`;
}

/** The register/deregister logic, without HTTP. */
export class CniEndpointService {
  private readonly options: CniEndpointServiceOptions;

  constructor(options: CniEndpointServiceOptions) {
    this.options = options;
  }

  async register(req: RegisterRequest): Promise<RegisteredEndpoint> {
    const { node, pods, registry } = this.options;
    const pod = await pods.getPod(req.namespace, req.pod);
    const fromArgs = Object.keys(req.labels).length > 0 || req.serviceAccount !== undefined;
    if (!pod && !fromArgs)
      throw new CniError(
        'CNI_ERR_POD_UNKNOWN',
        `no pod ${req.namespace}/${req.pod} is known to the agent, and CNI_ARGS give no labels or service account for it`,
      );
    if (pod?.nodeName !== undefined && pod.nodeName !== node)
      throw new CniError(
        'CNI_ERR_REGISTRATION',
        `pod ${req.namespace}/${req.pod} is scheduled to node ${pod.nodeName}, not to this node ${node}`,
      );
    if (pod?.uid !== undefined && req.podUid !== undefined && pod.uid !== req.podUid)
      throw new CniError(
        'CNI_ERR_POD_UNKNOWN',
        `pod ${req.namespace}/${req.pod} has uid ${pod.uid}, not ${req.podUid}: the orchestrator's view is of another pod of that name`,
      );
    // The orchestrator is authoritative; CNI_ARGS only fill in what it does not say.
    const labels = { ...req.labels, ...(pod?.labels ?? {}) };
    const serviceAccount = pod?.serviceAccountName ?? req.serviceAccount ?? 'default';
    const wep: WorkloadEndpoint = {
      apiVersion: 'projectcalico.org/v3',
      kind: 'WorkloadEndpoint',
      metadata: {
        name: workloadEndpointName(node, req.pod, req.ifname),
        namespace: req.namespace,
        labels: {
          ...labels,
          'projectcalico.org/namespace': req.namespace,
          'projectcalico.org/orchestrator': 'k8s',
          'projectcalico.org/serviceaccount': serviceAccount,
        },
      },
      spec: {
        node,
        orchestrator: 'k8s',
        workload: '',
        pod: req.pod,
        endpoint: req.ifname,
        serviceAccountName: serviceAccount,
        ipNetworks: req.ips,
        profiles: [`kns.${req.namespace}`, `ksa.${req.namespace}.${serviceAccount}`],
        interfaceName: req.hostIfname,
        mac: req.mac,
        ports: pod?.ports ?? [],
      },
    };
    const ep: RegisteredEndpoint = {
      network: req.network,
      containerId: req.containerId,
      ifname: req.ifname,
      hostIfname: req.hostIfname,
      netns: req.netns,
      source: pod ? 'pod' : 'cni-args',
      workloadEndpoint: wep,
      registeredAt: (this.options.now ?? (() => new Date()))().toISOString(),
    };
    try {
      await registry.register(ep);
    } catch (e) {
      if (e instanceof RegistryConflictError) throw new CniError('CNI_ERR_REGISTRATION', e.message);
      throw e;
    }
    return ep;
  }

  deregister(containerId: string, ifname: string): Promise<boolean> {
    return this.options.registry.deregister(containerId, ifname);
  }

  get(containerId: string, ifname: string): Promise<RegisteredEndpoint | undefined> {
    return this.options.registry.get(containerId, ifname);
  }
}

export interface Reply {
  readonly status: number;
  readonly body: unknown;
}

function errorReply(code: CniErrorCode, message: string): Reply {
  const body: ErrorBody = { error: { code, message } };
  return { status: CNI_ERRORS[code].status, body };
}

/**
 * One request, without a socket (tests call it directly). `body` is the raw text, or undefined
 * when the request had none.
 */
export async function handleAgentRequest(
  service: CniEndpointService,
  method: string,
  url: string,
  body: string | undefined,
): Promise<Reply> {
  const path = url.split('?')[0] ?? '';
  try {
    if (path === `${API_PREFIX}/healthz` && method === 'GET')
      return { status: 200, body: { ok: true } };
    if (path === `${API_PREFIX}/endpoints`) {
      if (method !== 'POST')
        return errorReply('CNI_ERR_BAD_REQUEST', `${method} is not allowed on ${path}`);
      let doc: unknown;
      try {
        doc = JSON.parse(body ?? '');
      } catch {
        return errorReply('CNI_ERR_BAD_REQUEST', 'the body is not JSON');
      }
      const v = validateRegisterRequest(doc);
      if (!v.ok) return errorReply('CNI_ERR_BAD_REQUEST', v.problems.join('; '));
      const endpoint = await service.register(v.value);
      return { status: 201, body: { endpoint } };
    }
    const prefix = `${API_PREFIX}/endpoints/`;
    if (path.startsWith(prefix)) {
      const parts = path.slice(prefix.length).split('/');
      let containerId: string;
      let ifname: string;
      try {
        containerId = decodeURIComponent(parts[0] ?? '');
        ifname = decodeURIComponent(parts[1] ?? '');
      } catch {
        return errorReply('CNI_ERR_BAD_REQUEST', 'the path is not valid percent-encoding');
      }
      if (parts.length !== 2 || !isContainerId(containerId) || !isIfname(ifname))
        return errorReply('CNI_ERR_BAD_REQUEST', `expected ${prefix}CONTAINER_ID/IFNAME`);
      if (method === 'GET') {
        const endpoint = await service.get(containerId, ifname);
        return endpoint
          ? { status: 200, body: { endpoint } }
          : errorReply('CNI_ERR_NOT_REGISTERED', `no endpoint for ${containerId} (${ifname})`);
      }
      if (method === 'DELETE')
        return { status: 200, body: { removed: await service.deregister(containerId, ifname) } };
      return errorReply('CNI_ERR_BAD_REQUEST', `${method} is not allowed on ${path}`);
    }
    return {
      status: 404,
      body: { error: { code: 'CNI_ERR_BAD_REQUEST', message: `no route ${method} ${path}` } },
    };
  } catch (e) {
    if (e instanceof CniError) return errorReply(e.code, e.message);
    return errorReply('CNI_ERR_INTERNAL', `registration failed: ${(e as Error).message}`);
  }
}

function readBody(req: IncomingMessage): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY_BYTES) {
        // Stop buffering; the reply goes out and the connection is closed after it.
        chunks.length = 0;
        reject(new Error('too large'));
        return;
      }
      chunks.push(c);
    });
    req.on('end', () =>
      resolve(chunks.length === 0 ? undefined : Buffer.concat(chunks).toString('utf8')),
    );
    req.on('error', reject);
  });
}

function send(res: ServerResponse, reply: Reply, close = false): void {
  if (res.headersSent) return;
  const text = JSON.stringify(reply.body);
  res.writeHead(reply.status, {
    ...(close ? { connection: 'close' } : {}),
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

/** True when something accepts connections on the socket file. */
export { socketAnswers } from './root-socket.js';

export interface AgentSocketOptions {
  readonly service: CniEndpointService;
  readonly socketPath?: string;
  /** 0o600 (root only, the default) or 0o660 (root and the socket's group). */
  readonly mode?: 0o600 | 0o660;
}

export interface AgentSocket {
  readonly path: string;
  close(): Promise<void>;
}

/** Starts listening; refuses a path that is not a socket or that another process still serves. */
export async function startAgentSocket(options: AgentSocketOptions): Promise<AgentSocket> {
  const path = options.socketPath ?? DEFAULT_AGENT_SOCKET_PATH;
  const dir = dirname(path);
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
  await claimSocketPath(path, 'another process (another agent?)');
  const server: Server = createServer((req, res) => {
    readBody(req)
      .then(
        async (body) =>
          send(
            res,
            await handleAgentRequest(options.service, req.method ?? 'GET', req.url ?? '/', body),
          ),
        () => {
          res.on('finish', () => req.destroy());
          send(
            res,
            errorReply('CNI_ERR_BAD_REQUEST', `the body is larger than ${MAX_BODY_BYTES} bytes`),
            true,
          );
        },
      )
      .catch(() => res.destroy());
  });
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  await listenRootOnly(server, path, options.mode ?? 0o600);
  return {
    path,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
