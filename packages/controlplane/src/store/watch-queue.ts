// An unbounded push queue exposed as an async iterator: the shape every adapter's watch returns.
// Producers push batches or end the queue (optionally with an error); the consumer's `for await`
// sees batches in push order, then the error or the end. Aborting the signal ends the iterator.

import type { WatchBatch } from './store.js';

export class WatchQueue implements AsyncIterableIterator<WatchBatch> {
  private readonly items: WatchBatch[] = [];
  private waiting: ((r: IteratorResult<WatchBatch>) => void) | undefined;
  private failWaiting: ((e: Error) => void) | undefined;
  private ended = false;
  private error: Error | undefined = undefined;
  private readonly onClose: () => void;
  private readonly signal: AbortSignal | undefined;
  private readonly onAbort = (): void => this.end();

  constructor(onClose: () => void, signal?: AbortSignal) {
    this.onClose = onClose;
    this.signal = signal;
    if (signal !== undefined) {
      // Already aborted: born ended (the owner sees `closed` and never registers the queue).
      if (signal.aborted) this.ended = true;
      else signal.addEventListener('abort', this.onAbort, { once: true });
    }
  }

  get closed(): boolean {
    return this.ended;
  }

  push(batch: WatchBatch): void {
    if (this.ended) return;
    const w = this.waiting;
    if (w !== undefined) {
      this.waiting = undefined;
      this.failWaiting = undefined;
      w({ value: batch, done: false });
    } else {
      this.items.push(batch);
    }
  }

  /** Ends the stream; with an error, the consumer's next read throws it after queued batches. */
  end(error?: Error): void {
    if (this.ended) return;
    this.ended = true;
    this.error = error;
    // A long-lived signal shared by many watches must not keep every ended queue alive.
    this.signal?.removeEventListener('abort', this.onAbort);
    this.onClose();
    const w = this.waiting;
    const f = this.failWaiting;
    this.waiting = undefined;
    this.failWaiting = undefined;
    if (w !== undefined && f !== undefined) {
      if (error !== undefined) f(error);
      else w({ value: undefined, done: true });
    }
  }

  next(): Promise<IteratorResult<WatchBatch>> {
    const item = this.items.shift();
    if (item !== undefined) return Promise.resolve({ value: item, done: false });
    if (this.ended) {
      if (this.error !== undefined) {
        const e = this.error;
        this.error = undefined;
        return Promise.reject(e);
      }
      return Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => {
      this.waiting = resolve;
      this.failWaiting = reject;
    });
  }

  return(): Promise<IteratorResult<WatchBatch>> {
    this.items.length = 0;
    this.error = undefined;
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<WatchBatch> {
    return this;
  }
}
