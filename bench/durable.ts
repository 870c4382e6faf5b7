/**
 * The durable forwarder against the in-memory one (issue 8), one JSON line per figure:
 *
 * 1. throughput: sustained updates/s from one writer through the forwarder (a child process) to
 *    one watcher peer, as bench/compare measures it (256 writes in flight, 64-byte values, 1,000
 *    keys), for `memory`, `sync` and `async`;
 * 2. write-to-visible p50/p99 at an offered 10,000 updates/s, same three modes;
 * 3. restart time for 1,000,000 keys (100-byte values): `Forwarder.start` on a data directory
 *    holding them, until it serves (recovery of map, sequence, epoch, outcomes), and the size
 *    of the data file.
 *
 * Data directories are temporary (under the OS temp dir) and removed afterwards.
 *
 * Run: `npx tsx bench/durable.ts [--quick]` (about 1 minute; --quick: 100,000 keys, shorter runs).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Forwarder, type ForwarderOptions } from '../src/index.ts';
import { clonekvWith } from './compare/clonekv.ts';
import { joinKey, joinValue, round } from './compare/util.ts';
import { latency, throughput } from './compare/workloads.ts';

const quick = process.argv.includes('--quick');
const KEYS = quick ? 100_000 : 1_000_000;

// `--restart-child DIR MODE`: in a fresh process (no heap left over from seeding), time one start.
const childAt = process.argv.indexOf('--restart-child');
if (childAt >= 0) {
  const dir = process.argv[childAt + 1]!;
  const durability = process.argv[childAt + 2] as 'sync' | 'async';
  const t1 = performance.now();
  const fwd = await Forwarder.start({ port: 0, dataDir: dir, durability });
  const startMs = performance.now() - t1;
  const r = fwd.recovery;
  await fwd.close();
  process.stdout.write(`${JSON.stringify({ startMs, recoveryMs: r?.durationMs, keys: r?.keys, rssMiB: process.memoryUsage().rss / 1048576 })}\n`);
  process.exit(0);
}

function restartChild(dir: string, durability: string): Promise<{ startMs: number; recoveryMs: number; keys: number; rssMiB: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--restart-child', dir, durability], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve(JSON.parse(out.trim().split('\n').at(-1)!)) : reject(new Error(`restart child exited with ${code}`))));
  });
}

function emit(figure: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ bench: 'durable', ...figure })}\n`);
}

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'clonekv-bench-'));
}

const MODES: Array<{ mode: string; options: () => ForwarderOptions }> = [
  { mode: 'memory', options: () => ({}) },
  { mode: 'sync', options: () => ({ dataDir: tempDir(), durability: 'sync' }) },
  { mode: 'async', options: () => ({ dataDir: tempDir(), durability: 'async' }) },
];

const rates: Record<string, number> = {};
for (const { mode, options } of process.argv.includes('--restart-only') ? [] : MODES) {
  const forwarder = options();
  const adapter = clonekvWith({ keySpace: 1000 }, forwarder);
  await adapter.open();
  try {
    const t = await throughput(adapter, {
      run: 1,
      watchers: 1,
      total: quick ? 40_000 : 200_000,
      deadlineMs: quick ? 4000 : 6000,
      keySpace: 1000,
      valueSize: 64,
      ackWindow: 256,
      lagWindow: 4096,
    });
    rates[mode] = t.perWatcher;
    emit({ mode, workload: 'throughput-1-watcher', value: round(t.perWatcher, 0), unit: 'updates/s', sent: t.sent, lost: t.lost, ...(mode === 'memory' ? {} : { ratioToMemory: round(t.perWatcher / (rates['memory'] ?? NaN), 2) }) });
    const l = await latency(adapter, {
      run: 2,
      rate: 10_000,
      durationMs: quick ? 1000 : 3000,
      drainMs: 1000,
      keySpace: 1000,
      valueSize: 64,
      ackWindow: 256,
      lagWindow: 10_000,
    });
    emit({ mode, workload: 'latency-10k', p50: round(l.p50), p99: round(l.p99), p999: round(l.p999), unit: 'ms', achieved: round(l.achieved, 0), lost: l.lost });
  } finally {
    await adapter.close();
    if (forwarder.dataDir !== undefined) rmSync(forwarder.dataDir, { recursive: true, force: true });
  }
}

// Restart time: seed a data directory with KEYS keys, close, and time the next start.
// Both modes store and flush alike (async differs in when writers are answered): one figure.
for (const durability of process.argv.includes('--no-restart') ? [] : (['sync'] as const)) {
  const dir = tempDir();
  try {
    const seed = await Forwarder.start({ port: 0, dataDir: dir, durability });
    const t0 = performance.now();
    await seed.load((function* () {
      for (let i = 0; i < KEYS; i++) yield [`join/${joinKey(i)}`, joinValue(i, 100)] as [string, unknown];
    })());
    const loadMs = performance.now() - t0;
    await seed.close();
    const r = await restartChild(dir, durability);
    emit({
      mode: durability,
      workload: `restart-${KEYS / 1000}k-keys`,
      value: round(r.startMs, 0),
      unit: 'ms',
      recoveryMs: r.recoveryMs,
      keys: r.keys,
      rssMiB: round(r.rssMiB, 0),
      loadMs: round(loadMs, 0),
      fileMiB: round(statSync(join(dir, 'clonekv.mdb')).size / 1048576, 1),
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
