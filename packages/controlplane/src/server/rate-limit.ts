// A token bucket per principal (or per remote address before authentication): `burst` requests
// at once, refilled at `perSecond`. Owns: the arithmetic; the clock is a parameter.

export interface RateLimitOptions {
  readonly perSecond: number;
  readonly burst: number;
}

export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(
    private readonly options: RateLimitOptions,
    private readonly nowMs: () => number = () => Date.now(),
  ) {}

  /** Takes one token; returns 0 when allowed, else the seconds to wait. */
  take(key: string): number {
    const now = this.nowMs();
    const b = this.buckets.get(key) ?? { tokens: this.options.burst, at: now };
    b.tokens = Math.min(
      this.options.burst,
      b.tokens + ((now - b.at) / 1000) * this.options.perSecond,
    );
    b.at = now;
    if (this.buckets.size > 100_000) this.buckets.clear(); // bounded memory under address spraying
    this.buckets.set(key, b);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - b.tokens) / this.options.perSecond));
  }
}
