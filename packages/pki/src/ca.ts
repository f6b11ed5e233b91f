// The Palisade certificate authority: a self-signed root for development or an imported
// intermediate under an organisation's root, kept in `<data-dir>/ca/`. Owns: signing keys at
// rest, issuance from CSRs, the trust bundle, rotation with overlap. Must never: log, return or
// serialise a private key; sign anything but a public key taken from a verified CSR; sign without
// asking the caller's Authorizer; hand out a certificate whose issuance was not audited.
//
// Time is a parameter (`now`) everywhere: which authority signs and which are trusted is
// computed from the stored state and `now`, never from a background timer.

import {
  chmodSync,
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { X509Certificate as NodeCertificate, randomBytes } from 'node:crypto';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { inspect as nodeInspect } from 'node:util';
import type { KeyObject } from 'node:crypto';
import type { Authorizer } from './attest.js';
import { buildLeaf, buildRoot, readCsr } from './certificates.js';
import type { Signer } from './certificates.js';
import {
  DEFAULT_KEY,
  decodePrivateKey,
  describeKey,
  encodePrivateKey,
  generateKey,
  pemCertificates,
  spkiDer,
  toSigningKey,
  x509,
} from './crypto.js';
import type { KeyKind, SigningKey } from './crypto.js';
import {
  DAY_MS,
  DEFAULT_ROOT_TTL_MS,
  DEFAULT_ROTATION_OVERLAP_MS,
  DEFAULT_WORKLOAD_TTL_MS,
  HOUR_MS,
  MAX_WORKLOAD_TTL_MS,
  MINUTE_MS,
  formatDuration,
  parseDuration,
  workloadTtlProblem,
} from './duration.js';
import { PkiError, fail } from './errors.js';
import type { PkiErrorCode, PkiFailure } from './errors.js';
import { IssuanceMetrics } from './metrics.js';
import { parseSpiffeId, trustDomainProblem } from './spiffe-id.js';

export const DEFAULT_DATA_DIR = './palisade-data';
export const DEFAULT_TRUST_DOMAIN = 'cluster.local';
/** Certificates are backdated this much to absorb clock skew between nodes. */
export const BACKDATE_MS = MINUTE_MS;
/** How far ahead of the latest notAfter the stored high-water mark is moved. */
export const HIGH_WATER_SLACK_MS = HOUR_MS;
/** The API server's own SVID path (not a workload path, so no workload can ask for it). */
export const SERVER_ID_PATH = '/palisade/server';

export type CaMode = 'self-signed' | 'intermediate';

export interface IssuanceEvent {
  readonly at: string;
  readonly outcome: 'issued' | 'refused';
  readonly kind: 'workload' | 'server';
  /** Who asked (e.g. `node:worker-1`, `cli`). */
  readonly requester: string;
  readonly spiffeId: string;
  readonly serial?: string;
  readonly notAfter?: string;
  readonly code?: PkiErrorCode;
  readonly reason: string;
}

/** Receives every issuance and refusal. If it throws, the certificate is not handed out. */
export type AuditSink = (event: IssuanceEvent) => void | Promise<void>;

export interface CaRuntimeOptions {
  /** Passphrase of the CA key files when they are encrypted at rest. */
  readonly passphrase?: string;
  readonly audit?: AuditSink;
  readonly metrics?: IssuanceMetrics;
}

export interface InitOptions extends CaRuntimeOptions {
  readonly trustDomain?: string;
  readonly now?: Date;
  readonly key?: KeyKind;
  readonly rootTtlMs?: number;
  readonly defaultTtlMs?: number;
  readonly maxTtlMs?: number;
}

export interface ImportOptions extends CaRuntimeOptions {
  readonly certPem: string;
  readonly keyPem: string;
  /** The certificates above the intermediate, up to and including the organisation's root. */
  readonly chainPem: string;
  /** Passphrase of the imported key file, when it is encrypted. */
  readonly keyPassphrase?: string;
  readonly trustDomain?: string;
  readonly now?: Date;
  /** When the data dir already holds a CA: the rotation overlap. */
  readonly overlapMs?: number;
}

export interface IssueRequest {
  readonly spiffeId: string;
  /** Milliseconds or a duration text (`24h`); default the CA's default lifetime. */
  readonly ttl?: number | string;
  readonly now?: Date;
  readonly requester: string;
  readonly authorize: Authorizer;
}

export interface ServerCertRequest {
  readonly dnsNames?: readonly string[];
  readonly ips?: readonly string[];
  readonly ttl?: number | string;
  readonly now?: Date;
  readonly requester?: string;
}

export interface IssuedSvid {
  readonly spiffeId: string;
  readonly serial: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** The leaf alone. */
  readonly certPem: string;
  /** The CA certificates above the leaf, from its issuer up to and including the root. */
  readonly chainPem: string;
  /** The trust bundle at issuance time. */
  readonly bundlePem: string;
}

export type IssueResult = { readonly ok: true; readonly svid: IssuedSvid } | PkiFailure;

export interface RotateOptions {
  readonly overlapMs?: number;
  /** When the new authority starts signing; default half the overlap. */
  readonly activateAfterMs?: number;
  readonly now?: Date;
  readonly key?: KeyKind;
  readonly rootTtlMs?: number;
}

/** How often relying parties should refetch the bundle (seconds): well under half an overlap. */
export const BUNDLE_REFRESH_HINT_S = 300;

export interface SpiffeBundle {
  readonly keys: readonly (Readonly<Record<string, unknown>> & {
    readonly use: 'x509-svid';
    readonly x5c: readonly string[];
  })[];
  readonly spiffe_refresh_hint: number;
}

export type AuthorityStatus = 'pending' | 'active' | 'trusted' | 'retired' | 'expired';

export interface AuthorityInfo {
  readonly id: string;
  readonly status: AuthorityStatus;
  readonly imported: boolean;
  readonly subject: string;
  readonly serial: string;
  readonly key: string;
  readonly notBefore: string;
  readonly notAfter: string;
  readonly sha256Fingerprint: string;
  readonly activatesAt: string;
  /** Set once a successor exists: the end of the overlap (or later, while its certs live). */
  readonly trustedUntil?: string;
  /** Subjects of the certificates above it, root last (imported intermediates). */
  readonly chain: readonly string[];
}

export interface CaInspection {
  readonly trustDomain: string;
  readonly mode: CaMode;
  readonly dataDir: string;
  readonly keyEncrypted: boolean;
  readonly defaultTtl: string;
  readonly maxTtl: string;
  readonly authorities: readonly AuthorityInfo[];
  readonly issuance: ReturnType<IssuanceMetrics['snapshot']>;
}

// ------------------------------------------------------------------ stored state

interface AuthorityRecord {
  readonly id: string;
  readonly imported: boolean;
  readonly createdAt: string;
  readonly activatesAt: string;
  retireAfter?: string;
  lastIssuedNotAfter?: string;
}

interface CaState {
  readonly version: 1;
  readonly trustDomain: string;
  mode: CaMode;
  readonly keyEncrypted: boolean;
  readonly defaultTtlMs: number;
  readonly maxTtlMs: number;
  authorities: AuthorityRecord[];
}

const STATE_FILE = 'state.json';

function isoOk(s: unknown): s is string {
  return typeof s === 'string' && !Number.isNaN(Date.parse(s));
}

function readState(dir: string): CaState {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(join(dir, STATE_FILE), 'utf8'));
  } catch {
    throw new PkiError('PKI_ERR_BAD_STATE', `${join(dir, STATE_FILE)} cannot be read as JSON`);
  }
  const s = raw as Partial<CaState>;
  const valid =
    typeof s === 'object' &&
    s !== null &&
    s.version === 1 &&
    typeof s.trustDomain === 'string' &&
    trustDomainProblem(s.trustDomain) === undefined &&
    (s.mode === 'self-signed' || s.mode === 'intermediate') &&
    typeof s.keyEncrypted === 'boolean' &&
    typeof s.defaultTtlMs === 'number' &&
    typeof s.maxTtlMs === 'number' &&
    Array.isArray(s.authorities) &&
    s.authorities.every(
      (a: Partial<AuthorityRecord>) =>
        typeof a.id === 'string' &&
        /^[a-z0-9-]{1,64}$/.test(a.id) &&
        typeof a.imported === 'boolean' &&
        isoOk(a.createdAt) &&
        isoOk(a.activatesAt) &&
        (a.retireAfter === undefined || isoOk(a.retireAfter)) &&
        (a.lastIssuedNotAfter === undefined || isoOk(a.lastIssuedNotAfter)),
    );
  if (!valid) throw new PkiError('PKI_ERR_BAD_STATE', `${join(dir, STATE_FILE)} is damaged`);
  return s as CaState;
}

