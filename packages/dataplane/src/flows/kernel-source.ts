// Kernel flow records, the I/O side: a small trace table of our own marks the first packet of
// every new connection (`ct state new meta nftrace set 1`, at a priority before the enforcement
// table), `nft monitor trace` reports each rule that packet meets, and trace.ts turns the lines
// into observations with the deciding rule's provenance. Connections over the trace rate are
// not traced; a counter in the trace table counts them and that count is shipped as shed.
// Owns: the trace table, the monitor process and its restarts. Must never: touch the enforcement
// table or any rule it did not create; change a verdict (its chains only mark and accept, and an
// accept in one base chain does not skip the others).

import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import readline from 'node:readline';
import { validTableName } from '../nft/render.js';
import type { FlowObservation } from './observation.js';
import { TraceAssembler } from './trace.js';

export interface KernelFlowSourceOptions {
  /** The enforcement table whose decisions are reported (default `palisade`). */
  readonly table?: string;
  /** The trace table this source owns (default `<table>_trace`). */
  readonly traceTable?: string;
  /** Run nft inside this network namespace (`ip netns exec`), as the agent's --netns. */
  readonly netns?: string;
  /** New connections traced per second (default 2000; the rest are counted as shed). */
  readonly ratePerSecond?: number;
  readonly onObservation: (o: FlowObservation) => void;
  /** Connections not traced since the last call (over the rate), and unreadable traces. */
  readonly onShed?: (reason: 'kernel-untraced' | 'parse', count: number) => void;
  readonly log?: (line: Readonly<Record<string, unknown>>) => void;
  /** How often the untraced counter is read (default 5 s). */
  readonly counterIntervalMs?: number;
}

const UNTRACED = 'palisade-flows: not traced, over the rate';
/** Quiet time after a change of the table before it is listed for rule comments. */
const QUIET_MS = 1000;

function runNft(netns: string | undefined, args: string[], input?: string): Promise<string> {
  const [cmd, argv] = netns ? ['ip', ['netns', 'exec', netns, 'nft', ...args]] : ['nft', args];
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr.on('data', (d: Buffer) => (err += d.toString()));
    c.on('error', reject);
    c.on('close', (code) =>
      code === 0
        ? resolve(out)
        : reject(new Error(`nft ${args.join(' ')}: ${err.trim().slice(0, 500)}`)),
    );
    // A process that exits before reading its input (a namespace that is gone) breaks the pipe:
    // its exit status reports the failure, the write error must not escape as unhandled.
    c.stdin.on('error', () => undefined);
    c.stdin.end(input ?? '');
  });
}

/** The trace table: mark new connections for tracing, up to the rate; count the rest. */
export function traceTableScript(traceTable: string, ratePerSecond: number): string {
  const chain = (name: string, hook: string) => [
    `\tchain ${name} {`,
    `\t\ttype filter hook ${hook} priority -50; policy accept;`,
    `\t\tct state new limit rate over ${ratePerSecond}/second burst ${Math.max(1, Math.ceil(ratePerSecond / 4))} packets counter accept comment "${UNTRACED}"`,
    '\t\tct state new meta nftrace set 1',
    '\t}',
  ];
  return [
    `table inet ${traceTable} {`,
    ...chain('forward', 'forward'),
    ...chain('input', 'input'),
    ...chain('output', 'output'),
    '}',
    '',
  ].join('\n');
}

export class KernelFlowSource {
  readonly table: string;
  readonly traceTable: string;
  private readonly o: KernelFlowSourceOptions;
  private readonly rate: number;
  private monitor: ChildProcess | undefined;
  private stopped = false;
  private timer: NodeJS.Timeout | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private untracedSeen = 0;
  private orphansSeen = 0;
  private readonly assembler: TraceAssembler;
  /** Lines read from the monitor (tests, metrics). */
  lines = 0;
  /** Comments of the owned table's rules by `chain#handle`, from the last listing. */
  private ruleComments = new Map<string, string | null>();
  private listing: Promise<void> | undefined;
  private listAgain = false;
  /** An apply happened since the last check: the table may have been recreated. */
  private suspect = false;
  private tableHandle: number | undefined;
  /** When the table last changed: listings wait for a quiet moment after it (off the apply path). */
  private lastChange = 0;
  /** Listings of the owned table made to resolve rule handles (metrics). */
  listings = 0;

