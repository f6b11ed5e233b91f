// Installs, updates and removes the interception table inside one pod's network namespace, from
// outside the pod (the agent, or the demo): every nft command runs as `ip netns exec NS nft ...`
// through the dataplane's one nft driver, names only the interception table, and replaces it in
// one transaction, so the pod never sees half a rule set.
// Owns: the lifecycle of the interception table. Must never: touch another table or namespace.

import { NftDriver, processRunner } from '../nft/driver.js';
import type { ApplyReport, NftRunner, ResyncReport } from '../nft/driver.js';
import { netnsPathRunner } from './netns-runner.js';
import { DEFAULT_INTERCEPT_TABLE, renderInterception } from './render.js';
import type { InterceptionSpec } from './render.js';
import type { Rendered } from '../nft/render.js';
import { DataplaneError } from '../errors.js';

export interface InterceptionTarget {
  /** The pod's network namespace name (as `ip netns` knows it). */
  readonly netns?: string;
  /**
   * Or its namespace file (CNI_NETNS: /run/netns/NAME, /proc/PID/ns/net), entered with nsenter;
   * the agent's own namespace is refused.
   */
  readonly netnsPath?: string;
  /** Replaces the process runner (unit tests of callers). */
  readonly runner?: NftRunner;
  readonly nft?: string;
}

/** The table as nft lists it, without counter values (what "unchanged" means for a resync). */
function normalListing(text: string): string {
  return text.replace(/counter packets \d+ bytes \d+/g, 'counter').trim();
}

/** The installed interception of one pod: update, repair drift, remove. */
export class Interception {
  readonly #driver: NftDriver;
  readonly #run: NftRunner;
  #rendered: Rendered;
  /** The listing read back right after the last apply. */
  #listing: string | undefined;

  private constructor(driver: NftDriver, run: NftRunner, rendered: Rendered) {
    this.#driver = driver;
    this.#run = run;
    this.#rendered = rendered;
  }

  /** Renders (validation errors throw before anything runs) and applies in one transaction. */
  static async install(target: InterceptionTarget, spec: InterceptionSpec): Promise<Interception> {
    const rendered = renderInterception(spec);
    const run = runnerFor(target);
    const driver = driverFor(target, rendered.table, run);
    await driver.apply(rendered);
    const ic = new Interception(driver, run, rendered);
    await ic.#readListing();
    return ic;
  }

  async #list(): Promise<string | undefined> {
    const r = await this.#run(['list', 'table', 'inet', this.#rendered.table]);
    return r.code === 0 ? normalListing(r.stdout) : undefined;
  }

  async #readListing(): Promise<void> {
    this.#listing = await this.#list();
  }

  get table(): string {
    return this.#rendered.table;
  }

  /** The rendered table currently wanted. */
  get rendered(): Rendered {
    return this.#rendered;
  }

  /** Replaces the rules (new destinations, ports); the table name must not change. */
  async update(spec: InterceptionSpec): Promise<ApplyReport> {
    const rendered = renderInterception(spec);
    if (rendered.table !== this.#rendered.table)
      throw new Error(`update changes the table from ${this.#rendered.table} to ${rendered.table}`);
    const r = await this.#driver.apply(rendered);
    this.#rendered = rendered;
    if (r.kind !== 'unchanged' || this.#listing === undefined) await this.#readListing();
    return r;
  }

  /**
   * Reads the table back and, when it was changed or removed by hand, replaces it whole in one
   * transaction (never remove-then-add: the pod is never without its rules).
   */
  async resync(): Promise<ResyncReport> {
    const now = await this.#list();
    if (now !== undefined && now === this.#listing) return { drift: false, repaired: false };
    const r = await this.#run(['-f', '-'], this.#driver.fullScript(this.#rendered));
    if (r.code !== 0)
      throw new DataplaneError(
        'DATAPLANE_ERR_NFT',
        `nft -f failed: ${r.stderr.trim().slice(0, 2000)}`,
      );
    await this.#readListing();
    return { drift: true, repaired: true };
  }

  /** Removes the table: traffic flows directly again (established redirected flows finish). */
  remove(): Promise<void> {
    return this.#driver.removeTable();
  }
}

function runnerFor(target: InterceptionTarget): NftRunner {
  if (target.runner) return target.runner;
  const nft = target.nft ? { nft: target.nft } : {};
  if (target.netnsPath !== undefined) return netnsPathRunner(target.netnsPath, nft);
  if (target.netns !== undefined) return processRunner({ netns: target.netns, ...nft });
  throw new Error('interception needs the pod network namespace (netns or netnsPath)');
}

function driverFor(target: InterceptionTarget, table: string, runner?: NftRunner): NftDriver {
  return new NftDriver({
    table,
    // The table is tiny: always one full replacement, never chain deltas.
    delta: false,
    runner: runner ?? runnerFor(target),
  });
}

/** Installs interception in `netns` (see `InterceptionSpec`). */
export function installInterception(
  opts: InterceptionTarget & InterceptionSpec,
): Promise<Interception> {
  return Interception.install(opts, opts);
}

/** Removes the interception table from `netns` (no error when it is not there). */
export async function removeInterception(
  opts: InterceptionTarget & { readonly table?: string },
): Promise<void> {
  await driverFor(opts, opts.table ?? DEFAULT_INTERCEPT_TABLE).removeTable();
}
