/**
 * Resume by delta (issue 8): a peer that resyncs in the same epoch gets only the updates after
 * its sequence when the forwarder still holds them, a full snapshot otherwise.
 *
 * Topology:
 * ```
 *   writer Peer ─────────────────────────────► Forwarder (in this process)
 *   proxied Peer  SUB ──► TcpProxy ──► XPUB :P+1    (its DEALER goes direct to :P)
 *   raw DEALER "ckv1…" ──► ROUTER :P         (the forwarder's answers, frame by frame)
 *   checker Peer (fresh, direct): the forwarder's map, versions included
 * ```
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test, type TestContext } from 'node:test';
import * as zmq from 'zeromq';
import { Forwarder, type ForwarderOptions, type Peer } from '../src/index.ts';
import { scanBatch } from '../src/protocol/batch.ts';
import { PropertyView } from '../src/protocol/properties.ts';
import { readSequence } from '../src/protocol/sequence.ts';
import { forwarder, Inbox, peer, readyPeer, waitFor, within } from './helpers.ts';
import { tcpProxy } from './tcp-proxy.ts';

function versions(p: Peer, prefix = ''): Map<string, [unknown, number]> {
  return new Map([...p.entries(prefix)].map((e) => [e.key, [e.value, e.version]]));
}

/** A forwarder, a writer, and a full-tree peer whose subscriber goes through a cuttable proxy. */
async function setup(t: TestContext, options: ForwarderOptions = {}) {
  const fwd = await forwarder(t, { heartbeatInterval: 100, ...options });
  // A map larger than what the peer will miss: a delta is then the smaller answer.
  await fwd.load(Array.from({ length: 1000 }, (_, i) => [`base/${i}`, i] as const));
  const writer = await readyPeer(t, fwd.endpoint, { subtree: 'w/', name: 'writer' });
  const proxy = await tcpProxy(t, fwd.endpoints.publisher);
  const cut = peer(t, '', { server: { ...fwd.endpoints, publisher: proxy.endpoint }, name: 'cut', silenceTimeout: 1000 });
  await within('proxied peer ready', cut.ready());
  return { fwd, writer, proxy, cut };
}

/** `n` writes to `d/`: puts, with every 5th one deleting an earlier key. */
async function write(writer: Peer, from: number, n: number): Promise<void> {
  for (let i = from; i < from + n; i++) {
    if (i % 5 === 4) await writer.delete(`d/${i - 3}`);
    else await writer.set(`d/${i}`, { i });
  }
}

/** Cuts the proxied peer's subscriber, writes `n` updates, restores it, waits until it holds the forwarder's map. */
async function missUpdates(t: TestContext, s: Awaited<ReturnType<typeof setup>>, n: number): Promise<void> {
  await write(s.writer, 0, 50);
  await waitFor('the proxied peer to hold the first writes', () => s.cut.version('d/48') !== undefined);
  const subscribed = s.fwd.stats().subscriptions;
  s.proxy.cut();
  await waitFor('the unsubscription', () => s.fwd.stats().subscriptions < subscribed);
  await write(s.writer, 50, n);
  s.proxy.restore();
  const last = await s.writer.set('d/last', 'end');
  const checker = await readyPeer(t, s.fwd.endpoint, { name: 'checker', presence: false });
  await waitFor('the checker to hold the last write', () => checker.version('d/last') === last);
  await waitFor(
    `the proxied peer to catch up (at ${s.cut.sequence}, status ${s.cut.status})`,
    () => s.cut.status === 'live' && s.cut.version('d/last') === last,
    15_000,
  );
  assert.deepEqual(versions(s.cut, 'd/'), versions(checker, 'd/'), "the peer's map equals the forwarder's, versions included");
}

