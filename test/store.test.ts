/** The forwarder's sequenced map and ttl queue, no sockets. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ExpiryQueue } from '../src/store/expiry-queue.ts';
import { SequencedMap } from '../src/store/sequenced-map.ts';

const E = Buffer.alloc(0);
const v = (s: string): Buffer => Buffer.from(s);

test('one global sequence; empty body deletes; versions are sequences', () => {
  const m = new SequencedMap();
  assert.equal(m.apply('a', E, E, v('1'), 0, 0), 1);
  assert.equal(m.apply('b', E, E, v('2'), 0, 0), 2);
  assert.equal(m.apply('a', E, E, v('3'), 0, 0), 3);
  assert.equal(m.version('a'), 3);
  assert.equal(m.apply('a', E, E, E, 0, 0), 4);
  assert.equal(m.version('a'), 0);
  assert.equal(m.size, 1);
  assert.equal(m.sequence, 4);
});

test('snapshots are point-in-time copies filtered by prefix', () => {
  const m = new SequencedMap();
  m.apply('x/1', E, E, v('1'), 0, 0);
  m.apply('y/1', E, E, v('2'), 0, 0);
  const snap = m.snapshot('x/');
  m.apply('x/1', E, E, v('changed'), 0, 0);
  m.apply('x/2', E, E, v('new'), 0, 0);
  assert.deepEqual(snap.map(([k, e]) => [k, e.body.toString(), e.seq]), [['x/1', '1', 1]]);
  assert.equal(m.snapshot('').length, 3);
});

test('ttl: due keys are returned once, rewritten keys are not', () => {
  const m = new SequencedMap();
  m.apply('lease', E, E, v('1'), 1000, 0);
  m.apply('renewed', E, E, v('1'), 1000, 0);
  m.apply('renewed', E, E, v('2'), 0, 10); // rewritten without ttl: never expires
  m.apply('later', E, E, v('1'), 5000, 0);
  assert.equal(m.nextExpiry(), 1000);
  assert.deepEqual(m.dueForExpiry(999), []);
  assert.deepEqual(m.dueForExpiry(1000), ['lease']);
  assert.deepEqual(m.dueForExpiry(1000), []);
  assert.deepEqual(m.dueForExpiry(6000), ['later']);
});

test('expiry queue pops in deadline order', () => {
  const q = new ExpiryQueue();
  const at = [50, 10, 40, 10, 30, 20, 60, 5];
  at.forEach((t, i) => q.push(t, `k${i}`, i));
  const popped = q.popDue(45).map((s) => s.seq);
  assert.deepEqual(popped.map((i) => at[i]), [5, 10, 10, 20, 30, 40]);
  assert.equal(q.peek(), 50);
  assert.equal(q.size, 2);
});

test('a hot key rewritten with a ttl does not grow the expiry queue without bound (issue 7, item 11)', () => {
  const m = new SequencedMap();
  for (let i = 0; i < 100_000; i++) m.apply('hot', E, E, v(String(i)), 60_000, i);
  assert.ok(m.pendingExpiries <= 2 * 1 + 1024 + 1, `${m.pendingExpiries} slots for one key`);
  // Expiry still works after compaction: the last write expires, once, at its own deadline.
  assert.deepEqual(m.dueForExpiry(99_999 + 59_999), []);
  assert.deepEqual(m.dueForExpiry(99_999 + 60_000), ['hot']);
  // Many keys with a ttl, rewritten and deleted: the queue follows the live count.
  for (let i = 0; i < 50_000; i++) m.apply(`k${i % 5000}`, E, E, v('x'), 1000, 0);
  for (let i = 0; i < 5000; i += 2) m.apply(`k${i}`, E, E, E, 0, 0);
  for (let i = 0; i < 10_000; i++) m.apply(`k${1 + 2 * (i % 2500)}`, E, E, v('y'), 1000, 0);
  assert.ok(m.pendingExpiries <= 2 * 2500 + 1024 + 1, `${m.pendingExpiries} slots for 2,500 keys`);
  assert.equal(m.dueForExpiry(1000).length, 2500);
});
