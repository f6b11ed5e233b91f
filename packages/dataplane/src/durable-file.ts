// One file replaced as a whole, durably: written under a temporary name in the same directory
// (mode as given, default owner-only), fsynced, renamed over the old one, and the directory
// fsynced, so a crash at any moment leaves either the old content or the new, never a torn file
// or a rename the disk forgot. Used by the agent's endpoint record and the flow spool.

import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';

/** Replaces `path` with `text` (throws what the file system says; the old file stays then). */
export function replaceFileDurably(path: string, text: string, mode = 0o600): void {
  const dir = dirname(path);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openSync(tmp, 'w', mode);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  let d: number | undefined;
  try {
    d = openSync(dir, 'r');
    fsyncSync(d);
  } catch {
    // A directory that cannot be opened for fsync (some file systems): the rename stands.
  } finally {
    if (d !== undefined) closeSync(d);
  }
}
