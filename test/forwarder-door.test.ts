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
import { forwarder, Inbox } from './helpers.ts';

const ZERO_SEQ = Buffer.alloc(8);

function props(frame: Buffer): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of frame.toString('utf8').split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) m.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return m;
}

function rawWriter(t: TestContext, fwd: Forwarder) {
  const dealer = new zmq.Dealer({ linger: 0, routingId: `ckv1${randomBytes(8).toString('hex')}` });
  t.after(() => dealer.close());
  dealer.connect(fwd.endpoints.snapshot);
  const inbox = new Inbox(dealer);
  return async (key: string, properties: string, body: Buffer): Promise<Map<string, string>> => {
    await dealer.send([Buffer.from(key), ZERO_SEQ, randomBytes(16), Buffer.from(properties), body]);
    const ack = await inbox.next(`the KVACK for ${key}`);
    assert.equal(ack[0]!.toString(), 'KVACK');
    return props(ack[3]!);
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
