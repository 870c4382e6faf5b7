/**
 * The retained history through a peer (issue 8): `peer.history(key, { limit })` and
 * `watch(prefix, { since })`, the compacted error, and what a plain CHP server gets.
 *
 * Topology:
 * ```
 *   writer Peer ──► Forwarder (in this process) ◄── reader Peer (history, watch since)
 *   clonekv Peer ──► PlainServer (test/plain-server.ts, RFC 12 only)
 * ```
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CompactedError, ErrorCode, type WatchEntry } from '../src/index.ts';
import { forwarder, peer, readyPeer, waitFor, within } from './helpers.ts';
import { PlainServer } from './plain-server.ts';

test('history(key) gives the retained versions, newest first, puts and deletes, at most limit', async (t) => {
  const fwd = await forwarder(t);
  const w = await readyPeer(t, fwd.endpoint, { name: 'w', presence: false });
  const s1 = await w.set('h/k', 'one');
  await w.set('h/other', 1);
  const s2 = await w.set('h/k', { two: 2 });
  const s3 = await w.delete('h/k');
  const s4 = await w.set('h/k', 'four');
  const all = await w.history('h/k');
  assert.deepEqual(all, [
    { key: 'h/k', operation: 'put', value: 'four', version: s4 },
    { key: 'h/k', operation: 'delete', value: undefined, version: s3, reason: 'deleted' },
    { key: 'h/k', operation: 'put', value: { two: 2 }, version: s2 },
    { key: 'h/k', operation: 'put', value: 'one', version: s1 },
  ]);
  assert.deepEqual((await w.history('h/k', { limit: 2 })).map((e) => e.version), [s4, s3]);
  assert.deepEqual(await w.history('h/never'), []);
  await assert.rejects(w.history('h/k', { limit: 0 }), { code: ErrorCode.InvalidOption });
});

test('history of a key whose versions were all compacted away rejects with CLONEKV_COMPACTED naming the oldest sequence held', async (t) => {
  const fwd = await forwarder(t, { historyMax: 10 });
  const w = await readyPeer(t, fwd.endpoint, { name: 'w', presence: false });
  await w.set('old/k', 1);
  for (let i = 0; i < 20; i++) await w.set(`new/${i}`, i);
  const err = await w.history('old/k').then(
    () => assert.fail('expected CLONEKV_COMPACTED'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof CompactedError);
  assert.equal(err.code, 'CLONEKV_COMPACTED');
  assert.equal(err.oldest, fwd.sequence - 10, 'every update after oldest is held: the last 10');
  assert.match(err.message, new RegExp(`oldest sequence .* ${err.oldest}`));

  // The same for a watch from before the retained history.
  const it = w.watch('new/', { since: 1 });
  await assert.rejects(it.next(), (e: unknown) => e instanceof CompactedError && e.oldest === fwd.sequence - 10);
});

test('watch(prefix, { since }) replays the retained updates after since, then goes live: nothing missed or doubled at the seam, under concurrent writes', async (t) => {
  const fwd = await forwarder(t);
  const w = await readyPeer(t, fwd.endpoint, { subtree: 'x/', name: 'w' });
  const reader = await readyPeer(t, fwd.endpoint, { name: 'reader' });
  const acked: number[] = [];
  for (let i = 0; i < 300; i++) acked.push(i % 10 === 9 ? await w.delete(`x/${i - 5}`) : await w.set(`x/${i}`, i));
  await w.set('y/outside', 0); // outside the prefix: never yielded
  const since = acked[99]!;

  // Writes go on while the watch replays and then goes live.
  let stop = false;
  const writing = (async () => {
    for (let i = 300; !stop && i < 5000; i++) acked.push(await w.set(`x/${i}`, i));
  })();
  t.after(async () => {
    stop = true;
    await writing;
  });
  const seen: Array<WatchEntry> = [];
  const ac = new AbortController();
  const watching = (async () => {
    for await (const e of reader.watch('x/', { since, signal: ac.signal })) {
      seen.push(e);
      if (seen.length >= 600) break;
    }
  })();
  await within('600 changes watched', watching, 20_000);
  stop = true;
  await writing;
  const versions = seen.map((e) => e.version);
  const expected = acked.filter((s) => s > since).slice(0, versions.length);
  assert.equal(versions.length, 600);
  assert.deepEqual(versions, expected, 'exactly the updates after since, in order, none missed or doubled');
  assert.ok(seen.every((e) => e.key.startsWith('x/') && e.isUpdate));
  const del = seen.find((e) => e.operation === 'delete');
  assert.equal(del?.reason, 'deleted');
  assert.ok(acked.length > 500, 'the seam fell among concurrent writes');
});

test('against a plain CHP server: history and watch since are CLONEKV_UNSUPPORTED, and the peer never sends the resume request', async (t) => {
  const server = await PlainServer.start(t, { 'app/a': Buffer.from('a') });
  const p = peer(t, server.endpoint, { subtree: 'app/' });
  await within('ready', p.ready());
  // The join is confirmed by a second snapshot once the subscription is live: a resync.
  await waitFor('a resync against the plain server', () => p.stats().snapshots >= 2 && p.status === 'live');
  assert.equal(server.otherRequests, 0, 'only two-frame ICANHAZ? reached the plain server');
  await assert.rejects(p.history('app/a'), { code: ErrorCode.Unsupported });
  await assert.rejects(p.watch('app/', { since: 0 }).next(), { code: ErrorCode.Unsupported });
});
