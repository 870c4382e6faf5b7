/**
 * Snapshot completeness. Topology: an in-process Forwarder on an ephemeral port triple;
 * a clonekv Peer (DEALER + SUB) or a raw zeromq DEALER acting as a plain CHP client.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as zmq from 'zeromq';
import { forwarder, peer, waitFor, within } from './helpers.ts';

test('a 1,000,000-key snapshot reaches a joining peer complete and verified', async (t) => {
  const fwd = await forwarder(t);
  const N = 1_000_000;
  function* entries(): Generator<[string, string]> {
    for (let i = 0; i < N; i++) yield [`cfg/${i}`, `value-${i}`];
  }
  assert.equal(await fwd.load(entries()), N);
  const p = peer(t, fwd.endpoint);
  const progress: number[] = [];
  p.on('progress', ({ received }) => progress.push(received));
  await within('1M-key join', p.ready(), 25_000);
  assert.equal(p.size, N);
  assert.equal(p.get('cfg/0'), 'value-0');
  assert.equal(p.get('cfg/999999'), 'value-999999');
  assert.equal(p.version('cfg/999999'), N);
  assert.ok(p.sequence >= N);
  assert.equal(p.stats().resyncs, 0, 'verified on the first try');
  assert.ok(progress.length >= 10 && progress.at(-1)! <= N, 'progress was reported');
});

test('a plain CHP client gets a complete 20,000-key snapshot through a small high-water mark', async (t) => {
  // Reference failure 2: the ROUTER dropped at its HWM and the snapshot ended with a normal
  // KTHXBAI. Here the ROUTER's send HWM is 50 messages and the client reads slowly.
  const fwd = await forwarder(t, { snapshotHwm: { send: 50 } });
  const N = 20_000;
  await fwd.load(Array.from({ length: N }, (_, i) => [`k/${i}`, i] as const));
  const dealer = new zmq.Dealer({ linger: 0, receiveHighWaterMark: 50 });
  t.after(() => dealer.close());
  dealer.connect(fwd.endpoint);
  await dealer.send(['ICANHAZ?', 'k/']);
  const keys = new Set<string>();
  let end: Buffer[] | undefined;
  const reading = (async () => {
    for (;;) {
      const frames = await dealer.receive();
      if (frames[0]!.toString() === 'KTHXBAI') {
        end = frames;
        return;
      }
      assert.equal(frames.length, 5, 'KVSYNC has five frames');
      keys.add(frames[0]!.toString());
      if (keys.size % 1000 === 0) await new Promise((r) => setImmediate(r)); // a slow reader
    }
  })();
  await within('the whole snapshot', reading, 20_000);
  assert.equal(keys.size, N);
  assert.equal(end![1]!.readBigInt64BE(), BigInt(N), 'KTHXBAI carries the snapshot sequence');
  assert.match(end![3]!.toString(), new RegExp(`(^|\\n)count=${N}\\n`));
  assert.equal(end![4]!.toString(), 'k/');
  assert.equal(fwd.stats().dropped, 0);
});

test('a snapshot request for a subtree returns only that subtree, and an empty one still ends with KTHXBAI', async (t) => {
  const fwd = await forwarder(t);
  await fwd.load([
    ['a/1', 1],
    ['a/2', 2],
    ['b/1', 3],
  ]);
  const a = peer(t, fwd.endpoint, { subtree: 'a/' });
  const none = peer(t, fwd.endpoint, { subtree: 'zzz/' });
  await within('both ready', Promise.all([a.ready(), none.ready()]));
  assert.deepEqual([...a.keys()].sort(), ['a/1', 'a/2']);
  assert.equal(none.size, 0);
  await waitFor('forwarder counted both snapshots', () => fwd.stats().snapshots >= 2);
});
