/**
 * `npm run bench:compare`: the same workloads against clonekv and, where their servers answer
 * on loopback, NATS JetStream KV, Redis (pub/sub and client-side caching), etcd, and raw
 * zeromq.js PUB→SUB as the ceiling.
 *
 * Usage:
 *   npx tsx bench/compare.ts [--quick] [--only=clonekv,nats,redis,redis-csc,etcd,zmq-5f,zmq-1f]
 *                            [--runs=N] [--no-report]
 *   (`--only=zmq` means both zmq variants; `redis` is pub/sub, `redis-csc` client-side caching.)
 *
 * Prints one JSON line per figure on stdout (progress goes to stderr), e.g.
 *   {"system":"redis","workload":"throughput-1w1r","value":115000,"unit":"updates/s",
 *    "runs":[...],"spread":{"min":...,"max":...},"ratioClonekv":{...}}
 * and a system that cannot be measured as {"system":"etcd","workload":"all","skipped":true,"reason":...}.
 * Writes bench/report.md and bench/report.svg (unless --no-report).
 *
 * Bounds: every run has a count, a deadline and a timeout; runs after the first are dropped once
 * the soft budget is spent; a watchdog ends the process at 9.5 minutes whatever happens.
 * The runs of one workload are interleaved across systems (run 1 of every system, then run 2,
 * ... with the order rotated), so the clonekv/other ratio of run r compares neighbours in time.
 *
 * @module
 */

import { writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { clonekv } from './compare/clonekv.ts';
import { etcd } from './compare/etcd.ts';
import { nats } from './compare/nats.ts';
import { redisCsc, redisPubSub } from './compare/redis.ts';
import { renderMarkdown, renderSvg } from './compare/report.ts';
import { SYSTEMS, type Adapter, type Figure, type Skip, type SystemModule, type SystemName } from './compare/types.ts';
import { median, now, round, spread, withTimeout } from './compare/util.ts';
import { join, latency, throughput } from './compare/workloads.ts';
import { zmq1, zmq5 } from './compare/zmq.ts';

const MODULES: Record<SystemName, SystemModule> = {
  clonekv,
  nats,
  redis: redisPubSub,
  'redis-csc': redisCsc,
  etcd,
  'zmq-5f': zmq5,
  'zmq-1f': zmq1,
};

/** Systems that hold state a late joiner can load. */
const JOINABLE: ReadonlySet<SystemName> = new Set(['clonekv', 'nats', 'redis', 'etcd']);
/** Measured for throughput only: zmq-5f is the latency ceiling, and time is short. */
const NO_LATENCY: ReadonlySet<SystemName> = new Set(['zmq-1f']);
/** etcd's join is capped at this many keys. */
const ETCD_JOIN_CAP = 100_000;

const { values: flags } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
    runs: { type: 'string' },
    'no-report': { type: 'boolean', default: false },
  },
  strict: true,
});

const quick = flags.quick === true;
const settings = {
  runs: flags.runs !== undefined ? Math.max(1, Number(flags.runs)) : quick ? 1 : 3,
  keySpace: 1000,
  valueSize: 64,
  ackWindow: 256,
  lagWindow: 4096,
  throughput1: { total: quick ? 20_000 : 200_000, deadlineMs: quick ? 4000 : 6000 },
  throughput16: { total: quick ? 10_000 : 50_000, deadlineMs: quick ? 4000 : 6000 },
  latency: { rates: [1000, 10_000, 50_000], durationMs: quick ? 1000 : 3000, drainMs: 1000 },
  join: {
    valueSize: 100,
    sizes: quick ? [{ keys: 100_000, runs: 1 }] : [{ keys: 100_000, runs: 3 }, { keys: 1_000_000, runs: 1 }],
    timeoutMs: 150_000,
  },
  /** After this, only the first run of each remaining workload is done, ms. */
  softBudgetMs: quick ? 240_000 : 450_000,
  /** The 1M join starts only before this, ms. */
  bigJoinBudgetMs: 480_000,
  hardBudgetMs: 570_000,
};

/**
 * A full garbage collection between runs, so one system's garbage is not collected during the
 * next system's measurement (the npm script cannot pass --expose-gc, so it is switched on here).
 */
const collectGarbage: () => void = (() => {
  try {
    setFlagsFromString('--expose-gc');
    const gc: unknown = runInNewContext('gc');
    if (typeof gc === 'function') return () => void gc();
  } catch {
    // not available: runs simply start without a collection
  }
  return () => undefined;
})();

