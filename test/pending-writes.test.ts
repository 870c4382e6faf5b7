/**
 * The pending-writes decisions without sockets: a scripted route stands for the rest of the peer
 * (server kind, the local map's sequence and epoch, whether a resync is under way), and the test
 * plays the forwarder's acknowledgements (KVACKS messages) to it. Items 5, 7, 15 and 17.
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { TimeoutError } from '../src/errors.ts';
import { packBatch, unpackBatch, type WireEntry } from '../src/protocol/batch.ts';
import { PendingWrites, type WriteRoute } from '../src/peer/pending-writes.ts';
import type { ServerKind } from '../src/peer/sync-machine.ts';
import type { PeerStats } from '../src/types.ts';
import { waitFor } from './helpers.ts';

interface Route extends WriteRoute {
  kind: ServerKind;
  server: number;
  applied: number;
  epoch: string | undefined;
  syncing: boolean;
  /** Every KVWRITE sent, as the uuids (hex) it carries. */
  readonly sent: string[][];
}

function setup(t: TestContext, retryInterval = 60_000): { writes: PendingWrites; route: Route } {
  const route: Route = {
    kind: 'clonekv',
    hasDealer: true,
    collectorReady: () => true,
    servers: 1,
    server: 0,
    closing: false,
    applied: 10,
    epoch: 'run1',
    syncing: false,
    sent: [],
    request(frames) {
      const uuids: string[] = [];
      unpackBatch(frames[4]!, (e) => uuids.push(e.uuid.toString('hex')));
      this.sent.push(uuids);
    },
    publish() {},
  };
  const stats = { writes: 0, writeRetries: 0, malformed: 0 } as PeerStats;
  const writes = new PendingWrites({ endpoint: 'tcp://test:1', retryInterval }, route, stats);
  t.after(() => writes.close(new Error('test over')));
  return { writes, route };
}

/** The KVACKS a forwarder of run `epoch` (none: an older forwarder) sends for `uuid` sequenced at `seq`. */
function acks(uuid: string, seq: number, epoch: string | undefined): Buffer[] {
  const e: WireEntry = { key: Buffer.from('k'), sequence: seq, uuid: Buffer.from(uuid, 'hex'), properties: Buffer.from('status=ok\n'), body: Buffer.alloc(0) };
  const header = epoch === undefined ? Buffer.alloc(0) : Buffer.from(`epoch=${epoch}\n`);
  return [Buffer.from('KVACKS'), Buffer.alloc(8), Buffer.alloc(0), header, packBatch([e], 64)];
}

/** Adds a write under the subtree and returns its promise (state observable) and its uuid once sent. */
async function write(writes: PendingWrites, route: Route, timeout = 60_000): Promise<{ p: Promise<number>; state: () => string; uuid: string }> {
  const before = route.sent.length;
  const p = writes.add('k', Buffer.from('k'), true, [], Buffer.from('v'), undefined, timeout);
  let state = 'pending';
  p.then(
    (seq) => (state = `resolved ${seq}`),
    (err: Error) => (state = `rejected ${err.name}`),
  );
  await waitFor('the write sent', () => route.sent.length > before || route.kind !== 'clonekv');
  return { p, state: () => state, uuid: route.sent.at(-1)?.at(-1) ?? '' };
}

/** Lets promise callbacks run. */
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

test('an acknowledgement resolves at once only when the map has reached it in the same run (item 5)', async (t) => {
  const table: Array<{ what: string; applied: number; epoch: string | undefined; ackEpoch: string | undefined; seq: number; syncing?: boolean; expect: string }> = [
    { what: 'same run, map at it', applied: 10, epoch: 'run1', ackEpoch: 'run1', seq: 10, expect: 'resolved 10' },
    { what: 'same run, map behind', applied: 10, epoch: 'run1', ackEpoch: 'run1', seq: 11, expect: 'pending' },
    { what: 'a restarted run, its sequence below ours', applied: 10, epoch: 'run1', ackEpoch: 'run2', seq: 3, expect: 'pending' },
    { what: 'same run, a resync under way', applied: 10, epoch: 'run1', ackEpoch: 'run1', seq: 5, syncing: true, expect: 'pending' },
    { what: 'an older forwarder (no epoch named)', applied: 10, epoch: 'run1', ackEpoch: undefined, seq: 5, expect: 'resolved 5' },
  ];
  for (const row of table) {
    const { writes, route } = setup(t);
    route.applied = row.applied;
    route.epoch = row.epoch;
    const w = await write(writes, route);
    route.syncing = row.syncing ?? false;
    writes.onAckBatch(acks(w.uuid, row.seq, row.ackEpoch));
    writes.settle();
    await turn();
    assert.equal(w.state(), row.expect, row.what);
  }
});

test('a write acknowledged by a restarted run resolves once the map holds that run, not before (item 5)', async (t) => {
  const { writes, route } = setup(t);
  const w = await write(writes, route);
  writes.onAckBatch(acks(w.uuid, 3, 'run2'));
  route.applied = 20; // the old run's map moves on: still says nothing about run2's sequence 3
  writes.settle();
  await turn();
  assert.equal(w.state(), 'pending');
  // The resync to run2: its snapshot (sequence 2) does not hold it yet, an update at 3 does.
  route.epoch = 'run2';
  route.applied = 2;
  writes.snapshotApplied('run2', true);
  writes.settle();
  await turn();
  assert.equal(w.state(), 'pending');
  route.applied = 3;
  writes.settle();
  await turn();
  assert.equal(w.state(), 'resolved 3');
});

