/**
 * The durable forwarder (issue 8, Persistence): a forwarder started again on the same data
 * directory recovers the map, the sequence, the epoch, ttl deadlines (absolute), the
 * de-duplication window and the owners of ephemeral keys.
 *
 * Topology: in-process Forwarders with `dataDir` in a temporary directory, closed and started
 * again on the same port triple; in-process Peers, and a raw DEALER (routing id "ckv1…") on the
 * ROUTER for writes with a chosen uuid.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test, type TestContext } from 'node:test';
import * as zmq from 'zeromq';
import { Forwarder, type ForwarderOptions } from '../src/index.ts';
import { contents, dataDir, Inbox, readyPeer, waitFor, within } from './helpers.ts';

const ZERO_SEQ = Buffer.alloc(8);

/** Starts a durable forwarder; closed after the test if still open. */
async function start(t: TestContext, options: ForwarderOptions): Promise<Forwarder> {
  const f = await Forwarder.start({ port: 0, heartbeatInterval: 100, ...options });
  t.after(() => f.close());
  return f;
}

/** One KVSET with a chosen uuid on a raw DEALER; resolves with its KVACK's status and sequence. */
async function rawWrite(t: TestContext, endpoint: string, key: string, uuid: Buffer): Promise<{ status: string; seq: number }> {
  const dealer = new zmq.Dealer({ linger: 0, routingId: `ckv1${randomBytes(8).toString('hex')}` });
  t.after(() => dealer.close());
  dealer.connect(endpoint);
  const inbox = new Inbox(dealer);
  await dealer.send([Buffer.from(key), ZERO_SEQ, uuid, Buffer.from('enc=msgpack\n'), Buffer.from([0xa1, 0x76])]);
  const ack = await inbox.next(`the KVACK for ${key}`);
  dealer.close();
  return { status: /status=(\w+)/.exec(ack[3]!.toString())![1]!, seq: Number(ack[1]!.readBigInt64BE()) };
}

test('a restarted forwarder recovers the map, the sequence, the epoch and absolute ttl deadlines; peers stay on the epoch', async (t) => {
  const dir = dataDir(t);
  const first = await start(t, { dataDir: dir });
  assert.equal(first.recovery?.newDirectory, true);
  const p = await readyPeer(t, first.endpoint, { silenceTimeout: 1000, snapshotRetryDelay: 50, maxRetryDelay: 200 });
  await p.set('cfg/a', { on: true });
  await p.set('cfg/b', 'two');
  await p.set('cfg/gone', 'x');
  await p.delete('cfg/gone');
  await p.set('short', 'lived', { ttl: 1 });
  const written = Date.now();
  await p.set('long', 'lived', { ttl: 600 });
  const { epoch, sequence, port } = first;
  await first.close();

  const second = await start(t, { dataDir: dir, port });
  assert.equal(second.epoch, epoch, 'same epoch');
  assert.equal(second.sequence, sequence, 'same sequence');
  assert.equal(second.size, 4 + 1, 'four keys and the presence key of the peer');
  assert.equal(second.recovery?.epochKept, true);
  assert.deepEqual(second.recovery?.repairs, []);
  // The peer never sees a new epoch: it goes on, and a write after the restart takes the next sequence.
  assert.equal(await within('write after restart', p.set('cfg/c', 3), 15_000), sequence + 1);
  assert.equal(p.epoch, epoch);
  const fresh = await readyPeer(t, second.endpoint);
  assert.deepEqual(contents(fresh), { 'cfg/a': { on: true }, 'cfg/b': 'two', 'cfg/c': 3, short: 'lived', long: 'lived' });
  // The 1 s ttl runs from the original write, not from the restart.
  await waitFor('short expired', () => !fresh.has('short'), 5000);
  assert.ok(Date.now() - written < 3000 + 1000, 'expired on its original deadline');
  assert.ok(fresh.has('long'));
});

test('a retry sent across a restart is applied once (the de-duplication window is recovered)', async (t) => {
  const dir = dataDir(t);
  const first = await start(t, { dataDir: dir });
  const uuid = randomBytes(16);
  const ack = await rawWrite(t, first.endpoint, 'once', uuid);
  assert.equal(ack.status, 'ok');
  const { port } = first;
  await first.close();
  const second = await start(t, { dataDir: dir, port });
  assert.ok((second.recovery?.writeOutcomes ?? 0) >= 1);
  const retry = await rawWrite(t, second.endpoint, 'once', uuid);
  assert.deepEqual(retry, ack, 'the retry gets the first answer');
  assert.equal(second.sequence, ack.seq, 'and is not applied again');
  assert.equal(second.stats().duplicates, 1);
});