  constructor(o: KernelFlowSourceOptions) {
    this.o = o;
    this.table = o.table ?? 'palisade';
    this.traceTable = o.traceTable ?? `${this.table}_trace`;
    for (const t of [this.table, this.traceTable])
      if (!validTableName(t)) throw new Error(`invalid table name ${JSON.stringify(t)}`);
    this.rate = Math.max(1, Math.min(1_000_000, Math.floor(o.ratePerSecond ?? 2000)));
    this.assembler = new TraceAssembler(this.table, o.onObservation);
    this.assembler.comments = {
      comment: (chain, handle) => this.comment(chain, handle),
      refresh: () => this.refreshRules(),
    };
  }

  /**
   * Call after the owned table was changed: a full apply recreates the table and its handles
   * start again. Lookups then wait for a cheap check of the table's own handle (`nft -j list
   * tables`); only a recreated table's listing is dropped.
   */
  invalidateRules(): void {
    this.suspect = true;
    this.lastChange = Date.now();
  }

  private comment(chain: string, handle: number): string | null | undefined {
    if (this.suspect) return undefined;
    return this.ruleComments.get(`${chain}#${handle}`);
  }

  /** The owned table's handle now (undefined when it is not there). */
  private async currentTableHandle(): Promise<number | undefined> {
    const out = await runNft(this.o.netns, ['-j', 'list', 'tables']);
    const doc = JSON.parse(out) as {
      nftables?: { table?: { family?: string; name?: string; handle?: number } }[];
    };
    for (const item of doc.nftables ?? [])
      if (item.table?.family === 'inet' && item.table.name === this.table) return item.table.handle;
    return undefined;
  }

  /** Lists the owned table with handles (one listing at a time), then resolves held decisions. */
  private refreshRules(): void {
    if (this.listing) {
      this.listAgain = true;
      return;
    }
    this.listing = (async () => {
      do {
        this.listAgain = false;
        // Changes come in bursts (a write, then the views): let the agent's nft runs finish first.
        const wait = this.lastChange + QUIET_MS - Date.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        try {
          if (this.suspect) {
            this.suspect = false;
            const h = await this.currentTableHandle();
            if (h === undefined || h !== this.tableHandle) this.ruleComments = new Map();
          }
          const missing = this.assembler
            .heldRules()
            .some((r) => !this.ruleComments.has(`${r.chain}#${r.handle}`));
          if (missing) await this.listRules();
        } catch (e) {
          this.o.log?.({
            msg: 'cannot list the enforcement table for rule comments',
            error: e instanceof Error ? e.message : String(e),
          });
        }
      } while (this.listAgain && !this.stopped);
      this.assembler.replay();
    })().finally(() => (this.listing = undefined));
  }

  private async listRules(): Promise<void> {
    this.listings++;
    const out = await runNft(this.o.netns, ['-a', '-j', 'list', 'table', 'inet', this.table]);
    const doc = JSON.parse(out) as {
      nftables?: {
        table?: { handle?: number };
        rule?: { chain?: string; handle?: number; comment?: string };
      }[];
    };
    const m = new Map<string, string | null>();
    for (const item of doc.nftables ?? []) {
      if (item.table?.handle !== undefined) this.tableHandle = item.table.handle;
      const r = item.rule;
      if (r?.chain !== undefined && r.handle !== undefined)
        m.set(`${r.chain}#${r.handle}`, r.comment ?? null);
    }
    this.ruleComments = m;
  }

