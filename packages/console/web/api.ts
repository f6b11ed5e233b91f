// The console's API client: the signed-in token (kept in sessionStorage, sent as a bearer token
// to this origin only) and JSON requests. A 401 signs out.

const KEY = 'palisade.token';

export function token(): string | null {
  return sessionStorage.getItem(KEY);
}

export function signIn(t: string): void {
  sessionStorage.setItem(KEY, t.trim());
}

export function signOut(): void {
  sessionStorage.removeItem(KEY);
}

export class ApiFailure extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly body: unknown,
  ) {
    super(message);
  }
}

export async function api<T>(
  path: string,
  init: { method?: string; body?: string; type?: string } = {},
): Promise<T> {
  const t = token();
  const res = await fetch(path, {
    method: init.method ?? 'GET',
    headers: {
      ...(t ? { authorization: `Bearer ${t}` } : {}),
      ...(init.body !== undefined ? { 'content-type': init.type ?? 'application/json' } : {}),
    },
    ...(init.body !== undefined ? { body: init.body } : {}),
    credentials: 'omit',
  });
  const text = await res.text();
  let body: unknown = undefined;
  try {
    body = text ? (JSON.parse(text) as unknown) : undefined;
  } catch {
    body = text;
  }
  if (!res.ok) {
    const b = (body ?? {}) as { code?: string; message?: string };
    if (res.status === 401) {
      signOut();
      window.dispatchEvent(new Event('palisade-signed-out'));
    }
    throw new ApiFailure(
      res.status,
      b.code ?? `HTTP_${res.status}`,
      b.message ?? res.statusText,
      body,
    );
  }
  return body as T;
}

export interface FlowEndpoint {
  ip: string;
  port?: number;
  namespace?: string;
  name?: string;
  labels?: Record<string, string>;
  identity?: string;
}

export interface Flow {
  id: number;
  node: string;
  start: string;
  end: string;
  source: FlowEndpoint;
  destination: FlowEndpoint;
  protocol: string;
  method?: string;
  path?: string;
  verdict: 'allow' | 'deny';
  point: 'kernel' | 'l7';
  direction?: 'ingress' | 'egress';
  provenance: {
    kind: string;
    tier?: string;
    policy?: string;
    rule?: number;
    profile?: string;
    reason?: string;
  };
  /** The would-be verdicts of staged policies (kernel records: from the node's engine). */
  staged?: { policy: string; tier?: string; verdict: string; rule?: number }[];
  packets: number;
  bytes: number;
  count: number;
}

export function endpointName(e: {
  namespace?: string | null;
  name?: string | null;
  ip: string;
}): string {
  return e.name ? `${e.namespace ?? ''}/${e.name}` : e.ip;
}

/** The deciding rule as a person reads it. */
export function decidedBy(p: Flow['provenance']): string {
  switch (p.kind) {
    case 'rule':
      return `${p.policy ?? '?'} rule ${p.rule ?? '?'}${p.tier ? ` (tier ${p.tier})` : ''}`;
    case 'tier-default':
      return `default deny of tier ${p.tier ?? '?'}`;
    case 'no-policy':
      return 'no policy selects this endpoint';
    case 'profile':
    case 'profile-default':
      return `profile ${p.profile ?? p.policy ?? '?'}${p.rule !== undefined ? ` rule ${p.rule}` : ''}`;
    default:
      return p.policy ? `${p.kind} ${p.policy}` : (p.reason ?? p.kind);
  }
}
