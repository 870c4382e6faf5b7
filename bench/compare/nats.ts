/**
 * NATS JetStream KV at 127.0.0.1:4222 (`nats-server -js`), with @nats-io/transport-node and
 * @nats-io/kv.
 *
 * The writer `put`s into bucket `clonekv_bench` (history 1); a write is acknowledged by
 * JetStream's publish ack. Each watcher has its own connection and a `watch` with
 * `include: updates` (no replay). The late joiner opens a `watch` with the last value of every
 * key (the default) on a bucket seeded beforehand, and stops at the last initial entry.
 *
 * Seeding the join bucket uses plain core publishes to the bucket's subjects (`$KV.<b>.<key>`),
 * flushed every 2,000 messages, then waits until the stream holds every key: a million acked
 * puts would take most of the time budget by themselves.
 *
 * @module
 */

import { connect, type NatsConnection } from '@nats-io/transport-node';
import { Kvm, type KV } from '@nats-io/kv';
import type { Adapter, AdapterOptions, JoinSeed, OnValue, SystemModule, WatchGroup } from './types.ts';
import { joinKey, joinValue, now, probeTcp, sleep } from './util.ts';

const SERVER = '127.0.0.1:4222';
const BUCKET = 'clonekv_bench';
const JOIN_BUCKET = 'clonekv_bench_join';

class NatsAdapter implements Adapter {
  readonly system = 'nats' as const;
  readonly serialWrites = false;
  readonly latestOnly = false;
  readonly #keys: string[];
  #nc: NatsConnection | undefined;
  #kv: KV | undefined;

  constructor(options: AdapterOptions) {
    this.#keys = Array.from({ length: options.keySpace }, (_, i) => `k${i}`);
  }

  async open(): Promise<void> {
    const nc = await connect({ servers: SERVER, reconnect: false });
    this.#nc = nc;
    const kvm = new Kvm(nc);
    // Start from an empty bucket every time.
    try {
      await (await kvm.open(BUCKET)).destroy();
    } catch {
      // no such bucket
    }
    this.#kv = await kvm.create(BUCKET, { history: 1 });
  }

  write(key: number, value: string): Promise<number> {
    const kv = this.#kv;
    if (kv === undefined) throw new Error('nats: not open');
    return kv.put(this.#keys[key] ?? '', value);
  }

  async watch(count: number, onValue: OnValue): Promise<WatchGroup> {
    const conns: NatsConnection[] = [];
    const iters: { stop(): void }[] = [];
    const loops: Promise<void>[] = [];
    const close = async (): Promise<void> => {
      for (const it of iters) it.stop();
      await Promise.all(loops);
      await Promise.all(conns.map((c) => c.close()));
    };
    try {
      for (let w = 0; w < count; w++) {
        const nc = await connect({ servers: SERVER, reconnect: false });
        conns.push(nc);
        const kv = await new Kvm(nc).open(BUCKET);
        const it = await kv.watch({ include: 'updates' });
        iters.push(it);
        loops.push(
          (async () => {
            for await (const e of it) onValue(w, e.string());
          })().catch(() => undefined),
        );
      }
    } catch (err) {
      await close();
      throw err;
    }
    return { close };
  }

  async seedJoin(n: number, valueSize: number): Promise<JoinSeed> {
    const nc = this.#nc;
    if (nc === undefined) throw new Error('nats: not open');
    const kvm = new Kvm(nc);
    try {
      await (await kvm.open(JOIN_BUCKET)).destroy();
    } catch {
      // no such bucket
    }
    const kv = await kvm.create(JOIN_BUCKET, { history: 1 });
    const t0 = now();
    const subject = `$KV.${JOIN_BUCKET}.`;
    for (let i = 0; i < n; i++) {
      nc.publish(subject + joinKey(i), joinValue(i, valueSize));
      if (i % 2000 === 1999) await nc.flush();
    }
    await nc.flush();
    // Bounded wait until the stream has stored every key.
    const until = now() + 60_000;
    let stored = 0;
    for (;;) {
      stored = (await kv.status()).values;
      if (stored >= n || now() > until) break;
      await sleep(50);
    }
    if (stored !== n) throw new Error(`nats: join bucket holds ${stored} of ${n} keys`);
    return {
      config: JSON.stringify({ servers: SERVER, bucket: JOIN_BUCKET }),
      seedMs: now() - t0,
      cleanup: async () => void (await kv.destroy()),
    };
  }

  async close(): Promise<void> {
    const nc = this.#nc;
    this.#nc = undefined;
    if (nc === undefined) return;
    try {
      await this.#kv?.destroy();
    } finally {
      await nc.close();
    }
  }
}

/** NATS JetStream KV put → watch. */
export const nats: SystemModule = {
  probe: async () => probeTcp(4222),
  create: (options) => new NatsAdapter(options),
};
