/**
 * Quick figure: acknowledged sets/s through a primary/backup pair against a single forwarder
 * (in memory and durable `sync`), one writer keeping 256 writes in flight, 64-byte values; the
 * backup runs in its own process.
 * `npx tsx bench/pair-quick.ts [N]`. The full failover benchmark lives elsewhere in bench/.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Forwarder, Peer } from '../src/index.ts';

const CLI = fileURLToPath(new URL('../bin/clonekv.js', import.meta.url));

const N = Number(process.argv[2] ?? 50_000);
const IN_FLIGHT = 256;
const value = 'x'.repeat(64);

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

async function run(label: string, servers: Forwarder[], active: Forwarder): Promise<void> {
  const peer = new Peer({ server: active.endpoint, subtree: 'none/' });
  await peer.ready();
  const started = process.hrtime.bigint();
  let next = 0;
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (next < N) await peer.set(`k${next++ % 10_000}`, value);
    }),
  );
  const s = Number(process.hrtime.bigint() - started) / 1e9;
  console.log(`${label}: ${Math.round(N / s)} sets/s`);
  await peer.close();
  for (const f of servers) await f.close();
}

/** A pair: the primary in this process, the backup in a child process (its own core, as deployed). */
async function pair(dataDir?: () => string): Promise<{ servers: Forwarder[]; backup: ChildProcess }> {
  const [a, b] = [await freePort(), await freePort()];
  const store = (): string[] => (dataDir ? ['--data', dataDir()] : ['--memory']);
  const backup = spawn(process.execPath, [CLI, 'serve', '--backup', '--port', '0', '--state-port', String(b), '--partner', `tcp://127.0.0.1:${a}`, ...store(), '--json'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const primary = await Forwarder.start({ port: 0, role: 'primary', statePort: a, partner: `tcp://127.0.0.1:${b}`, ...(dataDir ? { dataDir: dataDir() } : {}) });
  while (primary.stats().pair?.replication.state !== 'replicating') await new Promise((r) => setTimeout(r, 10));
  return { servers: [primary], backup };
}

const dirs: string[] = [];
const dir = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'clonekv-bench-'));
  dirs.push(d);
  return d;
};
try {
  for (let round = 0; round < 2; round++) {
    const single = await Forwarder.start({ port: 0 });
    await run('single, memory', [single], single);
    const p = await pair();
    await run('pair, memory  ', p.servers, p.servers[0]!);
    p.backup.kill('SIGTERM');
    await once(p.backup, 'exit');
    const durable = await Forwarder.start({ port: 0, dataDir: dir() });
    await run('single, sync  ', [durable], durable);
    const q = await pair(dir);
    await run('pair, sync    ', q.servers, q.servers[0]!);
    q.backup.kill('SIGTERM');
    await once(q.backup, 'exit');
  }
} finally {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}