const started = now();
const elapsed = (): number => now() - started;
const log = (msg: string): void => void process.stderr.write(`[compare ${(elapsed() / 1000).toFixed(1)}s] ${msg}\n`);

// The whole comparison stops by itself, whatever hangs: child processes see their stdin close.
const watchdog = setTimeout(() => {
  log(`hard time budget of ${settings.hardBudgetMs / 1000} s exceeded: exiting`);
  process.exit(3);
}, settings.hardBudgetMs);
watchdog.unref();

const selected: SystemName[] = (() => {
  if (flags.only === undefined) return [...SYSTEMS];
  const names = flags.only
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0)
    .flatMap((s) => (s === 'zmq' ? ['zmq-5f', 'zmq-1f'] : [s]));
  for (const n of names) {
    if (!(SYSTEMS as readonly string[]).includes(n)) {
      process.stderr.write(`--only: unknown system "${n}" (known: ${SYSTEMS.join(', ')})\n`);
      process.exit(2);
    }
  }
  return SYSTEMS.filter((s) => names.includes(s));
})();

/** One run's number and its side facts. */
interface RunRecord {
  value: number;
  extra: Record<string, number | boolean>;
}

const results = new Map<string, Map<SystemName, Map<number, RunRecord>>>();
const units = new Map<string, string>();
const notes = new Map<string, string>();
const workloadOrder: string[] = [];
const figures: Figure[] = [];
const skips: Skip[] = [];
const errors = new Map<string, string>();

function record(workload: string, unit: string, system: SystemName, run: number, rec: RunRecord): void {
  if (!results.has(workload)) {
    results.set(workload, new Map());
    workloadOrder.push(workload);
  }
  units.set(workload, unit);
  const bySystem = results.get(workload);
  if (bySystem === undefined) return;
  if (!bySystem.has(system)) bySystem.set(system, new Map());
  bySystem.get(system)?.set(run, rec);
}

