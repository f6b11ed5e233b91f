// Saved connection contexts for the online commands (`palisade login`): a JSON file, mode 0600,
// at $PALISADE_CONFIG or ~/.config/palisade/config.json. Owns: reading and writing it.
// Must never: write the file with wider permissions than 0600 (it holds tokens).

import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';

export interface Context {
  readonly server: string;
  /** The token itself (the file is 0600), as kubectl keeps it. */
  readonly token?: string;
  /** Absolute path of the CA bundle that signs the server's certificate. */
  readonly caFile?: string;
}

export interface CliConfig {
  readonly current?: string;
  readonly contexts: Readonly<Record<string, Context>>;
}

export class ConfigError extends Error {}

export function configPath(env: NodeJS.ProcessEnv = process.env): string {
  return env.PALISADE_CONFIG ?? join(homedir(), '.config', 'palisade', 'config.json');
}

export function readConfig(path: string): CliConfig {
  if (!existsSync(path)) return { contexts: {} };
  let v: unknown;
  try {
    v = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new ConfigError(
      `${path} is not valid JSON (${(e as Error).message}); fix or remove it and run palisade login`,
    );
  }
  const c = v as Partial<CliConfig> | null;
  if (!c || typeof c !== 'object' || typeof c.contexts !== 'object' || c.contexts === null)
    throw new ConfigError(`${path} is not a palisade config; remove it and run palisade login`);
  return { ...(c.current !== undefined ? { current: c.current } : {}), contexts: c.contexts };
}

export function writeConfig(path: string, c: CliConfig): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(c, null, 2)}\n`, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, path);
}
