/**
 * etcd at 127.0.0.1:2379 with the `etcd3` client. The bench starts nothing: it only probes the
 * port and reports etcd as skipped when nobody listens.
 *
 * The writer `put`s under `clonekv-bench/`; a write is acknowledged by the put's response (after
 * the raft commit). Each watcher is its own client (own gRPC channel) with a prefix watch.
 * The late joiner does a range get of the prefix in pages of 10,000 keys pinned to the revision
 * of the first page, which is one consistent view. The join is capped at 100,000 keys: seeding
 * and reading 1M keys in etcd does not fit in the bench's time budget.
 *
 * @module
 */

import { Etcd3 } from 'etcd3';
import type { Adapter, AdapterOptions, JoinSeed, OnValue, SystemModule, WatchGroup } from './types.ts';
import { joinKey, joinValue, now, probeTcp } from './util.ts';

const HOSTS = 'http://127.0.0.1:2379';
const PREFIX = 'clonekv-bench/';
const JOIN_PREFIX = 'clonekv-bench-join/';
/** etcd's default `--max-txn-ops`. */
const TXN_OPS = 128;

function newClient(): Etcd3 {
  // No retry policy games: a failing call fails the run rather than hiding behind retries.
  return new Etcd3({ hosts: HOSTS, dialTimeout: 3000 });
}

class EtcdAdapter implements Adapter {
  readonly system = 'etcd' as const;
  readonly serialWrites = false;
  readonly latestOnly = false;
  readonly #keys: string[];
  #client: Etcd3 | undefined;

  constructor(options: AdapterOptions) {
    this.#keys = Array.from({ length: options.keySpace }, (_, i) => `${PREFIX}k${i}`);
  }

  async open(): Promise<void> {
    const c = newClient();
    this.#client = c;
    await c.delete().prefix(PREFIX);
  }

  write(key: number, value: string): Promise<unknown> {
    const c = this.#client;
    if (c === undefined) throw new Error('etcd: not open');
    return c.put(this.#keys[key] ?? '').value(value).exec();
  }

  async watch(count: number, onValue: OnValue): Promise<WatchGroup> {
    const clients: Etcd3[] = [];
    const watchers: { cancel(): Promise<void> }[] = [];
    const close = async (): Promise<void> => {
      await Promise.allSettled(watchers.map((w) => w.cancel()));
      for (const c of clients) c.close();
    };
    try {
      for (let w = 0; w < count; w++) {
        const c = newClient();
        clients.push(c);
        const watcher = await c.watch().prefix(PREFIX).create();
        watcher.on('put', (kv) => onValue(w, kv.value.toString()));
        watcher.on('error', () => undefined);
        watchers.push(watcher);
      }
    } catch (err) {
      await close();
      throw err;
    }
    return { close };
  }

  async seedJoin(n: number, valueSize: number): Promise<JoinSeed> {
    const c = this.#client;
    if (c === undefined) throw new Error('etcd: not open');
    await c.delete().prefix(JOIN_PREFIX);
    const t0 = now();
    const pending: Promise<unknown>[] = [];
    for (let start = 0; start < n; start += TXN_OPS) {
      const success = [];
      for (let i = start; i < Math.min(n, start + TXN_OPS); i++) {
        success.push({
          request_put: { key: Buffer.from(JOIN_PREFIX + joinKey(i)), value: Buffer.from(joinValue(i, valueSize)) },
        });
      }
      pending.push(c.kv.txn({ success }));
      if (pending.length >= 8) await pending.shift();
    }
    await Promise.all(pending);
    const count = await c.getAll().prefix(JOIN_PREFIX).count();
    if (count !== n) throw new Error(`etcd: seeded ${count} of ${n} keys`);
    return {
      config: JSON.stringify({ hosts: HOSTS, prefix: JOIN_PREFIX }),
      seedMs: now() - t0,
      cleanup: async () => void (await c.delete().prefix(JOIN_PREFIX)),
    };
  }

  async close(): Promise<void> {
    const c = this.#client;
    this.#client = undefined;
    if (c === undefined) return;
    try {
      const res = await c.delete().prefix(PREFIX);
      // Drop the history the bench wrote, so repeated runs do not grow etcd's database.
      await c.kv.compact({ revision: res.header.revision });
    } finally {
      c.close();
    }
  }
}

/** etcd put → watch. */
export const etcd: SystemModule = {
  probe: async () => probeTcp(2379),
  create: (options) => new EtcdAdapter(options),
};
