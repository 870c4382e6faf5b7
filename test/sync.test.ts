/**
 * Snapshot-then-live semantics. Topology for every test: one in-process Forwarder on an
 * ephemeral port triple (ROUTER P, XPUB P+1, SUB P+2) and several in-process Peers, each with
 * its own DEALER and SUB sockets over tcp://127.0.0.1.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { WatchEntry } from '../src/index.ts';
import { contents, forwarder, peer, readyPeer, waitFor, within } from './helpers.ts';

test('a late joiner gets the snapshot then every live update exactly once while a writer runs at full speed', async (t) => {
  const fwd = await forwarder(t);
  const writer = await readyPeer(t, fwd.endpoint, { name: 'writer' });
  const N = 20_000;
  const KEYS = 500;
  let written = 0;
  const writeSeqs: number[] = [];
  const writing = (async () => {
    const inflight: Promise<number>[] = [];
    for (let i = 1; i <= N; i++) {
      inflight.push(writer.set(`k/${i % KEYS}`, i).then((seq) => (writeSeqs.push(seq), seq)));
      if (inflight.length >= 256) {
        await Promise.all(inflight);
        inflight.length = 0;
        written = i;
      }
    }
    await Promise.all(inflight);
    written = N;
  })();
  await waitFor('the writer to be a quarter through', () => written >= N / 4);
  const late = peer(t, fwd.endpoint, { name: 'late' });
  const seen: WatchEntry[] = [];
  late.on('update', (e) => seen.push(e));
  await within('late joiner ready', late.ready());
  await writing;
  await waitFor('the late joiner to reach the last sequence', () => late.sequence === fwd.sequence);
  // Every live update after the snapshot was applied once, in order: the versions seen run
  // without a hole or a repeat from the first one after the snapshot up to the last write.
  const live = seen.filter((e) => e.isUpdate && !e.fromResync && e.key.startsWith('k/')).map((e) => e.version);
  const snapshotAt = live[0]! - 1;
  assert.ok(live.length > 0 && live.length < N, `joined mid-stream (snapshot at ${snapshotAt})`);
  const expectedLive = writeSeqs.filter((s) => s > snapshotAt).sort((a, b) => a - b);
  assert.deepEqual(live, expectedLive);
  assert.equal(late.stats().resyncs, 0);
  assert.equal(late.stats().gaps, 0);
  // And the final state is exactly the writer's.
  const expected: Record<string, number> = {};
  for (let k = 0; k < KEYS; k++) expected[`k/${k}`] = N - ((N - k) % KEYS);
  assert.deepEqual(contents(late), expected);
  assert.deepEqual(contents(writer), expected);
});

test('a subtree peer holds and sees only its subtree', async (t) => {
  const fwd = await forwarder(t);
  const writer = await readyPeer(t, fwd.endpoint);
  await writer.set('app/a/x', 1);
  await writer.set('app/b/x', 2);
  const a = await readyPeer(t, fwd.endpoint, { subtree: 'app/a/' });
  assert.deepEqual(contents(a), { 'app/a/x': 1 });
  const changes: string[] = [];
  a.on('update', (e) => changes.push(e.key));
  await writer.set('app/b/y', 3);
  await writer.set('app/a/y', 4);
  await writer.set('app/ab', 5);
  await waitFor('app/a/y at the subtree peer', () => a.has('app/a/y'));
  assert.deepEqual(contents(a), { 'app/a/x': 1, 'app/a/y': 4 });
  assert.deepEqual(changes, ['app/a/y']);
  // A write outside the peer's own subtree is still acknowledged with its sequence.
  const seq = await a.set('app/b/z', 6);
  assert.ok(seq > 0);
  assert.equal(a.has('app/b/z'), false);
  assert.equal(a.stats().gaps, 0);
});

test('deletes reach every peer and report the previous value', async (t) => {
  const fwd = await forwarder(t);
  const w = await readyPeer(t, fwd.endpoint);
  const r = await readyPeer(t, fwd.endpoint);
  const v1 = await w.set('gone', { a: 1 });
  await waitFor('value at reader', () => r.version('gone') === v1);
  const events: WatchEntry[] = [];
  r.on('update', (e) => events.push(e));
  const v2 = await w.delete('gone');
  assert.ok(v2 > v1);
  assert.equal(w.has('gone'), false, 'read-your-writes: the writer sees its delete once it resolves');
  await waitFor('delete at reader', () => !r.has('gone'));
  assert.deepEqual(events.map((e) => [e.operation, e.reason, e.previous, e.version]), [['delete', 'deleted', { a: 1 }, v2]]);
  // A late joiner does not see the deleted key.
  const late = await readyPeer(t, fwd.endpoint);
  assert.equal(late.has('gone'), false);
});

test('ttl expiry reaches every peer as an expired delete', async (t) => {
  const fwd = await forwarder(t);
  const peers = await Promise.all([0, 1, 2].map(() => readyPeer(t, fwd.endpoint)));
  const reasons: string[] = [];
  for (const p of peers) p.on('update', (e) => e.operation === 'delete' && reasons.push(e.reason ?? '?'));
  await peers[0]!.set('lease', 'holder-1', { ttl: 0.2 });
  await peers[0]!.set('stays', 1);
  for (const p of peers) await waitFor('lease at every peer', () => p.has('lease'));
  for (const p of peers) await waitFor('lease expired at every peer', () => !p.has('lease'), 5000);
  assert.deepEqual(reasons, ['expired', 'expired', 'expired']);
  assert.equal(fwd.stats().expired, 1);
  for (const p of peers) assert.equal(p.get('stays'), 1);
  // Rewriting a key without ttl cancels its expiry.
  await peers[0]!.set('renewed', 1, { ttl: 0.2 });
  await peers[0]!.set('renewed', 2);
  const expiredBefore = fwd.stats().expired;
  await peers[0]!.set('probe', 1, { ttl: 0.3 });
  await waitFor('probe expired', () => !peers[1]!.has('probe') && peers[1]!.version('probe') === undefined && fwd.stats().expired > expiredBefore, 5000);
  assert.equal(peers[1]!.get('renewed'), 2);
});

test('two writers and three peers converge to the forwarder map', async (t) => {
  const fwd = await forwarder(t);
  const writers = await Promise.all([0, 1].map((i) => readyPeer(t, fwd.endpoint, { name: `w${i}` })));
  const readers = [await readyPeer(t, fwd.endpoint), await readyPeer(t, fwd.endpoint, { subtree: 'shared/' })];
  const writes = writers.map(async (w, wi) => {
    for (let round = 0; round < 20; round++) {
      await Promise.all(
        Array.from({ length: 100 }, (_, i) => (i % 7 === 0 && round > 0 ? w.delete(`shared/${i}`) : w.set(`shared/${i}`, `${wi}:${round}`))),
      );
    }
  });
  // A third peer joins in the middle.
  const third = peer(t, fwd.endpoint, { subtree: 'shared/' });
  await Promise.all(writes);
  await within('third ready', third.ready());
  const final = fwd.sequence;
  for (const p of [...writers, ...readers, third]) await waitFor('peer at the final sequence', () => p.sequence === final);
  const truth = contents(writers[0]!);
  assert.ok(Object.keys(truth).length > 0);
  for (const p of [writers[1]!, ...readers, third]) assert.deepEqual(contents(p), truth);
  // The forwarder's own map agrees: a fresh peer built from its snapshot matches.
  const fresh = await readyPeer(t, fwd.endpoint);
  assert.deepEqual(contents(fresh), truth);
  assert.equal(fwd.size - fwd.peers().length, Object.keys(truth).length, 'the forwarder holds these keys plus one presence key per peer');
});

test('watch replays current entries, then changes with previous values, and releases on break', async (t) => {
  const fwd = await forwarder(t);
  const p = await readyPeer(t, fwd.endpoint);
  await p.set('w/a', 1);
  await p.set('w/b', 2);
  await p.set('other', 0);
  const got: WatchEntry[] = [];
  const done = (async () => {
    for await (const e of p.watch('w/')) {
      got.push(e);
      if (got.length === 4) break;
    }
  })();
  await waitFor('replay', () => got.length === 2);
  assert.deepEqual(got.map((e) => [e.key, e.value, e.isUpdate]), [['w/a', 1, false], ['w/b', 2, false]]);
  await p.set('other', 1);
  await p.set('w/a', 10);
  await p.delete('w/b');
  await within('watch to end after break', done);
  assert.deepEqual(got.slice(2).map((e) => [e.key, e.operation, e.value, e.previous, e.isUpdate]), [
    ['w/a', 'put', 10, 1, true],
    ['w/b', 'delete', undefined, 2, true],
  ]);
  // updatesOnly and an AbortSignal.
  const ac = new AbortController();
  const seen: string[] = [];
  const watching = (async () => {
    for await (const e of p.watch('w/', { updatesOnly: true, signal: ac.signal })) {
      seen.push(e.key);
      ac.abort();
    }
  })();
  await p.set('w/c', 3);
  await within('aborted watch to end', watching);
  assert.deepEqual(seen, ['w/c']);
});

test('ready() resolves for an empty store, and reads never block', async (t) => {
  const fwd = await forwarder(t);
  const p = peer(t, fwd.endpoint);
  assert.equal(p.status, 'syncing');
  assert.equal(p.get('anything'), undefined);
  await within('ready on empty store', p.ready());
  assert.equal(p.status, 'live');
  assert.equal(p.size, 0);
  assert.deepEqual([...p.keys()], []);
});

test('values: any msgpack value round-trips; versions are sequences', async (t) => {
  const fwd = await forwarder(t);
  const p = await readyPeer(t, fwd.endpoint);
  const r = await readyPeer(t, fwd.endpoint);
  const values: unknown[] = ['text', 42, 1.5, true, null, [1, 'two', { three: 3 }], { nested: { deep: ['x'] } }, new Uint8Array([1, 2, 3])];
  const seqs: number[] = [];
  for (const [i, v] of values.entries()) seqs.push(await p.set(`v/${i}`, v));
  await waitFor('all values at reader', () => r.sequence === fwd.sequence);
  for (const [i, v] of values.entries()) {
    const got = r.get(`v/${i}`);
    // Binary values come back as a Uint8Array (a Buffer, under Node).
    assert.deepEqual(got instanceof Uint8Array ? new Uint8Array(got) : got, v);
    assert.equal(r.version(`v/${i}`), seqs[i]);
  }
  await assert.rejects(p.set('v/undef', undefined), { code: 'CLONEKV_INVALID_VALUE' });
  await assert.rejects(p.set('', 1), { code: 'CLONEKV_INVALID_KEY' });
  await assert.rejects(p.set('x'.repeat(256), 1), { code: 'CLONEKV_INVALID_KEY' });
  await assert.rejects(p.set('HUGZ', 1), { code: 'CLONEKV_INVALID_KEY' });
});
