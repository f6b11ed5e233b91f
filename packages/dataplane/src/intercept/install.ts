// Installs, updates and removes the interception table inside one pod's network namespace, from
// outside the pod (the agent, or the demo): every nft command runs as `ip netns exec NS nft ...`
// through the dataplane's one nft driver, names only the interception table, and replaces it in
// one transaction, so the pod never sees half a rule set.
// Owns: the lifecycle of the interception table. Must never: touch another table or namespace.

import { NftDriver } from '../nft/driver.js';
import type { ApplyReport, NftRunner, ResyncReport } from '../nft/driver.js';
import { netnsPathRunner } from './netns-runner.js';
import { DEFAULT_INTERCEPT_TABLE, renderInterception } from './render.js';
import type { InterceptionSpec } from './render.js';
import type { Rendered } from '../nft/render.js';

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

/** The installed interception of one pod: update, repair drift, remove. */
export class Interception {
  readonly #driver: NftDriver;
  #rendered: Rendered;

  private constructor(driver: NftDriver, rendered: Rendered) {
    this.#driver = driver;
    this.#rendered = rendered;
  }

  /** Renders (validation errors throw before anything runs) and applies in one transaction. */
  static async install(target: InterceptionTarget, spec: InterceptionSpec): Promise<Interception> {
    const rendered = renderInterception(spec);
    const driver = driverFor(target, rendered.table);
    await driver.apply(rendered);
    return new Interception(driver, rendered);
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
    return r;
  }

  /** Reads the table back and re-applies it when it was changed or removed by hand. */
  resync(): Promise<ResyncReport> {
    return this.#driver.resync(this.#rendered);
  }

  /** Removes the table: traffic flows directly again (established redirected flows finish). */
  remove(): Promise<void> {
    return this.#driver.removeTable();
  }
}

function driverFor(target: InterceptionTarget, table: string): NftDriver {
  if (target.netns === undefined && target.netnsPath === undefined && !target.runner)
    throw new Error('interception needs the pod network namespace (netns or netnsPath)');
  const runner =
    target.runner ??
    (target.netnsPath !== undefined
      ? netnsPathRunner(target.netnsPath, target.nft ? { nft: target.nft } : {})
      : undefined);
  return new NftDriver({
    table,
    ...(target.netns !== undefined ? { netns: target.netns } : {}),
    // The table is tiny: always one full replacement, never chain deltas.
    delta: false,
    ...(runner ? { runner } : {}),
    ...(target.nft ? { nft: target.nft } : {}),
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
