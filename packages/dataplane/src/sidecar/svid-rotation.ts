// The sidecar's own SVID over time: a fresh key and CSR made in this process for every issuance
// (the key never leaves it; only the CSR goes to the agent), renewal before expiry (half life ±10 %
// by default, as `renewalTime` of @palisade/pki), retries with capped backoff, and installation
// through `install` (the listeners' `updateCredentials`: new connections get the new certificate,
// open ones keep theirs). A trust bundle change (CA rotation) is installed with the current SVID.
// Owns: the schedule. Must never: install credentials `install` refused, or stop retrying while
// the current SVID is still the one in use.

import { createKeyAndCsr, renewalTime } from '@palisade/pki';
import type { SvidMaterial } from '@palisade/pki';
import type { SvidResponse } from '../agent-socket/protocol.js';
import type { Credentials } from './credentials.js';

export interface SvidRotationOptions {
  /** Sends a CSR to the agent (AgentLink.requestSvid). */
  readonly request: (csrPem: string) => Promise<SvidResponse>;
  /** Installs credentials everywhere; returns why not (then nothing changed). */
  readonly install: (c: Credentials) => string | undefined;
  /** Renew at this fraction of the lifetime instead of `renewalTime` (tests). */
  readonly renewalFraction?: number;
  readonly rand?: () => number;
  /** Retry backoff bounds (default 500 ms .. 30 s). */
  readonly retryMinMs?: number;
  readonly retryMaxMs?: number;
  readonly now?: () => Date;
  readonly say?: (line: string) => void;
}

export interface SvidRotationStatus {
  readonly notAfter: Date | undefined;
  readonly renewAt: Date | undefined;
  readonly rotations: number;
  readonly failures: number;
  /** Certificates in the trust bundle in use. */
  readonly bundleCertificates: number;
  readonly lastError: string | undefined;
}

/** Longest a Node timer can wait; later renewals re-arm. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class SvidRotation {
  private current: Credentials | undefined;
  private notBefore: Date | undefined;
  private notAfter: Date | undefined;
  private renewAt: Date | undefined;
  private timer: NodeJS.Timeout | undefined;
  private rotations = 0;
  private failures = 0;
  private lastError: string | undefined;
  private retryDelay: number;
  private stopped = false;
  private inFlight: Promise<void> | undefined;
  private pendingBundle: string | undefined;

  constructor(private readonly options: SvidRotationOptions) {
    this.retryDelay = options.retryMinMs ?? 500;
  }

  private now(): Date {
    return (this.options.now ?? (() => new Date()))();
  }

  get credentials(): Credentials | undefined {
    return this.current;
  }

  status(): SvidRotationStatus {
    return {
      notAfter: this.notAfter,
      renewAt: this.renewAt,
      rotations: this.rotations,
      failures: this.failures,
      bundleCertificates: (this.current?.trustBundlePem.match(/-----BEGIN CERTIFICATE-----/g) ?? [])
        .length,
      lastError: this.lastError,
    };
  }

  /** Obtains a fresh SVID (key made here). Throws on refusal; does not install. */
  async obtain(): Promise<{ credentials: Credentials; notBefore: Date; notAfter: Date }> {
    const { keyPem, csrPem } = await createKeyAndCsr();
    const r = await this.options.request(csrPem);
    const svid: SvidMaterial = { keyPem, certPem: r.certPem, chainPem: r.chainPem };
    return {
      credentials: { svid, trustBundlePem: this.pendingBundle ?? r.bundlePem },
      notBefore: new Date(r.notBefore),
      notAfter: new Date(r.notAfter),
    };
  }

  /**
   * The first SVID: obtained and adopted without `install` (the listeners are built with it),
   * then renewals are scheduled.
   */
  async first(): Promise<Credentials> {
    const got = await this.obtain();
    this.adopt(got);
    this.schedule();
    return got.credentials;
  }

  private adopt(got: { credentials: Credentials; notBefore: Date; notAfter: Date }): void {
    this.current = got.credentials;
    this.notBefore = got.notBefore;
    this.notAfter = got.notAfter;
    // The lifetime counts from when we got it: the CA backdates notBefore (clock skew), which
    // would otherwise pull a short-lived SVID's renewal into the past.
    const start = new Date(Math.max(got.notBefore.getTime(), this.now().getTime()));
    const f = this.options.renewalFraction;
    const life = got.notAfter.getTime() - start.getTime();
    this.renewAt =
      f !== undefined && f > 0 && f < 1
        ? new Date(start.getTime() + Math.floor(life * f))
        : renewalTime(
            { notBefore: start, notAfter: got.notAfter },
            this.options.rand ?? Math.random,
          );
  }

  private schedule(delayMs?: number): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    const wait = delayMs ?? Math.max(0, (this.renewAt?.getTime() ?? 0) - this.now().getTime());
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        if (delayMs === undefined && wait >= MAX_TIMER_MS) return this.schedule();
        void this.rotateNow();
      },
      Math.min(wait, MAX_TIMER_MS),
    );
    this.timer.unref();
  }

  /** Renews now (also what the timer calls). Failures are retried with backoff. */
  rotateNow(): Promise<void> {
    this.inFlight ??= this.rotate().finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  private async rotate(): Promise<void> {
    if (this.stopped) return;
    try {
      const got = await this.obtain();
      const problem = this.options.install(got.credentials);
      if (problem) throw new Error(`the renewed SVID is not usable: ${problem}`);
      this.adopt(got);
      this.rotations++;
      this.lastError = undefined;
      this.retryDelay = this.options.retryMinMs ?? 500;
      this.options.say?.(
        `SVID renewed (valid until ${got.notAfter.toISOString()}, next renewal ${this.renewAt?.toISOString() ?? '-'})`,
      );
      this.schedule();
    } catch (e) {
      this.failures++;
      this.lastError = e instanceof Error ? e.message : String(e);
      const left = (this.notAfter?.getTime() ?? 0) - this.now().getTime();
      this.options.say?.(
        `SVID renewal failed (retrying in ${this.retryDelay} ms; ${left > 0 ? `current one valid ${Math.round(left / 1000)} s more` : 'current one EXPIRED'}): ${this.lastError}`,
      );
      this.schedule(this.retryDelay);
      this.retryDelay = Math.min(this.options.retryMaxMs ?? 30_000, this.retryDelay * 2);
    }
  }

  /**
   * A new trust bundle from the agent: installed with the current SVID. If the current SVID does
   * not chain to it (its root left the bundle), a renewal is started at once.
   */
  setBundle(pem: string): void {
    this.pendingBundle = pem;
    if (!this.current || pem === this.current.trustBundlePem) return;
    const next: Credentials = { svid: this.current.svid, trustBundlePem: pem };
    const problem = this.options.install(next);
    if (!problem) {
      this.current = next;
      this.options.say?.('trust bundle updated');
      return;
    }
    this.options.say?.(`new trust bundle needs a new SVID (${problem}); renewing now`);
    void this.rotateNow();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