  /** Installs the trace table and starts the monitor; resolves once the monitor is subscribed. */
  async start(): Promise<void> {
    this.stopped = false;
    // Replace a table left by an earlier run in one transaction (add + delete + define).
    await runNft(
      this.o.netns,
      ['-f', '-'],
      `add table inet ${this.traceTable}\ndelete table inet ${this.traceTable}\n${traceTableScript(this.traceTable, this.rate)}`,
    );
    await this.spawnMonitor();
    this.timer = setInterval(() => void this.readCounters(), this.o.counterIntervalMs ?? 5000);
    this.timer.unref();
  }

  private spawnMonitor(): Promise<void> {
    // `nft monitor` runs under a small shell that kills it when our end of its stdin closes: the
    // monitor then never outlives this process, even one killed with SIGKILL (no orphan left
    // tracing). A background list reads /dev/null unless redirected, hence the copy on fd 3.
    const script =
      'exec 3<&0; nft monitor trace & p=$!; (read _ <&3; kill $p 2>/dev/null) & wait $p';
    const [cmd, argv] = this.o.netns
      ? ['ip', ['netns', 'exec', this.o.netns, 'sh', '-c', script]]
      : ['sh', ['-c', script]];
    const child = spawn(cmd, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
    child.stdin.on('error', () => undefined);
    this.monitor = child;
    const rl = readline.createInterface({ input: child.stdout, crlfDelay: Infinity });
    rl.on('line', (l) => {
      this.lines++;
      this.assembler.line(l);
    });
    child.stderr.on('data', (d: Buffer) =>
      this.o.log?.({ msg: 'nft monitor trace', stderr: d.toString().trim().slice(0, 300) }),
    );
    child.on('exit', (code) => {
      child.stdin.end();
      if (this.stopped) return;
      // Restarted after a second; what it missed meanwhile is not traced (documented limit).
      this.o.log?.({ msg: 'nft monitor trace exited; restarting', code });
      this.restartTimer = setTimeout(() => void this.spawnMonitor(), 1000);
      this.restartTimer.unref();
    });
    // `nft monitor` prints nothing when it is subscribed; the netlink subscription happens right
    // after exec, so wait for the process to be running and give it a moment.
    return new Promise((resolve) => {
      child.once('spawn', () => setTimeout(resolve, 300));
      child.once('error', () => resolve());
    });
  }

  /** Reads the untraced counter and the assembler's orphans, reporting the growth as shed. */
  async readCounters(): Promise<void> {
    try {
      const out = await runNft(this.o.netns, ['-j', 'list', 'table', 'inet', this.traceTable]);
      let total = 0;
      const doc = JSON.parse(out) as {
        nftables?: { rule?: { comment?: string; expr?: { counter?: { packets?: number } }[] } }[];
      };
      for (const item of doc.nftables ?? []) {
        const r = item.rule;
        if (!r || r.comment !== UNTRACED) continue;
        for (const e of r.expr ?? []) total += e.counter?.packets ?? 0;
      }
      if (total > this.untracedSeen) this.o.onShed?.('kernel-untraced', total - this.untracedSeen);
      this.untracedSeen = Math.max(this.untracedSeen, total);
    } catch (e) {
      this.o.log?.({
        msg: 'cannot read the trace counters',
        error: e instanceof Error ? e.message : String(e),
      });
    }
    const orphans = this.assembler.orphans;
    if (orphans > this.orphansSeen) this.o.onShed?.('parse', orphans - this.orphansSeen);
    this.orphansSeen = orphans;
  }

  /** Stops the monitor and removes the trace table (the enforcement table is untouched). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    clearTimeout(this.restartTimer);
    await this.readCounters();
    // Closing its stdin ends the monitor (see spawnMonitor).
    this.monitor?.stdin?.end();
    this.monitor = undefined;
    try {
      await runNft(this.o.netns, ['delete', 'table', 'inet', this.traceTable]);
    } catch {
      // already gone (the namespace may have been removed)
    }
  }
}
