/**
 * A clonekv forwarder in its own process, so it never shares an event loop with the bench's
 * writer and watchers.
 *
 * Protocol (JSON lines): prints `{"endpoint":"tcp://127.0.0.1:P"}` once bound. Reads commands on
 * stdin: `{"load":N,"valueSize":B,"prefix":"join/"}` seeds N keys in-process with
 * `Forwarder.load` and answers `{"loaded":N,"ms":T}`. Exits (after `close()`) on SIGTERM, SIGINT
 * or the end of stdin, so it cannot outlive the bench.
 *
 * Run: `npx tsx bench/compare/forwarder-child.ts`
 *
 * @module
 */

import { createInterface } from 'node:readline';
import { performance } from 'node:perf_hooks';
import { Forwarder, type ForwarderOptions } from '../../src/index.ts';
import { joinKey, joinValue } from './util.ts';

// Extra forwarder options (bench/durable.ts: dataDir, durability) as JSON in the environment.
const extra = JSON.parse(process.env['CLONEKV_BENCH_FORWARDER'] ?? '{}') as ForwarderOptions;
const fwd = await Forwarder.start({ port: 0, bind: '127.0.0.1', ...extra });

let closing = false;
async function shutdown(code: number): Promise<void> {
  if (closing) return;
  closing = true;
  const hard = setTimeout(() => process.exit(code), 5000);
  hard.unref();
  try {
    await fwd.close();
  } finally {
    process.exit(code);
  }
}

process.once('SIGTERM', () => void shutdown(0));
process.once('SIGINT', () => void shutdown(0));

function* entries(n: number, valueSize: number, prefix: string): Generator<[string, unknown]> {
  for (let i = 0; i < n; i++) yield [prefix + joinKey(i), joinValue(i, valueSize)];
}

const lines = createInterface({ input: process.stdin });
lines.on('line', (line) => {
  void (async () => {
    try {
      const cmd = JSON.parse(line) as { load?: number; valueSize?: number; prefix?: string };
      if (typeof cmd.load === 'number') {
        const t0 = performance.now();
        await fwd.load(entries(cmd.load, cmd.valueSize ?? 100, cmd.prefix ?? 'join/'));
        process.stdout.write(`${JSON.stringify({ loaded: cmd.load, ms: performance.now() - t0 })}\n`);
      }
    } catch (err) {
      process.stdout.write(`${JSON.stringify({ error: err instanceof Error ? err.message : String(err) })}\n`);
    }
  })();
});
lines.once('close', () => void shutdown(0));

process.stdout.write(`${JSON.stringify({ endpoint: fwd.endpoint })}\n`);