/** Atomic replace: a crash leaves the old or the new file, never half of one. */
function writeAtomic(path: string, text: string, mode: number): void {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  writeFileSync(tmp, text, { mode, flag: 'wx' });
  chmodSync(tmp, mode);
  renameSync(tmp, path);
}

// ------------------------------------------------------------------ authorities

class Authority {
  readonly record: AuthorityRecord;
  readonly cert: x509.X509Certificate;
  readonly certPem: string;
  /** Certificates above this one, root last; empty for a self-signed root. */
  readonly chain: readonly x509.X509Certificate[];
  readonly kind: KeyKind;
  readonly #key: SigningKey;

  constructor(
    record: AuthorityRecord,
    cert: x509.X509Certificate,
    chain: readonly x509.X509Certificate[],
    kind: KeyKind,
    key: SigningKey,
  ) {
    this.record = record;
    this.cert = cert;
    this.certPem = cert.toString('pem');
    this.chain = chain;
    this.kind = kind;
    this.#key = key;
  }

  signer(): Signer {
    return { cert: this.cert, key: this.#key, kind: this.kind };
  }

  /** The certificate relying parties anchor on: the root of the chain, or this one. */
  anchor(): x509.X509Certificate {
    return this.chain.at(-1) ?? this.cert;
  }

  /** Latest time any certificate on its path is valid. */
  validUntil(): Date {
    return new Date(Math.min(...[this.cert, ...this.chain].map((c) => c.notAfter.getTime())));
  }

  validFrom(): Date {
    return new Date(Math.max(...[this.cert, ...this.chain].map((c) => c.notBefore.getTime())));
  }

  trustedUntil(): Date | undefined {
    if (this.record.retireAfter === undefined) return undefined;
    const t = Math.max(
      Date.parse(this.record.retireAfter),
      this.record.lastIssuedNotAfter ? Date.parse(this.record.lastIssuedNotAfter) : 0,
    );
    return new Date(Math.min(t, this.validUntil().getTime()));
  }

  /** Still in the trust bundle at `now` (pending, active or in its overlap). */
  trustedAt(now: Date): boolean {
    if (now.getTime() > this.validUntil().getTime()) return false;
    const until = this.trustedUntil();
    return until === undefined || now.getTime() < until.getTime();
  }

  toString(): string {
    return `[Authority ${this.record.id}]`;
  }
}

function keyLabel(k: KeyKind): string {
  switch (k.type) {
    case 'ec':
      return `EC ${k.curve}`;
    case 'rsa':
      return `RSA ${k.bits}`;
  }
}

function newAuthorityId(now: Date): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\..*$/, '').toLowerCase();
  return `${stamp}-${randomBytes(3).toString('hex')}`;
}

