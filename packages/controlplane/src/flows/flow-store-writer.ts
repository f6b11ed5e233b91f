// A second writer of one flow database, run as a worker thread by `flow-store.test.ts`: it
// ingests random batches into the same file while the test's own store (and other workers) do,
// with retention bounds small enough that deletions interleave with inserts.
// Owns nothing else; not part of the server.

import { parentPort, workerData } from 'node:worker_threads';
import { FlowStore } from './flow-store.js';
import { randomBatch, rng } from './flow-store-fixtures.js';

interface Job {
  readonly file: string;
  readonly seed: number;
  readonly batches: number;
  readonly now: number;
  readonly maxRecords: number;
  readonly maxAgeMs: number;
}

const job = workerData as Job;
let now = job.now;
const store = new FlowStore(job.file, {
  now: () => now,
  retention: { maxRecords: job.maxRecords, maxAgeMs: job.maxAgeMs },
  busyTimeoutMs: 30_000,
});
const r = rng(job.seed);
let stored = 0;
try {
  for (let i = 0; i < job.batches; i++) {
    now += Math.floor(r() * 20_000);
    const records = randomBatch(r, now, 1 + Math.floor(r() * 40));
    store.ingest(`node-${job.seed % 3}`, { records });
    stored += records.length;
    if (r() < 0.3) store.prune();
  }
  parentPort?.postMessage({ stored });
} finally {
  store.close();
}
