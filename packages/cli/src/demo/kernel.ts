// What the kernel did with a probe: the agent's table has a counter and a provenance comment on
// every rule, so reading the counters before and after one probe (probes run one at a time)
// names the rules that accepted or dropped it — the kernel's own account of which policy
// decided, not the engine's prediction. Owns: reading and diffing counters of the demo's table.
// Must never: write to any table.

import { execFile } from 'node:child_process';

export interface RuleHit {
  readonly chain: string;
  readonly comment: string;
  readonly verdict: 'accept' | 'drop' | 'jump' | 'other';
  readonly packets: number;
}

type Counters = Map<
  string,
  { chain: string; comment: string; verdict: RuleHit['verdict']; packets: number }
>;

interface NftRule {
  readonly chain?: string;
  readonly handle?: number;
  readonly comment?: string;
  readonly expr?: readonly Record<string, unknown>[];
}

export class KernelObserver {
  constructor(
    readonly netns: string,
    readonly table: string,
  ) {}

  read(): Promise<Counters> {
    return new Promise((resolve, reject) => {
      execFile(
        'ip',
        ['netns', 'exec', this.netns, 'nft', '-j', 'list', 'table', 'inet', this.table],
        { maxBuffer: 64 * 1024 * 1024, timeout: 10_000 },
        (err, stdout) => {
          if (err) return reject(new Error(`nft list table inet ${this.table}: ${err.message}`));
          const out: Counters = new Map();
          const parsed = JSON.parse(stdout) as { nftables?: { rule?: NftRule }[] };
          for (const item of parsed.nftables ?? []) {
            const r = item.rule;
            if (!r || r.handle === undefined) continue;
            let packets = 0;
            let verdict: RuleHit['verdict'] = 'other';
            for (const e of r.expr ?? []) {
              const c = e.counter as { packets?: number } | undefined;
              if (c && typeof c.packets === 'number') packets = c.packets;
              if ('accept' in e) verdict = 'accept';
              else if ('drop' in e) verdict = 'drop';
              else if ('jump' in e || 'goto' in e) verdict = 'jump';
            }
            out.set(`${r.chain ?? ''}#${r.handle}`, {
              chain: r.chain ?? '',
              comment: r.comment ?? '',
              verdict,
              packets,
            });
          }
          resolve(out);
        },
      );
    });
  }

  /** Rules whose counters rose between two readings (accepts and drops, not the dispatch). */
  static diff(before: Counters, after: Counters): RuleHit[] {
    const hits: RuleHit[] = [];
    for (const [k, a] of after) {
      const b = before.get(k)?.packets ?? 0;
      if (a.packets > b && (a.verdict === 'accept' || a.verdict === 'drop'))
        hits.push({
          chain: a.chain,
          comment: a.comment,
          verdict: a.verdict,
          packets: a.packets - b,
        });
    }
    return hits;
  }

  /** The rule count of the table, or 0 when it does not exist. */
  async ruleCount(): Promise<number> {
    try {
      return (await this.read()).size;
    } catch {
      return 0;
    }
  }
}

/**
 * The rule comments that decided, without the generic ones (established traffic, dispatch),
 * each with its direction: the renderer names chains `<t|p|w|h><in|eg>-…`.
 */
export function deciding(hits: readonly RuleHit[], verdict: 'accept' | 'drop'): string[] {
  const generic = /^(established and related|egress of|ingress of)/;
  const out = new Set<string>();
  for (const h of hits) {
    if (h.verdict !== verdict || generic.test(h.comment)) continue;
    const m = /^[tpwh](in|eg)-/.exec(h.chain);
    const dir = m?.[1] === 'in' ? 'ingress' : m?.[1] === 'eg' ? 'egress' : '';
    out.add(dir ? `${dir}: ${h.comment}` : h.comment);
  }
  return [...out].sort((a, b) => Number(a.startsWith('ingress')) - Number(b.startsWith('ingress')));
}
