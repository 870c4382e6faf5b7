/**
 * clonekv: a forwarder in a child process (`forwarder-child.ts`), the writer and the watchers as
 * `Peer`s in the bench process.
 *
 * Topology: writer Peer --ROUTER P--> forwarder child --XPUB P+1--> watcher Peers.
 * A write is acknowledged when `peer.set` resolves (the forwarder sequenced it). Watchers use
 * `peer.on('update')`, which fires for every applied change.
 *
 * The 16-watcher workload keeps all 16 peers in the bench process, as every other system keeps
 * its 16 subscriptions there: the per-watcher figure is then limited by the same single event
 * loop for everybody, and the writer can bound its lead over the slowest watcher without any
 * IPC. (A child holding the watchers would measure the forwarder's fan-out better, but the
 * comparison would no longer be like for like.)
 *
 * The late joiner gets a fresh forwarder child seeded in-process with `Forwarder.load`, so the
 * seeding costs no network round trips and the child's state holds only the join keys.
 *
 * @module
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Peer, type ForwarderOptions } from '../../src/index.ts';
import type { Adapter, AdapterOptions, JoinSeed, OnValue, SystemModule, WatchGroup } from './types.ts';

const CHILD = fileURLToPath(new URL('./forwarder-child.ts', import.meta.url));
const SUBTREE = 'bench/';
const WRITER_SUBTREE = 'bench-writer/';
const JOIN_PREFIX = 'join/';

/** A forwarder child process and the way to talk to it. */
class ForwarderChild {
  readonly #child: ChildProcess;
  readonly #lines: AsyncIterator<string>;

  private constructor(child: ChildProcess) {
    this.#child = child;
    if (child.stdout === null) throw new Error('forwarder child has no stdout');
    this.#lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  }

  /** Start a child and wait (at most `timeoutMs`) for its endpoint line. */
  static async start(timeoutMs = 30_000, forwarder: ForwarderOptions = {}): Promise<{ child: ForwarderChild; endpoint: string }> {
    const env = { ...process.env, CLONEKV_BENCH_FORWARDER: JSON.stringify(forwarder) };
    const proc = spawn(process.execPath, ['--import', 'tsx', CHILD], { stdio: ['pipe', 'pipe', 'inherit'], env });
    const child = new ForwarderChild(proc);
    try {
      const reply = await child.#next(timeoutMs);
      if (typeof reply['endpoint'] !== 'string') throw new Error(`forwarder child said ${JSON.stringify(reply)}`);
      return { child, endpoint: reply['endpoint'] };
    } catch (err) {
      await child.stop();
      throw err;
    }
  }

  async #next(timeoutMs: number): Promise<Record<string, unknown>> {
    let timer: NodeJS.Timeout | undefined;
    const exited = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`forwarder child: no answer within ${timeoutMs} ms`)), timeoutMs);
      this.#child.once('exit', (code) => reject(new Error(`forwarder child exited (${code})`)));
    });
    try {
      const line = await Promise.race([this.#lines.next(), exited]);
      if (line.done === true) throw new Error('forwarder child closed its output');
      return JSON.parse(line.value) as Record<string, unknown>;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Seed `n` keys under `prefix` in the child; resolves with the child's own load time. */
  async load(n: number, valueSize: number, prefix: string, timeoutMs: number): Promise<number> {
    this.#child.stdin?.write(`${JSON.stringify({ load: n, valueSize, prefix })}\n`);
    const reply = await this.#next(timeoutMs);
    if (typeof reply['loaded'] !== 'number') throw new Error(`forwarder load: ${JSON.stringify(reply)}`);
    return Number(reply['ms']);
  }

  /** End stdin (the child closes the forwarder and exits); SIGKILL after 5 s. */
  async stop(): Promise<void> {
    const proc = this.#child;
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    proc.stdin?.end();
    const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
}

async function closePeers(peers: readonly Peer[]): Promise<void> {
  await Promise.allSettled(peers.map((p) => p.close()));
}

class ClonekvAdapter implements Adapter {
  readonly system = 'clonekv' as const;
  readonly serialWrites = false;
  readonly latestOnly = false;
  readonly #keys: string[];
  #child: ForwarderChild | undefined;
  #endpoint = '';
  #writer: Peer | undefined;
  readonly #forwarder: ForwarderOptions;

  constructor(options: AdapterOptions, forwarder: ForwarderOptions = {}) {
    this.#keys = Array.from({ length: options.keySpace }, (_, i) => `${SUBTREE}k${i}`);
    this.#forwarder = forwarder;
  }

  async open(): Promise<void> {
    const { child, endpoint } = await ForwarderChild.start(30_000, this.#forwarder);
    this.#child = child;
    this.#endpoint = endpoint;
    // The writer only writes (like the Redis and NATS writers): it holds a subtree no bench key
    // is under, so its writes resolve on the forwarder's acknowledgement instead of waiting for
    // the update to come back to it as well.
    const writer = new Peer({ server: endpoint, subtree: WRITER_SUBTREE });
    this.#writer = writer;
    await writer.ready();
  }

  write(key: number, value: string): Promise<number> {
    const w = this.#writer;
    if (w === undefined) throw new Error('clonekv: not open');
    return w.set(this.#keys[key] ?? '', value);
  }

  async watch(count: number, onValue: OnValue): Promise<WatchGroup> {
    if (this.#endpoint === '') throw new Error('clonekv: not open');
    const peers: Peer[] = [];
    try {
      for (let w = 0; w < count; w++) {
        const peer = new Peer({ server: this.#endpoint, subtree: SUBTREE });
        peers.push(peer);
        peer.on('update', (e) => {
          if (typeof e.value === 'string') onValue(w, e.value);
        });
      }
      await Promise.all(peers.map((p) => p.ready()));
    } catch (err) {
      await closePeers(peers);
      throw err;
    }
    return { close: () => closePeers(peers) };
  }

  async seedJoin(n: number, valueSize: number): Promise<JoinSeed> {
    const { child, endpoint } = await ForwarderChild.start();
    try {
      const seedMs = await child.load(n, valueSize, JOIN_PREFIX, 120_000);
      return {
        config: JSON.stringify({ endpoint, prefix: JOIN_PREFIX }),
        seedMs,
        cleanup: () => child.stop(),
      };
    } catch (err) {
      await child.stop();
      throw err;
    }
  }

  async close(): Promise<void> {
    const writer = this.#writer;
    const child = this.#child;
    this.#writer = undefined;
    this.#child = undefined;
    try {
      await writer?.close();
    } finally {
      await child?.stop();
    }
  }
}

/** clonekv Peer.set → forwarder child → Peer 'update'. */
export const clonekv: SystemModule = {
  probe: () => Promise.resolve(null), // the core is part of this repository: always there
  create: (options) => new ClonekvAdapter(options),
};

/** A clonekv adapter whose forwarder child takes extra options (bench/durable.ts: dataDir, durability). */
export function clonekvWith(options: AdapterOptions, forwarder: ForwarderOptions): Adapter {
  return new ClonekvAdapter(options, forwarder);
}