function resolveTtl(ttl: number | string | undefined, fallback: number): number | PkiFailure {
  if (ttl === undefined) return fallback;
  if (typeof ttl === 'string') {
    const d = parseDuration(ttl);
    return d.ok ? d.ms : d;
  }
  return ttl;
}

const DNS_NAME =
  /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

// ------------------------------------------------------------------ the CA

export class CertificateAuthority {
  readonly dataDir: string;
  readonly #dir: string;
  readonly #state: CaState;
  #authorities: Authority[];
  readonly #passphrase: string | undefined;
  readonly #audit: AuditSink | undefined;
  readonly metrics: IssuanceMetrics;

  private constructor(
    dataDir: string,
    state: CaState,
    authorities: Authority[],
    opts: CaRuntimeOptions,
  ) {
    this.dataDir = dataDir;
    this.#dir = join(dataDir, 'ca');
    this.#state = state;
    this.#authorities = authorities;
    this.#passphrase = opts.passphrase;
    this.#audit = opts.audit;
    this.metrics = opts.metrics ?? new IssuanceMetrics();
  }

  static exists(dataDir: string): boolean {
    return existsSync(join(dataDir, 'ca', STATE_FILE));
  }

  /** Creates a self-signed root (EC P-256, 10 years by default) in a data dir without a CA. */
  static async init(dataDir: string, opts: InitOptions = {}): Promise<CertificateAuthority> {
    const trustDomain = opts.trustDomain ?? DEFAULT_TRUST_DOMAIN;
    const tdp = trustDomainProblem(trustDomain);
    if (tdp)
      throw new PkiError(
        'PKI_ERR_BAD_SPIFFE_ID',
        `trust domain ${JSON.stringify(trustDomain)}: ${tdp}`,
      );
    if (CertificateAuthority.exists(dataDir))
      throw new PkiError('PKI_ERR_CA_EXISTS', `${dataDir} already holds a certificate authority`);
    if (opts.passphrase === '')
      throw new PkiError('PKI_ERR_KEY_LOCKED', 'an empty passphrase would not protect the keys');
    const defaultTtlMs = opts.defaultTtlMs ?? DEFAULT_WORKLOAD_TTL_MS;
    const maxTtlMs = opts.maxTtlMs ?? MAX_WORKLOAD_TTL_MS;
    for (const t of [defaultTtlMs, maxTtlMs]) {
      const p = workloadTtlProblem(t);
      if (p) throw new PkiError('PKI_ERR_BAD_TTL', p);
    }
    if (defaultTtlMs > maxTtlMs)
      throw new PkiError('PKI_ERR_BAD_TTL', 'the default lifetime exceeds the maximum lifetime');
    const state: CaState = {
      version: 1,
      trustDomain,
      mode: 'self-signed',
      keyEncrypted: opts.passphrase !== undefined,
      defaultTtlMs,
      maxTtlMs,
      authorities: [],
    };
    const ca = new CertificateAuthority(dataDir, state, [], opts);
    ca.#prepareDir();
    const now = opts.now ?? new Date();
    await ca.#addRoot(now, now, opts.key ?? DEFAULT_KEY, opts.rootTtlMs ?? DEFAULT_ROOT_TTL_MS);
    ca.#persist(now);
    return ca;
  }

