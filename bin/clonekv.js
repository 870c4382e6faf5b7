#!/usr/bin/env node
// In a checkout, run the TypeScript sources through tsx (no build step); in an installed
// package, run the compiled dist/ (built by `npm run build`, which `npm pack` runs first).
import { existsSync } from 'node:fs';

const source = new URL('../src/cli/main.ts', import.meta.url);
let entry;
if (existsSync(source)) {
  const { register } = await import('tsx/esm/api');
  register();
  entry = source;
} else {
  entry = new URL('../dist/cli/main.js', import.meta.url);
}
const { main } = await import(entry.href);
await main();
