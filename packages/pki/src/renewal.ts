// When a workload renews its SVID: at half its lifetime, with jitter so that a fleet issued at
// the same moment does not renew at the same moment. Pure: randomness is a parameter.

/** Jitter as a fraction of the lifetime, either side of the half. */
export const RENEWAL_JITTER = 0.1;

export interface Validity {
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/**
 * notBefore + lifetime × (0.5 ± 0.1), with `rand()` in [0, 1). Always strictly inside the
 * validity window, so a renewal is never scheduled after expiry.
 */
export function renewalTime(cert: Validity, rand: () => number): Date {
  const from = cert.notBefore.getTime();
  const life = cert.notAfter.getTime() - from;
  if (!(life > 0)) return new Date(from);
  const drawn = rand();
  const r = Number.isFinite(drawn) ? Math.min(Math.max(drawn, 0), 1) : 0.5;
  const fraction = 0.5 + (r * 2 - 1) * RENEWAL_JITTER;
  return new Date(from + Math.floor(life * fraction));
}
