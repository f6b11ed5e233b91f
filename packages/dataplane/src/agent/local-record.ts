// The agent's own record of the attachments the CNI plugin made on this node: one JSON file
// (default /var/lib/palisade/endpoints.json, mode 0600), rewritten atomically (temporary file,
// fsync, rename) on every change. It lets the agent (1) program a pod attached while the API was
// unreachable, under the last policy it knows, and (2) re-assert in the API the endpoints the API
// lost or never received, once it is back. Deletions made while the API was unreachable are kept
// as tombstones and replayed. Owns: the file. Must never: keep a record the CNI plugin deleted, or
// load a file it cannot fully validate (it then starts empty and says so).

import { existsSync, readFileSync } from 'node:fs';
import { replaceFileDurably } from '../durable-file.js';
import type { RegisteredEndpoint } from '../agent-socket/protocol.js';

export const DEFAULT_RECORD_PATH = '/var/lib/palisade/endpoints.json';

export interface RecordedEndpoint extends RegisteredEndpoint {
  /** The API acknowledged this version (false: written while it was unreachable). */
  readonly acknowledged: boolean;
}

export interface Tombstone {
  readonly namespace: string;
  readonly name: string;
  readonly containerId: string;
}

interface FileShape {
  readonly version: 1;
  readonly endpoints: RecordedEndpoint[];
  readonly tombstones: Tombstone[];
}

const key = (containerId: string, ifname: string): string => `${containerId}\0${ifname}`;

function isRecord(v: unknown): v is RecordedEndpoint {
  if (!v || typeof v !== 'object') return false;
  const o = v as Record<string, unknown>;
  const w = o['workloadEndpoint'] as { kind?: unknown; metadata?: { name?: unknown } } | undefined;
  return (
    typeof o['containerId'] === 'string' &&
    typeof o['ifname'] === 'string' &&
    typeof o['hostIfname'] === 'string' &&
    typeof o['acknowledged'] === 'boolean' &&
    w?.kind === 'WorkloadEndpoint' &&
    typeof w.metadata?.name === 'string'
  );
}

function isTombstone(v: unknown): v is Tombstone {
  if (!v || typeof v !== 'object') return false;
  const o = v as Record<string, unknown>;
  return (
    typeof o['namespace'] === 'string' &&
    typeof o['name'] === 'string' &&
    typeof o['containerId'] === 'string'
  );
}

export class LocalEndpointRecord {
  private readonly endpoints = new Map<string, RecordedEndpoint>();
  private readonly tombstones = new Map<string, Tombstone>();
  /** Why the file on disk was not loaded, if it was not. */
  readonly loadProblem: string | undefined;

  constructor(readonly path: string = DEFAULT_RECORD_PATH) {
    let problem: string | undefined;
    if (existsSync(path)) {
      try {
        const doc = JSON.parse(readFileSync(path, 'utf8')) as Partial<FileShape>;
        if (doc.version !== 1 || !Array.isArray(doc.endpoints) || !Array.isArray(doc.tombstones))
          throw new Error('not a version 1 endpoint record');
        if (!doc.endpoints.every(isRecord) || !doc.tombstones.every(isTombstone))
          throw new Error('an entry is malformed');
        for (const e of doc.endpoints) this.endpoints.set(key(e.containerId, e.ifname), e);
        for (const t of doc.tombstones) this.tombstones.set(`${t.namespace}/${t.name}`, t);
      } catch (e) {
        problem = `${path}: ${e instanceof Error ? e.message : String(e)}; starting with an empty record`;
      }
    }
    this.loadProblem = problem;
  }

  list(): RecordedEndpoint[] {
    return [...this.endpoints.values()];
  }

  listTombstones(): Tombstone[] {
    return [...this.tombstones.values()];
  }

  get(containerId: string, ifname: string): RecordedEndpoint | undefined {
    return this.endpoints.get(key(containerId, ifname));
  }

  put(ep: RegisteredEndpoint, acknowledged: boolean): void {
    const w = ep.workloadEndpoint;
    this.tombstones.delete(`${w.metadata.namespace ?? 'default'}/${w.metadata.name}`);
    this.endpoints.set(key(ep.containerId, ep.ifname), { ...ep, acknowledged });
    this.save();
  }

  /** Removes the attachment; with `tombstone`, remembers to delete it from the API later. */
  delete(containerId: string, ifname: string, tombstone: boolean): RecordedEndpoint | undefined {
    const k = key(containerId, ifname);
    const ep = this.endpoints.get(k);
    if (!ep) return undefined;
    this.endpoints.delete(k);
    if (tombstone) {
      const w = ep.workloadEndpoint;
      const ns = w.metadata.namespace ?? 'default';
      this.tombstones.set(`${ns}/${w.metadata.name}`, {
        namespace: ns,
        name: w.metadata.name,
        containerId,
      });
    }
    this.save();
    return ep;
  }

  clearTombstone(namespace: string, name: string): void {
    if (this.tombstones.delete(`${namespace}/${name}`)) this.save();
  }

  private save(): void {
    const doc: FileShape = {
      version: 1,
      endpoints: this.list(),
      tombstones: this.listTombstones(),
    };
    replaceFileDurably(this.path, JSON.stringify(doc));
  }
}
