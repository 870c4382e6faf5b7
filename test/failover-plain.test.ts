/**
 * Issue 9, peers with several servers, against a Binary Star pair of plain CHP servers written
 * in the test (test/plain-pair.ts): no clonekv server code.
 *
 * Topology:
 * ```
 *   Peer ──SUB/DEALER──► primary (active)      backup (passive, follows the primary)
 *        ──PUB──────────► primary collector    ──PUB──► backup collector (pending list)
 * ```
 * The primary dies (its sockets close). The peer keeps asking, moving between the two with
 * backoff; the backup ignores it until the primary has been silent for its timeout, then takes
 * over on the next request, replays its pending updates and answers. The peer resyncs in full
 * (plain servers have no delta) and its map is replaced.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { peer, waitFor, within } from './helpers.ts';
import { plainPair } from './plain-pair.ts';
import type { FailoverInfo } from '../src/index.ts';

test('plain pair: the peer moves to the backup when the primary dies; its map is replaced and its pending writes are applied once', async (t) => {
  const pair = await plainPair(t, { heartbeat: 50, timeout: 300 });
  const p = peer(t, pair.servers.join(','), { silenceTimeout: 400, snapshotRetryDelay: 50, maxRetryDelay: 400, writeTimeout: 15_000 });
  const failovers: FailoverInfo[] = [];
  p.on('failover', (f) => failovers.push(f));
  await within('the peer joins the primary', p.ready());
  assert.equal(p.server, pair.primary.endpoint);
  await p.set('keep', 1);
  await p.set('gone', 2);
  await waitFor('the backup follows the primary', () => pair.backup.map.has('gone'));

  // The primary stops sequencing (about to die): the next writes stay pending; each went to
  // both collectors once, and the backup holds them.
  pair.primary.dropWrites = true;
  const pending = [p.set('w1', 'a'), p.set('w2', 'b')];
  await waitFor('the backup holds both writes pending', () => pair.backup.pending.size === 2);
  // While the peer is away, another client deletes "gone" at the backup as it takes over.
  pair.backup.onTakeover = () => void pair.backup.write('gone', Buffer.alloc(0));
  const killedAt = Date.now();
  await pair.primary.close();

  const seqs = await within('the pending writes are acknowledged by the backup', Promise.all(pending), 15_000);
  t.diagnostic(`writes acknowledged ${Date.now() - killedAt} ms after the kill; failovers ${JSON.stringify(failovers)}`);
  assert.equal(p.server, pair.backup.endpoint);
  assert.equal(pair.backup.state, 'active');
  assert.ok(pair.backup.ignoredRequests >= 1, 'the passive backup ignored the first request');
  assert.deepEqual(failovers[0], { from: pair.primary.endpoint, to: pair.backup.endpoint, reason: 'disconnected' });
  assert.equal(p.stats().failovers, failovers.length);
  await waitFor('the peer is live at the backup', () => p.status === 'live' && p.sequence >= Math.max(...seqs));
  assert.equal(p.has('gone'), false, 'a key deleted while the peer was away does not survive (the map is replaced)');
  assert.deepEqual(
    [p.get('keep'), p.get('w1'), p.get('w2')],
    [1, 'a', 'b'],
  );
  for (const key of ['w1', 'w2']) {
    const applied = pair.backup.log.filter((e) => e.key === key);
    assert.equal(applied.length, 1, `${key} applied once by the backup (${JSON.stringify(applied)})`);
    assert.equal(pair.backup.received.get(applied[0]!.uuid), 1, `${key} sent once to the backup's collector: not again after the failover`);
  }
  // A write after the failover goes through the backup.
  const after = await p.set('after', 3);
  assert.equal(pair.backup.log.find((e) => e.key === 'after')?.seq, after);
});

test('plain pair: the peer never gives up while the backup takes over only after several of its attempts', async (t) => {
  const pair = await plainPair(t, { heartbeat: 50, timeout: 300, backupTimeout: 2500 });
  const p = peer(t, pair.servers, { silenceTimeout: 200, snapshotRetryDelay: 50, maxRetryDelay: 300, writeTimeout: 15_000 });
  await within('the peer joins the primary', p.ready());
  await p.set('before', 1);
  await waitFor('the backup follows the primary', () => pair.backup.map.has('before'));
  await pair.primary.close();
  const write = p.set('during', 2);
  await within('the write made during the outage is acknowledged', write, 15_000);
  const stats = p.stats();
  t.diagnostic(`backup ignored ${pair.backup.ignoredRequests} requests; peer ${JSON.stringify({ failovers: stats.failovers, snapshotRequests: stats.snapshotRequests })}`);
  assert.ok(pair.backup.ignoredRequests >= 3, `the backup ignored several requests (${pair.backup.ignoredRequests})`);
  assert.ok(stats.failovers >= 5, `the peer kept moving between the servers (${stats.failovers})`);
  assert.equal(p.server, pair.backup.endpoint);
  await waitFor('live at the backup with both keys', () => p.status === 'live' && p.get('during') === 2 && p.get('before') === 1);
});

test('plain pair: a ttl keeps its deadline across the takeover (one absolute meaning on both servers)', async (t) => {
  const pair = await plainPair(t, { heartbeat: 50, timeout: 300, backupTimeout: 1000 });
  const p = peer(t, pair.servers, { silenceTimeout: 300, snapshotRetryDelay: 50, maxRetryDelay: 300 });
  await within('the peer joins the primary', p.ready());
  const writtenAt = Date.now();
  await p.set('short', 1, { ttl: 2.5 });
  await waitFor('the backup follows the primary', () => pair.backup.map.has('short'));
  await pair.primary.close();
  await waitFor('the peer is live at the backup', () => p.server === pair.backup.endpoint && p.status === 'live', 10_000);
  assert.equal(p.get('short'), 1, 'not expired at once by the takeover');
  await waitFor('the value expires', () => !p.has('short'), 10_000);
  const lived = Date.now() - writtenAt;
  t.diagnostic(`expired ${lived} ms after the write (ttl 2500 ms; the backup took over at least 1000 ms after the kill)`);
  assert.ok(lived >= 2400 && lived < 3400, `expired at its deadline, not counted again from the takeover (${lived} ms)`);
});
