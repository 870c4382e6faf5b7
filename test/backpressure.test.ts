/**
 * A stalled peer under load, with real processes. Topology: `clonekv serve` in a child process;
 * two peers in child processes that are frozen with SIGSTOP (one full-tree, one on subtree b/);
 * in this process a writer Peer sending a fixed workload as fast as it can, two Peers that must
 * keep up (full tree and b/), and, at the end, a fresh Peer whose snapshot is the forwarder's map.
 *
 * Only behaviour is asserted. How fast the writer goes, how much memory the forwarder takes (its
 * RSS is sampled here for the record only) and how soon a resumed peer heals are figures for
 * `bench/stall.ts`: on a loaded 2-core machine they vary too much to be a pass/fail bound.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import type { Peer } from '../src/index.ts';
import { childPeer, mapDigest, peer, readyPeer, spawnCli, waitFor, waitForReading, within, type ChildPeer } from './helpers.ts';

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}

/**
 * The workload. Whether a frozen peer loses updates at all depends on how much the forwarder's
 * high-water mark (10,000 messages) and the kernel's socket buffers hold, not on anything the
 * peer promises; with values this size, this many writes overflow them on a typical machine, so
 * the loss-and-resync path usually runs (the diagnostics say whether it did). What is asserted
 * holds either way: the resumed peer ends with exactly the forwarder's map.
 */
const WRITES = 20_000;
const VALUE = 'x'.repeat(1000);
/** Keys cycle over this many per subtree, so the map stays small while every key is rewritten. */
const KEYS = 500;

/** A digest of the entries of `p` under `prefix`, comparable with a child peer's `digest`. */
function digestOf(p: Peer, prefix = ''): string {
  return mapDigest({ entries: () => p.entries(prefix) });
}

interface ChildState {
  digest: string;
  shadowDigest: string;
  resyncChanges: number;
  stats: { resyncs: number; gaps: number };
  status: string;
}

const stateOf = (c: ChildPeer): Promise<ChildState> => c.ask('state', (o) => o.state as ChildState | undefined, 20_000);

test('a stalled peer neither blocks the writer nor slows the others, and holds the forwarder map once resumed', async (t) => {
  const srv = spawnCli(t, ['serve', '--memory', '--port', '0', '--json']);
  const { endpoint } = JSON.parse(await srv.line(/^\{/)) as { endpoint: string };
  const pid = srv.child.pid!;
  const stalledFull = await childPeer(t, endpoint, { name: 'stalled-full' });
  const stalledSub = await childPeer(t, endpoint, { name: 'stalled-sub', subtree: 'b/' });
  const writer = peer(t, endpoint, { name: 'writer', writeTimeout: 60_000 });
  const follower = peer(t, endpoint, { name: 'follower' });
  const subFollower = peer(t, endpoint, { name: 'sub-follower', subtree: 'b/' });
  await within('in-process peers ready', Promise.all([writer.ready(), follower.ready(), subFollower.ready()]));
  const baseline = rssMiB(pid);

  stalledFull.child.kill('SIGSTOP');
  stalledSub.child.kill('SIGSTOP');
  t.after(() => {
    stalledFull.child.kill('SIGCONT');
    stalledSub.child.kill('SIGCONT');
  });
  let peak = baseline;
  const sampler = setInterval(() => (peak = Math.max(peak, rssMiB(pid))), 100);
  t.after(() => clearInterval(sampler));

  const started = Date.now();
  const inflight = new Set<Promise<unknown>>();
  for (let i = 0; i < WRITES; i++) {
    // Three writes in four go to b/, so both frozen peers get most of the load; every 7th write
    // is a delete, so they also miss deletes.
    const key = `${i % 4 === 0 ? 'a' : 'b'}/${i % KEYS}`;
    const p = (i % 7 === 6 ? writer.delete(key) : writer.set(key, `${i}:${VALUE}`)).finally(() => inflight.delete(p));
    inflight.add(p);
    if (inflight.size >= 256) await Promise.race(inflight);
  }
  // Every write is acknowledged (none times out or is refused): the frozen peers hold no one up.
  await Promise.all(inflight);
  await writer.set('b/final', WRITES);
  const last = await writer.set('a/final', WRITES);
  clearInterval(sampler);
  peak = Math.max(peak, rssMiB(pid));
  t.diagnostic(
    `${WRITES} writes in ${Date.now() - started} ms; forwarder RSS baseline ${baseline.toFixed(0)} MiB, peak ${peak.toFixed(0)} MiB (for the record: bench/stall.ts measures it)`,
  );

  // The forwarder's map, from a snapshot taken now.
  const reference = await readyPeer(t, endpoint, { name: 'reference', presence: false });
  await waitFor('reference has the last write', () => reference.sequence >= last);
  const truthFull = digestOf(reference);
  const truthSub = digestOf(reference, 'b/');
  assert.equal(reference.get('a/final'), WRITES);

  // The peers that kept reading are exactly up to date, without a resync.
  await waitFor('follower caught up', () => follower.sequence >= last, 20_000);
  await waitFor('subtree follower caught up', () => subFollower.get('b/final') === WRITES, 20_000);
  assert.equal(digestOf(follower), truthFull);
  assert.equal(digestOf(subFollower), truthSub);
  assert.deepEqual([follower.stats().resyncs, follower.stats().gaps], [0, 0], 'the follower kept up without a resync');
  assert.deepEqual([subFollower.stats().resyncs, subFollower.stats().gaps], [0, 0], 'the subtree follower kept up without a resync');

  // Resumed, each stalled peer ends with exactly the forwarder's map (what it missed is either
  // still queued for it or detected and resynced; the test does not care which).
  const resumedAt = Date.now();
  stalledFull.child.kill('SIGCONT');
  stalledSub.child.kill('SIGCONT');
  const healed = (c: ChildPeer, truth: string): Promise<ChildState> =>
    waitForReading(`${c.id} to hold the forwarder's map`, () => stateOf(c), (s) => s.digest === truth && s.status === 'live', 25_000);
  const [full, sub] = await Promise.all([healed(stalledFull, truthFull), healed(stalledSub, truthSub)]);
  t.diagnostic(
    `stalled peers healed ${Date.now() - resumedAt} ms after resume; full-tree: ${full.stats.gaps} gaps, ${full.stats.resyncs} resyncs; ` +
      `subtree: ${sub.stats.gaps} gaps, ${sub.stats.resyncs} resyncs`,
  );
  // Their watchers saw the net changes as ordinary puts and deletes, across a resync if there
  // was one: a copy kept from change events alone matches the forwarder's map too.
  assert.equal(full.shadowDigest, truthFull, 'full-tree change events add up to the map');
  assert.equal(sub.shadowDigest, truthSub, 'subtree change events add up to the map');
});
