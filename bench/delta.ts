/**
 * Issue 8 figures: catching up by delta after missed updates, on a peer holding a large map,
 * against a full join of the same map. One JSON line per figure:
 *  - `delta.join`: ms for a fresh peer to hold the whole map (a full snapshot), for reference;
 *  - `delta.catchup` (one line per round): a peer whose subscriber was cut while `--missed`
 *    updates were written resyncs and is answered by a delta: `resyncToSyncedMs` from its
 *    `resync` event to its `synced` event (ask, answer, apply), and `restoreToCaughtUpMs` from
 *    the network coming back to the peer holding the last update (adds the reconnect and the
 *    gap detection by the next heartbeat, 100 ms here);
 *  - `delta.summary`: the medians, and `ratioJoin` = join ÷ catch-up.
 *
 * Topology (one process, 2 cores shared): Forwarder ◄── writer Peer; the measured Peer's
 * subscriber goes through a cuttable TCP proxy (test/tcp-proxy.ts), its DEALER goes direct.
 *
 * Run: `npx tsx bench/delta.ts [--keys=1000000] [--missed=1000] [--rounds=5]`
 */
import { Forwarder, Peer } from '../src/index.ts';
import { TcpProxy } from '../test/tcp-proxy.ts';

const arg = (name: string, fallback: number): number => Number(new RegExp(`--${name}=(\\d+)`).exec(process.argv.join(' '))?.[1] ?? fallback);
const keys = arg('keys', 1_000_000);
const missed = arg('missed', 1000);
const rounds = arg('rounds', 5);
const emit = (o: Record<string, unknown>): void => console.log(JSON.stringify({ bench: 'delta', keys, missed, ...o }));
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
async function until(what: string, check: () => boolean, ms = 120_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

const value = 'v'.repeat(90);
const fwd = await Forwarder.start({ port: 0, heartbeatInterval: 100 });
await fwd.load((function* () {
  for (let i = 0; i < keys; i++) yield [`k/${i}`, `${i}:${value}`] as const;
})());
const proxy = await TcpProxy.start(fwd.endpoints.publisher);

let t0 = performance.now();
// Resyncs back off when they follow one another within maxRetryDelay: each round waits that
// long first, so every cut is an isolated one (as in life), answered at once.
const maxRetryDelay = 1000;
const peer = new Peer({
  server: { ...fwd.endpoints, publisher: proxy.endpoint },
  name: 'measured',
  silenceTimeout: 60_000,
  presence: false,
  snapshotRetryDelay: 100,
  maxRetryDelay,
});
await peer.ready();
const joinMs = performance.now() - t0;
emit({ figure: 'delta.join', ms: Math.round(joinMs), peerKeys: peer.size });

const writer = new Peer({ server: fwd.endpoint, subtree: 'w/', name: 'writer', presence: false });
await writer.ready();
const catchups: number[] = [];
const ends: number[] = [];
for (let round = 0; round < rounds; round++) {
  await new Promise((r) => setTimeout(r, maxRetryDelay + 50));
  const subscribed = fwd.stats().subscriptions;
  proxy.cut();
  await until('the unsubscription', () => fwd.stats().subscriptions < subscribed);
  let last = 0;
  const writes: Array<Promise<number>> = [];
  for (let i = 0; i < missed; i++) writes.push(writer.set(`k/${(round * missed + i) % keys}`, `r${round}:${i}`));
  for (const s of await Promise.all(writes)) last = Math.max(last, s);
  const before = peer.stats();
  let resyncAt = 0;
  let syncedAt = 0;
  const onResync = (): void => void (resyncAt ||= performance.now());
  const onSynced = (): void => void (syncedAt ||= performance.now());
  peer.on('resync', onResync);
  peer.on('synced', onSynced);
  t0 = performance.now();
  proxy.restore();
  await until('the peer to catch up', () => peer.sequence >= last && syncedAt > 0);
  const end = performance.now();
  peer.off('resync', onResync);
  peer.off('synced', onSynced);
  const after = peer.stats();
  const catchup = syncedAt - resyncAt;
  catchups.push(catchup);
  ends.push(end - t0);
  emit({
    figure: 'delta.catchup',
    round,
    resyncToSyncedMs: Number(catchup.toFixed(1)),
    restoreToCaughtUpMs: Number((end - t0).toFixed(1)),
    byDelta: after.deltaSyncs - before.deltaSyncs,
    fullSnapshots: after.snapshots - before.snapshots,
  });
}
emit({
  figure: 'delta.summary',
  joinMs: Math.round(joinMs),
  catchupMedianMs: Number(median(catchups).toFixed(1)),
  restoreToCaughtUpMedianMs: Number(median(ends).toFixed(1)),
  ratioJoin: Number((joinMs / median(catchups)).toFixed(0)),
});
await writer.close();
await peer.close();
await proxy.close();
await fwd.close();
