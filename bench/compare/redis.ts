/**
 * Redis at 127.0.0.1:6379, measured two ways.
 *
 * - `redis`: the writer pipelines `SET key value` + `PUBLISH clonekv-bench:updates key\tvalue`
 *   (`multi().set().publish().execAsPipeline()`: one pipeline, no MULTI/EXEC); each watcher is a
 *   connection SUBSCRIBEd to the channel. A write is acknowledged by the pipeline's replies.
 * - `redis-csc`: client-side caching. Each watcher is a RESP3 connection with the client's
 *   tracking cache (`CLIENT TRACKING ON`); it reads every key once, then on each invalidation
 *   push it GETs the key again (a miss, so it goes to the server) and sees the new value. A cache
 *   only promises the latest value: writes superseded before the re-read are reported as lost.
 *
 * Client: `redis` (node-redis, v5+ API) rather than ioredis, because node-redis speaks RESP3 and
 * ships client-side caching with invalidation events itself (`clientSideCache`), while ioredis is
 * RESP2-only and would need a hand-made REDIRECT connection for tracking; node-redis also
 * pipelines every command issued in the same tick, so SET + PUBLISH need no explicit batch.
 *
 * The late joiner reads one hash with HGETALL (seeded with HSET in batches of 1,000 fields).
 *
 * @module
 */

import { BasicClientSideCache, createClient } from 'redis';
import type { Adapter, AdapterOptions, JoinSeed, OnValue, SystemModule, WatchGroup } from './types.ts';
import { joinKey, joinValue, now, probeTcp } from './util.ts';

const HOST = '127.0.0.1';
const PORT = 6379;
const CHANNEL = 'clonekv-bench:updates';
const KEY_PREFIX = 'clonekv-bench:k';
const JOIN_HASH = 'clonekv-bench:join';

type Client = ReturnType<typeof createClient>;

function client(): Client {
  // No reconnection: a lost server fails the run instead of hanging it.
  return createClient({ socket: { host: HOST, port: PORT, reconnectStrategy: false } });
}

/** The part of a client (RESP2 or RESP3) needed to close it. */
interface Closable {
  readonly isOpen: boolean;
  close(): Promise<void>;
  destroy(): void;
}

async function closeQuietly(c: Closable): Promise<void> {
  try {
    if (c.isOpen) await c.close();
  } catch {
    c.destroy();
  }
}

class RedisAdapter implements Adapter {
  readonly serialWrites = false;
  get latestOnly(): boolean {
    return this.system === 'redis-csc';
  }
  readonly #keys: string[];
  #writer: Client | undefined;
  #onError = (err: unknown): void => {
    this.#lastError = err;
  };
  #lastError: unknown = undefined;

  constructor(
    readonly system: 'redis' | 'redis-csc',
    options: AdapterOptions,
  ) {
    this.#keys = Array.from({ length: options.keySpace }, (_, i) => `${KEY_PREFIX}${i}`);
  }

  async open(): Promise<void> {
    const w = client();
    w.on('error', this.#onError);
    await w.connect();
    this.#writer = w;
    // Every key exists before a watcher starts (the cache variant reads them all once).
    await Promise.all(this.#keys.map((k) => w.set(k, '')));
  }

  write(key: number, value: string): Promise<unknown> {
    const w = this.#writer;
    if (w === undefined) throw new Error('redis: not open');
    const k = this.#keys[key] ?? '';
    if (this.system === 'redis-csc') return w.set(k, value);
    // One pipeline (no MULTI/EXEC) per update: node-redis's cost is per promise, so this is
    // ~4x faster than two separately awaited commands, and it is what "pipelined" means.
    return w.multi().set(k, value).publish(CHANNEL, `${k}\t${value}`).execAsPipeline();
  }

  async watch(count: number, onValue: OnValue): Promise<WatchGroup> {
    return this.system === 'redis' ? this.#subscribers(count, onValue) : this.#caches(count, onValue);
  }

  async #subscribers(count: number, onValue: OnValue): Promise<WatchGroup> {
    const subs: Client[] = [];
    try {
      for (let w = 0; w < count; w++) {
        const sub = client();
        sub.on('error', this.#onError);
        subs.push(sub);
        await sub.connect();
        await sub.subscribe(CHANNEL, (message) => onValue(w, message));
      }
    } catch (err) {
      await Promise.all(subs.map(closeQuietly));
      throw err;
    }
    return { close: async () => void (await Promise.all(subs.map(closeQuietly))) };
  }

  async #caches(count: number, onValue: OnValue): Promise<WatchGroup> {
    const clients: Closable[] = [];
    try {
      for (let w = 0; w < count; w++) {
        const cache = new BasicClientSideCache({ ttl: 0, maxEntries: 0 });
        const c = createClient({
          RESP: 3,
          clientSideCache: cache,
          socket: { host: HOST, port: PORT, reconnectStrategy: false },
        });
        c.on('error', this.#onError);
        clients.push(c);
        await c.connect();
        // Read every key once: tracking starts for keys this connection has read.
        await Promise.all(this.#keys.map((k) => c.get(k)));
        cache.on('invalidate', (key: unknown) => {
          if (key === null || key === undefined || !c.isOpen) return;
          c.get(String(key)).then(
            (value) => {
              if (typeof value === 'string') onValue(w, value);
            },
            this.#onError,
          );
        });
      }
    } catch (err) {
      await Promise.all(clients.map(closeQuietly));
      throw err;
    }
    return { close: async () => void (await Promise.all(clients.map(closeQuietly))) };
  }

  async seedJoin(n: number, valueSize: number): Promise<JoinSeed> {
    const w = this.#writer;
    if (w === undefined) throw new Error('redis: not open');
    await w.del(JOIN_HASH);
    const t0 = now();
    const batch = 1000;
    const pending: Promise<unknown>[] = [];
    for (let start = 0; start < n; start += batch) {
      const fields: Record<string, string> = {};
      for (let i = start; i < Math.min(n, start + batch); i++) fields[joinKey(i)] = joinValue(i, valueSize);
      pending.push(w.hSet(JOIN_HASH, fields));
      if (pending.length >= 16) await pending.shift();
    }
    await Promise.all(pending);
    const count = await w.hLen(JOIN_HASH);
    if (count !== n) throw new Error(`redis: seeded ${count} of ${n} fields`);
    return {
      config: JSON.stringify({ host: HOST, port: PORT, hash: JOIN_HASH }),
      seedMs: now() - t0,
      cleanup: async () => {
        // UNLINK frees the hash in the background, not blocking the server for a second.
        await w.unlink(JOIN_HASH);
      },
    };
  }

  async close(): Promise<void> {
    const w = this.#writer;
    this.#writer = undefined;
    if (w === undefined) return;
    try {
      if (w.isOpen) await w.unlink([...this.#keys, JOIN_HASH]);
    } finally {
      await closeQuietly(w);
    }
  }
}

const probe = async (): Promise<string | null> => probeTcp(PORT, HOST);

/** Redis SET + PUBLISH → SUBSCRIBE. */
export const redisPubSub: SystemModule = { probe, create: (o) => new RedisAdapter('redis', o) };

/** Redis SET → client-side cache invalidation → GET. */
export const redisCsc: SystemModule = { probe, create: (o) => new RedisAdapter('redis-csc', o) };
