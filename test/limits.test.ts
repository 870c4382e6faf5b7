/**
 * Bounded queues fail loudly or heal, never grow. Topology: an in-process Forwarder on an
 * ephemeral port triple and in-process Peers.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { contents, forwarder, peer, readyPeer, waitFor, within } from './helpers.ts';

test('a watch whose consumer stops reading ends with CLONEKV_WATCH_OVERFLOW; the peer carries on', async (t) => {
  const fwd = await forwarder(t);
  const p = await readyPeer(t, fwd.endpoint);
  const watch = p.watch('w/', { updatesOnly: true, maxPending: 10 });
  for (let i = 0; i < 25; i++) await p.set(`w/${i}`, i);
  // The first ten changes were queued; the eleventh overflowed and ended the watch.
  await assert.rejects(watch.next(), { code: 'CLONEKV_WATCH_OVERFLOW' });
  assert.deepEqual(await watch.next(), { value: undefined, done: true });
  assert.equal(p.get('w/24'), 24, 'the peer itself is unaffected');
  // Other watches are unaffected too.
  const other = p.watch('w/', { updatesOnly: true });
  await p.set('w/again', 1);
  assert.equal((await within('next change', other.next())).value?.key, 'w/again');
  await other.return!();
});

test('live updates beyond maxBufferedUpdates during a snapshot restart the sync instead of growing', async (t) => {
  const fwd = await forwarder(t);
  // A large snapshot takes long enough for live updates to pile up behind it.
  await fwd.load(Array.from({ length: 200_000 }, (_, i) => [`big/${i}`, i] as const));
  const writer = await readyPeer(t, fwd.endpoint, { subtree: 'writer-only/' });
  let writing = true;
  t.after(() => {
    writing = false;
  });
  let n = 0;
  const stream = (async () => {
    while (writing) await Promise.all(Array.from({ length: 64 }, () => writer.set(`live/${n++ % 100}`, n)));
  })().catch(() => {}); // the writer closes at teardown
  const p = peer(t, fwd.endpoint, { maxBufferedUpdates: 5 });
  const reasons: string[] = [];
  p.on('resync', ({ reason }) => reasons.push(reason));
  await waitFor('an overflow resync', () => reasons.includes('overflow'), 15_000);
  writing = false;
  await stream;
  await within('ready once the stream stops', p.ready(), 20_000);
  await waitFor('caught up', () => p.sequence === fwd.sequence);
  const reference = await readyPeer(t, fwd.endpoint);
  assert.deepEqual(contents(p), contents(reference));
});
