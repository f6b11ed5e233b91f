// A plugin process for concurrency tests: loads the plugin, says "ready", waits for "go" on stdin,
// then runs one invocation with the real ports and prints its output as one JSON line. The barrier
// makes twenty processes hit the address database at the same moment, after their (slow) start-up.
// Environment: the CNI_* variables, PALISADE_CNI_HOST_NETNS, and PALISADE_CNI_CONF (the config).
import { defaultPluginDeps } from './command.js';
import { runCniPlugin } from './plugin.js';

process.stdout.write('ready\n');
await new Promise<void>((resolve) => {
  let text = '';
  process.stdin.setEncoding('utf8').on('data', (d: string) => {
    text += d;
    if (text.includes('go')) resolve();
  });
});
const out = await runCniPlugin(
  process.env,
  process.env['PALISADE_CNI_CONF'] ?? '',
  defaultPluginDeps(process.env),
);
process.stdout.write(JSON.stringify(out) + '\n');
process.exit(0);