test('a peer cut off for a while resumes by delta: no full snapshot, the map equals the forwarder\'s, versions included', async (t) => {
  const s = await setup(t);
  const changes: Array<{ key: string; fromResync: boolean }> = [];
  s.cut.on('update', (e) => changes.push({ key: e.key, fromResync: e.fromResync }));
  await missUpdates(t, s, 200);
  const stats = s.cut.stats();
  assert.ok(stats.deltaSyncs >= 1, `resumed by delta (deltaSyncs ${stats.deltaSyncs}, resyncs ${stats.resyncs})`);
  assert.equal(stats.snapshots, 1, 'no full snapshot after the first join');
  assert.ok(s.fwd.stats().deltas >= 1, 'the forwarder counted the delta');
  assert.ok(
    changes.some((c) => c.fromResync && c.key.startsWith('d/')),
    'the updates of the delta reached the watchers as changes found by a resync',
  );
});

test('a peer whose missed updates were compacted away gets a full snapshot instead', async (t) => {
  const s = await setup(t, { historyMax: 20 });
  await missUpdates(t, s, 200);
  const stats = s.cut.stats();
  assert.equal(stats.deltaSyncs, 0, 'no delta: the history no longer reached back to its sequence');
  assert.ok(stats.snapshots >= 2, `a full snapshot (snapshots ${stats.snapshots})`);
});

test('after a forwarder restart (a new epoch) a peer gets a full snapshot, never a delta of the old run', async (t) => {
  const first = await Forwarder.start({ port: 0, heartbeatInterval: 100 });
  t.after(() => first.close());
  const p = await readyPeer(t, first.endpoint, { name: 'restarted', silenceTimeout: 500 });
  const writer = await readyPeer(t, first.endpoint, { name: 'w', presence: false });
  await writer.set('k/a', 1);
  await waitFor('the peer holds k/a', () => p.version('k/a') !== undefined);
  await writer.close();
  const port = first.port;
  await first.close();
  const second = await forwarder(t, { port, heartbeatInterval: 100 });
  await second.load([['k/b', 2]]);
  await waitFor('the peer synced to the new run', () => p.epoch === second.epoch && p.status === 'live' && p.has('k/b'), 15_000);
  assert.equal(p.has('k/a'), false, 'the old run is gone');
  assert.equal(p.stats().deltaSyncs, 0);
  assert.ok(p.stats().snapshots >= 2);
});

/** Routing id of a clonekv peer, so the forwarder batches its answers. */
const ckvId = (): string => `ckv1${randomBytes(8).toString('hex')}`;

/** A raw DEALER that reads the forwarder's answer to one ICANHAZ?: its entries and its KTHXBAI. */
async function rawAnswer(t: TestContext, fwd: Forwarder) {
  const dealer = new zmq.Dealer({ linger: 0, routingId: ckvId() });
  t.after(() => dealer.close());
  dealer.connect(fwd.endpoints.snapshot);
  const inbox = new Inbox(dealer);
  return {
    inbox,
    ask: async (frames: Buffer[]) => {
      await dealer.send([Buffer.from('ICANHAZ?'), ...frames]);
      const entries: Array<[string, number, number]> = []; // key, seq, body length
      for (;;) {
        const m = await inbox.next('an answer');
        if (m[0]!.toString() === 'KTHXBAI') {
          const props = new PropertyView(m[3]!);
          return { entries, seq: readSequence(m[1]!), delta: props.get('delta'), count: props.get('count') };
        }
        scanBatch(m[4]!, (b, e) => entries.push([b.toString('latin1', e.keyStart, e.keyStart + e.keyLength), e.sequence, e.bodyLength]));
      }
    },
  };
}

const resume = (since: number, epoch: string): Buffer => Buffer.from(`since=${since}\nepoch=${epoch}\n`);

