/**
 * The three measurement loops, identical for every system: sustained throughput (1 or 16
 * watchers), write-to-visible latency at a fixed offered rate, and a late joiner in a child
 * process.
 *
 * Topology (one run): the writer and the watchers live in this process and talk to the system
 * over loopback; the system's server is another process (nats-server, redis-server, etcd, the
 * clonekv forwarder child, or for raw zeromq the PUB socket itself). Every loop is bounded by
 * a count and a deadline and stops by itself.
 *
 * Flow control: at most `ackWindow` writes are unacknowledged, and the writer never runs more
 * than `lagWindow` writes ahead of the slowest watcher. The second bound keeps pub/sub systems
 * that acknowledge before delivering (Redis PUBLISH, raw zeromq) lossless and their buffers
 * bounded, and it is the same for everybody.
 *
 * @module
 */

import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { setImmediate as yieldLoop } from 'node:timers/promises';
import type { Adapter, JoinResult } from './types.ts';
import { decodeValue, encodeValue, now, percentile, sleep, waker, type Waker } from './util.ts';

/** Options of {@link throughput}. */
export interface ThroughputOptions {
  run: number;
  watchers: number;
  /** Writes to issue. */
  total: number;
  /** Stop writing (and stop waiting for stragglers) after this long, ms. */
  deadlineMs: number;
  keySpace: number;
  valueSize: number;
  ackWindow: number;
  lagWindow: number;
}

/** What one throughput run measured. */
export interface ThroughputResult {
  /** Updates per second seen by every watcher (the slowest watcher's count / elapsed). */
  perWatcher: number;
  /** Sum over watchers of updates seen per second. */
  aggregate: number;
  sent: number;
  acked: number;
  /** Writes the slowest watcher never saw (for redis-csc: superseded values, a cache's nature). */
  lost: number;
  elapsedMs: number;
  /** The deadline cut the run short. */
  truncated: boolean;
}

/** Shared state of the writer and the watchers of one run. */
class Flow {
  sent = 0;
  acked = 0;
  inflight = 0;
  errors = 0;
  firstError: unknown = undefined;
  /** Highest index seen, per watcher (drives the lag window). */
  readonly last: Float64Array;
  /** Distinct indices seen, per watcher. */
  readonly count: Float64Array;
  /** Which indices each watcher has seen: concurrent writes may be applied out of order. */
  readonly seen: Uint8Array[];
  readonly warm: Uint8Array;
  lastReceiveAt = 0;
  #blocked: Waker | undefined;

  constructor(
    readonly run: number,
    readonly watchers: number,
    readonly total: number,
  ) {
    this.last = new Float64Array(watchers).fill(-1);
    this.count = new Float64Array(watchers);
    this.seen = Array.from({ length: watchers }, () => new Uint8Array(total));
    this.warm = new Uint8Array(watchers);
  }

  /** Fewest distinct indices seen by any watcher. */
  minCount(): number {
    let min = Number.POSITIVE_INFINITY;
    for (const v of this.count) if (v < min) min = v;
    return min;
  }

  /**
   * Whether the watchers may still be waiting for something: a change feed must deliver every
   * acknowledged write; a cache (`latestOnly`) is done once the last write is visible.
   */
  pending(latestOnly: boolean): boolean {
    if (this.inflight > 0) return true;
    if (latestOnly) return this.minLast() < this.sent - 1;
    return this.minCount() < this.acked;
  }

  /** Highest index seen by the slowest watcher. */
  minLast(): number {
    let min = Number.POSITIVE_INFINITY;
    for (const v of this.last) if (v < min) min = v;
    return min;
  }

  allWarm(): boolean {
    for (const w of this.warm) if (w === 0) return false;
    return true;
  }

  /** Wake the writer if it is waiting. */
  kick(): void {
    const b = this.#blocked;
    if (b !== undefined) {
      this.#blocked = undefined;
      b.wake();
    }
  }

  /** Wait for an ack or a delivery, at most `ms`. */
  async pause(ms: number): Promise<void> {
    const b = waker();
    this.#blocked = b;
    const timer = setTimeout(b.wake, ms);
    await b.promise;
    clearTimeout(timer);
    this.#blocked = undefined;
  }

  onAck = (): void => {
    this.inflight--;
    this.acked++;
    this.kick();
  };

  onError = (err: unknown): void => {
    this.inflight--;
    this.errors++;
    this.firstError ??= err;
    this.kick();
  };
}

/**
 * Write warm-up values (index -1) to key 0 until every watcher has seen one: subscriptions are
 * then known to be live end to end (zeromq's slow joiner, NATS consumer creation, cache warm).
 */