  /** Opens the CA of a data dir. Throws PkiError (NO_CA, KEY_LOCKED, KEY_FILE_MODE, BAD_STATE). */
  static async load(dataDir: string, opts: CaRuntimeOptions = {}): Promise<CertificateAuthority> {
    const dir = join(dataDir, 'ca');
    if (!CertificateAuthority.exists(dataDir))
      throw new PkiError(
        'PKI_ERR_NO_CA',
        `no certificate authority in ${dataDir} (run palisade ca init)`,
      );
    const state = readState(dir);
    if (state.keyEncrypted && opts.passphrase === undefined)
      throw new PkiError('PKI_ERR_KEY_LOCKED', 'the CA keys are encrypted; give the passphrase');
    const authorities: Authority[] = [];
    for (const r of state.authorities)
      authorities.push(await loadAuthority(dir, r, opts.passphrase));
    if (authorities.length === 0)
      throw new PkiError('PKI_ERR_BAD_STATE', `${join(dir, STATE_FILE)} lists no authority`);
    // Keys written later (rotation, import) follow the state: encrypted only if it says so.
    const { passphrase, ...rest } = opts;
    return new CertificateAuthority(
      dataDir,
      state,
      authorities,
      state.keyEncrypted && passphrase !== undefined ? { ...rest, passphrase } : rest,
    );
  }