function emitSkip(system: SystemName, workload: string, reason: string): void {
  const skip: Skip = { system, workload, skipped: true, reason };
  skips.push(skip);
  process.stdout.write(`${JSON.stringify(skip)}\n`);
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Print the figures of these workloads (all runs done), with the clonekv ratios per run. */
function emit(workloads: readonly string[], systems: readonly SystemName[]): void {
  for (const workload of workloads) {
    const bySystem = results.get(workload);
    const ck = bySystem?.get('clonekv');
    for (const system of systems) {
      const runs = bySystem?.get(system);
      if (runs === undefined || runs.size === 0) {
        const err = errors.get(`${system}/${workload}`);
        if (err !== undefined) emitSkip(system, workload, `failed: ${err}`);
        continue;
      }
      const indices = [...runs.keys()].sort((a, b) => a - b);
      const values = indices.map((i) => runs.get(i)?.value ?? Number.NaN);
      const fig: Figure = {
        system,
        workload,
        value: round(median(values)),
        unit: units.get(workload) ?? '',
        runs: values.map((v) => round(v)),
        spread: (({ min, max }) => ({ min: round(min), max: round(max) }))(spread(values)),
      };
      if (system !== 'clonekv' && ck !== undefined) {
        const ratios = indices
          .filter((i) => ck.has(i))
          .map((i) => (ck.get(i)?.value ?? Number.NaN) / (runs.get(i)?.value ?? Number.NaN))
          .filter((r) => Number.isFinite(r));
        if (ratios.length > 0) {
          const s = spread(ratios);
          fig.ratioClonekv = {
            median: round(median(ratios)),
            min: round(s.min),
            max: round(s.max),
            runs: ratios.map((r) => round(r)),
          };
        }
      }
      const extraKeys = new Set<string>();
      for (const i of indices) for (const k of Object.keys(runs.get(i)?.extra ?? {})) extraKeys.add(k);
      for (const k of extraKeys) {
        fig[k] = indices.map((i) => {
          const v = runs.get(i)?.extra[k];
          return typeof v === 'number' ? round(v) : v;
        });
      }
      const note = notes.get(`${system}/${workload}`) ?? notes.get(workload);
      if (note !== undefined) fig['note'] = note;
      const err = errors.get(`${system}/${workload}`);
      if (err !== undefined) fig['failedRuns'] = err;
      figures.push(fig);
      process.stdout.write(`${JSON.stringify(fig)}\n`);
    }
  }
}

/** Systems still measurable, in a per-run rotated order. */
function rotation(active: Map<SystemName, Adapter>, run: number): SystemName[] {
  const list = [...active.keys()];
  const k = list.length === 0 ? 0 : run % list.length;
  return [...list.slice(k), ...list.slice(0, k)];
}

function runsAllowed(run: number): boolean {
  if (run === 0) return true;
  if (elapsed() < settings.softBudgetMs) return true;
  return false;
}

let budgetCut = false;

async function main(): Promise<void> {
  log(`systems: ${selected.join(', ')}${quick ? ' (quick)' : ''}`);
  const active = new Map<SystemName, Adapter>();
  for (const system of selected) {
    const reason = await MODULES[system].probe();
    if (reason !== null) {
      emitSkip(system, 'all', reason);
      continue;
    }
    const adapter = MODULES[system].create({ keySpace: settings.keySpace });
    try {
      await withTimeout(adapter.open(), 60_000, `${system} open`);
      active.set(system, adapter);
    } catch (err) {
      emitSkip(system, 'all', `reachable but could not be opened: ${describe(err)}`);
      await adapter.close().catch(() => undefined);
    }
  }
  const systems = [...active.keys()];
  try {
    // (1) and (2): sustained throughput, 1 and 16 watchers.
    for (const [workload, watchers, o] of [
      ['throughput-1w1r', 1, settings.throughput1],
      ['throughput-1w16r', 16, settings.throughput16],
    ] as const) {
      for (let run = 0; run < settings.runs; run++) {
        if (!runsAllowed(run)) {
          budgetCut = true;
          break;
        }
        for (const system of rotation(active, run)) {
          const adapter = active.get(system);
          if (adapter === undefined) continue;
          log(`${workload} run ${run + 1}: ${system}`);
          collectGarbage();
          try {
            const r = await withTimeout(
              throughput(adapter, {
                run: run * 100 + watchers,
                watchers,
                total: o.total,
                deadlineMs: o.deadlineMs,
                keySpace: settings.keySpace,
                valueSize: settings.valueSize,
                ackWindow: settings.ackWindow,
                lagWindow: settings.lagWindow,
              }),
              o.deadlineMs + 60_000,
              `${system} ${workload}`,
            );
            record(workload, 'updates/s', system, run, {
              value: r.perWatcher,
              extra: {
                ...(watchers > 1 ? { aggregate: r.aggregate } : {}),
                sent: r.sent,
                lost: r.lost,
                elapsedMs: r.elapsedMs,
                truncated: r.truncated,
              },
            });
          } catch (err) {
            errors.set(`${system}/${workload}`, describe(err));
            log(`  ${system} ${workload} failed: ${describe(err)}`);
          }
        }
      }
      emit([workload], systems);
    }

    // (3): latency at fixed offered rates.
    for (const s of systems.filter((x) => NO_LATENCY.has(x))) {
      emitSkip(s, 'latency', 'reference system measured for throughput only (zmq-5f is the latency ceiling)');
    }
    for (const rate of settings.latency.rates) {
      const tag = `latency-${rate / 1000}k`;
      const names = [`${tag}-p50`, `${tag}-p99`, `${tag}-p999`, `${tag}-achieved`];
      for (let run = 0; run < settings.runs; run++) {
        if (!runsAllowed(run)) {
          budgetCut = true;
          break;
        }
        for (const system of rotation(active, run)) {
          const adapter = active.get(system);
          if (adapter === undefined || NO_LATENCY.has(system)) continue;
          log(`${tag} run ${run + 1}: ${system}`);
          collectGarbage();
          try {
            const r = await withTimeout(
              latency(adapter, {
                run: 1000 + run * 100 + rate / 1000,
                rate,
                durationMs: settings.latency.durationMs,
                drainMs: settings.latency.drainMs,
                keySpace: settings.keySpace,
                valueSize: settings.valueSize,
                ackWindow: settings.ackWindow,
                lagWindow: Math.max(settings.lagWindow, rate),
              }),
              settings.latency.durationMs + settings.latency.drainMs + 60_000,
              `${system} ${tag}`,
            );
            const extra = {
              lost: r.lost,
              notSent: r.notSent,
              achieved: r.achieved,
              // The system could not take the offered rate: latencies include its backlog.
              saturated: r.achieved < 0.95 * rate,
              max: r.max,
              p99Scheduled: r.p99Scheduled,
            };
            record(names[0] ?? '', 'ms', system, run, { value: r.p50, extra });
            record(names[1] ?? '', 'ms', system, run, { value: r.p99, extra });
            record(names[2] ?? '', 'ms', system, run, { value: r.p999, extra });
            record(names[3] ?? '', 'updates/s', system, run, {
              value: r.achieved,
              extra: { offered: rate, saturated: extra.saturated, lost: r.lost },
            });
          } catch (err) {
            for (const n of names) errors.set(`${system}/${n}`, describe(err));
            log(`  ${system} ${tag} failed: ${describe(err)}`);
          }
        }
      }
      emit(names, systems);
    }

    // (4): late joiner, in a child process.
    for (const { keys, runs } of settings.join.sizes) {
      const tag = keys >= 1_000_000 ? `join-${keys / 1_000_000}m` : `join-${keys / 1000}k`;
      const names = [tag, `${tag}-rss`];
      const joinable = [...active.keys()].filter((s) => JOINABLE.has(s));
      if (keys > ETCD_JOIN_CAP && active.has('etcd')) {
        emitSkip('etcd', tag, `capped at ${ETCD_JOIN_CAP / 1000}k keys: loading 1M keys into etcd does not fit the time budget`);
      }
      if (keys >= 1_000_000 && elapsed() > settings.bigJoinBudgetMs) {
        for (const s of joinable) emitSkip(s, tag, 'time budget spent before the 1M join');
        budgetCut = true;
        continue;
      }
      for (let run = 0; run < Math.min(runs, settings.runs); run++) {
        if (!runsAllowed(run)) {
          budgetCut = true;
          break;
        }
        for (const system of rotation(active, run)) {
          const adapter = active.get(system);
          if (adapter === undefined || !JOINABLE.has(system)) continue;
          if (system === 'etcd' && keys > ETCD_JOIN_CAP) continue;
          log(`${tag} run ${run + 1}: ${system}`);
          collectGarbage();
          try {
            const r = await withTimeout(
              join(adapter, keys, settings.join.valueSize, settings.join.timeoutMs),
              settings.join.timeoutMs + 120_000,
              `${system} ${tag}`,
            );
            if (!r.verified) throw new Error(`joiner saw ${r.keys} keys, view not verified`);
            const extra = {
              peakRssMiB: r.peakRssMiB,
              baseRssMiB: r.baseRssMiB,
              seedMs: r.seedMs,
              verifyMs: r.verifyMs,
            };
            record(names[0] ?? '', 'ms', system, run, { value: r.loadMs, extra });
            record(names[1] ?? '', 'MiB', system, run, { value: r.peakRssMiB, extra: { baseRssMiB: r.baseRssMiB } });
          } catch (err) {
            for (const n of names) errors.set(`${system}/${n}`, describe(err));
            log(`  ${system} ${tag} failed: ${describe(err)}`);
          }
        }
      }
      emit(names, systems);
    }
  } finally {
    for (const [system, adapter] of active) {
      log(`closing ${system}`);
      try {
        await withTimeout(adapter.close(), 15_000, `${system} close`);
      } catch (err) {
        log(`closing ${system}: ${describe(err)}`);
      }
    }
  }
  if (budgetCut) log('some runs were dropped to stay inside the time budget');
  if (flags['no-report'] !== true) {
    const input = {
      figures,
      skips,
      workloads: workloadOrder,
      meta: {
        date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
        node: process.versions.node,
        cpus: `${cpus().length} × ${cpus()[0]?.model.trim() ?? 'cpu'}`,
        quick,
        elapsedS: elapsed() / 1000,
        settings: { ...settings, budgetCut },
      },
    };
    writeFileSync(fileURLToPath(new URL('./report.md', import.meta.url)), renderMarkdown(input));
    writeFileSync(fileURLToPath(new URL('./report.svg', import.meta.url)), renderSvg(input));
    log('wrote bench/report.md and bench/report.svg');
  }
  log(`done in ${(elapsed() / 1000).toFixed(1)} s`);
}

try {
  await main();
} catch (err) {
  log(`fatal: ${describe(err)}`);
  process.exitCode = 1;
}
// Every adapter is closed; do not wait for a client library's stray timer.
setTimeout(() => process.exit(), 500).unref();