async function warmUp(adapter: Adapter, flow: Flow, valueSize: number, deadlineMs = 10_000): Promise<void> {
  const until = now() + deadlineMs;
  while (!flow.allWarm()) {
    if (now() > until) throw new Error(`watchers not live after ${deadlineMs} ms (warm-up unseen)`);
    const p = adapter.write(0, encodeValue(flow.run, -1, now(), valueSize));
    if (p !== undefined) await p;
    await sleep(5);
  }
}

/** Record one received value into `flow`; returns the decoded index, or -2 if ignored. */
function receive(flow: Flow, watcher: number, text: string): number {
  const d = decodeValue(text);
  if (d === null || d.run !== flow.run) return -2;
  if (d.index < 0) {
    flow.warm[watcher] = 1;
    return -2;
  }
  const seen = flow.seen[watcher];
  // Count a value once: a cache (redis-csc) can hand the same latest value twice.
  if (seen === undefined || d.index >= flow.total || seen[d.index] === 1) return -2;
  seen[d.index] = 1;
  flow.count[watcher] = (flow.count[watcher] ?? 0) + 1;
  if (d.index > (flow.last[watcher] ?? -1)) flow.last[watcher] = d.index;
  flow.lastReceiveAt = now();
  return d.index;
}

/**
 * Sustained updates: one writer, `watchers` watchers, `total` writes with bounded windows.
 */
export async function throughput(adapter: Adapter, o: ThroughputOptions): Promise<ThroughputResult> {
  const flow = new Flow(o.run, o.watchers, o.total);
  const group = await adapter.watch(o.watchers, (w, text) => {
    receive(flow, w, text);
    flow.kick();
  });
  try {
    await warmUp(adapter, flow, o.valueSize);
    const t0 = now();
    const deadline = t0 + o.deadlineMs;
    let truncated = false;
    while (flow.sent < o.total) {
      if (flow.inflight >= o.ackWindow || flow.sent - 1 - flow.minLast() >= o.lagWindow) {
        if (now() > deadline) {
          truncated = true;
          break;
        }
        await flow.pause(5);
        continue;
      }
      const i = flow.sent++;
      await issueWrite(adapter, flow, i % o.keySpace, encodeValue(o.run, i, now(), o.valueSize));
      if ((i & 255) === 255) {
        if (now() > deadline) {
          truncated = true;
          break;
        }
        await yieldLoop();
      }
    }
    // Drain: every ack back and every watcher at the last index, or the deadline (+2 s grace).
    const drainUntil = Math.max(deadline, now()) + 2000;
    const lastIndex = flow.sent - 1;
    while (flow.pending(adapter.latestOnly) && now() < drainUntil) await flow.pause(5);
    if (flow.errors > 0) throw new Error(`${flow.errors} writes failed: ${String(flow.firstError)}`);
    const elapsedMs = Math.max(1, flow.lastReceiveAt - t0);
    const minCount = flow.minCount();
    let sum = 0;
    for (const c of flow.count) sum += c;
    return {
      perWatcher: (minCount / elapsedMs) * 1000,
      aggregate: (sum / elapsedMs) * 1000,
      sent: flow.sent,
      acked: flow.acked,
      lost: flow.sent - minCount,
      elapsedMs,
      truncated: truncated || flow.minLast() < lastIndex,
    };
  } finally {
    await group.close();
  }
}

/** Options of {@link latency}. */
export interface LatencyOptions {
  run: number;
  /** Offered rate, updates/s. */
  rate: number;
  durationMs: number;
  keySpace: number;
  valueSize: number;
  ackWindow: number;
  lagWindow: number;
  /** How long to wait for stragglers after the last write, ms. */
  drainMs: number;
}

/** What one latency run measured (milliseconds). */
export interface LatencyResult {
  p50: number;
  p99: number;
  p999: number;
  max: number;
  /** p99 measured from each write's scheduled time (includes writer queueing if saturated). */
  p99Scheduled: number;
  offered: number;
  /** Rate actually written, updates/s. */
  achieved: number;
  sent: number;
  received: number;
  /** Written (and acknowledged) but never seen by the watcher. */
  lost: number;
  /** Scheduled but not written before the deadline (the system could not keep the rate). */
  notSent: number;
}

/**
 * Write-to-visible latency at a fixed offered rate, one watcher in this process. Each value
 * carries `performance.now()` at its write; the watcher subtracts it on arrival.
 */
