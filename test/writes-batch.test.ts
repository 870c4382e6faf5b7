/**
 * Item 17 (writes): a write is never queued twice in one KVWRITE message. Topology: a scripted
 * forwarder (raw ROUTER + XPUB on 127.0.0.1, test/fake-forwarder.ts) and one in-process Peer;
 * the test reads each KVWRITE the peer sends and counts the uuids in it.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Peer } from '../src/index.ts';
import { unpackBatch } from '../src/protocol/batch.ts';
import { FakeForwarder } from './fake-forwarder.ts';
import { waitFor, within } from './helpers.ts';

/** Blocks the event loop (not a wait for an outcome): lets messages pile up so one turn reads them all. */
function holdEventLoop(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

test('a write released by two causes in one turn (heartbeat and snapshot end) goes out once', async (t) => {
  const fake = await FakeForwarder.start(t);
  const p = new Peer({ server: fake.endpoints, writeTimeout: 10_000, writeRetryInterval: 5000, silenceTimeout: 5000, snapshotRetryDelay: 5000 });
  t.after(() => p.close());
  const request = await fake.next('ICANHAZ?');
  const id = request[0]!;
  // The join topic is subscribed last: once it is here, heartbeats reach the peer.
  await waitFor('join subscription', () => fake.subscriptions.all.some((s) => s[0]!.includes('clonekv-join')));
  // Before the peer knows what the server is, writes wait. Two events then release them: a
  // clonekv heartbeat, and the end of the snapshot. Delivered in one turn of the event loop,
  // each used to queue the same write again into the same KVWRITE.
  const writes = Array.from({ length: 5 }, (_, i) => p.set(`k${i}`, i));
  for (const w of writes) w.catch(() => {});
  await fake.heartbeat(0);
  holdEventLoop(50);
  await fake.snapshotEnd(id, 0);
  holdEventLoop(50);
  await within('peer ready', p.ready());
  const seen = new Map<string, number>();
  const batches: string[][] = [];
  await waitFor('all five writes sent', () => {
    for (const m of fake.requests.drain()) {
      if (m[1]?.toString('latin1') !== 'KVWRITE') continue;
      const uuids: string[] = [];
      unpackBatch(m[5]!, (e) => uuids.push(e.uuid.toString('hex')));
      batches.push(uuids);
      for (const u of uuids) seen.set(u, (seen.get(u) ?? 0) + 1);
    }
    return seen.size === 5;
  });
  for (const uuids of batches) assert.equal(new Set(uuids).size, uuids.length, `a KVWRITE carried a uuid twice: ${uuids.join(' ')}`);
});

test('reads never show a write before the forwarder has sequenced it', async (t) => {
  // Topology as above: the scripted forwarder receives the write and never sequences it.
  const fake = await FakeForwarder.start(t);
  const p = new Peer({ server: fake.endpoints, writeTimeout: 10_000, silenceTimeout: 5000 });
  t.after(() => p.close());
  const request = await fake.next('ICANHAZ?');
  await waitFor('join subscription', () => fake.subscriptions.all.some((s) => s[0]!.includes('clonekv-join')));
  await fake.heartbeat(0);
  await fake.snapshotEnd(request[0]!, 0);
  await within('peer ready', p.ready());
  const updates: string[] = [];
  p.on('update', (e) => updates.push(e.key));
  const pending = p.set('k', 1);
  pending.catch(() => {}); // rejected with CLONEKV_CLOSED at teardown: it was never sequenced
  assert.equal(p.has('k'), false, 'not shown as the write is made');
  await waitFor('the write reached the forwarder', () => fake.requests.all.some((m) => m[1]?.toString('latin1') === 'KVWRITE'));
  await fake.heartbeat(0);
  await new Promise((r) => setImmediate(r));
  assert.equal(p.has('k'), false, 'not shown while it waits to be sequenced');
  assert.equal(p.get('k'), undefined);
  assert.deepEqual(updates, [], 'no change was reported');
});
