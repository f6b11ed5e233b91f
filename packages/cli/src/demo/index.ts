// `palisade demo`: the live scenario as root (live.ts), or the engine-only story (--simulate,
// simulate.ts). Without what the live demo needs, it says what is missing and offers --simulate.

import type { Parsed } from '../args.js';
import type { Io } from '../input.js';

export async function demoCommand(p: Parsed, io: Io): Promise<number> {
  const json = p.values.json === true;
  if (p.values.simulate === true) return (await import('./simulate.js')).simulateCommand(p, io);
  const { liveRequirements } = await import('./topology.js');
  const missing = liveRequirements();
  if (missing.length > 0) {
    io.stderr.write(
      `The live demo creates network namespaces, veth pairs and an nftables table, and needs: ${missing.join(', ')}.\n` +
        'Run it as root (sudo npm start), or play the same story on the decision engine alone:\n' +
        '  npx palisade demo --simulate\n',
    );
    return 2;
  }
  const { runLive } = await import('./live.js');
  const wait = p.values['no-wait'] !== true && (!json || p.values.serve === true);
  return runLive({ json, wait }, io);
}