  /**
   * Installs an intermediate signed by an organisation's root. In an empty data dir this creates
   * the CA; over an existing one it is a rotation: the new intermediate is published at once,
   * signs from half the overlap on, and the old one stays trusted until the overlap ends.
   */
  static async importIntermediate(
    dataDir: string,
    opts: ImportOptions,
  ): Promise<CertificateAuthority> {
    const now = opts.now ?? new Date();
    const existing = CertificateAuthority.exists(dataDir)
      ? await CertificateAuthority.load(dataDir, opts)
      : undefined;
    const v = validateImport(opts, now, existing?.trustDomain);
    if (existing) {
      const overlapMs = opts.overlapMs ?? DEFAULT_ROTATION_OVERLAP_MS;
      existing.#checkRotation(now, overlapMs, overlapMs / 2);
      const key = await toSigningKey(v.key, v.kind);
      const record: AuthorityRecord = {
        id: newAuthorityId(now),
        imported: true,
        createdAt: now.toISOString(),
        activatesAt: new Date(now.getTime() + overlapMs / 2).toISOString(),
      };
      existing.#retireCurrent(now, overlapMs);
      existing.#writeAuthorityFiles(record.id, v.cert, v.chain, v.key);
      existing.#authorities.push(new Authority(record, v.cert, v.chain, v.kind, key));
      existing.#state.authorities.push(record);
      existing.#state.mode = 'intermediate';
      existing.#persist(now);
      return existing;
    }
    const state: CaState = {
      version: 1,
      trustDomain: v.trustDomain,
      mode: 'intermediate',
      keyEncrypted: opts.passphrase !== undefined,
      defaultTtlMs: DEFAULT_WORKLOAD_TTL_MS,
      maxTtlMs: MAX_WORKLOAD_TTL_MS,
      authorities: [],
    };
    const ca = new CertificateAuthority(dataDir, state, [], opts);
    ca.#prepareDir();
    const record: AuthorityRecord = {
      id: newAuthorityId(now),
      imported: true,
      createdAt: now.toISOString(),
      activatesAt: now.toISOString(),
    };
    ca.#writeAuthorityFiles(record.id, v.cert, v.chain, v.key);
    ca.#authorities.push(
      new Authority(record, v.cert, v.chain, v.kind, await toSigningKey(v.key, v.kind)),
    );
    state.authorities.push(record);
    ca.#persist(now);
    return ca;
  }

  get trustDomain(): string {
    return this.#state.trustDomain;
  }

  get mode(): CaMode {
    return this.#state.mode;
  }

  /** The authority that signs at `now`: the latest activated one whose certificates are valid. */
  #active(now: Date): Authority | undefined {
    const t = now.getTime();
    let best: Authority | undefined;
    for (const a of this.#authorities) {
      if (Date.parse(a.record.activatesAt) > t) continue;
      if (!a.trustedAt(now)) continue;
      if (a.validFrom().getTime() > t) continue;
      if (!best || Date.parse(a.record.activatesAt) >= Date.parse(best.record.activatesAt))
        best = a;
    }
    return best;
  }

  #status(a: Authority, now: Date, active: Authority | undefined): AuthorityStatus {
    if (now.getTime() > a.validUntil().getTime()) return 'expired';
    if (!a.trustedAt(now)) return 'retired';
    if (a === active) return 'active';
    if (Date.parse(a.record.activatesAt) > now.getTime()) return 'pending';
    return 'trusted';
  }

  /** The trust anchors relying parties need at `now`, old and new during a rotation. */
  bundleCertificates(now: Date = new Date()): string[] {
    const seen = new Set<string>();
    const out: string[] = [];
    for (const a of this.#authorities) {
      if (!a.trustedAt(now)) continue;
      const pem = a.anchor().toString('pem');
      if (seen.has(pem)) continue;
      seen.add(pem);
      out.push(pem.endsWith('\n') ? pem : `${pem}\n`);
    }
    return out;
  }

  /** The trust bundle as one PEM text. */
  bundle(now: Date = new Date()): string {
    return this.bundleCertificates(now).join('');
  }

  /**
   * The trust bundle in the SPIFFE bundle format (X509-SVID §6.1): one JWK per CA certificate,
   * `use: "x509-svid"`, no `kid`, the DER certificate as the only `x5c` value.
   */
  bundleJwks(now: Date = new Date()): SpiffeBundle {
    const keys = this.bundleCertificates(now).map((pem) => {
      const cert = new NodeCertificate(pem);
      const jwk = cert.publicKey.export({ format: 'jwk' });
      return { ...jwk, use: 'x509-svid' as const, x5c: [cert.raw.toString('base64')] };
    });
    return { keys, spiffe_refresh_hint: BUNDLE_REFRESH_HINT_S };
  }

  /** Signs a workload SVID for the public key of a verified CSR, if the Authorizer agrees. */
  async issueFromCsr(csrPem: string, req: IssueRequest): Promise<IssueResult> {
    const now = req.now ?? new Date();
    const requester =
      typeof req.requester === 'string' && req.requester ? req.requester : 'unknown';
    const rawId = typeof req.spiffeId === 'string' ? req.spiffeId.slice(0, 2048) : '';
    const refuse = (f: PkiFailure) => this.#refuse('workload', requester, rawId, now, f);
    const id = parseSpiffeId(req.spiffeId);
    if (!id.ok) return refuse(id);
    if (id.id.trustDomain !== this.trustDomain)
      return refuse(
        fail(
          'PKI_ERR_WRONG_TRUST_DOMAIN',
          `${id.id.uri} is not in this CA's trust domain ${this.trustDomain}`,
        ),
      );
    if (id.id.path === '')
      return refuse(fail('PKI_ERR_BAD_SPIFFE_ID', 'a workload SPIFFE ID must have a path'));
    if (id.id.path.startsWith('/palisade/'))
      return refuse(fail('PKI_ERR_BAD_SPIFFE_ID', 'paths under /palisade/ are reserved'));
    const ttl = this.#ttl(req.ttl);
    if (typeof ttl !== 'number') return refuse(ttl);
    let auth: Awaited<ReturnType<Authorizer>>;
    try {
      auth = await req.authorize(id.id);
    } catch {
      auth = fail('PKI_ERR_NOT_ATTESTED', 'the attestation check failed');
    }
    if (!auth.ok) return refuse(auth);
    return this.#sign('workload', csrPem, id.id.uri, [], [], ttl, now, requester);
  }

  /**
   * The API server's own HTTPS certificate, for a key the server generated (CSR). A leaf SVID
   * with the reserved ID `spiffe://<td>/palisade/server` and the given DNS names and IPs.
   */
  async issueServerCert(csrPem: string, req: ServerCertRequest = {}): Promise<IssueResult> {
    const now = req.now ?? new Date();
    const requester = req.requester ?? 'server';
    const spiffeId = `spiffe://${this.trustDomain}${SERVER_ID_PATH}`;
    const refuse = (f: PkiFailure) => this.#refuse('server', requester, spiffeId, now, f);
    const dns = req.dnsNames ?? [];
    const ips = req.ips ?? [];
    for (const d of dns)
      if (typeof d !== 'string' || !DNS_NAME.test(d))
        return refuse(fail('PKI_ERR_BAD_SPIFFE_ID', `${JSON.stringify(d)} is not a DNS name`));
    for (const ip of ips)
      if (typeof ip !== 'string' || isIP(ip) === 0)
        return refuse(fail('PKI_ERR_BAD_SPIFFE_ID', `${JSON.stringify(ip)} is not an IP address`));
    const ttl = this.#ttl(req.ttl);
    if (typeof ttl !== 'number') return refuse(ttl);
    return this.#sign('server', csrPem, spiffeId, dns, ips, ttl, now, requester);
  }

  /**
   * Starts a rotation of a self-signed root: the new root joins the bundle now, signs from
   * `activateAfterMs` (default half the overlap), and the old root stays in the bundle until the
   * overlap ends and every certificate it signed has expired.
   */
  async rotate(opts: RotateOptions = {}): Promise<AuthorityInfo> {
    const now = opts.now ?? new Date();
    if (this.mode === 'intermediate')
      throw new PkiError(
        'PKI_ERR_ROTATION',
        'this CA signs with an imported intermediate; rotate by importing its successor (palisade ca import)',
      );
    const overlapMs = opts.overlapMs ?? DEFAULT_ROTATION_OVERLAP_MS;
    const activateAfterMs = opts.activateAfterMs ?? overlapMs / 2;
    this.#checkRotation(now, overlapMs, activateAfterMs);
    this.#retireCurrent(now, overlapMs);
    const a = await this.#addRoot(
      now,
      new Date(now.getTime() + activateAfterMs),
      opts.key ?? DEFAULT_KEY,
      opts.rootTtlMs ?? DEFAULT_ROOT_TTL_MS,
    );
    this.#persist(now);
    return this.#info(a, now, this.#active(now));
  }

  /** Everything an operator may see; no key material. */
  inspect(now: Date = new Date()): CaInspection {
    const active = this.#active(now);
    return {
      trustDomain: this.trustDomain,
      mode: this.mode,
      dataDir: this.dataDir,
      keyEncrypted: this.#state.keyEncrypted,
      defaultTtl: formatDuration(this.#state.defaultTtlMs),
      maxTtl: formatDuration(this.#state.maxTtlMs),
      authorities: this.#authorities.map((a) => this.#info(a, now, active)),
      issuance: this.metrics.snapshot(),
    };
  }

  toJSON(): CaInspection {
    return this.inspect();
  }

  toString(): string {
    return `[CertificateAuthority ${this.trustDomain}]`;
  }

  [nodeInspect.custom](): string {
    return `CertificateAuthority ${JSON.stringify({ trustDomain: this.trustDomain, mode: this.mode, dataDir: this.dataDir })}`;
  }

  // ---------------------------------------------------------------- internals

  #ttl(ttl: number | string | undefined): number | PkiFailure {
    const ms = resolveTtl(ttl, this.#state.defaultTtlMs);
    if (typeof ms !== 'number') return ms;
    const p = workloadTtlProblem(ms);
    if (p) return fail('PKI_ERR_BAD_TTL', p);
    if (ms > this.#state.maxTtlMs)
      return fail(
        'PKI_ERR_BAD_TTL',
        `the lifetime exceeds this CA's maximum of ${formatDuration(this.#state.maxTtlMs)}`,
      );
    return ms;
  }

  async #sign(
    kind: IssuanceEvent['kind'],
    csrPem: string,
    spiffeId: string,
    dnsNames: readonly string[],
    ips: readonly string[],
    ttlMs: number,
    now: Date,
    requester: string,
  ): Promise<IssueResult> {
    const refuse = (f: PkiFailure) => this.#refuse(kind, requester, spiffeId, now, f);
    const csr = readCsr(csrPem);
    if (!csr.ok) return refuse(csr);
    const signer = this.#active(now);
    if (!signer)
      return refuse(fail('PKI_ERR_CA_EXPIRED', 'no signing certificate of this CA is valid now'));
    const notBefore = new Date(Math.max(now.getTime() - BACKDATE_MS, signer.validFrom().getTime()));
    const notAfter = new Date(Math.min(now.getTime() + ttlMs, signer.validUntil().getTime()));
    if (notAfter.getTime() - now.getTime() < MINUTE_MS)
      return refuse(
        fail('PKI_ERR_CA_EXPIRED', 'the signing certificate expires within a minute; rotate'),
      );
    const cert = buildLeaf({
      signer: signer.signer(),
      publicKey: csr.publicKey,
      publicKind: csr.kind,
      spiffeId,
      dnsNames,
      ips,
      notBefore,
      notAfter,
    });
    // The stored high-water mark is always at or past every notAfter this authority signed
    // (it keeps the authority in the bundle after a rotation); it moves ahead with slack so
    // that a busy CA writes its state about once an hour, not once per certificate.
    const last = signer.record.lastIssuedNotAfter;
    if (last === undefined || Date.parse(last) < notAfter.getTime()) {
      signer.record.lastIssuedNotAfter = new Date(
        notAfter.getTime() + HIGH_WATER_SLACK_MS,
      ).toISOString();
      this.#writeState();
    }
    const serial = cert.serial;
    // Audit before hand-out: a failing sink means no certificate leaves the CA.
    await this.#audit?.({
      at: now.toISOString(),
      outcome: 'issued',
      kind,
      requester,
      spiffeId,
      serial,
      notAfter: notAfter.toISOString(),
      reason: `signed by ${signer.record.id}`,
    });
    this.metrics.recordIssued();
    const chainPem = [signer.cert, ...signer.chain]
      .map((c) => withNewline(c.toString('pem')))
      .join('');
    return {
      ok: true,
      svid: {
        spiffeId,
        serial,
        notBefore,
        notAfter,
        certPem: cert.pem,
        chainPem,
        bundlePem: this.bundle(now),
      },
    };
  }

  async #refuse(
    kind: IssuanceEvent['kind'],
    requester: string,
    spiffeId: string,
    now: Date,
    f: PkiFailure,
  ): Promise<PkiFailure> {
    this.metrics.recordRefused(f.code);
    await this.#audit?.({
      at: now.toISOString(),
      outcome: 'refused',
      kind,
      requester,
      spiffeId,
      code: f.code,
      reason: f.message,
    });
    return f;
  }

  #checkRotation(now: Date, overlapMs: number, activateAfterMs: number): void {
    if (!Number.isFinite(overlapMs) || overlapMs < MINUTE_MS || overlapMs > 365 * DAY_MS)
      throw new PkiError('PKI_ERR_ROTATION', 'the overlap must be between 1 minute and 365 days');
    if (!Number.isFinite(activateAfterMs) || activateAfterMs < 0 || activateAfterMs > overlapMs)
      throw new PkiError(
        'PKI_ERR_ROTATION',
        'the new authority must start signing within the overlap',
      );
    const pending = this.#authorities.find((a) => Date.parse(a.record.activatesAt) > now.getTime());
    if (pending)
      throw new PkiError(
        'PKI_ERR_ROTATION',
        `a rotation is in progress: ${pending.record.id} starts signing at ${pending.record.activatesAt}`,
      );
  }

  /** Marks every authority without a successor as leaving the bundle after the overlap. */
  #retireCurrent(now: Date, overlapMs: number): void {
    const until = new Date(now.getTime() + overlapMs).toISOString();
    for (const a of this.#authorities)
      if (a.record.retireAfter === undefined) a.record.retireAfter = until;
  }

  async #addRoot(now: Date, activatesAt: Date, kind: KeyKind, ttlMs: number): Promise<Authority> {
    const keyObj = generateKey(kind);
    const kk = describeKey(keyObj);
    if (!kk.ok) throw new PkiError(kk.code, kk.message);
    const key = await toSigningKey(keyObj, kk.kind);
    const id = newAuthorityId(now);
    const cert = await buildRoot({
      key,
      publicKey: keyObj,
      kind: kk.kind,
      trustDomain: this.trustDomain,
      name: `Palisade CA ${id}`,
      notBefore: new Date(now.getTime() - BACKDATE_MS),
      notAfter: new Date(now.getTime() + ttlMs),
    });
    const record: AuthorityRecord = {
      id,
      imported: false,
      createdAt: now.toISOString(),
      activatesAt: activatesAt.toISOString(),
    };
    this.#writeAuthorityFiles(id, cert, [], keyObj);
    const a = new Authority(record, cert, [], kk.kind, key);
    this.#authorities.push(a);
    this.#state.authorities.push(record);
    return a;
  }

  #prepareDir(): void {
    mkdirSync(this.#dir, { recursive: true, mode: 0o700 });
    chmodSync(this.#dir, 0o700);
  }

  #writeAuthorityFiles(
    id: string,
    cert: x509.X509Certificate,
    chain: readonly x509.X509Certificate[],
    key: KeyObject,
  ): void {
    const keyPath = join(this.#dir, `${id}.key.pem`);
    // 'wx': never overwrite; mode 0600 from creation, so the key is never briefly readable.
    writeFileSync(keyPath, encodePrivateKey(key, this.#passphrase), { mode: 0o600, flag: 'wx' });
    chmodSync(keyPath, 0o600);
    writeAtomic(join(this.#dir, `${id}.cert.pem`), withNewline(cert.toString('pem')), 0o644);
    writeAtomic(
      join(this.#dir, `${id}.chain.pem`),
      chain.map((c) => withNewline(c.toString('pem'))).join(''),
      0o644,
    );
  }

  #writeState(): void {
    writeAtomic(join(this.#dir, STATE_FILE), `${JSON.stringify(this.#state, null, 2)}\n`, 0o600);
  }

  /** Drops retired authorities (their key files are deleted), writes the state and ca.pem. */
  #persist(now: Date): void {
    const keep: Authority[] = [];
    for (const a of this.#authorities) {
      if (a.trustedAt(now) || Date.parse(a.record.activatesAt) > now.getTime()) {
        keep.push(a);
        continue;
      }
      for (const suffix of ['key.pem', 'cert.pem', 'chain.pem'])
        rmSync(join(this.#dir, `${a.record.id}.${suffix}`), { force: true });
    }
    this.#authorities = keep;
    this.#state.authorities = keep.map((a) => a.record);
    this.#writeState();
    writeAtomic(join(this.dataDir, 'ca.pem'), this.bundle(now), 0o644);
  }

  #info(a: Authority, now: Date, active: Authority | undefined): AuthorityInfo {
    const until = a.trustedUntil();
    const node = new NodeCertificate(Buffer.from(a.cert.rawData));
    return {
      id: a.record.id,
      status: this.#status(a, now, active),
      imported: a.record.imported,
      subject: a.cert.subject,
      serial: a.cert.serialNumber.toLowerCase(),
      key: keyLabel(a.kind),
      notBefore: a.cert.notBefore.toISOString(),
      notAfter: a.cert.notAfter.toISOString(),
      sha256Fingerprint: node.fingerprint256,
      activatesAt: a.record.activatesAt,
      ...(until ? { trustedUntil: until.toISOString() } : {}),
      chain: a.chain.map((c) => c.subject),
    };
  }
}

function withNewline(s: string): string {
  return s.endsWith('\n') ? s : `${s}\n`;
}

async function loadAuthority(
  dir: string,
  r: AuthorityRecord,
  passphrase: string | undefined,
): Promise<Authority> {
  const keyPath = join(dir, `${r.id}.key.pem`);
  let st;
  try {
    st = statSync(keyPath);
  } catch {
    throw new PkiError('PKI_ERR_BAD_STATE', `${keyPath} is missing`);
  }
  if ((st.mode & 0o077) !== 0)
    throw new PkiError(
      'PKI_ERR_KEY_FILE_MODE',
      `${keyPath} has mode ${(st.mode & 0o777).toString(8)}; it must be 0600 (chmod 600 ${keyPath})`,
    );
  const key = decodePrivateKey(readFileSync(keyPath, 'utf8'), passphrase, keyPath);
  let cert: x509.X509Certificate;
  let chain: x509.X509Certificate[];
  try {
    cert = new x509.X509Certificate(readFileSync(join(dir, `${r.id}.cert.pem`), 'utf8'));
    chain = pemCertificates(readFileSync(join(dir, `${r.id}.chain.pem`), 'utf8')).map(
      (d) => new x509.X509Certificate(d),
    );
  } catch {
    throw new PkiError('PKI_ERR_BAD_STATE', `the certificates of authority ${r.id} cannot be read`);
  }
  const kind = describeKey(key);
  if (!kind.ok) throw new PkiError('PKI_ERR_BAD_STATE', `authority ${r.id}: ${kind.message}`);
  if (!spkiDer(key).equals(Buffer.from(cert.publicKey.rawData)))
    throw new PkiError(
      'PKI_ERR_BAD_STATE',
      `authority ${r.id}: the key does not match its certificate`,
    );
  return new Authority(r, cert, chain, kind.kind, await toSigningKey(key, kind.kind));
}

interface ValidImport {
  readonly cert: x509.X509Certificate;
  readonly chain: x509.X509Certificate[];
  readonly key: KeyObject;
  readonly kind: KeyKind;
  readonly trustDomain: string;
}

function validateImport(
  opts: ImportOptions,
  now: Date,
  existingTd: string | undefined,
): ValidImport {
  const bad = (m: string) => new PkiError('PKI_ERR_BAD_IMPORT', m);
  const certDer = pemCertificates(opts.certPem);
  const chainDer = pemCertificates(opts.chainPem);
  if (certDer.length !== 1)
    throw bad('--cert must hold exactly one certificate (the intermediate)');
  if (chainDer.length === 0) throw bad('--chain must hold the certificates up to the root');
  let cert: x509.X509Certificate;
  let chain: x509.X509Certificate[];
  let nodes: NodeCertificate[];
  try {
    cert = new x509.X509Certificate(certDer[0] ?? Buffer.alloc(0));
    chain = chainDer.map((d) => new x509.X509Certificate(d));
    nodes = [...certDer, ...chainDer].map((d) => new NodeCertificate(d));
  } catch {
    throw bad('a certificate cannot be parsed');
  }
  for (const [i, c] of [cert, ...chain].entries()) {
    const what = i === 0 ? 'the intermediate' : `chain certificate ${i} (${c.subject})`;
    const bc = c.getExtension(x509.BasicConstraintsExtension);
    if (!bc?.ca) throw bad(`${what} is not a CA certificate (basic constraints CA:true)`);
    const ku = c.getExtension(x509.KeyUsagesExtension);
    if (!ku || (ku.usages & x509.KeyUsageFlags.keyCertSign) === 0)
      throw bad(`${what} may not sign certificates (key usage keyCertSign)`);
    if (c.notBefore.getTime() > now.getTime() || c.notAfter.getTime() < now.getTime())
      throw bad(
        `${what} is not valid now (${c.notBefore.toISOString()} to ${c.notAfter.toISOString()})`,
      );
    if (bc.pathLength !== undefined && bc.pathLength < i)
      throw bad(`${what} has pathLenConstraint ${bc.pathLength}, too short for this chain`);
  }
  for (let i = 0; i + 1 < nodes.length; i++) {
    const sub = nodes[i];
    const iss = nodes[i + 1];
    if (!sub || !iss || !sub.checkIssued(iss) || !sub.verify(iss.publicKey))
      throw bad(`certificate ${i} of the chain is not signed by the next one`);
  }
  const root = nodes.at(-1);
  if (!root || !root.checkIssued(root) || !root.verify(root.publicKey))
    throw bad('the chain must end with the self-signed root');
  const key = (() => {
    try {
      return decodePrivateKey(opts.keyPem, opts.keyPassphrase, 'the intermediate key');
    } catch (e) {
      if (e instanceof PkiError && e.code === 'PKI_ERR_KEY_LOCKED') throw e;
      throw bad('--key is not a readable private key');
    }
  })();
  if (key.type !== 'private') throw bad('--key is not a private key');
  const kind = describeKey(key);
  if (!kind.ok) throw new PkiError(kind.code, kind.message);
  if (!spkiDer(key).equals(Buffer.from(cert.publicKey.rawData)))
    throw bad('the key does not belong to the intermediate certificate');
  // The intermediate's own SPIFFE ID, if any, names the trust domain (X509-SVID §3.2).
  let tdFromCert: string | undefined;
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  for (const n of san?.names.items ?? []) {
    if (n.type !== 'url') continue;
    const id = parseSpiffeId(n.value);
    if (!id.ok) throw bad(`the intermediate's URI SAN is not a SPIFFE ID: ${id.message}`);
    if (id.id.path !== '') throw bad('a signing certificate SPIFFE ID must not have a path');
    tdFromCert = id.id.trustDomain;
  }
  const trustDomain = opts.trustDomain ?? existingTd ?? tdFromCert ?? DEFAULT_TRUST_DOMAIN;
  const tdp = trustDomainProblem(trustDomain);
  if (tdp) throw new PkiError('PKI_ERR_BAD_SPIFFE_ID', `trust domain: ${tdp}`);
  if (existingTd !== undefined && trustDomain !== existingTd)
    throw bad(`this CA's trust domain is ${existingTd}, not ${trustDomain}`);
  if (tdFromCert !== undefined && tdFromCert !== trustDomain)
    throw bad(`the intermediate is for trust domain ${tdFromCert}, not ${trustDomain}`);
  return { cert, chain, key, kind: kind.kind, trustDomain };
}
