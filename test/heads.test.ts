/**
 * Heartbeats stay valid with many subscriptions (issue 7, item 9), and heads never restart
 * below the truth (item 2). Unit tests of the `heads` codec and of SubscriptionHeads, then an
 * integration test with 10,000 subscribed prefixes of 100 to 255 bytes.
 *
 * Topology of the integration test:
 * ```
 *   20 raw SUBs (500 topics each)   ──► Forwarder XPUB :P+1
 *   raw SUB on "HUGZ" (checks sizes) ──► Forwarder XPUB :P+1
 *   subtree Peer "sub/": SUB ──► TcpProxy ──► Forwarder XPUB :P+1 (DEALER direct to :P)
 *   writer Peer (subtree "w/") ──► Forwarder ROUTER :P
 * ```
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as zmq from 'zeromq';
import { SubscriptionHeads } from '../src/forwarder/heads.ts';
import { encodeHeads, headFor, headId, HEADS_BUDGET, SHORT_PREFIX_BYTES } from '../src/protocol/gaps.ts';
import { MAX_PROPERTIES_BYTES } from '../src/protocol/properties.ts';
import { forwarder, peer, readyPeer, waitFor, within, Inbox } from './helpers.ts';
import { tcpProxy } from './tcp-proxy.ts';

const PREFIXES = 10_000;
const prefixOf = (i: number): string => `pre/${i}/`.padEnd(100 + (i % 156), 'x');

test('heads of 10,000 prefixes of up to 255 bytes fit in HUGZ under the budget, and each is found', () => {
  const prefixes = Array.from({ length: PREFIXES }, (_, i) => prefixOf(i));
  const lists = encodeHeads(prefixes.map((p, i) => [headId(p), 2 ** 40 + i] as const));
  assert.ok(lists.length > 1, 'split over several HUGZ');
  for (const l of lists) assert.ok(l.length <= HEADS_BUDGET, `a list of ${l.length} bytes`);
  for (const i of [0, 1, 4999, 9999]) {
    const found = lists.map((l) => headFor(l, Buffer.from(prefixes[i]!, 'latin1'))).filter((h) => h !== undefined);
    assert.deepEqual(found, [2 ** 40 + i], `prefix ${i} listed exactly once`);
  }
  // Short prefixes keep their readable id; long ones get a hash id that cannot collide with it.
  assert.equal(headId('sub/'), Buffer.from('sub/').toString('base64url'));
  assert.match(headId('x'.repeat(SHORT_PREFIX_BYTES + 1)), /^~[A-Za-z0-9_-]{16}$/);
  assert.deepEqual(encodeHeads([]), ['']);
});

test('SubscriptionHeads: a resubscribed prefix keeps its head, kept current; one with no record starts at the global sequence', () => {
  const h = new SubscriptionHeads({ retain: 2 });
  h.subscribe('a/', 10);
  assert.equal(h.advance('a/1', 11), '2:10');
  h.unsubscribe('a/');
  assert.equal(h.advance('a/2', 12), '', 'nobody subscribed: nothing to publish');
  h.subscribe('a/', 20);
  assert.equal(h.advance('a/3', 21), '2:12', 'the head kept the write made while unsubscribed');
  // Beyond `retain` unsubscribed prefixes, the oldest is forgotten and restarts at the global sequence.
  for (const p of ['a/', 'b/', 'c/']) h.subscribe(p, 30);
  for (const p of ['a/', 'b/', 'c/']) h.unsubscribe(p);
  h.subscribe('a/', 40);
  assert.equal(h.advance('a/4', 41), '2:40');
  assert.equal(h.size, 1);
});

test('with 10,000 subscribed prefixes every HUGZ stays under 64 KiB and a subtree peer still detects a lost update', async (t) => {
  const fwd = await forwarder(t, { heartbeatInterval: 100 });
  // 500 topics per socket: zeromq passes the XPUB at most about 1,000 subscriptions of one
  // connection (the subscriber's send high-water mark), and drops the rest.
  for (let s = 0; s < PREFIXES / 500; s++) {
    const sub = new zmq.Subscriber({ linger: 0 });
    t.after(() => sub.close());
    sub.connect(fwd.endpoints.publisher);
    sub.subscribe(...Array.from({ length: 500 }, (_, k) => prefixOf(s * 500 + k)));
  }
  const hugz = new zmq.Subscriber({ linger: 0 });
  t.after(() => hugz.close());
  hugz.connect(fwd.endpoints.publisher);
  hugz.subscribe('HUGZ');
  const beats = new Inbox(hugz);
  await waitFor('10,001 subscriptions', () => fwd.stats().subscriptions >= PREFIXES + 1);

  const writer = await readyPeer(t, fwd.endpoint, { subtree: 'w/', name: 'writer' });
  const proxy = await tcpProxy(t, fwd.endpoints.publisher);
  const p = peer(t, '', { server: { ...fwd.endpoints, publisher: proxy.endpoint }, subtree: 'sub/', name: 'sub' });
  await within('the subtree peer ready', p.ready(), 15_000);
  const v0 = await writer.set('sub/0', 0);
  await waitFor('sub/0 at the peer', () => p.version('sub/0') === v0);

  const subscribed = fwd.stats().subscriptions;
  proxy.cut();
  await waitFor('the unsubscription of sub/', () => fwd.stats().subscriptions < subscribed);
  let last = 0;
  for (let i = 1; i <= 5; i++) last = await writer.set(`sub/${i}`, i);
  proxy.restore();
  await waitFor('the resubscription', () => fwd.stats().subscriptions >= subscribed);
  // No write follows: only the heads in HUGZ can tell the peer what it missed.
  await waitFor('the peer to find the updates it missed', () => p.version('sub/5') === last && p.status === 'live', 10_000);
  assert.ok(p.stats().gaps > 0, `a gap was counted (${p.stats().gaps})`);
  assert.equal(p.stats().malformed, 0, 'no HUGZ was refused as malformed');

  const all = beats.drain();
  assert.ok(all.length > 0);
  for (const m of all) assert.ok(m[3]!.length <= MAX_PROPERTIES_BYTES, `a HUGZ with ${m[3]!.length} bytes of properties`);
});
