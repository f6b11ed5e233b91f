// `npm run bench -- NAME [--quick]`: runs one benchmark, prints a readable table and, as the last
// line, `RESULT {json}` (DESIGN §5). Benchmarks are scripts, never timed tests.

import { spawnSync } from 'node:child_process';
import { runAgentBench } from './agent.js';
import { runAuthzBench } from './authz.js';
import { runDataplaneBench } from './dataplane.js';
import { runEngineBench } from './engine.js';
import { runEngineKernelBench } from './engine-kernel.js';
import { runFlowsBench } from './flows.js';
import { runL7Bench } from './l7.js';
import { runL7H2Bench } from './l7-h2.js';
import { runStoreBench } from './store.js';

const BENCHES: Record<
  string,
  | ((
      quick: boolean,
      log: (s: string) => void,
    ) => Record<string, unknown> | Promise<Record<string, unknown>>)
  | undefined
> = {
  engine: runEngineBench,
  'engine-kernel': runEngineKernelBench,
  store: runStoreBench,
  dataplane: runDataplaneBench,
  agent: runAgentBench,
  authz: runAuthzBench,
  l7: runL7Bench,
  'l7-h2': runL7H2Bench,
  flows: runFlowsBench,
};

function usage(): string {
  return `usage: npm run bench -- NAME [--quick]\n\nbenchmarks: ${Object.entries(BENCHES)
    .map(([n, f]) => (f ? n : `${n} (not yet available)`))
    .join(', ')}\n  --quick   finish within a minute on a 2-core machine`;
}

async function main(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(usage());
    return 0;
  }
  const name = argv.find((a) => !a.startsWith('-'));
  if (!name || !(name in BENCHES)) {
    console.error(name ? `unknown benchmark ${JSON.stringify(name)}\n\n${usage()}` : usage());
    return 2;
  }
  const fn = BENCHES[name];
  if (!fn) {
    console.error(
      `benchmark ${name} is not yet available: it comes with the part of Palisade it measures`,
    );
    return 2;
  }
  // Heap figures need an explicit GC: re-run with --expose-gc when it is not available.
  if (typeof (globalThis as { gc?: unknown }).gc !== 'function') {
    const r = spawnSync(
      process.execPath,
      ['--expose-gc', '--max-old-space-size=8192', '--import', 'tsx', ...process.argv.slice(1)],
      {
        stdio: 'inherit',
      },
    );
    return r.status ?? 1;
  }
  const result = await fn(argv.includes('--quick'), (s) => console.log(s));
  console.log(`RESULT ${JSON.stringify(result)}`);
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
