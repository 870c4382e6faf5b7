/**
 * Shapes shared by the comparison bench: the adapter every system implements, and the figures
 * it prints.
 *
 * @module
 */

/** Every column of the comparison. */
export const SYSTEMS = ['clonekv', 'nats', 'redis', 'redis-csc', 'etcd', 'zmq-5f', 'zmq-1f'] as const;

/** One system (or one way of using a system) measured by the bench. */
export type SystemName = (typeof SYSTEMS)[number];

/**
 * Called by a watcher for every value it sees. `watcher` is the watcher's index in its group,
 * `value` the text written by {@link Adapter.write} (a system may prefix it with `key\t`).
 */
export type OnValue = (watcher: number, value: string) => void;

/** A group of watchers opened by {@link Adapter.watch}; `close()` releases all of them. */
export interface WatchGroup {
  close(): Promise<void>;
}

/** What a system needs to run a late-joiner measurement. */
export interface JoinSeed {
  /** Arguments for `joiner.ts` after the system name (JSON of the connection details). */
  readonly config: string;
  /** How long seeding took, ms (reported, never part of the figure). */
  readonly seedMs: number;
  /** Delete the data set (or stop the server child holding it). */
  cleanup(): Promise<void>;
}

/**
 * One system under test, seen the same way by every workload.
 *
 * Keys are numbered `0 .. keySpace-1`; each adapter maps a number to its native key once, up
 * front, so building key strings costs nothing during a run.
 */
export interface Adapter {
  readonly system: SystemName;
  /**
   * `true` when {@link write} must settle before the next call (a zeromq socket allows one
   * pending send); otherwise writes are issued concurrently up to the ack window.
   */
  readonly serialWrites: boolean;
  /**
   * `true` for a cache that only promises the latest value of a key (redis-csc): a watcher may
   * never see a write overwritten before it re-read the key. `false` for a change feed.
   */
  readonly latestOnly: boolean;
  /** Connect the writer (and start a server child, for clonekv). */
  open(): Promise<void>;
  /**
   * Write `value` under key number `key`. Resolves when the system acknowledged it (sequenced,
   * stored, published), or `undefined` for a fire-and-forget write.
   */
  write(key: number, value: string): PromiseLike<unknown> | undefined;
  /** Open `count` watchers, each on its own connection, calling `onValue` for every change. */
  watch(count: number, onValue: OnValue): Promise<WatchGroup>;
  /** Seed `n` keys of `valueSize` bytes for a late joiner; absent where a join makes no sense. */
  seedJoin?(n: number, valueSize: number): Promise<JoinSeed>;
  /** Close every connection and child process. Idempotent. */
  close(): Promise<void>;
}

/** How a system module is loaded: a reachability probe, then a factory. */
export interface SystemModule {
  /** `null` when the system can be measured, else why it is skipped. */
  probe(): Promise<string | null>;
  create(options: AdapterOptions): Adapter;
}

/** Options common to all adapters. */
export interface AdapterOptions {
  /** Number of distinct keys written round-robin by the update workloads. */
  readonly keySpace: number;
}

/** One printed figure (one JSON line). */
export interface Figure {
  system: SystemName;
  workload: string;
  value: number;
  unit: string;
  runs: number[];
  spread: { min: number; max: number };
  /** clonekv/this system, per run index taken in the same invocation: median and min–max. */
  ratioClonekv?: { median: number; min: number; max: number; runs: number[] };
  /** Extra per-figure facts (lost updates, achieved rate, peak RSS, notes). */
  [extra: string]: unknown;
}

/** A system or figure not measured, and why. */
export interface Skip {
  system: SystemName;
  workload: string;
  skipped: true;
  reason: string;
}

/** What a joiner child prints as its last stdout line. */
export interface JoinResult {
  system: string;
  keys: number;
  /** From the first request to a complete view, ms. */
  loadMs: number;
  /** Verifying every key and value afterwards, ms (not part of loadMs). */
  verifyMs: number;
  verified: boolean;
  /** Peak RSS of the joiner process (VmHWM), MiB. */
  peakRssMiB: number;
  /** RSS right before the join started, MiB. */
  baseRssMiB: number;
  error?: string;
}