test('the forwarder answers a resume request by a delta only in its epoch and within its history; a garbled one is counted and dropped', async (t) => {
  const fwd = await forwarder(t, { joinWait: 0, historyMax: 10 });
  await fwd.load([['a/1', 1], ['a/2', 2], ['b/1', 3]]);
  const w = await readyPeer(t, fwd.endpoint, { name: 'w', presence: false });
  await w.delete('a/1');
  const raw = await rawAnswer(t, fwd);

  const delta = await raw.ask([Buffer.from('a/'), resume(1, fwd.epoch)]);
  assert.equal(delta.delta, '1');
  assert.deepEqual(delta.entries, [['a/2', 2, 1], ['a/1', 4, 0]], 'the puts and deletes under a/ after 1, in order');
  assert.equal(delta.count, '2');
  assert.equal(delta.seq, fwd.sequence);

  const plain = await raw.ask([Buffer.from('a/')]);
  assert.equal(plain.delta, undefined, 'two frames: a full snapshot');
  assert.deepEqual(plain.entries.map((e) => e[0]), ['a/2']);

  const otherEpoch = await raw.ask([Buffer.from('a/'), resume(1, 'ffff')]);
  assert.equal(otherEpoch.delta, undefined, 'another epoch: a full snapshot');
  const ahead = await raw.ask([Buffer.from('a/'), resume(fwd.sequence + 1, fwd.epoch)]);
  assert.equal(ahead.delta, undefined, 'a sequence this run never reached: a full snapshot');
  await fwd.load(Array.from({ length: 20 }, (_, i) => [`c/${i}`, i] as const));
  const compacted = await raw.ask([Buffer.from('a/'), resume(1, fwd.epoch)]);
  assert.equal(compacted.delta, undefined, 'compacted away: a full snapshot');
  assert.deepEqual(compacted.entries.map((e) => e[0]), ['a/2']);

  const before = fwd.stats().malformedBy['snapshot-request'];
  const garbled = [
    [Buffer.from('a/'), Buffer.from('since=abc\nepoch=ff\n')],
    [Buffer.from('a/'), Buffer.from('since=1\n')],
    [Buffer.from('a/'), Buffer.from('epoch=ff\n')],
    [Buffer.from('a/'), Buffer.from('since=-1\nepoch=ff\n')],
    [Buffer.from('a/'), Buffer.from('since=99999999999999999999\nepoch=ff\n')],
    [Buffer.from('a/'), Buffer.from([0xff, 0xfe, 0x3d, 0x0a])],
    [Buffer.from('a/'), Buffer.from('no equals sign\n')],
    [Buffer.from('a/'), resume(1, fwd.epoch), Buffer.from('extra')],
  ];
  const dealer = new zmq.Dealer({ linger: 0, routingId: ckvId() });
  t.after(() => dealer.close());
  dealer.connect(fwd.endpoints.snapshot);
  const inbox = new Inbox(dealer);
  for (const frames of garbled) await dealer.send([Buffer.from('ICANHAZ?'), ...frames]);
  await waitFor('every garbled request counted', () => fwd.stats().malformedBy['snapshot-request'] === before + garbled.length);
  // The forwarder still serves, and sent nothing to the garbled requests.
  await dealer.send([Buffer.from('ICANHAZ?'), Buffer.from('a/'), resume(fwd.sequence, fwd.epoch)]);
  const end = await inbox.next('the answer to a good request after the garbled ones');
  assert.equal(end[0]!.toString(), 'KTHXBAI', 'an empty delta: only the KTHXBAI, and nothing before it');
  assert.equal(new PropertyView(end[3]!).get('delta'), '1');
});

test('a peer that missed more updates than the map has keys gets a full snapshot, the smaller answer', async (t) => {
  const fwd = await forwarder(t, { heartbeatInterval: 100, joinWait: 0 });
  await fwd.load([['hot/a', 0], ['hot/b', 0]]);
  const w = await readyPeer(t, fwd.endpoint, { name: 'w', presence: false });
  for (let i = 0; i < 30; i++) await w.set(`hot/${i % 2 ? 'a' : 'b'}`, i);
  const raw = await rawAnswer(t, fwd);
  const answer = await raw.ask([Buffer.from('hot/'), resume(2, fwd.epoch)]);
  assert.equal(answer.delta, undefined, '30 updates of 2 keys: a snapshot of 2 entries instead');
  assert.deepEqual(answer.entries.map((e) => e[0]).sort(), ['hot/a', 'hot/b']);
  const small = await raw.ask([Buffer.from('hot/'), resume(fwd.sequence - 1, fwd.epoch)]);
  assert.equal(small.delta, '1', 'one update of 2 keys: a delta');
});