test('ephemeral keys: an owner that comes back within peerTimeout keeps them, one that does not is purged', async (t) => {
  const dir = dataDir(t);
  const opts = { dataDir: dir, peerTimeout: 1500 };
  const first = await start(t, opts);
  const stays = await readyPeer(t, first.endpoint, { name: 'stays', silenceTimeout: 1000, snapshotRetryDelay: 50, maxRetryDelay: 200 });
  const leaves = await readyPeer(t, first.endpoint, { name: 'leaves' });
  await stays.set('eph/stays', 1, { ephemeral: true });
  const lost: unknown[] = [];
  stays.on('ownershipLost', (info) => lost.push(info));
  await leaves.set('eph/leaves', 2, { ephemeral: true });
  const { port } = first;
  await first.close();
  // "leaves" goes away for good while the forwarder is down (its KVBYE is lost).
  await leaves.close();
  const second = await start(t, { ...opts, port });
  assert.ok((second.recovery?.ownedKeys ?? 0) >= 2, 'owners recovered (presence keys included)');
  const reader = await readyPeer(t, second.endpoint);
  assert.ok(reader.has('eph/stays') && reader.has('eph/leaves'), 'both recovered');
  await waitFor('the absent owner purged', () => !reader.has('eph/leaves'), 10_000);
  // The owner that beats is confirmed under its name; a full peerTimeout later it still holds its key.
  await waitFor('the returning owner heard', () => second.peers().some((p) => p.name === 'stays'), 5000);
  const purgedAt = Date.now();
  await waitFor('another peerTimeout gone by', () => Date.now() - purgedAt > 1600, 5000);
  assert.ok(reader.has('eph/stays'), 'the owner that came back keeps its key');
  assert.ok(second.peers().some((p) => p.name === 'stays'));
  // Its registration (and `since`) was recovered too: it is not told it lost its keys.
  assert.deepEqual(lost, []);
  assert.ok(second.peers().every((p) => p.name !== 'unknown'), 'the returning owner is listed under its name');
});

test('durability options are checked', async () => {
  await assert.rejects(Forwarder.start({ port: 0, dataDir: '' }), { code: 'CLONEKV_INVALID_OPTION' });
  await assert.rejects(Forwarder.start({ port: 0, durability: 'fast' as 'sync' }), /durability/);
  await assert.rejects(Forwarder.start({ port: 0, historyMax: 0 }), /historyMax/);
  await assert.rejects(Forwarder.start({ port: 0, durability: 'async' }), /durability.*applies only with dataDir/);
});

test('async mode: a clean shutdown keeps the epoch and the data', async (t) => {
  const dir = dataDir(t);
  const first = await start(t, { dataDir: dir, durability: 'async' });
  const p = await readyPeer(t, first.endpoint);
  for (let i = 0; i < 100; i++) void p.set(`k/${i}`, i);
  await p.set('k/last', 'x');
  const { epoch, port, sequence } = first;
  await first.close();
  const second = await start(t, { dataDir: dir, port, durability: 'async' });
  assert.equal(second.epoch, epoch);
  assert.equal(second.sequence, sequence);
  assert.equal(second.size, 101 + 1, 'and the presence key of the peer');
});

test('the history on disk is bounded by historyMax and historyBytes, oldest first, and read back in order', async (t) => {
  const { DurableStore } = await import('../src/store/durable-store.ts');
  const dir = dataDir(t);
  const first = await start(t, { dataDir: dir, historyMax: 10 });
  await first.load(Array.from({ length: 25 }, (_, i) => [`h/${i % 3}`, i] as [string, unknown]));
  await first.close();
  const byCount = DurableStore.open(dir, { historyMax: 10, historyBytes: 1 << 30 });
  try {
    const seqs = [...byCount.records()].map((r) => r.seq);
    assert.deepEqual(seqs, Array.from({ length: 10 }, (_, i) => 16 + i), 'the last 10 of 25, in order');
    assert.equal(byCount.firstSequence, 16);
    assert.deepEqual([...byCount.records(20)].map((r) => r.seq), [20, 21, 22, 23, 24, 25]);
  } finally {
    byCount.close(true);
  }

  const bytesDir = dataDir(t);
  const second = await start(t, { dataDir: bytesDir, historyBytes: 4096 });
  await second.load(Array.from({ length: 40 }, (_, i) => [`b/${i}`, 'x'.repeat(200)] as [string, unknown]));
  await second.close();
  const byBytes = DurableStore.open(bytesDir, { historyMax: 1_000_000, historyBytes: 4096 });
  try {
    const records = [...byBytes.records()];
    assert.ok(records.length > 5 && records.length < 40, `${records.length} records kept within 4096 bytes`);
    assert.equal(records.at(-1)?.seq, 40, 'the newest kept');
    // The map is whole whatever the history keeps.
    assert.equal([...byBytes.entries()].length, 40);
  } finally {
    byBytes.close(true);
  }
});

test('one forwarder per data directory: a second is refused while the first runs, and may start once it stopped', async (t) => {
  const dir = dataDir(t);
  const first = await start(t, { dataDir: dir });
  await assert.rejects(Forwarder.start({ port: 0, dataDir: dir }), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'CLONEKV_STORAGE');
    assert.match(err.message, new RegExp(`${dir}.* is in use by another forwarder \\(pid ${process.pid}\\)`));
    return true;
  });
  await first.close();
  const second = await start(t, { dataDir: dir });
  assert.equal(second.epoch, first.epoch);
});
