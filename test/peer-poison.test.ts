/**
 * Issue 7, items 1 and 14 (peer side): a value marked `enc=msgpack` that does not decode cannot
 * stop a peer from syncing. It is given as its raw bytes, counted and reported, in snapshots and
 * in live updates, and the peer never spins asking for snapshots again.
 *
 * Topology: PlainServer (test/plain-server.ts: ROUTER P, XPUB P+1, SUB P+2, HUGZ every 100 ms),
 * which stores whatever a plain writer sends; one clonekv Peer: SUB→P+1, DEALER→P.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { Packr } from 'msgpackr';
import * as zmq from 'zeromq';
import { Peer, type ClonekvError } from '../src/index.ts';
import { SnapshotDigest } from '../src/protocol/digest.ts';
import { forwarder, readyPeer, waitFor } from './helpers.ts';
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

test('through a forwarder that does not check values at the door, undecodable values reach peers as raw bytes', async (t) => {
  // Topology: Forwarder (checkValues: false, so it stores what a plain writer sends); a plain
  // writer (raw zeromq PUB → P+2) sends KVSETs marked enc=msgpack with bodies c1 and d4 00 00;
  // a clonekv Peer joins (snapshot) and then sees the same live.
  const fwd = await forwarder(t, { checkValues: false, heartbeatInterval: 100 });
  const pub = new zmq.Publisher({ linger: 0 });
  t.after(() => pub.close());
  const connected = new Promise<void>((resolve) => pub.events.on('handshake', () => resolve()));
  pub.connect(fwd.endpoints.collector);
  await connected;
  const uuids = new Map<string, Buffer>();
  // One uuid per key: a copy sent again is recognised by the forwarder as a retry.
  const kvset = (key: string, body: Buffer): Promise<void> => {
    if (!uuids.has(key)) uuids.set(key, randomBytes(16));
    return pub.send([Buffer.from(key), Buffer.alloc(8), uuids.get(key)!, MSGPACK, body]);
  };
  // A PUB drops what it sends before the forwarder's SUB has subscribed: send until stored.
  let sending: Promise<void> | undefined;
  await waitFor('the snapshot values stored', () => {
    if (fwd.stats().keys >= 2) return true;
    sending ??= kvset('x/c1', C1)
      .then(() => kvset('x/ext', EXT))
      .finally(() => (sending = undefined));
    return false;
  });
  await sending;
  const peer = await readyPeer(t, fwd.endpoint, { subtree: 'x/' });
  assert.deepEqual(Buffer.from(peer.get('x/c1') as Uint8Array), C1);
  assert.deepEqual(Buffer.from(peer.get('x/ext') as Uint8Array), EXT);
  await kvset('x/live', EXT);
  await waitFor('the live value', () => peer.has('x/live'));
  assert.deepEqual(Buffer.from(peer.get('x/live') as Uint8Array), EXT);
  assert.equal(peer.stats().undecodable, 3);
  assert.equal(peer.stats().resyncs, 0);
});

test('a snapshot entry with a key over 255 bytes is skipped and counted; the snapshot is still complete', async (t) => {
  // Topology: PlainServer (stores any key); one clonekv Peer (subtree app/).
  const server = await PlainServer.start(t, {});
  server.apply(`app/${'x'.repeat(300)}`, MSGPACK, msgpack.pack('too long'));
  server.apply('app/fine', MSGPACK, msgpack.pack('fine'));
  const peer = await readyPeer(t, server.endpoint, { subtree: 'app/', snapshotRetryDelay: 50, maxRetryDelay: 200 });
  assert.equal(peer.get('app/fine'), 'fine');
  assert.equal(peer.size, 1);
  const s = peer.stats();
  assert.ok(s.malformed >= 1, `malformed ${s.malformed}`);
  assert.ok(s.snapshotRequests <= 3, `snapshot requests: ${s.snapshotRequests}`);
});

test('a snapshot that never adds up is asked for again only after a growing delay, not in a tight loop', async (t) => {
  // Topology: PlainServer whose every KTHXBAI announces a wrong entry count; one clonekv Peer.
  const server = await PlainServer.start(t, { 'app/a': Buffer.from('a') });
  server.snapshotEndProps = Buffer.from('count=999\n');
  const peer = new Peer({ server: server.endpoint, subtree: 'app/', snapshotRetryDelay: 100, maxRetryDelay: 400 });
  t.after(() => peer.close());
  const started = Date.now();
  await waitFor('four refused snapshots', () => server.snapshots >= 4, 10_000);
  const elapsed = Date.now() - started;
  // Delays of 100, 200 and 400 ms separate the first four requests: at least 700 ms in all.
  assert.ok(elapsed >= 700, `four requests in ${elapsed} ms`);
  assert.equal(peer.status, 'syncing');
  assert.ok(peer.stats().resyncs >= 3);
});

test('a snapshot whose count adds up but whose digest does not is refused, never applied', async (t) => {
  // Topology: PlainServer whose KTHXBAI announces the right count (1) but the digest of another
  // (key, sequence) pair, as a server that swapped or lost an entry would; one clonekv Peer.
  const server = await PlainServer.start(t, { 'app/a': Buffer.from('a') });
  const wrong = new SnapshotDigest();
  wrong.add('app/b', 1);
  server.snapshotEndProps = Buffer.from(`count=1\ndigest=${wrong.hex}\n`);
  const peer = new Peer({ server: server.endpoint, subtree: 'app/', snapshotRetryDelay: 50, maxRetryDelay: 100 });
  t.after(() => peer.close());
  await waitFor('three refused snapshots', () => server.snapshots >= 3, 10_000);
  assert.equal(peer.status, 'syncing');
  assert.equal(peer.has('app/a'), false, 'nothing of a snapshot that does not add up is applied');
  assert.ok(peer.stats().malformed >= 2);
});
