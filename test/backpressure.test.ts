/**
 * Bounded memory and self-healing under a stalled peer, with real processes. Topology:
 * `clonekv serve` in a child process (its RSS is sampled from /proc); two peers in child
 * processes that are frozen with SIGSTOP (one full-tree, one on subtree b/); in this process a
 * writer Peer sending as fast as it can for 10 s, and two Peers that must keep up.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { childPeer, mapDigest, peer, spawnCli, waitFor, within } from './helpers.ts';

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}

/** The documented bound (README, "High-water marks") for this load: 2 stalled peers. */
const RSS_BOUND_MIB = 300;
const HEARTBEAT = 1000;

test('a stalled peer neither grows the forwarder nor slows the others, and heals itself on resume', async (t) => {
  const srv = spawnCli(t, ['serve', '--port', '0', '--json']);
  const { endpoint } = JSON.parse(await srv.line(/^\{/)) as { endpoint: string };
  const pid = srv.child.pid!;
  const stalledFull = await childPeer(t, endpoint, { name: 'stalled-full' });
  const stalledSub = await childPeer(t, endpoint, { name: 'stalled-sub', subtree: 'b/' });
  const writer = peer(t, endpoint, { name: 'writer', writeTimeout: 30_000 });
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

  const value = 'x'.repeat(100);
  const until = Date.now() + 10_000;
  let writes = 0;
  const inflight = new Set<Promise<unknown>>();
  while (Date.now() < until) {
    const key = `${writes % 2 === 0 ? 'a' : 'b'}/${writes % 1000}`;
    // Every 7th write is a delete, so the frozen peers also miss deletes.
    const p = (writes % 7 === 6 ? writer.delete(key) : writer.set(key, `${writes}:${value}`)).finally(() => inflight.delete(p));
    inflight.add(p);
    writes++;
    if (inflight.size >= 256) await Promise.race(inflight);
  }
  await Promise.all(inflight);
  await writer.set('b/final', writes);
  const last = await writer.set('a/final', writes);
  clearInterval(sampler);
  peak = Math.max(peak, rssMiB(pid));
  t.diagnostic(`writes ${writes} in 10 s; forwarder RSS baseline ${baseline.toFixed(0)} MiB, peak ${peak.toFixed(0)} MiB`);
  assert.ok(writes > 10_000, `the writer ran at speed (${writes} writes)`);
  assert.ok(peak < RSS_BOUND_MIB, `forwarder peak RSS ${peak.toFixed(0)} MiB under ${RSS_BOUND_MIB} MiB`);

  // The peers that kept reading are exactly up to date, without a resync.
  await waitFor('follower caught up', () => follower.sequence >= last, 10_000);
  await waitFor('subtree follower caught up', () => subFollower.get('b/final') === writes, 10_000);
  assert.equal(follower.stats().resyncs, 0);
  assert.equal(follower.stats().gaps, 0);
  assert.equal(subFollower.stats().gaps, 0);
  assert.equal(subFollower.stats().resyncs, 0);

  // Resumed, each stalled peer notices what it missed and reaches the forwarder's state.
  const truthFull = mapDigest(follower);
  const truthSub = mapDigest(subFollower);
  const resumedAt = Date.now();
  stalledFull.child.kill('SIGCONT');
  stalledSub.child.kill('SIGCONT');
  type State = { digest: string; shadowDigest: string; resyncChanges: number; stats: { resyncs: number; gaps: number }; status: string };
  const healed = async (c: typeof stalledFull, truth: string): Promise<State> => {
    for (;;) {
      const s = await c.ask('state', (o) => o.state as State | undefined, 20_000);
      if (s.digest === truth && s.status === 'live') return s;
      if (Date.now() - resumedAt > 20_000) throw new Error(`not healed: ${JSON.stringify(s)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const [full, sub] = await Promise.all([healed(stalledFull, truthFull), healed(stalledSub, truthSub)]);
  const recovery = Date.now() - resumedAt;
  t.diagnostic(`stalled peers healed ${recovery} ms after resume`);
  assert.ok(full.stats.gaps + full.stats.resyncs > 0, 'the full-tree peer detected what it missed');
  assert.ok(sub.stats.gaps + sub.stats.resyncs > 0, 'the subtree peer detected what it missed');
  // Their watchers saw the net changes as ordinary puts and deletes: a copy kept from change
  // events alone matches the forwarder's map too.
  for (const s of [full, sub]) {
    assert.equal(s.shadowDigest, s.digest, 'change events add up to the map');
    assert.ok(s.resyncChanges > 0, 'the resync was reported as changes');
  }
  assert.ok(recovery <= 2 * HEARTBEAT, `healed within two heartbeats: ${recovery} ms`);
});
