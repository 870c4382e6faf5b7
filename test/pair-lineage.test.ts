/**
 * Terms and lineages (forwarder/pair/lineage.ts): when two logs provably agree up to a sequence,
 * which decides between a delta and a full snapshot (peers) or a full copy (a backup).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { agreesUpTo, extendLineage, followerAgrees, termAt } from '../src/forwarder/pair/lineage.ts';

test('a lineage grows by term; the term of a sequence is the last term started at or before it', () => {
  let l = extendLineage([], 1, 1);
  l = extendLineage(l, 2, 101);
  l = extendLineage(l, 4, 151);
  assert.deepEqual(l, [[1, 1], [2, 101], [4, 151]]);
  assert.equal(termAt(l, 0), 0);
  assert.equal(termAt(l, 1), 1);
  assert.equal(termAt(l, 100), 1);
  assert.equal(termAt(l, 101), 2);
  assert.equal(termAt(l, 500), 4);
});

test('delta-by-term for peers: same term yes; an older term only before the next term began; an unknown or newer term no; no term only before the current term began', () => {
  const l = [[1, 1], [2, 101], [4, 151]] as const;
  assert.equal(agreesUpTo(l, 4, 400, 4), true);
  assert.equal(agreesUpTo(l, 4, 100, 1), true, 'term 1 up to 100: term 2 began at 101');
  assert.equal(agreesUpTo(l, 4, 101, 1), false, 'sequence 101 of term 1 may not be the one of term 2');
  assert.equal(agreesUpTo(l, 4, 150, 2), true);
  assert.equal(agreesUpTo(l, 4, 150, 3), false, 'term 3 never followed here');
  assert.equal(agreesUpTo(l, 4, 150, 5), false, 'a newer term than this server knows');
  assert.equal(agreesUpTo(l, 4, 150, undefined), true);
  assert.equal(agreesUpTo(l, 4, 151, undefined), false);
  assert.equal(agreesUpTo([], 0, 10, undefined), true, 'no term yet: as a standalone forwarder');
});

test('a follower agrees when the term of its last update is one the active followed, from the same start, and it stops before the next term', () => {
  const ours = [[1, 1], [2, 101]] as const;
  assert.equal(followerAgrees(ours, 2, [[1, 1]], 100), true, 'a backup that followed term 1 to its end');
  assert.equal(followerAgrees(ours, 2, [[1, 1]], 120), false, 'an old active with updates of term 1 nobody else has');
  assert.equal(followerAgrees(ours, 2, [[1, 1], [2, 101]], 130), true);
  assert.equal(followerAgrees(ours, 2, [[1, 1], [2, 90]], 95), false, 'a term 2 that started elsewhere');
  assert.equal(followerAgrees(ours, 2, [[1, 1], [3, 101]], 130), false, 'a term the active never followed');
  assert.equal(followerAgrees(ours, 2, [], 0), true, 'nothing held: agrees');
  assert.equal(followerAgrees(ours, 2, [], 5), false, 'updates without a term (a standalone history)');
});
