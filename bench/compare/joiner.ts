/**
 * A late joiner, run in its own process so the peak RSS it reports is its own.
 *
 * Usage: `npx tsx bench/compare/joiner.ts <system> <keys> <valueSize> '<config json>'`
 * (started by the comparison bench; the config comes from the system's `seedJoin`).
 *
 * It connects, notes its RSS, then times the load of a complete view of `<keys>` keys the way a
 * client of that system naturally would, verifies every key and value (untimed), closes its
 * connection and prints one JSON line ({@link JoinResult}). Peak RSS is VmHWM from
 * /proc/self/status. The whole child gives up after 150 s.
 *
 * @module
 */

import type { JoinResult } from './types.ts';
import { joinKey, joinValue, now, peakRssMiB } from './util.ts';

const [system = '', keysArg = '0', sizeArg = '100', configArg = '{}'] = process.argv.slice(2);
const n = Number(keysArg);
const valueSize = Number(sizeArg);
const config = JSON.parse(configArg) as Record<string, string>;

/** A loaded view: how many keys, and a lookup by unprefixed join key. */
interface View {
  size: number;
  get(key: string): string | undefined;
}

/** Time from `t0` to a complete view, then close. */
interface Loaded {
  view: View;
  loadMs: number;
  close(): Promise<void>;
}

type Loader = (onConnected: () => number) => Promise<Loaded>;

const loaders: Record<string, Loader> = {
  async clonekv(started) {
    const { Peer } = await import('../../src/index.ts');
    const prefix = config['prefix'] ?? 'join/';
    const t0 = started();
    const peer = new Peer({ server: config['endpoint'] ?? '', subtree: prefix });
    await peer.ready();
    const loadMs = now() - t0;
    const view: View = {
      size: peer.size,
      get(key) {
        const v: unknown = peer.get(prefix + key);
        // get() may hand back the value or an Entry holding it.
        const value = typeof v === 'object' && v !== null && 'value' in v ? (v as { value: unknown }).value : v;
        return typeof value === 'string' ? value : undefined;
      },
    };
    return { view, loadMs, close: () => peer.close() };
  },

  async nats(started) {
    const { connect } = await import('@nats-io/transport-node');
    const { Kvm } = await import('@nats-io/kv');
    const nc = await connect({ servers: config['servers'] ?? '127.0.0.1:4222', reconnect: false });
    const kv = await new Kvm(nc).open(config['bucket'] ?? '');
    const t0 = started();
    const map = new Map<string, string>();
    const it = await kv.watch();
    for await (const e of it) {
      map.set(e.key, e.string());
      // delta: messages still pending on the watch's consumer; 0 on the last initial value.
      if (e.delta === 0 || map.size >= n) break;
    }
    const loadMs = now() - t0;
    it.stop();
    return { view: { size: map.size, get: (k) => map.get(k) }, loadMs, close: () => nc.close() };
  },

  async redis(started) {
    const { createClient } = await import('redis');
    const c = createClient({
      socket: { host: config['host'] ?? '127.0.0.1', port: Number(config['port'] ?? 6379), reconnectStrategy: false },
    });
    await c.connect();
    const t0 = started();
    const all = await c.hGetAll(config['hash'] ?? '');
    const loadMs = now() - t0;
    const view: View = { size: Object.keys(all).length, get: (k) => all[k] };
    return { view, loadMs, close: () => c.close() };
  },

  async etcd(started) {
    const { Etcd3 } = await import('etcd3');
    const c = new Etcd3({ hosts: config['hosts'] ?? 'http://127.0.0.1:2379' });
    const prefix = config['prefix'] ?? '';
    const start = Buffer.from(prefix);
    // The range end of a prefix: the prefix with its last byte incremented.
    const end = Buffer.from(prefix);
    end[end.length - 1] = (end[end.length - 1] ?? 0) + 1;
    await c.kv.range({ key: start, range_end: end, limit: 1 }); // connect before timing
    const t0 = started();
    const map = new Map<string, string>();
    let key = start;
    let revision: string | undefined;
    for (;;) {
      const page = await c.kv.range({
        key,
        range_end: end,
        limit: 10_000,
        ...(revision === undefined ? {} : { revision }),
      });
      revision ??= page.header.revision;
      for (const kv of page.kvs) map.set(kv.key.toString().slice(prefix.length), kv.value.toString());
      const last = page.kvs[page.kvs.length - 1];
      if (!page.more || last === undefined) break;
      key = Buffer.concat([last.key, Buffer.from([0])]);
    }
    const loadMs = now() - t0;
    return { view: { size: map.size, get: (k) => map.get(k) }, loadMs, close: async () => c.close() };
  },
};

async function main(): Promise<JoinResult> {
  const loader = loaders[system];
  if (loader === undefined) throw new Error(`unknown system ${system}`);
  let baseRssMiB = 0;
  const loaded = await loader(() => {
    baseRssMiB = process.memoryUsage().rss / 1048576;
    return now();
  });
  try {
    const t1 = now();
    let verified = loaded.view.size === n;
    for (let i = 0; verified && i < n; i++) {
      if (loaded.view.get(joinKey(i)) !== joinValue(i, valueSize)) verified = false;
    }
    const verifyMs = now() - t1;
    return {
      system,
      keys: loaded.view.size,
      loadMs: loaded.loadMs,
      verifyMs,
      verified,
      peakRssMiB: peakRssMiB(),
      baseRssMiB,
    };
  } finally {
    await loaded.close();
  }
}

const guard = setTimeout(() => {
  process.stdout.write(`${JSON.stringify({ error: 'joiner timed out after 150 s' })}\n`);
  process.exit(2);
}, 150_000);
guard.unref();

try {
  const result = await main();
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exitCode = 0;
} catch (err) {
  process.stdout.write(`${JSON.stringify({ error: err instanceof Error ? err.message : String(err) })}\n`);
  process.exitCode = 1;
}
// Every connection is closed above; exit even if a client library left a timer behind.
setTimeout(() => process.exit(), 200).unref();
