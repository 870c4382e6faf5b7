/**
 * What the forwarder refuses at the door (issue 7, items 1 and 14), as a clonekv writer sees it:
 * a body marked `enc=msgpack` that is not one valid msgpack value, and an `owner` that is not a
 * peer id, are rejected with a KVACK whose detail names the key, counted, and never stored.
 * (The plain-CHP side, dropped and counted, is in malformed.test.ts.)
 *
 * Topology: a Forwarder (ROUTER P, XPUB P+1, SUB P+2) and a raw DEALER (routing id starting
 * "ckv1") on P sending KVSETs, answered with KVACKs.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test, type TestContext } from 'node:test';
import * as zmq from 'zeromq';
import type { Forwarder } from '../src/index.ts';
import { forwarder, readyPeer, waitFor } from './helpers.ts';
import { EMPTY, propMap, rawDealer, ZERO_SEQ } from './raw-sockets.ts';

function rawWriter(t: TestContext, fwd: Forwarder) {
  const { dealer, inbox } = rawDealer(t, fwd.endpoints.snapshot, { clonekv: true });
  return async (key: string, properties: string, body: Buffer): Promise<Map<string, string>> => {
    await dealer.send([Buffer.from(key), ZERO_SEQ, randomBytes(16), Buffer.from(properties), body]);
    const ack = await inbox.next(`the KVACK for ${key}`);
    assert.equal(ack[0]!.toString(), 'KVACK');
    return propMap(ack[3]!);
  };
}

test('an undecodable enc=msgpack body is rejected to a clonekv writer, naming the key', async (t) => {
  const fwd = await forwarder(t);
  const write = rawWriter(t, fwd);
  for (const [key, body] of [['cfg/c1', [0xc1]], ['cfg/undef', [0xd4, 0, 0]], ['cfg/trailing', [0x01, 0x02]], ['cfg/cut', [0x92, 0x01]]] as const) {
    const before = fwd.stats();
    const ack = await write(key, 'enc=msgpack\n', Buffer.from(body));
    assert.equal(ack.get('status'), 'rejected', key);
    assert.ok(ack.get('detail')?.includes(key), `the detail names ${key}: ${ack.get('detail')}`);
    const after = fwd.stats();
    assert.equal(after.malformedBy['value-encoding'], before.malformedBy['value-encoding'] + 1);
    assert.equal(after.rejected, before.rejected + 1);
  }
  assert.equal(fwd.size, 0, 'nothing was stored');
  // The same bytes without the mark are opaque and accepted; a valid marked value too.
  assert.equal((await write('raw/c1', '', Buffer.from([0xc1]))).get('status'), 'ok');
  assert.equal((await write('cfg/ok', 'enc=msgpack\n', Buffer.from([0x2a]))).get('status'), 'ok');
  assert.equal(fwd.size, 2);
});

test('with checkValues off, a marked body is sequenced as it is', async (t) => {
  const fwd = await forwarder(t, { checkValues: false });
  const write = rawWriter(t, fwd);
  assert.equal((await write('cfg/c1', 'enc=msgpack\n', Buffer.from([0xc1]))).get('status'), 'ok');
  assert.equal(fwd.size, 1);
  assert.equal(fwd.stats().malformedBy['value-encoding'], 0);
});

test('an owner that is not a peer id is rejected, counted and not stored; a valid one is registered', async (t) => {
  const fwd = await forwarder(t);
  const write = rawWriter(t, fwd);
  for (const owner of ['a'.repeat(300), 'a'.repeat(65), 'ABC', '../x', '']) {
    const before = fwd.stats();
    const ack = await write('lock/a', `owner=${owner}\n`, Buffer.from('v'));
    assert.equal(ack.get('status'), 'rejected', `owner ${owner.slice(0, 20)}`);
    assert.ok(ack.get('detail')?.includes('lock/a'));
    assert.equal(fwd.stats().malformedBy.owner, before.malformedBy.owner + 1);
  }
  assert.equal(fwd.size, 0, 'neither the key nor a presence key was stored');
  assert.equal(fwd.peers().length, 0);
  assert.equal((await write('lock/a', `owner=${'f'.repeat(64)}\n`, Buffer.from('v'))).get('status'), 'ok');
  assert.deepEqual(fwd.peers().map((p) => p.id), ['f'.repeat(64)]);
});

test('a plain CHP writer sending an owner of 300 characters cannot stop joiners from becoming ready', async (t) => {
  // Topology: Forwarder; a raw zeromq PUB (a plain CHP writer) on the collector P+2; fresh
  // clonekv Peers joining afterwards. Before the fix, `$peers/<300 chars>` (a 307-byte key) went
  // into every snapshot, which every joiner refused as incomplete, asking again in a tight loop
  // until the unknown owner was purged (peerTimeout, long here).
  const fwd = await forwarder(t, { peerTimeout: 60_000 });
  const pub = new zmq.Publisher({ linger: 0 });
  t.after(() => pub.close());
  pub.connect(fwd.endpoints.collector);
  const prime = randomBytes(16);
  // Resent with one uuid (applied once) until the PUB→SUB connection is known to be live.
  await waitFor('the collector PUB to be live', () => {
    void pub.send([Buffer.from('plain/prime'), ZERO_SEQ, prime, EMPTY, Buffer.from('1')]);
    return fwd.size > 0;
  });
  const before = fwd.sequence;
  await pub.send([Buffer.from('plain/lock'), ZERO_SEQ, randomBytes(16), Buffer.from(`owner=${'a'.repeat(300)}\n`), Buffer.from('v')]);
  await waitFor('the write to be decided', () => fwd.stats().malformedBy.owner > 0 || fwd.sequence > before);
  for (const subtree of ['', '$peers/']) {
    const p = await readyPeer(t, fwd.endpoint, { name: `joiner-${subtree}`, subtree });
    assert.equal(p.stats().resyncs, 0, `the ${subtree || 'full-tree'} joiner's first snapshot was complete`);
    assert.equal(p.has('plain/lock'), false, 'the write was not stored');
    await p.close();
  }
  assert.equal(fwd.stats().malformedBy.owner, 1);
  assert.equal(fwd.size, 1, 'neither the key nor a presence key was stored');
});
