// The OpenAPI 3.1 description served at /openapi.json: every path, its parameters, the error
// shape and the resource kinds. Built from the kind table so it cannot drift from the router.

import { API_ERRORS } from '@palisade/core';
import { SERVER_KINDS } from '../resources/kinds.js';

const errorRef = { $ref: '#/components/schemas/Error' };
const err = (description: string) => ({
  description,
  content: { 'application/json': { schema: errorRef } },
});
const ok = (description: string) => ({
  description,
  content: { 'application/json': { schema: { type: 'object' } } },
});
const common = {
  '400': err('malformed request (API_ERR_BAD_REQUEST, API_ERR_INVALID_NAME)'),
  '401': err('no or invalid credential (AUTH_ERR_*)'),
  '403': err('forbidden by RBAC (AUTH_ERR_FORBIDDEN); audited'),
  '413': err('body too large (API_ERR_TOO_LARGE)'),
  '429': err('rate limited (API_ERR_RATE_LIMITED); see Retry-After'),
  '503': err('store unavailable (API_ERR_UNAVAILABLE); nothing written'),
};
const rv = { name: 'resourceVersion', in: 'query', schema: { type: 'string' } };

export function openApiDocument(): Record<string, unknown> {
  const paths: Record<string, unknown> = {
    '/healthz': {
      get: { summary: 'liveness', security: [], responses: { '200': { description: 'ok' } } },
    },
    '/readyz': {
      get: {
        summary: 'readiness: the store is reachable',
        security: [],
        responses: { '200': ok('ready'), '503': err('store unreachable') },
      },
    },
    '/metrics': {
      get: {
        summary: 'Prometheus text metrics',
        security: [],
        responses: { '200': { description: 'metrics' } },
      },
    },
    '/api/v1/whoami': {
      get: {
        summary: 'the authenticated principal',
        responses: { '200': ok('principal'), ...common },
      },
    },
    '/api/v1/kinds': {
      get: {
        summary: 'served kinds with their short names',
        responses: { '200': ok('kinds'), ...common },
      },
    },
    '/api/v1/apply': {
      post: {
        summary:
          'multi-document YAML or JSON apply, all or nothing; dryRun=1 returns the connectivity diff',
        parameters: [
          { name: 'dryRun', in: 'query', schema: { type: 'string', enum: ['1', 'true'] } },
          {
            name: 'file',
            in: 'query',
            schema: { type: 'string' },
            description: 'file name used in diagnostics',
          },
        ],
        requestBody: { content: { 'application/yaml': {}, 'application/json': {} } },
        responses: {
          '200': ok('results (created/configured/unchanged) and, for a dry run, connectivity'),
          '409': err('a named resourceVersion is stale'),
          '422': err('diagnostics, as palisade validate'),
          ...common,
        },
      },
    },
    '/api/v1/watch': {
      get: {
        summary: 'watch every kind (agents): newline-delimited JSON events',
        parameters: [rv],
        responses: {
          '200': { description: 'ADDED/MODIFIED/DELETED/BOOKMARK/ERROR events' },
          '410': err('resourceVersion compacted: relist'),
          ...common,
        },
      },
    },
    '/api/v1/tokens': {
      post: {
        summary: 'mint a bearer token (shown once; stored as its SHA-256)',
        requestBody: {
          content: {
            'application/json': {
              schema: {
                type: 'object',
                properties: {
                  user: { type: 'string' },
                  node: { type: 'string' },
                  groups: { type: 'array', items: { type: 'string' } },
                  ttlSeconds: { type: 'integer' },
                },
              },
            },
          },
        },
        responses: { '201': ok('token'), ...common },
      },
    },
    '/api/v1/audit': {
      get: {
        summary: 'audit entries, oldest first',
        parameters: ['user', 'kind', 'name', 'namespace', 'since', 'until', 'outcome', 'limit'].map(
          (n) => ({ name: n, in: 'query', schema: { type: 'string' } }),
        ),
        responses: { '200': ok('entries'), ...common },
      },
    },
    '/api/v1/flows': {
      get: {
        summary:
          'flow records, newest first (follow=1: NDJSON BOOKMARK/FLOW lines as they are stored); a namespace or endpoint filter also scopes the authorization (list FlowRecord.palisade.dev)',
        parameters: [
          'since',
          'until',
          'endpoint',
          'namespace',
          'policy',
          'verdict',
          'point',
          'node',
          'limit',
          'before',
          'after',
          'follow',
        ].map((n) => ({ name: n, in: 'query', schema: { type: 'string' } })),
        responses: { '200': ok('{records, next}'), ...common },
      },
      post: {
        summary:
          'report a batch of flow records and shed counts (node credentials only; at most 5000 records and 4 MiB; every field validated, the whole batch refused on any problem; records are stored under the calling node)',
        responses: { '200': ok('{stored, shed, firstId, lastId}'), ...common },
      },
    },
    '/api/v1/flows/graph': {
      get: {
        summary: 'service graph edges and nodes of observed flows (default: the last hour)',
        responses: { '200': ok('{edges, nodes}'), ...common },
      },
    },
    '/api/v1/flows/policies': {
      get: {
        summary: 'hits per deciding policy or provenance kind (default: the last hour)',
        responses: { '200': ok('{hits}'), ...common },
      },
    },
    '/api/v1/flows/stats': {
      get: {
        summary:
          'flow store size, span, retention, evictions, and shed counts by node, point and reason',
        responses: { '200': ok('stats'), ...common },
      },
    },
    '/api/v1/audit/verify': {
      get: {
        summary: 'verify the hash chain',
        responses: { '200': ok('{ok, entries, problems}'), ...common },
      },
    },
    '/api/v1/certificates': {
      post: {
        summary:
          'sign an X509-SVID for the public key of a CSR. Node credentials only (users, admins included, get 403); ' +
          'issued only while a WorkloadEndpoint (spec.node) or Pod (spec.nodeName) on the calling node runs as the ' +
          "SPIFFE ID's namespace and service account. Subject, SANs and extensions of the CSR are ignored. " +
          'Lifetime 24 h by default, at most 90 days. Every issuance and refusal is in the audit log ' +
          '(kind Certificate.palisade.dev) before the answer.',
        requestBody: {
          required: true,
          content: {
            'application/json': {
              schema: {
                type: 'object',
                required: ['csr', 'spiffeId'],
                additionalProperties: false,
                properties: {
                  csr: { type: 'string', description: 'PEM CERTIFICATE REQUEST, at most 64 KiB' },
                  spiffeId: {
                    type: 'string',
                    description: 'spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>',
                  },
                  ttlSeconds: { type: 'integer', minimum: 60, maximum: 7776000 },
                },
              },
            },
          },
        },
        responses: {
          '201': {
            description: 'issued',
            content: {
              'application/json': {
                schema: {
                  type: 'object',
                  properties: {
                    spiffeId: { type: 'string' },
                    serial: { type: 'string' },
                    certPem: { type: 'string', description: 'the leaf' },
                    chainPem: { type: 'string', description: 'CA certificates above it' },
                    bundlePem: { type: 'string', description: 'the trust bundle now' },
                    notBefore: { type: 'string', format: 'date-time' },
                    notAfter: { type: 'string', format: 'date-time' },
                    renewAt: {
                      type: 'string',
                      format: 'date-time',
                      description: 'renew then: half the lifetime ± 10 %',
                    },
                  },
                },
              },
            },
          },
          ...common,
          '400': err(
            'PKI_ERR_BAD_CSR, PKI_ERR_WEAK_KEY, PKI_ERR_BAD_TTL, PKI_ERR_BAD_SPIFFE_ID, API_ERR_BAD_REQUEST; audited',
          ),
          '403': err(
            'PKI_ERR_NOT_ATTESTED, PKI_ERR_WRONG_TRUST_DOMAIN, AUTH_ERR_FORBIDDEN (not a node); audited',
          ),
          '503': err('PKI_ERR_CA_EXPIRED, or the store is unavailable (nothing issued)'),
        },
      },
    },
    '/api/v1/ca/rotate': {
      post: {
        summary:
          'start a root rotation of the CA: the new root joins the bundle now and signs from activateAfterSeconds (default half the overlap); admins only; audited',
        requestBody: {
          content: {
            'application/json': {
              schema: {
                type: 'object',
                additionalProperties: false,
                properties: {
                  overlapSeconds: { type: 'integer', minimum: 60, maximum: 7776000 },
                  activateAfterSeconds: { type: 'integer', minimum: 0 },
                },
              },
            },
          },
        },
        responses: {
          '200': { description: 'the rotation started; the authority as inspect() shows it' },
          ...common,
        },
      },
    },
    '/api/v1/trust-bundle': {
      get: {
        summary:
          "the CA's trust bundle (every root currently trusted, both during a rotation); any authenticated principal",
        parameters: [
          {
            name: 'format',
            in: 'query',
            schema: { type: 'string', enum: ['pem', 'jwks'] },
            description: 'pem (default) or jwks (SPIFFE bundle, X509-SVID §6.1)',
          },
        ],
        responses: {
          '200': {
            description: 'the bundle',
            content: {
              'application/x-pem-file': { schema: { type: 'string' } },
              'application/json': { schema: { type: 'object' } },
            },
          },
          ...common,
        },
      },
    },
  };
  for (const k of SERVER_KINDS) {
    const base = `/api/v1/${k.group}/${k.kind}`;
    const item = k.namespaced ? `${base}/{namespace}/{name}` : `${base}/{name}`;
    const params = [
      ...(k.namespaced
        ? [{ name: 'namespace', in: 'path', required: true, schema: { type: 'string' } }]
        : []),
      { name: 'name', in: 'path', required: true, schema: { type: 'string' } },
    ];
    const list = {
      summary: `list ${k.plural} (all namespaces), or watch with watch=1`,
      parameters: [
        rv,
        { name: 'watch', in: 'query', schema: { type: 'string' } },
        { name: 'limit', in: 'query', schema: { type: 'integer' } },
        { name: 'continue', in: 'query', schema: { type: 'string' } },
      ],
      responses: { '200': ok('List'), '410': err('watch resourceVersion compacted'), ...common },
    };
    paths[base] = {
      get: list,
      post: {
        summary: `create a ${k.kind}`,
        responses: {
          '201': ok(k.kind),
          '409': err('already exists'),
          '422': err('invalid'),
          ...common,
        },
      },
    };
    if (k.namespaced)
      paths[`${base}/{namespace}`] = {
        get: {
          ...list,
          summary: `list ${k.plural} in a namespace`,
          parameters: [...list.parameters, params[0]],
        },
      };
    paths[item] = {
      get: {
        summary: `read a ${k.kind}`,
        parameters: params,
        responses: { '200': ok(k.kind), '404': err('not found'), ...common },
      },
      put: {
        summary: `replace a ${k.kind}; metadata.resourceVersion makes it conditional`,
        parameters: params,
        responses: {
          '200': ok(k.kind),
          '409': err('stale resourceVersion'),
          '422': err('invalid'),
          ...common,
        },
      },
      patch: {
        summary: 'merge metadata.labels (palisade label)',
        parameters: params,
        responses: { '200': ok(k.kind), '409': err('stale resourceVersion'), ...common },
      },
      delete: {
        summary: `delete a ${k.kind}; ?resourceVersion= makes it conditional`,
        parameters: [...params, rv],
        responses: {
          '200': ok('deleted'),
          '404': err('not found'),
          '409': err('stale resourceVersion'),
          ...common,
        },
      },
    };
  }
  return {
    openapi: '3.1.0',
    info: { title: 'Palisade API', version: '1' },
    security: [{ bearer: [] }, { clientCertificate: [] }],
    paths,
    components: {
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer' },
        clientCertificate: {
          type: 'mutualTLS',
          description: 'a client certificate from the Palisade CA',
        },
      },
      schemas: {
        Error: {
          type: 'object',
          required: ['code', 'message'],
          properties: {
            code: { type: 'string', enum: Object.keys(API_ERRORS) },
            message: { type: 'string' },
            hint: { type: 'string' },
            diagnostics: {
              type: 'array',
              items: {
                type: 'object',
                properties: {
                  code: { type: 'string' },
                  severity: { type: 'string' },
                  message: { type: 'string' },
                  file: { type: 'string' },
                  line: { type: 'integer' },
                  column: { type: 'integer' },
                  hint: { type: 'string' },
                },
              },
            },
          },
        },
      },
    },
  };
}