export async function latency(adapter: Adapter, o: LatencyOptions): Promise<LatencyResult> {
  const total = Math.round((o.rate * o.durationMs) / 1000);
  const flow = new Flow(o.run, 1, total);
  const lat = new Float64Array(total);
  const sched = new Float64Array(total);
  const seen = flow.seen[0] ?? new Uint8Array(total);
  let received = 0;
  let t0 = 0;
  const interval = 1000 / o.rate;
  const group = await adapter.watch(1, (w, text) => {
    const t = now();
    const d = decodeValue(text);
    if (d === null || d.run !== o.run) return;
    if (d.index < 0) {
      flow.warm[w] = 1;
      return;
    }
    if (d.index >= total || seen[d.index] === 1) return;
    seen[d.index] = 1;
    if (d.index > (flow.last[0] ?? -1)) flow.last[0] = d.index;
    flow.count[0] = received + 1;
    lat[received] = t - d.sentAt;
    sched[received] = t - (t0 + d.index * interval);
    received++;
    flow.kick();
  });
  try {
    await warmUp(adapter, flow, o.valueSize);
    t0 = now();
    // A little grace for timer granularity: the last writes are due just before the end.
    const stopAt = t0 + o.durationMs + Math.min(250, o.durationMs / 10);
    let lastSendAt = t0;
    while (flow.sent < total) {
      const t = now();
      if (t > stopAt) break;
      const due = Math.min(total, Math.floor((t - t0) / interval) + 1);
      while (flow.sent < due && flow.inflight < o.ackWindow && flow.sent - 1 - flow.minLast() < o.lagWindow) {
        const i = flow.sent++;
        lastSendAt = now();
        await issueWrite(adapter, flow, i % o.keySpace, encodeValue(o.run, i, lastSendAt, o.valueSize));
      }
      if (flow.sent < total) {
        if (flow.sent < due) await flow.pause(1); // blocked by a window: wait for an ack or a delivery
        else await sleep(Math.max(0, Math.min(1, t0 + flow.sent * interval - now())));
      }
    }
    const drainUntil = now() + o.drainMs;
    while (flow.pending(adapter.latestOnly) && now() < drainUntil) await flow.pause(5);
    if (flow.errors > 0) throw new Error(`${flow.errors} writes failed: ${String(flow.firstError)}`);
    const samples = lat.subarray(0, received).sort();
    const scheduled = sched.subarray(0, received).sort();
    const writeSpan = Math.max(lastSendAt - t0, interval);
    return {
      p50: percentile(samples, 0.5),
      p99: percentile(samples, 0.99),
      p999: percentile(samples, 0.999),
      max: samples[samples.length - 1] ?? Number.NaN,
      p99Scheduled: percentile(scheduled, 0.99),
      offered: o.rate,
      achieved: ((flow.sent - 1) / writeSpan) * 1000,
      sent: flow.sent,
      received,
      lost: flow.acked - received,
      notSent: total - flow.sent,
    };
  } finally {
    await group.close();
  }
}

const JOINER = fileURLToPath(new URL('./joiner.ts', import.meta.url));

/**
 * Seed `n` keys, then time a late joiner in its own process (so its RSS is its own).
 * The child is killed if it does not answer within `timeoutMs`.
 */
export async function join(
  adapter: Adapter,
  n: number,
  valueSize: number,
  timeoutMs: number,
): Promise<JoinResult & { seedMs: number }> {
  if (adapter.seedJoin === undefined) throw new Error(`${adapter.system} has no join`);
  const seed = await adapter.seedJoin(n, valueSize);
  try {
    const result = await runChild(
      [JOINER, adapter.system, String(n), String(valueSize), seed.config],
      timeoutMs,
    );
    return { ...result, seedMs: seed.seedMs };
  } finally {
    await seed.cleanup();
  }
}

function runChild(args: string[], timeoutMs: number): Promise<JoinResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk;
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      err = (err + chunk).slice(-4000);
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`joiner gave no result within ${timeoutMs} ms`));
    }, timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      const line = out.trim().split('\n').pop() ?? '';
      try {
        const result = JSON.parse(line) as JoinResult;
        if (result.error !== undefined) reject(new Error(`joiner: ${result.error}`));
        else resolve(result);
      } catch {
        reject(new Error(`joiner exited ${code} without a result: ${err.trim().slice(-500)}`));
      }
    });
  });
}

/**
 * Issues one write and accounts for it: awaited at once for adapters whose writes must be
 * serial, otherwise counted in flight until its acknowledgement.
 */
async function issueWrite(
  adapter: Adapter,
  flow: Flow,
  key: number,
  value: string,
): Promise<void> {
  const p = adapter.write(key, value);
  if (p === undefined) {
    flow.acked++;
  } else if (adapter.serialWrites) {
    await p;
    flow.acked++;
  } else {
    flow.inflight++;
    p.then(flow.onAck, flow.onError);
  }
}
