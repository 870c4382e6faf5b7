/**
 * Issue 7, item 12: against a plain CHP server a write goes out once. A plain server sequences
 * every KVSET it receives, so a second copy is a second write (reference clients see it twice,
 * and a write by someone else in between is lost). The peer's socket to the collector is an
 * XPUB: a write waits for the server's subscription (a PUB drops what it sends before), is sent
 * once, and is sent again only when a resync proved it lost.
 *
 * Topology: PlainServer (test/plain-server.ts: ROUTER P, XPUB P+1, SUB P+2, HUGZ every 100 ms);
 * one clonekv Peer (subtree app/): SUB→P+1, DEALER→P, XPUB→P+2.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { readyPeer, waitFor, within } from './helpers.ts';
import { PlainServer } from './plain-server.ts';
import { EMPTY } from './raw-sockets.ts';

test('the first write through a plain server goes out once and resolves without a retry', async (t) => {
  const server = await PlainServer.start(t, {});
  const peer = await readyPeer(t, server.endpoint, { subtree: 'app/' });
  const seq = await within('the first write', peer.set('app/first', { n: 1 }), 10_000);
  assert.equal(peer.stats().writeRetries, 0, 'not dropped and retried');
  const copies = server.sequenced.filter((s) => s.key === 'app/first');
  assert.equal(copies.length, 1);
  assert.equal(copies[0]!.seq, seq);
  assert.deepEqual(peer.get('app/first'), { n: 1 });
});

test('a write made during a resync reaches a plain server exactly once', async (t) => {
  const server = await PlainServer.start(t, {});
  const peer = await readyPeer(t, server.endpoint, { subtree: 'app/' });
  // A plain server does not confirm the join: the peer takes a second snapshot once its
  // subscription has proven live. Wait for that, and for some live updates.
  await waitFor('the join confirmed', () => peer.stats().snapshots >= 2 && peer.status === 'live');
  let s = 0;
  for (let i = 0; i < 3; i++) s = server.apply(`app/u${i}`, EMPTY, Buffer.from('u'));
  await waitFor('the updates applied', () => peer.sequence === s);
  await peer.set('app/warm', 0);

  // The server's sequence goes back (as after a restart): its next HUGZ starts a resync. The
  // server sends the snapshot but holds its KTHXBAI: the write below is made during the resync.
  let release!: () => void;
  server.hold = new Promise<void>((resolve) => (release = resolve));
  const snapshots = server.snapshots;
  server.seq = 1;
  await waitFor('the resync under way', () => server.snapshots > snapshots && peer.status === 'stale');
  // The write goes out, and the KTHXBAI is released at once: the peer ends its sync before the
  // write's echo (its only acknowledgement from a plain server) is back.
  const during = peer.set('app/during', 'v');
  server.hold = undefined;
  release();
  await within('the write made during the resync', during, 10_000);
  // Anything the peer sent before this marker was sequenced before it (one ordered connection).
  await within('a later write', peer.set('app/marker', 1), 10_000);
  assert.equal(server.sequenced.filter((x) => x.key === 'app/during').length, 1, 'sequenced once');
  assert.equal(server.sequenced.filter((x) => x.key === 'app/marker').length, 1);
  assert.equal(peer.get('app/during'), 'v');
});

test('a write a plain server lost when it went away is sent again after the resync, and only then', async (t) => {
  // The server receives the write but dies before sequencing it (dropWrites), then restarts on
  // the same ports with a lower sequence. The collector's connection drops with it, so the write
  // is in doubt; the new run's snapshot does not hold it, so the peer sends it again, once.
  const server = await PlainServer.start(t, {});
  const peer = await readyPeer(t, server.endpoint, { subtree: 'app/', writeTimeout: 15_000 });
  await waitFor('the join confirmed', () => peer.stats().snapshots >= 2 && peer.status === 'live');
  let s = 0;
  for (let i = 0; i < 5; i++) s = server.apply(`app/u${i}`, EMPTY, Buffer.from('u'));
  await waitFor('the updates applied', () => peer.sequence === s);
  await peer.set('app/warm', 0);
  server.dropWrites = true;
  const received = server.received;
  const lost = peer.set('app/lost', 'again');
  await waitFor('the write sent (and dropped)', () => server.received > received);
  const resyncs = peer.stats().resyncs;
  await server.restart({ 'app/new': Buffer.from('n') });
  server.dropWrites = false;
  const seq = await within('the lost write, sent again', lost, 15_000);
  assert.ok(peer.stats().resyncs > resyncs, 'after a resync');
  const copies = server.sequenced.filter((x) => x.key === 'app/lost');
  assert.equal(copies.length, 1, 'sequenced once by the new run');
  assert.equal(copies[0]!.seq, seq);
  assert.equal(peer.get('app/lost'), 'again');
  assert.equal(peer.stats().writeRetries, 1);
});
