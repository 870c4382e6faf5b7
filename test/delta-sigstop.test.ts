/**
 * A peer frozen by SIGSTOP for 5 s under writes resumes by delta (issue 8).
 *
 * Topology:
 * ```
 *   writer Peer (this process) ──► Forwarder (this process, small publisher high-water mark)
 *   frozen Peer (child process, `node --import tsx`, fixtures/peer-child.ts) ◄── XPUB
 *   checker Peer (fresh, this process): the forwarder's map at the end
 * ```
 * The forwarder holds 50,000 keys. While the child is frozen the writer sends 2 KB values to
 * new keys until 5 s have passed (bounded in count): far more than the high-water marks and the kernel's socket buffers hold, so the child
 * misses updates for certain and must resync once it runs again. The child reports its
 * counters: the resync is answered by a delta, never a full snapshot, and its map (and the
 * shadow map its watchers built) ends equal to the forwarder's.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { childPeer, forwarder, mapDigest, readyPeer, waitFor, waitForReading } from './helpers.ts';

interface ChildState {
  sequence: number;
  status: string;
  digest: string;
  shadowDigest: string;
  stats: { deltaSyncs: number; snapshots: number; resyncs: number; gaps: number };
}

test('a peer frozen by SIGSTOP for 5 s under writes resumes by delta and ends equal to the forwarder', async (t) => {
  const fwd = await forwarder(t, { heartbeatInterval: 100, publisherHwm: { send: 200 } });
  // A map larger than what the peer will miss, so a delta is the smaller answer (a peer that
  // missed more updates than there are keys gets a snapshot).
  await fwd.load(Array.from({ length: 50_000 }, (_, i) => [`base/${i}`, i] as const));
  const frozen = await childPeer(t, fwd.endpoint, { name: 'frozen', subscriberHwm: { receive: 200 } });
  const writer = await readyPeer(t, fwd.endpoint, { subtree: 'w/', name: 'writer' });
  const state = (): Promise<ChildState> => frozen.ask('state', (o) => (o.state ? (o.state as ChildState) : undefined), 15_000);
  const before = await state();
  assert.equal(before.stats.snapshots, 1);

  frozen.child.kill('SIGSTOP');
  t.after(() => frozen.child.kill('SIGCONT'));
  const value = 'x'.repeat(2048);
  const frozenAt = Date.now();
  let n = 0;
  const inflight = new Set<Promise<unknown>>();
  // Until 5 s have passed, at most 40,000 writes; every 9th deletes an earlier key.
  while (Date.now() - frozenAt < 5000) {
    if (n < 40_000) {
      const i = n++;
      const p = (i % 9 === 8 ? writer.delete(`s/${i - 4}`) : writer.set(`s/${i}`, `${i}:${value}`)).finally(() => inflight.delete(p));
      inflight.add(p);
      if (inflight.size >= 128) await Promise.race(inflight);
    } else {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  await Promise.all(inflight);
  frozen.child.kill('SIGCONT');
  const last = await writer.set('s/last', n);

  const checker = await readyPeer(t, fwd.endpoint, { name: 'checker', presence: false });
  await waitFor('the checker holds the last write', () => checker.version('s/last') === last);
  const expected = mapDigest(checker);
  const after = await waitForReading(
    'the resumed peer to hold the forwarder\'s map',
    state,
    (s) => s.status === 'live' && s.sequence >= last && s.digest === expected,
    15_000,
  );
  t.diagnostic(`${n} writes while frozen; child: ${JSON.stringify(after.stats)}`);
  assert.equal(after.shadowDigest, expected, 'its watchers saw every change');
  assert.ok(after.stats.resyncs >= 1, 'it noticed what it missed');
  assert.ok(after.stats.deltaSyncs >= 1, `it resumed by delta (deltaSyncs ${after.stats.deltaSyncs})`);
  assert.equal(after.stats.snapshots, 1, 'no full snapshot after the first join');
});
