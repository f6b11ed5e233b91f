// Prometheus text metrics of the API server: requests by method and code, apply latency, open
// watches. Owns: counting and rendering. Must never: label a series with user input beyond the
// fixed route names (cardinality, and no secrets).

const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export class Metrics {
  private readonly requests = new Map<string, number>();
  private readonly applyBuckets = BUCKETS.map(() => 0);
  private applyCount = 0;
  private applySum = 0;
  watchers = 0;
  private auditRefusals = 0;

  request(route: string, method: string, status: number): void {
    const k = `route="${route}",method="${method}",code="${status}"`;
    this.requests.set(k, (this.requests.get(k) ?? 0) + 1);
  }

  apply(seconds: number): void {
    this.applyCount++;
    this.applySum += seconds;
    BUCKETS.forEach((b, i) => {
      if (seconds <= b) this.applyBuckets[i] = (this.applyBuckets[i] ?? 0) + 1;
    });
  }

  refused(): void {
    this.auditRefusals++;
  }

  render(): string {
    const lines = [
      '# HELP palisade_api_requests_total API requests by route, method and status code.',
      '# TYPE palisade_api_requests_total counter',
      ...[...this.requests.entries()]
        .sort()
        .map(([k, v]) => `palisade_api_requests_total{${k}} ${v}`),
      '# HELP palisade_api_apply_seconds Latency of apply requests (validation, authorization and the store transaction).',
      '# TYPE palisade_api_apply_seconds histogram',
      ...BUCKETS.map(
        (b, i) => `palisade_api_apply_seconds_bucket{le="${b}"} ${this.applyBuckets[i] ?? 0}`,
      ),
      `palisade_api_apply_seconds_bucket{le="+Inf"} ${this.applyCount}`,
      `palisade_api_apply_seconds_sum ${this.applySum}`,
      `palisade_api_apply_seconds_count ${this.applyCount}`,
      '# HELP palisade_api_watchers Open watch streams.',
      '# TYPE palisade_api_watchers gauge',
      `palisade_api_watchers ${this.watchers}`,
      '# HELP palisade_api_refused_total Requests refused by authorization (each one audited).',
      '# TYPE palisade_api_refused_total counter',
      `palisade_api_refused_total ${this.auditRefusals}`,
    ];
    return `${lines.join('\n')}\n`;
  }
}
