// Test support for the sidecar (not part of the public surface): a real CA in a temporary
// directory, SVIDs from locally made CSRs, the bookinfo resources moved onto loopback addresses
// unique to this process, and a small HTTP application.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadMany, loadText } from '@palisade/core';
import type { Resource } from '@palisade/core';
import {
  CertificateAuthority,
  allowAnyIdentityForDevelopment,
  createKeyAndCsr,
} from '@palisade/pki';
import type { SvidMaterial } from '@palisade/pki';

export function tempDir(name: string): { readonly path: string; readonly cleanup: () => void } {
  const path = mkdtempSync(join(tmpdir(), `palisade-${name}-${process.pid}-`));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

/** A /24 of 127/8 derived from the pid, so parallel test runs do not share addresses. */
export function loopbackPrefix(): string {
  const p = process.pid;
  return `127.${20 + (p % 200)}.${(Math.floor(p / 200) % 250) + 1}`;
}

export async function newCa(
  dir: string,
  trustDomain = 'cluster.local',
  now?: Date,
): Promise<CertificateAuthority> {
  return CertificateAuthority.init(dir, { trustDomain, ...(now ? { now } : {}) });
}

export async function issue(
  ca: CertificateAuthority,
  spiffeId: string,
  opts: { readonly now?: Date; readonly ttl?: string } = {},
): Promise<SvidMaterial & { readonly bundlePem: string }> {
  const { keyPem, csrPem } = await createKeyAndCsr();
  const r = await ca.issueFromCsr(csrPem, {
    spiffeId,
    requester: 'test',
    authorize: allowAnyIdentityForDevelopment,
    ...(opts.now ? { now: opts.now } : {}),
    ...(opts.ttl ? { ttl: opts.ttl } : {}),
  });
  if (!r.ok) throw new Error(`issue ${spiffeId}: ${r.code} ${r.message}`);
  return {
    keyPem,
    certPem: r.svid.certPem,
    chainPem: r.svid.chainPem,
    bundlePem: r.svid.bundlePem,
  };
}

const BOOKINFO = join(import.meta.dirname, '..', '..', '..', '..', 'examples', 'bookinfo');

/**
 * The bookinfo example with the given pods moved to new addresses, plus extra YAML documents.
 * Throws when the example does not load cleanly (the test is then wrong, not the sidecar).
 */
export function bookinfo(ips: Readonly<Record<string, string>>, extraYaml = ''): Resource[] {
  const files = [
    'workloads.yaml',
    'policies-kubernetes.yaml',
    'policies-calico.yaml',
    'policies-istio.yaml',
  ].map((f) => ({ name: f, text: readFileSync(join(BOOKINFO, f), 'utf8') }));
  const r = loadMany(files);
  const errors = r.diagnostics.filter((d) => d.severity === 'error');
  if (errors.length > 0) throw new Error(`bookinfo does not load: ${errors[0]?.message ?? ''}`);
  const out: Resource[] = r.resources.map((res) => {
    if (res.kind !== 'Pod') return res;
    const ip = ips[`${res.metadata.namespace ?? 'default'}/${res.metadata.name}`];
    return ip ? { ...res, status: { ...res.status, podIP: ip, podIPs: [{ ip }] } } : res;
  });
  if (extraYaml) {
    const x = loadText(extraYaml, 'extra.yaml');
    const xe = x.diagnostics.filter((d) => d.severity === 'error');
    if (xe.length > 0) throw new Error(`extra resources do not load: ${xe[0]?.message ?? ''}`);
    out.push(...x.resources);
  }
  return out;
}

/** An application that answers with what it received, as JSON. */
export async function echoApp(): Promise<{
  readonly port: number;
  readonly server: Server;
  readonly requests: number[];
}> {
  const requests: number[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      requests.push(1);
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          method: req.method,
          url: req.url,
          xfcc: req.headers['x-forwarded-client-cert'] ?? null,
          requestId: req.headers['x-request-id'] ?? null,
          body: Buffer.concat(chunks).toString('utf8'),
        }),
      );
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, server, requests };
}
