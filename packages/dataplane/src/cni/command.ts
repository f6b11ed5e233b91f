// `palisade cni`: the plugin as a process. Owns: wiring the real ports (SQLite, `ip`, the agent
// socket) and the process boundary (stdin, stdout, exit status). Must never: print anything to
// stdout but the one result the spec asks for.

import { UnixSocketAgentClient } from './agent-client.js';
import { CniError, cniErrorResult } from './cni-error.js';
import { SqliteIpam } from './ipam.js';
import { IpNetlink } from './netlink.js';
import { runCniPlugin } from './plugin.js';
import type { PluginDeps } from './plugin.js';
import type { Env } from './config.js';

export interface CniIo {
  readonly stdout: { write(s: string): unknown };
  readonly stderr: { write(s: string): unknown };
  readonly readStdin: () => Promise<string>;
}

/**
 * The production ports. `PALISADE_CNI_HOST_NETNS` names a network namespace that plays the node
 * (the node side of each veth is created there): for tests and for running the plugin against a
 * sandboxed node; unset in production.
 */
export function defaultPluginDeps(env: Env): PluginDeps {
  const hostNetns = env['PALISADE_CNI_HOST_NETNS'];
  return {
    netlink: new IpNetlink(hostNetns ? { hostNetns } : {}),
    openIpam: (dataDir) => SqliteIpam.open(dataDir),
    agent: (socketPath) => new UnixSocketAgentClient(socketPath),
  };
}

export async function cniCommand(io: CniIo, env: Env = process.env): Promise<number> {
  let stdin = '';
  // A terminal is a person trying the command, not a runtime: do not wait for them.
  if (process.stdin.isTTY !== true) {
    try {
      stdin = await io.readStdin();
    } catch {
      stdin = '';
    }
  }
  const hostNetns = env['PALISADE_CNI_HOST_NETNS'];
  const out =
    hostNetns !== undefined && !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(hostNetns)
      ? {
          exitCode: 1,
          stdout:
            JSON.stringify(
              cniErrorResult(
                new CniError(
                  'CNI_ERR_ENV',
                  'PALISADE_CNI_HOST_NETNS must be a network namespace name',
                ),
                '1.0.0',
              ),
            ) + '\n',
          stderr:
            'palisade cni: CNI_ERR_ENV: PALISADE_CNI_HOST_NETNS must be a network namespace name\n',
        }
      : await runCniPlugin(env, stdin, defaultPluginDeps(env));
  if (out.stdout) io.stdout.write(out.stdout);
  if (out.stderr) io.stderr.write(out.stderr);
  return out.exitCode;
}
