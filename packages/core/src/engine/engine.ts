// PLACEHOLDER — the decision engine is being written. These signatures are the contract.
import type { Diagnostic } from '../diagnostics/diagnostic.js';
import type { Resource } from '../model/resources.js';
import type { CheckResult, Probe } from './types.js';

export interface CompileOptions {
  /** Istio root namespace (default `istio-system`). */
  readonly istioRootNamespace?: string;
  /** Store revision the resources came from; stamped on the compiled form. */
  readonly revision?: number;
}

export type CheckOutcome =
  | { readonly ok: true; readonly result: CheckResult }
  | { readonly ok: false; readonly code: string; readonly message: string };

/**
 * The incremental engine: feed resources in any order, then query. `compile` is a convenience
 * that feeds a whole list into a fresh engine.
 */
export class Engine {
  constructor(readonly options: CompileOptions = {}) {}
  /** Adds or replaces a resource (keyed by kind, namespace and name). */
  upsert(_r: Resource): void {}
  /** Removes a resource; a no-op when absent. */
  remove(_kind: Resource['kind'], _namespace: string | undefined, _name: string): void {}
  /** Problems found while compiling (unresolvable references, L7 rules without an L7 point...). */
  diagnostics(): Diagnostic[] {
    return [];
  }
  /** `namespace/name` of every workload endpoint (pods and WorkloadEndpoints), sorted. */
  workloadEndpoints(): string[] {
    return [];
  }
  check(_probe: Probe): CheckOutcome {
    return { ok: false, code: 'ENGINE_ERR_NOT_READY', message: 'engine not implemented' };
  }
  /** Kernel-only verdict (egress at source and ingress at destination), for `matrix`. */
  kernelAllows(_from: string, _to: string, _protocol: string | number, _port: number): boolean {
    return false;
  }
}

export function compile(resources: readonly Resource[], options: CompileOptions = {}): Engine {
  const e = new Engine(options);
  for (const r of resources) e.upsert(r);
  return e;
}
