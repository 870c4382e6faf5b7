/**
 * The failover pair (issue 9), one JSON line per figure:
 *
 * 1. failover time at default settings (heartbeat 1 s, partner timeout 2 s, default peer
 *    options): the active member of a `clonekv serve --primary/--backup` pair is killed with
 *    SIGKILL `KILLS` times (alternating, the killed one started again as passive between kills)
 *    under a writer with 16 writes in flight; from the kill to the first read served by the new
 *    active (a reader peer in sync there again) and to the first acknowledgement of a write queued
 *    just after the kill. Median and worst.
 * 2. the cost of replicated acknowledgements: a standalone durable forwarder (`clonekv serve
 *    --data DIR`, sync durability) against a pair (both members durable, sync), same machine:
 *    acknowledged sets/s from 4 writer peers with 64 and with 256 writes in flight each (64-byte
 *    values, 1,000 keys), and write-to-visible p50/p99 at an offered 10,000 updates/s (bench/compare's latency
 *    workload, one watcher). Single and pair alternate, 3 rounds each (fresh servers every
 *    time), so a change in the machine's load weighs on both; medians and each round's ratio, and
 *    the CPU (cores) each server process and the client process used during the throughput run.
 *
 * Every server is a `clonekv serve` child process (bin/clonekv.js); peers live in this process.
 * Data directories are temporary and removed afterwards.
 *
 * Run: `npm run bench:failover` (about 3 minutes; `--quick`: 3 kills, one short round).
 */
import { readFileSync } from 'node:fs';
import type { TestContext } from 'node:test';
import { Peer } from '../src/index.ts';
import { freeBasePort, fullSpeed, Member, startPair, type Pair } from '../test/pair-fixture.ts';
import { dataDir } from '../test/helpers.ts';
import { latency } from './compare/workloads.ts';
import { median, now, round, sleep } from './compare/util.ts';
import type { Adapter, OnValue, WatchGroup } from './compare/types.ts';

const quick = process.argv.includes('--quick');
const KILLS = quick ? 3 : 5;
const arg = (name: string, fallback: number): number => Number(process.argv.find((a) => a.startsWith(`--${name}=`))?.split('=')[1] ?? fallback);
/** Writes in flight per writer peer in the throughput runs (4 writers). */
const IN_FLIGHTS = [64, 256];
const ROUNDS = arg('rounds', quick ? 1 : 3);
/** `--memory`: servers keep nothing on disk (to tell the cost of the backup's disk from the rest). */
const MEMORY = process.argv.includes('--memory');

// The pair fixture registers its teardown with a test context's `after`: here, a list run at the end.
const cleanups: Array<() => unknown> = [];
const scope = { after: (fn: () => unknown) => void cleanups.push(fn) } as unknown as TestContext;
async function cleanup(): Promise<void> {
  while (cleanups.length > 0) await cleanups.pop()!();
}

