// Length-prefixed JSON frames between the agent and its nft session worker: a 4-byte big-endian
// length, then that many bytes of UTF-8 JSON. A frame larger than MAX_FRAME or not JSON ends the
// conversation (the reader reports it once and drops everything after).
// Owns: framing. Must never: interpret the messages.

import type { Writable } from 'node:stream';

/** A listing of a 10k-policy table is tens of megabytes; this bounds a runaway peer. */
export const MAX_FRAME = 512 * 1024 * 1024;

export function encodeFrame(msg: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(msg), 'utf8');
  if (body.length > MAX_FRAME) throw new Error(`frame of ${body.length} bytes is too large`);
  const head = Buffer.alloc(4);
  head.writeUInt32BE(body.length, 0);
  return Buffer.concat([head, body]);
}

export function writeFrame(out: Writable, msg: unknown): void {
  out.write(encodeFrame(msg));
}

export class FrameReader {
  private chunks: Buffer[] = [];
  private size = 0;
  private broken = false;

  constructor(
    private readonly onMessage: (msg: unknown) => void,
    private readonly onError: (message: string) => void,
  ) {}

  push(data: Buffer): void {
    if (this.broken) return;
    this.chunks.push(data);
    this.size += data.length;
    for (;;) {
      if (this.size < 4) return;
      if ((this.chunks[0] as Buffer).length < 4) this.chunks = [Buffer.concat(this.chunks)];
      const len = (this.chunks[0] as Buffer).readUInt32BE(0);
      if (len > MAX_FRAME) return this.fail(`frame of ${len} bytes is too large`);
      // Joined only once the whole frame is there (a listing arrives in many small chunks).
      if (this.size < 4 + len) return;
      const buf =
        this.chunks.length === 1 ? (this.chunks[0] as Buffer) : Buffer.concat(this.chunks);
      const body = buf.subarray(4, 4 + len).toString('utf8');
      const rest = buf.subarray(4 + len);
      this.chunks = rest.length > 0 ? [rest] : [];
      this.size = rest.length;
      let msg: unknown;
      try {
        msg = JSON.parse(body);
      } catch {
        return this.fail('frame is not JSON');
      }
      this.onMessage(msg);
    }
  }

  private fail(message: string): void {
    this.broken = true;
    this.chunks = [];
    this.size = 0;
    this.onError(message);
  }
}
