#!/usr/bin/env node
// Entry point of the palisade CLI. The sources are TypeScript run through tsx's loader, so a
// fresh `npm ci` is all that is needed before `npx palisade` works.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/main.ts');
process.exitCode = await main(process.argv.slice(2));
