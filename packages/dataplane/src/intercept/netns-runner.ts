// Runs `nft` inside a pod's network namespace given by path (what CNI_NETNS names:
// /run/netns/NAME, /var/run/netns/NAME or /proc/PID/ns/net), through `nsenter --net=PATH`, for the
// interception table the agent keeps in each pod. Refuses a path that is not a namespace file
// or that is the agent's own namespace (a WorkloadEndpoint's annotation must never make the
// agent redirect the node's traffic).
// Owns: entering the namespace. Must never: run nft in the agent's own network namespace.

import { spawn } from 'node:child_process';
import { statSync } from 'node:fs';
import type { NftRunner } from '../nft/driver.js';
import { DataplaneError } from '../errors.js';

const NETNS_PATH =
  /^(\/run\/netns\/|\/var\/run\/netns\/)[A-Za-z0-9_.-]{1,64}$|^\/proc\/[0-9]{1,10}\/ns\/net$/;

/** Why `path` cannot be a pod's namespace, or undefined when it can. */
export function netnsPathProblem(path: string): string | undefined {
  if (!NETNS_PATH.test(path) || path.includes('/../') || /\/\.\.?$/.test(path))
    return `${JSON.stringify(path)} is not a network namespace path (/run/netns/NAME or /proc/PID/ns/net)`;
  let st;
  let self;
  try {
    st = statSync(path);
    self = statSync('/proc/self/ns/net');
  } catch {
    return `network namespace ${path} does not exist`;
  }
  if (st.ino === self.ino && st.dev === self.dev)
    return `${path} is the agent's own network namespace`;
  return undefined;
}

/** An nft runner inside the namespace at `path` (checked once here, before any command). */
export function netnsPathRunner(
  path: string,
  options: { readonly nft?: string; readonly timeoutMs?: number } = {},
): NftRunner {
  const problem = netnsPathProblem(path);
  if (problem) throw new DataplaneError('DATAPLANE_ERR_INTERCEPT_SPEC', problem);
  const nft = options.nft ?? 'nft';
  return (args, stdin) =>
    new Promise((resolve) => {
      const child = spawn('nsenter', [`--net=${path}`, '--', nft, ...args], {
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 30_000);
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.on('error', (e) => {
        clearTimeout(timer);
        resolve({ code: 127, stdout, stderr: stderr + String(e) });
      });
      child.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code: code ?? 1, stdout, stderr });
      });
      child.stdin.on('error', () => undefined);
      child.stdin.end(stdin ?? '');
    });
}