test('a write the old run acknowledged resolves when a new run replaces the map (it can never be applied now)', async (t) => {
  const { writes, route } = setup(t);
  const w = await write(writes, route);
  writes.onAckBatch(acks(w.uuid, 50, 'run1'));
  await turn();
  assert.equal(w.state(), 'pending');
  route.epoch = 'run2';
  route.applied = 1;
  writes.snapshotApplied('run2', true);
  await turn();
  assert.equal(w.state(), 'resolved 50');
});

test('an acknowledged write never times out; an unacknowledged one does, saying whether it was sent (items 7, 15)', async (t) => {
  const { writes, route } = setup(t);
  const acked = await write(writes, route, 20);
  const unanswered = await write(writes, route, 20);
  writes.onAckBatch(acks(acked.uuid, 11, 'run1')); // ahead of the map: waits for it
  await waitFor('the unanswered write timed out', () => unanswered.state() !== 'pending');
  assert.equal(unanswered.state(), 'rejected TimeoutError');
  await assert.rejects(unanswered.p, (err: TimeoutError) => err.maybeApplied === true);
  assert.equal(acked.state(), 'pending', 'past its deadline, but acknowledged');
  route.applied = 11;
  writes.settle();
  await turn();
  assert.equal(acked.state(), 'resolved 11');
  // Never sent (the server's kind is not known yet): surely not applied.
  route.kind = 'unknown';
  const unsent = await write(writes, route, 10);
  await assert.rejects(unsent.p, (err: TimeoutError) => err instanceof TimeoutError && err.maybeApplied === false);
});

test('a deadline passed while the process was paused gives the write one more turn (item 15)', async (t) => {
  const { writes, route } = setup(t);
  const w = await write(writes, route, 20);
  const sends = route.sent.length;
  // A pause: the event loop does not run for far longer than the write's timeout.
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 400);
  await waitFor('the write sent again after the pause', () => route.sent.length > sends);
  assert.equal(w.state(), 'pending', 'no timeout straight after a pause');
  assert.deepEqual(route.sent.at(-1), [w.uuid]);
  writes.onAckBatch(acks(w.uuid, 10, 'run1'));
  await turn();
  assert.equal(w.state(), 'resolved 10');
});

test('a write released twice in one turn goes out once (item 17)', async (t) => {
  const { writes, route } = setup(t);
  route.kind = 'unknown';
  await write(writes, route);
  await write(writes, route);
  route.kind = 'clonekv';
  writes.resendAll(); // e.g. a heartbeat told the kind
  writes.resendAll(); // and, in the same turn, a snapshot ended
  await waitFor('a KVWRITE', () => route.sent.length > 0);
  await turn();
  assert.equal(route.sent.length, 1);
  assert.equal(route.sent[0]!.length, 2);
});

test('closing resolves a write already sequenced (a retry would apply it twice) and rejects the others', async (t) => {
  const { writes, route } = setup(t);
  const acked = await write(writes, route);
  const unanswered = await write(writes, route);
  writes.onAckBatch(acks(acked.uuid, 12, 'run1'));
  writes.close(new Error('closed'));
  await turn();
  assert.equal(acked.state(), 'resolved 12');
  assert.equal(unanswered.state(), 'rejected Error');
});

test('plain servers of a pair: each write goes once to every collector, again only to one whose snapshot proved it lost (issue 9)', async (t) => {
  const { writes, route } = setup(t);
  const published: string[] = [];
  let uuid: Buffer = Buffer.alloc(0);
  const ready = [true, false];
  Object.assign(route, {
    kind: 'plain',
    servers: 2,
    server: 0,
    epoch: undefined,
    collectorReady: (i: number) => ready[i] === true,
    publish: (i: number, frames: Buffer[]) => {
      uuid = frames[2]!;
      published.push(`${i}:${frames[0]!.toString()}`);
    },
  });
  const p = writes.add('k', Buffer.from('k'), true, [], Buffer.from('v'), undefined, 60_000);
  let state = 'pending';
  p.then((seq) => (state = `resolved ${seq}`), () => (state = 'rejected'));
  assert.deepEqual(published, ['0:k'], 'to the collector that has subscribed');
  ready[1] = true;
  writes.resendAll();
  assert.deepEqual(published, ['0:k', '1:k'], 'and to the other once it has');
  writes.resendAll();
  assert.deepEqual(published, ['0:k', '1:k'], 'never twice to the same server (it would sequence it again)');
  // Server 0 dies: its copy may be lost there, but the peer moves to server 1, which has its own.
  writes.collectorLost(0);
  route.server = 1;
  writes.afterSnapshot();
  writes.resendAll();
  assert.deepEqual(published, ['0:k', '1:k'], 'not re-sent to server 1 after the failover');
  // Back at server 0 (restarted, its snapshot without the write): sent to it again.
  route.server = 0;
  writes.afterSnapshot();
  assert.deepEqual(published, ['0:k', '1:k', '0:k']);
  // A snapshot holding it (by uuid: a backup replayed its pending copy) acknowledges it.
  assert.equal(writes.unechoed, true);
  writes.seenInSnapshot(uuid, 7);
  route.applied = 7;
  writes.settle();
  await turn();
  assert.equal(state, 'resolved 7');
});
