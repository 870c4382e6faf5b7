/**
 * Issue 7, items 1 and 14 (peer side): a value marked `enc=msgpack` that does not decode cannot
 * stop a peer from syncing. It is given as its raw bytes, counted and reported, in snapshots and
 * in live updates, and the peer never spins asking for snapshots again.
 *
 * Topology: PlainServer (test/plain-server.ts: ROUTER P, XPUB P+1, SUB P+2, HUGZ every 100 ms),
 * which stores whatever a plain writer sends; one clonekv Peer: SUB→P+1, DEALER→P.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Packr } from 'msgpackr';
import type { ClonekvError } from '../src/index.ts';
import { readyPeer, waitFor } from './helpers.ts';
import { PlainServer } from './plain-server.ts';

const MSGPACK = Buffer.from('enc=msgpack\n');
const msgpack = new Packr({ useRecords: false });
/** A byte msgpack never uses, and msgpackr's own extension (it decodes to `undefined`). */
const C1 = Buffer.from([0xc1]);
const EXT = Buffer.from([0xd4, 0x00, 0x00]);

test('undecodable values in a snapshot and in live updates are held as raw bytes, counted and reported; the peer becomes ready without spinning', async (t) => {
  const server = await PlainServer.start(t, {});
  const goodSeq = server.apply('app/good', MSGPACK, msgpack.pack({ ok: 1 }));
  const c1Seq = server.apply('app/c1', MSGPACK, C1);
  server.apply('app/ext', MSGPACK, EXT);
  const errors: ClonekvError[] = [];
  const peer = await readyPeer(t, server.endpoint, { subtree: 'app/', snapshotRetryDelay: 50, maxRetryDelay: 200 });
  peer.on('error', (e) => errors.push(e));
  assert.deepEqual(peer.get('app/good'), { ok: 1 });
  assert.equal(peer.version('app/good'), goodSeq);
  for (const [key, body] of [['app/c1', C1], ['app/ext', EXT]] as const) {
    assert.equal(peer.has(key), true, key);
    const v = peer.get(key);
    assert.ok(v instanceof Uint8Array, `${key} is raw bytes, got ${String(v)}`);
    assert.deepEqual(Buffer.from(v), body);
  }
  assert.equal(peer.version('app/c1'), c1Seq);
  assert.ok(peer.stats().undecodable >= 2, `undecodable ${peer.stats().undecodable}`);

  // Live updates: the same values, sequenced, are applied as raw bytes too.
  const liveSeq = server.apply('app/live', MSGPACK, EXT);
  const live2 = server.apply('app/c1', MSGPACK, C1);
  await waitFor('the live undecodable updates applied', () => peer.version('app/live') === liveSeq && peer.version('app/c1') === live2);
  assert.deepEqual(Buffer.from(peer.get('app/live') as Uint8Array), EXT);
  const reported = errors.find((e) => e.message.includes('"app/live"'));
  assert.ok(reported, `an error event names the key: ${errors.map((e) => e.message).join(' | ')}`);
  assert.equal(reported.code, 'CLONEKV_MALFORMED');
  assert.match(reported.message, new RegExp(`sequence ${liveSeq}\\b`));

  // has() true always means get() gives a value (undefined cannot be stored).
  for (const key of peer.keys()) assert.notEqual(peer.get(key), undefined, key);
  // No tight loop: the first snapshot and at most the one that confirms a plain server's join
  // (and one more should a HUGZ race it), not thousands.
  const s = peer.stats();
  assert.ok(s.snapshotRequests <= 3, `snapshot requests: ${s.snapshotRequests}`);
  assert.equal(peer.status, 'live');
});