function emit(figure: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ bench: 'failover', ...figure })}\n`);
}

/** Polls `check` every millisecond until it is true; the time it became true (performance.now()). */
async function until(what: string, check: () => boolean, ms: number): Promise<number> {
  const deadline = now() + ms;
  while (!check()) {
    if (now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(1);
  }
  return now();
}

// ---- 1. failover time ----------------------------------------------------------------------------

async function failoverTimes(): Promise<void> {
  const pair = await startPair(scope, { durable: true, heartbeat: 1000, partnerTimeout: 2000 });
  const writer = new Peer({ server: pair.servers, name: 'writer' });
  const reader = new Peer({ server: pair.servers, name: 'reader' });
  cleanups.push(() => writer.close(), () => reader.close());
  await Promise.all([writer.ready(), reader.ready()]);
  const w = fullSpeed(writer, 'w', 16);
  const toRead: number[] = [];
  const toWrite: number[] = [];
  let active = pair.primary;
  for (let kill = 1; kill <= KILLS; kill++) {
    const next = active === pair.primary ? pair.backup : pair.primary;
    const before = w.acked.size;
    await until('writes flowing', () => w.acked.size > before + 500, 30_000);
    const killedAt = now();
    await active.kill();
    const probe = writer.set(`probe/${kill}`, kill).then(() => now());
    const readAt = await until(`the reader in sync on ${next.name}`, () => reader.server === next.endpoint && reader.status === 'live', 30_000);
    const writeAt = await probe;
    toRead.push(readAt - killedAt);
    toWrite.push(writeAt - killedAt);
    process.stderr.write(`failover: kill ${kill} of ${active.name}: read after ${Math.round(readAt - killedAt)} ms, write after ${Math.round(writeAt - killedAt)} ms\n`);
    await active.start();
    await pair.settled(next, 30_000, false);
    active = next;
  }
  await w.stop();
  const worst = (xs: number[]): number => Math.max(...xs);
  emit({ workload: 'failover-to-read', kills: KILLS, median: round(median(toRead), 0), worst: round(worst(toRead), 0), unit: 'ms', all: toRead.map((x) => round(x, 0)) });
  emit({ workload: 'failover-to-write', kills: KILLS, median: round(median(toWrite), 0), worst: round(worst(toWrite), 0), unit: 'ms', all: toWrite.map((x) => round(x, 0)), aimMs: 3000, failedWrites: w.failed() });
  await cleanup();
}

// ---- 2. the cost of replication ------------------------------------------------------------------

const SUBTREE = 'bench/';
const WRITER_SUBTREE = 'bench-writer/';

/** bench/compare's adapter shape over servers already running (peers given the whole list). */
class ServersAdapter implements Adapter {
  readonly system = 'clonekv' as const;
  readonly serialWrites = false;
  readonly latestOnly = false;
  readonly #servers: string[];
  readonly #keys: string[];
  #writer: Peer | undefined;

  constructor(servers: string[], keySpace: number) {
    this.#servers = servers;
    this.#keys = Array.from({ length: keySpace }, (_, i) => `${SUBTREE}k${i}`);
  }

  async open(): Promise<void> {
    this.#writer = new Peer({ server: this.#servers, subtree: WRITER_SUBTREE });
    await this.#writer.ready();
  }

  write(key: number, value: string): Promise<number> {
    return this.#writer!.set(this.#keys[key]!, value);
  }

  async watch(count: number, onValue: OnValue): Promise<WatchGroup> {
    const peers = Array.from({ length: count }, (_, w) => {
      const p = new Peer({ server: this.#servers, subtree: SUBTREE });
      p.on('update', (e) => {
        if (typeof e.value === 'string') onValue(w, e.value);
      });
      return p;
    });
    await Promise.all(peers.map((p) => p.ready()));
    return { close: async () => void (await Promise.all(peers.map((p) => p.close()))) };
  }

  async close(): Promise<void> {
    await this.#writer?.close();
    this.#writer = undefined;
  }
}

/** CPU time (user + system) a process has used so far, ms (Linux /proc; 0 elsewhere). */
function cpuMs(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // utime + stime, in 1/100 s
  } catch {
    return 0;
  }
}

/**
 * Acknowledged sets/s from `writers` peers with `inFlight` writes outstanding each, and the CPU
 * each server process and this (client) process used per second of the run.
 */
async function setThroughput(servers: string[], pids: number[], writers: number, inFlight: number, ms: number): Promise<{ rate: number; serverCpu: number[]; clientCpu: number }> {
  const peers = Array.from({ length: writers }, (_, i) => new Peer({ server: servers, subtree: `${WRITER_SUBTREE}${i}/` }));
  try {
    await Promise.all(peers.map((p) => p.ready()));
    const value = 'x'.repeat(64);
    let acked = 0;
    let counting = false;
    let stopped = false;
    let n = 0;
    const lane = async (p: Peer): Promise<void> => {
      while (!stopped) {
        await p.set(`${SUBTREE}k${n++ % 1000}`, value);
        if (counting) acked++;
      }
    };
    const lanes = peers.flatMap((p) => Array.from({ length: inFlight }, () => lane(p)));
    await sleep(ms / 4); // warm-up
    counting = true;
    const cpu0 = pids.map(cpuMs);
    const client0 = process.cpuUsage();
    const t0 = now();
    await sleep(ms);
    const elapsed = now() - t0;
    const rate = (acked / elapsed) * 1000;
    const serverCpu = pids.map((pid, i) => (cpuMs(pid) - cpu0[i]!) / elapsed);
    const client = process.cpuUsage(client0);
    stopped = true;
    await Promise.all(lanes);
    return { rate, serverCpu, clientCpu: (client.user + client.system) / 1000 / elapsed };
  } finally {
    await Promise.all(peers.map((p) => p.close()));
  }
}

async function single(): Promise<{ servers: string[]; pids: number[] }> {
  const port = await freeBasePort();
  const storage = MEMORY ? ['--memory'] : ['--data', dataDir(scope), '--durability', 'sync'];
  const m = new Member(scope, 'single', port, 0, ['serve', '--port', String(port), ...storage, '--json']);
  await m.start();
  return { servers: [m.endpoint], pids: [m.proc.child.pid!] };
}

async function pairOf(): Promise<{ servers: string[]; pids: number[] }> {
  const pair: Pair = await startPair(scope, { durable: !MEMORY, heartbeat: 1000, partnerTimeout: 2000, extra: MEMORY ? [] : ['--durability', 'sync'] });
  return { servers: pair.servers, pids: pair.members.map((m) => m.proc.child.pid!) };
}

type Throughput = Awaited<ReturnType<typeof setThroughput>>;
type Latency = Awaited<ReturnType<typeof latency>>;

/**
 * Single and pair alternately, `ROUNDS` times each (a fresh server or pair every time), so a
 * change in the machine's load weighs on both alike: throughput at each window of
 * {@link IN_FLIGHTS}, then latency at 10k/s; medians, and each round's ratio.
 */
async function replicationCost(): Promise<void> {
  const runs = { single: [] as Array<{ t: Throughput[]; l: Latency }>, pair: [] as Array<{ t: Throughput[]; l: Latency }> };
  for (let r = 1; r <= ROUNDS; r++) {
    for (const [mode, start] of [['single', single], ['pair', pairOf]] as const) {
      const { servers, pids } = await start();
      const t: Throughput[] = [];
      for (const inFlight of IN_FLIGHTS) t.push(await setThroughput(servers, pids, 4, inFlight, quick ? 2000 : 4000));
      const adapter = new ServersAdapter(servers, 1000);
      await adapter.open();
      try {
        const l = await latency(adapter, { run: r, rate: 10_000, durationMs: quick ? 1000 : 3000, drainMs: 1000, keySpace: 1000, valueSize: 64, ackWindow: 256, lagWindow: 10_000 });
        runs[mode].push({ t, l });
        const shown = t.map((x, i) => `${Math.round(x.rate)}/s at ${IN_FLIGHTS[i]} in flight (server CPU ${x.serverCpu.map((c) => c.toFixed(2)).join('+')}, client ${x.clientCpu.toFixed(2)} cores)`);
        process.stderr.write(`cost: round ${r} ${mode}: ${shown.join('; ')}; 10k/s p50 ${l.p50.toFixed(2)} p99 ${l.p99.toFixed(1)} ms\n`);
      } finally {
        await adapter.close();
      }
      await cleanup();
    }
  }
  IN_FLIGHTS.forEach((inFlight, i) => {
    const rates = (mode: 'single' | 'pair'): number[] => runs[mode].map((x) => x.t[i]!.rate);
    const ratios = rates('pair').map((x, k) => x / rates('single')[k]!);
    for (const mode of ['single', 'pair'] as const) {
      emit({
        mode,
        storage: MEMORY ? 'memory' : 'sync',
        workload: 'throughput-4-writers',
        inFlightPerWriter: inFlight,
        value: round(median(rates(mode)), 0),
        unit: 'acked sets/s',
        rounds: rates(mode).map((x) => round(x, 0)),
        serverCpuCores: runs[mode][0]!.t[i]!.serverCpu.map((_, k) => round(median(runs[mode].map((x) => x.t[i]!.serverCpu[k]!)), 2)),
        clientCpuCores: round(median(runs[mode].map((x) => x.t[i]!.clientCpu)), 2),
        ...(mode === 'pair' ? { ratioToSingle: round(median(ratios), 2), ratioByRound: ratios.map((x) => round(x, 2)), costPercent: round(100 * (1 - median(ratios)), 1), aimCostPercent: 25 } : {}),
      });
    }
  });
  for (const mode of ['single', 'pair'] as const) {
    const ls = runs[mode].map((x) => x.l);
    emit({ mode, storage: MEMORY ? 'memory' : 'sync', workload: 'latency-10k', p50: round(median(ls.map((l) => l.p50))), p99: round(median(ls.map((l) => l.p99))), p999: round(median(ls.map((l) => l.p999))), unit: 'ms', p99ByRound: ls.map((l) => round(l.p99, 1)), achieved: round(median(ls.map((l) => l.achieved)), 0) });
  }
}

try {
  if (!process.argv.includes('--cost-only')) await failoverTimes();
  if (!process.argv.includes('--failover-only')) await replicationCost();
} finally {
  await cleanup();
}
