// Runs one agent latency measurement inside the current network namespace (started by
// bench/agent.ts through `ip netns exec`) and prints `CHILD {json}`.
import { latency } from './agent.js';

const [policies, samples] = process.argv.slice(2).map(Number);
const out = await latency(policies ?? 100, samples ?? 10, undefined, (s) => console.log(s));
console.log(`CHILD ${JSON.stringify(out)}`);
process.exit(0);
