/**
 * The retained history (src/store/history.ts), without sockets: order, bounds by count and by
 * bytes, what `oldest` promises, `since` with a prefix and across compaction, `forKey`.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { forwarderSettings } from '../src/forwarder/settings.ts';
import { HistoryCompactedError, RECORD_OVERHEAD_BYTES, UpdateHistory } from '../src/store/history.ts';
import type { UpdateRecord } from '../src/store/update-record.ts';

const EMPTY = Buffer.alloc(0);
function rec(seq: number, key: string, body = `v${seq}`): UpdateRecord {
  return { seq, key, uuid: EMPTY, properties: EMPTY, body: Buffer.from(body), expiresAt: 0 };
}
const seqs = (it: Iterable<UpdateRecord>): number[] => [...it].map((r) => r.seq);

test('since() gives the updates after a sequence, in order, puts and deletes, filtered by prefix', () => {
  const h = new UpdateHistory({ maxEntries: 100, maxBytes: 1e9 });
  h.append(rec(1, 'a/x'));
  h.append(rec(2, 'b/y'));
  h.append(rec(3, 'a/x', '')); // a delete
  h.append(rec(4, 'a/z'));
  assert.equal(h.oldest, 0);
  assert.equal(h.newest, 4);
  assert.deepEqual(seqs(h.since(0)), [1, 2, 3, 4]);
  assert.deepEqual(seqs(h.since(2)), [3, 4]);
  assert.deepEqual(seqs(h.since(1, 'a/')), [3, 4]);
  assert.deepEqual(seqs(h.since(4)), []);
  assert.throws(() => h.append(rec(4, 'c')), RangeError, 'a sequence not above the newest is a caller bug');
});

test('the count bound compacts the oldest; oldest is the last sequence dropped, and every later update is held', () => {
  const h = new UpdateHistory({ maxEntries: 3, maxBytes: 1e9 });
  for (let s = 1; s <= 5000; s++) h.append(rec(s, `k${s % 7}`));
  assert.equal(h.size, 3);
  assert.equal(h.oldest, 4997);
  assert.deepEqual(seqs(h.since(h.oldest)), [4998, 4999, 5000]);
  assert.throws(() => [...h.since(4996)], (e: unknown) => e instanceof HistoryCompactedError && e.oldest === 4997);
});

test('the byte bound compacts the oldest too, and counts what it holds', () => {
  const one = RECORD_OVERHEAD_BYTES + 1 + 10; // key "k", 10-byte body
  const h = new UpdateHistory({ maxEntries: 1000, maxBytes: one * 4 });
  for (let s = 1; s <= 10; s++) h.append(rec(s, 'k', '0123456789'));
  assert.equal(h.size, 4);
  assert.equal(h.bytes, one * 4);
  assert.equal(h.oldest, 6);
  const none = new UpdateHistory({ maxEntries: 0, maxBytes: 1e9 });
  assert.equal(none.newest, 0);
  none.append(rec(1, 'k'));
  assert.equal(none.size, 0);
  assert.equal(none.oldest, 1, 'a history that keeps nothing still says how far it got');
});

test('an iteration that falls behind compaction throws instead of skipping updates', () => {
  const h = new UpdateHistory({ maxEntries: 4, maxBytes: 1e9 });
  for (let s = 1; s <= 4; s++) h.append(rec(s, 'k'));
  const it = h.since(0);
  assert.equal(it.next().value?.seq, 1);
  h.append(rec(5, 'k')); // drops 1: the iteration is at 2, still held
  assert.equal(it.next().value?.seq, 2);
  h.append(rec(6, 'k'));
  h.append(rec(7, 'k')); // drops 2 and 3: 3 was next
  assert.throws(() => it.next(), HistoryCompactedError);
  // A lazy iteration sees what was appended meanwhile.
  const live = h.since(6);
  h.append(rec(8, 'k'));
  assert.deepEqual(seqs(live), [7, 8]);
});

test('forKey() gives the retained versions of one key, newest first, at most limit', () => {
  const h = new UpdateHistory({ maxEntries: 5, maxBytes: 1e9 });
  for (let s = 1; s <= 8; s++) h.append(rec(s, s % 2 === 0 ? 'even' : 'odd'));
  assert.deepEqual(seqs(h.forKey('even', 10)), [8, 6, 4]);
  assert.deepEqual(seqs(h.forKey('even', 2)), [8, 6]);
  assert.deepEqual(seqs(h.forKey('none', 10)), []);
});

test('reset() starts again after a sequence, vouching for nothing before it', () => {
  const h = new UpdateHistory({ maxEntries: 5, maxBytes: 1e9 });
  h.append(rec(1, 'k'));
  h.reset(100);
  assert.equal(h.oldest, 100);
  assert.equal(h.newest, 100);
  assert.equal(h.size, 0);
  h.append(rec(101, 'k'));
  assert.deepEqual(seqs(h.since(100)), [101]);
  assert.throws(() => [...h.since(50)], HistoryCompactedError);
});

test('an append that skips sequences starts the history again after them: oldest never vouches for a missing update', () => {
  const h = new UpdateHistory({ maxEntries: 100, maxBytes: 1e9 });
  h.append(rec(1, 'k'));
  h.append(rec(2, 'k'));
  h.append(rec(5000, 'k')); // 3..4999 never came here
  assert.equal(h.oldest, 4999);
  assert.deepEqual(seqs(h.since(4999)), [5000]);
  assert.throws(() => [...h.since(2)], HistoryCompactedError);
});

test('updates are copied into chunks: every field round-trips, across chunk boundaries, column growth and compaction', () => {
  const h = new UpdateHistory({ maxEntries: 3000, maxBytes: 64 * 1024 * 1024 });
  const uuid = Buffer.alloc(16, 7);
  const big = Buffer.alloc(1024 * 1024 + 5, 9); // larger than a chunk: a chunk of its own
  const bodyOf = (s: number): Buffer => (s % 1000 === 0 ? big : Buffer.from(`body-${s}-${'x'.repeat(s % 300)}`));
  for (let s = 1; s <= 5000; s++) {
    const body = s % 7 === 0 ? Buffer.alloc(0) : bodyOf(s);
    h.appendParts(s, Buffer.from(`key/${s % 50}`), s % 2 ? uuid : Buffer.alloc(0), Buffer.from(`p=${s}\n`), body, s * 10, s % 11 === 0 ? `owner${s}` : undefined);
  }
  assert.equal(h.size, 3000);
  assert.equal(h.oldest, 2000);
  const held = [...h.since(2000)];
  assert.equal(held.length, 3000);
  for (const r of held) {
    const s = r.seq;
    assert.equal(r.key, `key/${s % 50}`);
    assert.deepEqual(r.uuid, s % 2 ? uuid : Buffer.alloc(0));
    assert.equal(r.properties.toString(), `p=${s}\n`);
    assert.deepEqual(r.body, s % 7 === 0 ? Buffer.alloc(0) : bodyOf(s));
    assert.equal(r.expiresAt, s * 10);
    assert.equal(r.owner, s % 11 === 0 ? `owner${s}` : undefined);
  }
  // Views handed out stay valid after what they point into is compacted away.
  const kept = held[0]!;
  for (let s = 5001; s <= 9000; s++) h.appendParts(s, Buffer.from('k'), Buffer.alloc(0), Buffer.alloc(0), Buffer.from('new'), 0, undefined);
  assert.equal(kept.properties.toString(), 'p=2001\n');
  assert.deepEqual(seqs(h.forKey('key/1', 5)), [], 'compacted away');
  assert.deepEqual(seqs(h.since(8997, 'k')), [8998, 8999, 9000]);
  assert.deepEqual(seqs(h.since(8997, 'key/')), [], 'a prefix longer than the key does not match');
});

test('the byte bound holds with big and small updates mixed', () => {
  const h = new UpdateHistory({ maxEntries: 1e6, maxBytes: 3 * 1024 * 1024 });
  for (let s = 1; s <= 200; s++) h.appendParts(s, Buffer.from('k'), Buffer.alloc(0), Buffer.alloc(0), Buffer.alloc(s % 10 === 0 ? 1024 * 1024 : 1000, 1), 0, undefined);
  assert.ok(h.bytes <= 3 * 1024 * 1024, `bytes ${h.bytes}`);
  assert.deepEqual(seqs(h.since(h.oldest)).at(-1), 200);
  assert.equal(seqs(h.since(h.oldest)).length, h.size);
  // An update larger than the whole bound cannot be held: the history starts after it.
  h.appendParts(201, Buffer.from('k'), Buffer.alloc(0), Buffer.alloc(0), Buffer.alloc(4 * 1024 * 1024), 0, undefined);
  assert.equal(h.size, 0);
  assert.equal(h.oldest, 201);
});

test('historyMax and historyBytes are checked, and a bad one is named', () => {
  assert.equal(forwarderSettings({}).historyMax, 1_000_000);
  assert.equal(forwarderSettings({}).historyBytes, 256 * 1024 * 1024);
  for (const [name, bad] of [['historyMax', -1], ['historyMax', 1.5], ['historyBytes', 'big'], ['historyBytes', Number.NaN]] as const) {
    assert.throws(() => forwarderSettings({ [name]: bad }), (e: unknown) => (e as { option?: string }).option === name, `${name}: ${String(bad)}`);
  }
});
