/**
 * Acknowledged and conditional writes. Topology: an in-process Forwarder on an ephemeral port
 * triple; clonekv Peers, and a raw zeromq DEALER (routing id starting with "ckv1", as clonekv
 * peers use) sending KVSETs on the snapshot socket to observe acknowledgements directly.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import * as zmq from 'zeromq';
import { ConflictError, Peer } from '../src/index.ts';
import { contents, forwarder, peer, readyPeer, waitFor, within } from './helpers.ts';

function kvset(key: string, uuid: Buffer, props = 'enc=msgpack\n', body = Buffer.from([0xa1, 0x78])): Buffer[] {
  return [Buffer.from(key), Buffer.alloc(8), uuid, Buffer.from(props), body];
}

test('a retried write (same uuid) is applied once and acknowledged with the same sequence', async (t) => {
  const fwd = await forwarder(t);
  const observer = await readyPeer(t, fwd.endpoint);
  const updates: number[] = [];
  observer.on('update', (e) => e.key === 'retried' && updates.push(e.version));
  const dealer = new zmq.Dealer({ linger: 0, routingId: 'ckv1-test-writer' });
  t.after(() => dealer.close());
  dealer.connect(fwd.endpoint);
  const uuid = randomBytes(16);
  for (let i = 0; i < 3; i++) await dealer.send(kvset('retried', uuid));
  const acks: Buffer[][] = [];
  for (let i = 0; i < 3; i++) acks.push(await within('ack', dealer.receive()));
  const seq = acks[0]![1]!.readBigInt64BE();
  assert.ok(seq > 0n);
  for (const ack of acks) {
    assert.equal(ack[0]!.toString(), 'KVACK');
    assert.ok(ack[2]!.equals(uuid));
    assert.equal(ack[1]!.readBigInt64BE(), seq);
    assert.match(ack[3]!.toString(), /status=ok/);
  }
  await waitFor('observer has the value', () => observer.has('retried'));
  assert.equal(fwd.stats().duplicates, 2);
  assert.deepEqual(updates, [Number(seq)]);
});

test('peer writes resolve once sequenced, with read-your-writes, also under retries', async (t) => {
  const fwd = await forwarder(t);
  // Retry every 10 ms so that many writes are sent more than once while the forwarder is busy.
  const p = await readyPeer(t, fwd.endpoint, { writeRetryInterval: 10 });
  const observer = await readyPeer(t, fwd.endpoint, { subtree: 'k/' });
  let applied = 0;
  observer.on('update', () => applied++);
  const seqs = await Promise.all(Array.from({ length: 2000 }, (_, i) => p.set(`k/${i}`, i)));
  assert.equal(new Set(seqs).size, 2000, 'each write has its own sequence');
  await waitFor('observer caught up', () => observer.sequence >= Math.max(...seqs));
  assert.equal(applied, 2000, 'every write applied once, retries included');
  for (let i = 0; i < 2000; i++) assert.equal(p.version(`k/${i}`), seqs[i]);
  // Whether a write was re-sent depends on timing; the promise is that any retry was answered
  // from the de-duplication window, not applied again (test/writes-pause.test.ts forces retries).
  assert.ok(fwd.stats().duplicates <= p.stats().writeRetries, 'only retries are answered as duplicates');
});

test('a write outside the peer subtree resolves with its sequence; the peer never sees it', async (t) => {
  const fwd = await forwarder(t);
  const p = await readyPeer(t, fwd.endpoint, { subtree: 'mine/' });
  const other = await readyPeer(t, fwd.endpoint);
  const seq = await p.set('theirs/x', 'y');
  assert.ok(seq > 0);
  assert.equal(p.has('theirs/x'), false);
  await waitFor('visible elsewhere', () => other.get('theirs/x') === 'y');
});

test('conditional writes: the forwarder decides, the loser gets a conflict naming the key and version', async (t) => {
  const fwd = await forwarder(t);
  const a = await readyPeer(t, fwd.endpoint);
  const b = await readyPeer(t, fwd.endpoint, { subtree: 'elsewhere/' });
  const watcher = await readyPeer(t, fwd.endpoint);
  const published: string[] = [];
  watcher.on('update', (e) => published.push(`${e.key}=${String(e.value)}`));
  // Create-if-absent: exactly one of two racing writers wins.
  const results = await Promise.allSettled([a.set('lock', 'a', { ifVersion: 0 }), b.set('lock', 'b', { ifVersion: 0 })]);
  const won = results.filter((r) => r.status === 'fulfilled');
  const lost = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  assert.equal(won.length, 1);
  assert.equal(lost.length, 1);
  const err = lost[0]!.reason as ConflictError;
  assert.ok(err instanceof ConflictError);
  assert.equal(err.code, 'CLONEKV_CONFLICT');
  assert.equal(err.key, 'lock');
  assert.equal(err.expectedVersion, 0);
  const v1 = (won[0] as PromiseFulfilledResult<number>).value;
  assert.equal(err.currentVersion, v1);
  assert.match(err.message, new RegExp(`"lock".*current version is ${v1}`));
  // Compare-and-set on the current version wins; on a stale one loses and is never published.
  const v2 = await a.set('lock', 'a2', { ifVersion: v1 });
  await assert.rejects(b.set('lock', 'stale', { ifVersion: v1 }), { code: 'CLONEKV_CONFLICT', currentVersion: v2 });
  await assert.rejects(a.delete('lock', { ifVersion: v1 }), { code: 'CLONEKV_CONFLICT' });
  await a.delete('lock', { ifVersion: v2 });
  await waitFor('watcher caught up', () => watcher.sequence === fwd.sequence);
  assert.equal(published.filter((s) => s.includes('stale')).length, 0);
  assert.equal(fwd.stats().conflicts, 3);
  assert.equal(watcher.has('lock'), false);
});

test('a write that cannot be sequenced rejects with a timeout naming the key and endpoint', async (t) => {
  // Nothing listens on this port triple: the peer never hears from a forwarder.
  const fwd = await forwarder(t);
  const port = fwd.port;
  await fwd.close();
  const p = peer(t, `tcp://127.0.0.1:${port}`, { writeTimeout: 200 });
  await assert.rejects(p.set('nowhere', 1), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'CLONEKV_TIMEOUT');
    assert.match(err.message, /"nowhere".*tcp:\/\/127\.0\.0\.1:\d+.*within 200 ms/);
    return true;
  });
  assert.equal(p.status, 'syncing');
});

test('ttl must be a positive number; values over the peer limit fail before sending', async (t) => {
  const fwd = await forwarder(t);
  const p = await readyPeer(t, fwd.endpoint, { maxValueBytes: 100 });
  await assert.rejects(p.set('x', 1, { ttl: -1 }), { code: 'CLONEKV_INVALID_OPTION' });
  await assert.rejects(p.set('x', 1, { ttl: Number.NaN }), { code: 'CLONEKV_INVALID_OPTION' });
  await assert.rejects(p.set('x', 'y'.repeat(200)), { code: 'CLONEKV_INVALID_VALUE' });
  await assert.rejects(p.set('x', 1, { ifVersion: -2 }), { code: 'CLONEKV_INVALID_OPTION' });
  assert.equal(fwd.sequence, 0);
});

test('two peers writing the same keys converge on the forwarder order', async (t) => {
  const fwd = await forwarder(t);
  const a = new Peer({ server: fwd.endpoint });
  const b = new Peer({ server: fwd.endpoint });
  t.after(() => Promise.all([a.close(), b.close()]));
  await Promise.all([a.ready(), b.ready()]);
  await Promise.all([
    ...Array.from({ length: 200 }, (_, i) => a.set(`same/${i % 10}`, `a${i}`)),
    ...Array.from({ length: 200 }, (_, i) => b.set(`same/${i % 10}`, `b${i}`)),
  ]);
  await waitFor('both at the end', () => a.sequence === fwd.sequence && b.sequence === fwd.sequence);
  assert.deepEqual(contents(a), contents(b));
});
