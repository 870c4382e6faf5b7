/**
 * One process of bench/signed.ts's deployed layout: a forwarder, a writer or a reader, each in
 * its own process as in a real fleet, so signing, the forwarder's checks and the reader's
 * checks never share an event loop.
 *
 * Configured by `CLONEKV_BENCH_SIGNED` (JSON): `{ role: 'forwarder' | 'writer' | 'reader', src,
 * endpoint?, policy?, identity?, writes?, inFlight? }`, where `src` is the directory whose
 * `index.ts` is imported (this tree's src, or a baseline copy to compare with). Speaks JSON lines:
 * - forwarder: prints `{"endpoint":…}` once bound; exits on SIGTERM.
 * - writer: prints `{"ready":true}`; on `{"go":true}` on stdin makes `writes` writes
 *   (`inFlight` at a time) to `config/k<i % 1000>`, then prints `{"written":N}`.
 * - reader: prints `{"ready":true}` once synchronised; prints `{"applied":N,"unauthorized":U}`
 *   when it has applied `writes` updates.
 *
 * @module
 */
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';

interface Config {
  role: 'forwarder' | 'writer' | 'reader';
  src: string;
  endpoint?: string;
  policy?: string;
  identity?: string;
  writes?: number;
  inFlight?: number;
}

const cfg = JSON.parse(process.env['CLONEKV_BENCH_SIGNED'] ?? '{}') as Config;
const lib = (await import(pathToFileURL(join(cfg.src, 'index.ts')).href)) as typeof import('../src/index.ts');
const say = (o: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify(o)}\n`);
const lines = createInterface({ input: process.stdin });
let stop: () => Promise<void> = async () => {};
let stopping = false;
const shutdown = (): void => {
  if (stopping) return;
  stopping = true;
  setTimeout(() => process.exit(0), 3000).unref();
  void stop().finally(() => process.exit(0));
};
process.once('SIGTERM', shutdown);
lines.once('close', shutdown);

if (cfg.role === 'forwarder') {
  const fwd = await lib.Forwarder.start({ port: 0, bind: '127.0.0.1', ...(cfg.policy ? { policy: cfg.policy } : {}) });
  stop = () => fwd.close();
  say({ endpoint: fwd.endpoint });
} else if (cfg.role === 'writer') {
  const writer = new lib.Peer({ server: cfg.endpoint!, subtree: 'none/', presence: false, ...(cfg.identity ? { identity: cfg.identity } : {}) });
  stop = () => writer.close();
  await writer.ready();
  say({ ready: true });
  lines.on('line', (line) => {
    if (!(JSON.parse(line) as { go?: boolean }).go) return;
    void (async () => {
      const writes = cfg.writes!;
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < writes) {
          const i = next++;
          await writer.set(`config/k${i % 1000}`, `value ${i}`);
        }
      };
      await Promise.all(Array.from({ length: cfg.inFlight! }, worker));
      say({ written: writes });
    })();
  });
} else {
  const reader = new lib.Peer({ server: cfg.endpoint!, subtree: 'config/', presence: false, ...(cfg.policy ? { policy: cfg.policy } : {}) });
  stop = () => reader.close();
  await reader.ready();
  let applied = 0;
  reader.on('update', () => {
    if (++applied === cfg.writes) say({ applied, unauthorized: reader.stats().unauthorized });
  });
  say({ ready: true });
}
