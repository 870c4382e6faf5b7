/**
 * Bad input is counted and dropped, never fatal, never applied: on the forwarder (collector
 * SUB, snapshot ROUTER) and on the peer (its SUB, fed by a plain test server that publishes
 * garbage). After each bad message the forwarder must keep serving: a good write through a
 * clonekv peer still works and a fresh peer still syncs.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test, type TestContext } from 'node:test';
import { Packr } from 'msgpackr';
import * as zmq from 'zeromq';
import type { Forwarder, MalformedCounts, Peer } from '../src/index.ts';
import { contents, forwarder, readyPeer, waitFor, within } from './helpers.ts';
import { EMPTY, propMap, rawDealer, seqFrame, ZERO_SEQ } from './raw-sockets.ts';

const msgpack = new Packr({ useRecords: false });

type Counters = ReturnType<Forwarder['stats']>;

/**
 * Asserts that exactly the listed counters moved by the listed amounts: `malformed` and each
 * `malformedBy` reason, `rejected`, `duplicates`. (`published` and `sequence` are not compared:
 * the forwarder publishes on its own too, e.g. peers' presence keys; that nothing bad was
 * published is checked on a full-tree peer instead, see {@link assertServing}.)
 */
function assertMoved(before: Counters, after: Counters, by: { reasons?: Partial<MalformedCounts>; rejected?: number }): void {
  const reasons = by.reasons ?? {};
  let total = 0;
  for (const reason of Object.keys(before.malformedBy) as Array<keyof MalformedCounts>) {
    const d = reasons[reason] ?? 0;
    total += d;
    assert.equal(after.malformedBy[reason], before.malformedBy[reason] + d, `malformedBy['${reason}']`);
  }
  assert.equal(after.malformed, before.malformed + total, 'malformed');
  assert.equal(after.rejected, before.rejected + (by.rejected ?? 0), 'rejected');
  assert.equal(after.duplicates, before.duplicates, 'duplicates');
}

/** A full-tree clonekv peer that records the key of every update it applies. */
interface Writer {
  readonly peer: Peer;
  /** Keys of every update applied, in order. */
  readonly seen: string[];
}

async function writerPeer(t: TestContext, fwd: Forwarder): Promise<Writer> {
  const peer = await readyPeer(t, fwd.endpoint, { name: 'writer' });
  const seen: string[] = [];
  peer.on('update', (e) => seen.push(e.key));
  return { peer, seen };
}

/**
 * The forwarder still serves: a clonekv write is acknowledged and a fresh peer syncs it. And
 * the bad message was never published: the writer (full tree, updates in sequence order) has
 * seen no update of `badKey` since `mark` up to its own good write.
 */
async function assertServing(t: TestContext, fwd: Forwarder, w: Writer, mark: number, tag: string, badKey: string): Promise<void> {
  const key = `ok/${tag}`;
  const seq = await within(`a good write after ${tag}`, w.peer.set(key, tag), 5000);
  assert.equal(w.peer.version(key), seq);
  assert.ok(!w.seen.slice(mark).includes(badKey), `${JSON.stringify(badKey.slice(0, 40))} was not published`);
  assert.equal(w.peer.has(badKey), false);
  const fresh = await readyPeer(t, fwd.endpoint, { name: `fresh-${tag}` });
  try {
    assert.equal(fresh.get(key), tag);
    assert.equal(fresh.version(key), seq);
    assert.equal(fresh.has(badKey), false, `${badKey} was not stored`);
  } finally {
    await fresh.close();
  }
}

/**
 * A raw PUB connected to the forwarder's collector. It is primed with a valid KVSET, resent
 * with the same uuid (the forwarder de-duplicates) until sequenced, so that the PUB→SUB
 * subscription is known to be live and later messages are not lost to the slow joiner.
 */
async function collectorPub(t: TestContext, fwd: Forwarder, w: Writer): Promise<zmq.Publisher> {
  const pub = new zmq.Publisher({ linger: 0 });
  t.after(() => pub.close());
  pub.connect(fwd.endpoints.collector);
  const uuid = randomBytes(16);
  const key = `prime/${uuid.toString('hex')}`;
  const deadline = Date.now() + 5000;
  while (!w.peer.has(key)) {
    if (Date.now() > deadline) throw new Error('timed out priming the collector PUB');
    await pub.send([Buffer.from(key), ZERO_SEQ, uuid, EMPTY, Buffer.from('1')]);
    await waitFor('the priming KVSET', () => w.peer.has(key), 50).catch(() => {});
  }
  return pub;
}

// ---- the forwarder's collector ----------------------------------------------------------------

interface BadCase {
  readonly name: string;
  readonly key: string;
  readonly frames: (key: Buffer) => Buffer[];
  readonly reasons: Partial<MalformedCounts>;
  readonly rejected?: number;
}

const uuid16 = (): Buffer => randomBytes(16);

const collectorCases: BadCase[] = [
  { name: '3 frames', key: 'bad/3f', frames: (k) => [k, ZERO_SEQ, uuid16()], reasons: { 'frame-count': 1 } },
  {
    name: '6 frames',
    key: 'bad/6f',
    frames: (k) => [k, ZERO_SEQ, uuid16(), EMPTY, Buffer.from('v'), Buffer.from('extra')],
    reasons: { 'frame-count': 1 },
  },
  { name: '7-byte sequence', key: 'bad/s7', frames: (k) => [k, Buffer.alloc(7), uuid16(), EMPTY, Buffer.from('v')], reasons: { 'sequence-size': 1 } },
  { name: '9-byte sequence', key: 'bad/s9', frames: (k) => [k, Buffer.alloc(9), uuid16(), EMPTY, Buffer.from('v')], reasons: { 'sequence-size': 1 } },
  { name: '5-byte uuid', key: 'bad/u5', frames: (k) => [k, ZERO_SEQ, randomBytes(5), EMPTY, Buffer.from('v')], reasons: { 'uuid-size': 1 } },
  { name: 'empty key', key: '', frames: () => [EMPTY, ZERO_SEQ, uuid16(), EMPTY, Buffer.from('v')], reasons: { 'empty-key': 1 } },
  {
    name: 'a property line without "="',
    key: 'bad/p1',
    frames: (k) => [k, ZERO_SEQ, uuid16(), Buffer.from('color=blue\nnoequals\n'), Buffer.from('v')],
    reasons: { properties: 1 },
  },
  {
    name: 'properties that are not UTF-8',
    key: 'bad/p2',
    frames: (k) => [k, ZERO_SEQ, uuid16(), Buffer.from([0x63, 0x3d, 0xff, 0xfe, 0x0a]), Buffer.from('v')],
    reasons: { properties: 1 },
  },
  {
    name: 'a property with an empty name',
    key: 'bad/p3',
    frames: (k) => [k, ZERO_SEQ, uuid16(), Buffer.from('=blue\n'), Buffer.from('v')],
    reasons: { properties: 1 },
  },
  {
    name: 'a 256-byte key',
    key: 'k'.repeat(256),
    frames: (k) => [k, ZERO_SEQ, uuid16(), EMPTY, Buffer.from('v')],
    reasons: { 'key-too-long': 1 },
  },
  {
    name: 'a value over maxValueBytes',
    key: 'bad/big',
    frames: (k) => [k, ZERO_SEQ, uuid16(), EMPTY, Buffer.alloc(1025, 0x61)],
    reasons: { 'value-too-large': 1 },
    rejected: 1,
  },
  {
    // Issue 7, items 1 and 14: bodies marked msgpack that do not decode to one plain value.
    name: 'a body c1 marked enc=msgpack',
    key: 'bad/c1',
    frames: (k) => [k, ZERO_SEQ, uuid16(), Buffer.from('enc=msgpack\n'), Buffer.from([0xc1])],
    reasons: { 'value-encoding': 1 },
    rejected: 1,
  },
  {
    name: 'a body d4 00 00 (undefined) marked enc=msgpack',
    key: 'bad/d4',
    frames: (k) => [k, ZERO_SEQ, uuid16(), Buffer.from('enc=msgpack\n'), Buffer.from([0xd4, 0, 0])],
    reasons: { 'value-encoding': 1 },
    rejected: 1,
  },
  {
    // Issue 7, item 1: `$peers/<owner>` would be a 307-byte key in every snapshot.
    name: 'an owner of 300 characters',
    key: 'bad/owner',
    frames: (k) => [k, ZERO_SEQ, uuid16(), Buffer.from(`owner=${'a'.repeat(300)}\n`), Buffer.from('v')],
    reasons: { owner: 1 },
    rejected: 1,
  },
  {
    name: 'an owner that is not hex',
    key: 'bad/owner2',
    frames: (k) => [k, ZERO_SEQ, uuid16(), Buffer.from('owner=../x\n'), Buffer.from('v')],
    reasons: { owner: 1 },
    rejected: 1,
  },
  {
    name: 'a negative sequence',
    key: 'bad/neg',
    frames: (k) => [k, Buffer.from([0x80, 0, 0, 0, 0, 0, 0, 1]), uuid16(), EMPTY, Buffer.from('v')],
    reasons: { 'sequence-range': 1 },
  },
];

test('malformed KVSETs on the collector are dropped and counted, and the forwarder keeps serving', async (t) => {
  // Topology: Forwarder (ROUTER P, XPUB P+1, SUB P+2, maxValueBytes 1024); a clonekv writer
  // Peer (full tree); a raw zeromq PUB connected to the collector P+2 sending bad KVSETs; one
  // fresh clonekv Peer per case to check that snapshots still work.
  const fwd = await forwarder(t, { maxValueBytes: 1024, heartbeatInterval: 100 });
  const w = await writerPeer(t, fwd);
  const pub = await collectorPub(t, fwd, w);
  // A value of exactly maxValueBytes is accepted (the limit is inclusive).
  await pub.send([Buffer.from('edge/at-limit'), ZERO_SEQ, uuid16(), EMPTY, Buffer.alloc(1024, 0x62)]);
  await waitFor('a value of exactly maxValueBytes sequenced', () => w.peer.has('edge/at-limit'));

  for (const c of collectorCases) {
    await t.test(c.name, async () => {
      const before = fwd.stats();
      const mark = w.seen.length;
      await pub.send(c.frames(Buffer.from(c.key)));
      await waitFor(`${c.name} to be counted`, () => fwd.stats().malformed > before.malformed, 5000);
      assertMoved(before, fwd.stats(), { reasons: c.reasons, ...(c.rejected ? { rejected: c.rejected } : {}) });
      await assertServing(t, fwd, w, mark, c.name.replace(/\W+/g, '-'), c.key);
    });
  }
});

test('non-numeric ttl and if-version are rejected, on the collector and over the DEALER (with a KVACK)', async (t) => {
  // Topology: Forwarder (ROUTER P, XPUB P+1, SUB P+2); a clonekv writer Peer; a raw PUB on the
  // collector P+2; a raw DEALER (routing id starting "ckv1") on the ROUTER P sending KVSETs.
  const fwd = await forwarder(t, { heartbeatInterval: 100 });
  const w = await writerPeer(t, fwd);
  const pub = await collectorPub(t, fwd, w);
  const { dealer, inbox } = rawDealer(t, fwd.endpoints.snapshot, { clonekv: true });

  const cases = [
    { name: 'ttl=abc', props: 'ttl=abc\n' },
    { name: 'if-version=x', props: 'if-version=x\n' },
    { name: 'ttl= (empty)', props: 'ttl=\n' },
    { name: 'if-version=-1', props: 'if-version=-1\n' },
    // Over MAX_TTL_SECONDS (a year): a deadline this far would overflow Node's timers.
    { name: 'ttl=1e9', props: 'ttl=1e9\n' },
    { name: 'ttl=NaN', props: 'ttl=NaN\n' },
    { name: 'ttl=Infinity', props: 'ttl=Infinity\n' },
  ];
  for (const c of cases) {
    await t.test(`${c.name} on the collector`, async () => {
      const before = fwd.stats();
      const mark = w.seen.length;
      const key = `bad/c/${c.name}`;
      await pub.send([Buffer.from(key), ZERO_SEQ, uuid16(), Buffer.from(c.props), Buffer.from('v')]);
      await waitFor(`${c.name} to be rejected`, () => fwd.stats().rejected > before.rejected, 5000);
      assert.equal(fwd.stats().rejected, before.rejected + 1);
      await assertServing(t, fwd, w, mark, `c-${c.name.replace(/\W+/g, '-')}`, key);
    });
    await t.test(`${c.name} over the DEALER`, async () => {
      const before = fwd.stats();
      const mark = w.seen.length;
      const uuid = uuid16();
      const key = `bad/d/${c.name}`;
      await dealer.send([Buffer.from(key), ZERO_SEQ, uuid, Buffer.from(c.props), Buffer.from('v')]);
      const ack = await inbox.next(`a KVACK for ${c.name}`);
      assert.equal(ack.length, 5);
      assert.equal(ack[0]!.toString(), 'KVACK');
      assert.deepEqual(ack[2], uuid, 'the KVACK names the write');
      assert.equal(propMap(ack[3]!).get('status'), 'rejected');
      assert.equal(fwd.stats().rejected, before.rejected + 1);
      await assertServing(t, fwd, w, mark, `d-${c.name.replace(/\W+/g, '-')}`, key);
    });
  }
});

// ---- the forwarder's snapshot ROUTER ----------------------------------------------------------

test('malformed requests on the snapshot ROUTER are dropped and counted, and the forwarder keeps serving', async (t) => {
  // Topology: Forwarder (ROUTER P, XPUB P+1, SUB P+2); a clonekv writer Peer; a raw DEALER
  // (zeromq-generated routing id, i.e. a plain client) on the ROUTER P; fresh clonekv Peers.
  const fwd = await forwarder(t, { heartbeatInterval: 100 });
  const w = await writerPeer(t, fwd);
  const seedSeq = await w.peer.set('app/seed', 1);
  const { dealer, inbox } = rawDealer(t, fwd.endpoints.snapshot);

  await t.test('a one-frame ICANHAZ?', async () => {
    const before = fwd.stats();
    const mark = w.seen.length;
    await dealer.send([Buffer.from('ICANHAZ?')]);
    await waitFor('the one-frame ICANHAZ? to be counted', () => fwd.stats().malformed > before.malformed);
    assertMoved(before, fwd.stats(), { reasons: { 'snapshot-request': 1 } });
    assert.equal(fwd.stats().snapshots, before.snapshots, 'no snapshot served');
    await assertServing(t, fwd, w, mark, 'icanhaz-1', 'ICANHAZ?');
  });

  await t.test('a three-frame ICANHAZ?', async () => {
    const before = fwd.stats();
    const mark = w.seen.length;
    await dealer.send([Buffer.from('ICANHAZ?'), Buffer.from('app/'), Buffer.from('extra')]);
    await waitFor('the three-frame ICANHAZ? to be counted', () => fwd.stats().malformed > before.malformed);
    assertMoved(before, fwd.stats(), { reasons: { 'snapshot-request': 1 } });
    assert.equal(fwd.stats().snapshots, before.snapshots, 'no snapshot served');
    await assertServing(t, fwd, w, mark, 'icanhaz-3', 'ICANHAZ?');
  });

  await t.test('the same DEALER then gets a normal snapshot, and nothing else was sent to it', async () => {
    assert.equal(inbox.unread, 0, 'no reply to the malformed requests');
    await dealer.send([Buffer.from('ICANHAZ?'), Buffer.from('app/')]);
    const sync = await inbox.next('the KVSYNC');
    assert.equal(sync.length, 5);
    assert.equal(sync[0]!.toString(), 'app/seed');
    assert.equal(sync[1]!.readBigInt64BE(0), BigInt(seedSeq));
    const end = await inbox.next('the KTHXBAI');
    assert.equal(end[0]!.toString(), 'KTHXBAI');
    assert.ok(end[1]!.readBigInt64BE(0) >= BigInt(seedSeq));
    assert.deepEqual(end[4], Buffer.from('app/'));
  });

  await t.test('a negative sequence in a KVSET over the DEALER is refused with a KVACK', async () => {
    const before = fwd.stats();
    const mark = w.seen.length;
    const uuid = uuid16();
    await dealer.send([Buffer.from('bad/neg'), Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), uuid, EMPTY, Buffer.from('v')]);
    const ack = await inbox.next('a KVACK for the negative sequence');
    assert.equal(ack[0]!.toString(), 'KVACK');
    assert.deepEqual(ack[2], uuid);
    assert.equal(propMap(ack[3]!).get('status'), 'rejected');
    assertMoved(before, fwd.stats(), { reasons: { 'sequence-range': 1 } });
    await assertServing(t, fwd, w, mark, 'dealer-neg', 'bad/neg');
  });

  await t.test('a 4-frame KVSET over the DEALER', async () => {
    const before = fwd.stats();
    const mark = w.seen.length;
    await dealer.send([Buffer.from('bad/4f'), ZERO_SEQ, uuid16(), EMPTY]);
    await waitFor('the 4-frame KVSET to be counted', () => fwd.stats().malformed > before.malformed);
    assertMoved(before, fwd.stats(), { reasons: { 'frame-count': 1 } });
    await assertServing(t, fwd, w, mark, 'dealer-4f', 'bad/4f');
  });
});

test('a KVSET whose key is a protocol command is refused, so plain snapshots are not cut short', async (t) => {
  // Topology: Forwarder (ROUTER P, XPUB P+1, SUB P+2); a clonekv writer Peer; a raw PUB on the
  // collector P+2 writing the key "KTHXBAI"; a raw DEALER (plain client) asking for a snapshot.
  // Stored, such a key would come back as a KVSYNC named KTHXBAI in the middle of every
  // full-tree snapshot, and a plain client would stop reading there.
  const fwd = await forwarder(t, { heartbeatInterval: 100 });
  const w = await writerPeer(t, fwd);
  await w.peer.set('a/1', 1);
  const pub = await collectorPub(t, fwd, w);
  const before = fwd.stats();
  await pub.send([Buffer.from('KTHXBAI'), ZERO_SEQ, uuid16(), EMPTY, Buffer.from('v')]);
  await waitFor('the KVSET named KTHXBAI to be handled', () => fwd.stats().malformed > before.malformed || w.peer.has('KTHXBAI'));
  const handled = fwd.stats();
  await w.peer.set('z/1', 2);

  // What a plain client gets: it reads up to the first KTHXBAI.
  const { dealer, inbox } = rawDealer(t, fwd.endpoints.snapshot);
  await dealer.send([Buffer.from('ICANHAZ?'), EMPTY]);
  const keys: string[] = [];
  let end: Buffer[];
  for (;;) {
    const m = await inbox.next('a snapshot message');
    if (m[0]!.toString() === 'KTHXBAI') {
      end = m;
      break;
    }
    keys.push(m[0]!.toString());
  }
  assert.ok(keys.includes('z/1'), `a plain snapshot holds every key, got ${keys.join(',')} then a KTHXBAI with body ${JSON.stringify(end[4]!.toString())}`);
  assert.equal(end[4]!.length, 0, 'the real KTHXBAI (body = the empty subtree)');
  assertMoved(before, handled, { reasons: { 'reserved-key': 1 }, rejected: 1 });
});

test('a value over the forwarder maxValueBytes is refused with CLONEKV_REJECTED, not left to time out', async (t) => {
  // Topology: Forwarder (ROUTER P, XPUB P+1, SUB P+2, maxValueBytes 1024); a clonekv Peer (its
  // own maxValueBytes is the default 1 MiB) writing over its DEALER; a full-tree watcher Peer.
  const fwd = await forwarder(t, { maxValueBytes: 1024, heartbeatInterval: 100 });
  const w = await writerPeer(t, fwd);
  const writer = await readyPeer(t, fwd.endpoint, { name: 'big-writer', writeTimeout: 20_000 });
  const before = fwd.stats();
  const mark = w.seen.length;
  // CLONEKV_REJECTED (not CLONEKV_TIMEOUT, 20 s away) is what says it was refused, not timed out.
  await within('the oversized write to be refused', assert.rejects(writer.set('big', 'x'.repeat(2000)), { code: 'CLONEKV_REJECTED' }), 15_000);
  assertMoved(before, fwd.stats(), { reasons: { 'value-too-large': 1 }, rejected: 1 });
  assert.equal(writer.has('big'), false);
  await assertServing(t, fwd, w, mark, 'after-big', 'big');
});

// ---- the peer's side: garbage from a (plain) server -----------------------------------------

/**
 * A minimal plain CHP server: ROUTER P (ICANHAZ? → KVSYNC* + KTHXBAI), PUB P+1 (KVPUB, HUGZ
 * every 100 ms with its sequence), SUB P+2 bound but unused. It can also publish raw frames.
 */
class GarbageServer {
  port = 0;
  seq = 0;
  readonly map = new Map<string, { seq: number; props: Buffer; body: Buffer }>();
  readonly #router = new zmq.Router({ linger: 0 });
  readonly #pub = new zmq.Publisher({ linger: 0 });
  readonly #collector = new zmq.Subscriber({ linger: 0 });
  #routerChain: Promise<void> = Promise.resolve();
  #pubChain: Promise<void> = Promise.resolve();
  #heartbeat: NodeJS.Timeout | undefined;
  #loop: Promise<void> = Promise.resolve();

  static async start(t: TestContext): Promise<GarbageServer> {
    const deadline = Date.now() + 5000;
    for (;;) {
      const s = new GarbageServer();
      try {
        await s.#router.bind('tcp://127.0.0.1:*');
        s.port = Number(/:(\d+)$/.exec(s.#router.lastEndpoint ?? '')?.[1]);
        await s.#pub.bind(`tcp://127.0.0.1:${s.port + 1}`);
        await s.#collector.bind(`tcp://127.0.0.1:${s.port + 2}`);
      } catch (err) {
        await s.close();
        if ((err as { code?: string }).code !== 'EADDRINUSE' || Date.now() > deadline) throw err;
        continue;
      }
      t.after(() => s.close());
      s.#loop = s.#serve();
      s.#heartbeat = setInterval(() => s.publishRaw([Buffer.from('HUGZ'), seqFrame(s.seq), EMPTY, EMPTY, EMPTY]), 100);
      return s;
    }
  }

  get endpoint(): string {
    return `tcp://127.0.0.1:${this.port}`;
  }

  async #serve(): Promise<void> {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await this.#router.receive();
      } catch {
        return;
      }
      const [id, command, subtree] = frames;
      if (frames.length !== 3 || command?.toString() !== 'ICANHAZ?' || !id || !subtree) continue;
      for (const [key, e] of this.map) {
        if (key.startsWith(subtree.toString())) this.#sendRouter([id, Buffer.from(key), seqFrame(e.seq), EMPTY, e.props, e.body]);
      }
      this.#sendRouter([id, Buffer.from('KTHXBAI'), seqFrame(this.seq), EMPTY, EMPTY, subtree]);
    }
  }

  #sendRouter(frames: Buffer[]): void {
    this.#routerChain = this.#routerChain.then(() => this.#router.send(frames)).catch(() => {});
  }

  /** Publishes frames as they are. */
  publishRaw(frames: Buffer[]): void {
    this.#pubChain = this.#pubChain.then(() => this.#pub.send(frames)).catch(() => {});
  }

  /** The next sequence number, consumed. */
  nextSeq(): number {
    return ++this.seq;
  }

  /** Sequences, stores and publishes one update. */
  apply(key: string, props: Buffer, body: Buffer): number {
    const seq = this.nextSeq();
    this.map.set(key, { seq, props, body });
    this.publishRaw([Buffer.from(key), seqFrame(seq), EMPTY, props, body]);
    return seq;
  }

  async close(): Promise<void> {
    clearInterval(this.#heartbeat);
    this.#router.close();
    this.#pub.close();
    this.#collector.close();
    await this.#loop;
  }
}

test('a peer drops and counts malformed published messages, keeps its state and applies later updates', async (t) => {
  // Topology: GarbageServer (plain CHP: ROUTER P, PUB P+1, SUB P+2, HUGZ every 100 ms); one
  // clonekv Peer (full tree): SUB→P+1, DEALER→P. The server publishes garbage between valid
  // KVPUBs.
  const server = await GarbageServer.start(t);
  const MSGPACK = Buffer.from('enc=msgpack\n');
  server.apply('app/a', MSGPACK, msgpack.pack('one'));
  server.apply('app/raw', EMPTY, Buffer.from('bytes'));
  const peer = await readyPeer(t, server.endpoint, { name: 'victim' });
  const errors: string[] = [];
  peer.on('error', (e) => errors.push(e.code));
  // With a plain server the peer takes a second snapshot once its subscription has proven
  // live; wait for it so that no resync is in flight below.
  await waitFor('the peer settled on the plain server', () => peer.stats().snapshots >= 2 && peer.status === 'live');
  const state = contents(peer);
  assert.deepEqual(Object.keys(state).sort(), ['app/a', 'app/raw']);
  assert.equal(peer.get('app/a'), 'one');
  const before = peer.stats();
  const versionA = peer.version('app/a');

  // 1. A three-frame message under the subscribed topic.
  server.publishRaw([Buffer.from('app/a'), seqFrame(server.seq + 1), EMPTY]);
  await waitFor('the 3-frame message counted', () => peer.stats().malformed === before.malformed + 1);
  // 2. A KVPUB with a 7-byte sequence.
  server.publishRaw([Buffer.from('app/a'), Buffer.alloc(7, 1), EMPTY, MSGPACK, msgpack.pack('seven')]);
  await waitFor('the 7-byte sequence counted', () => peer.stats().malformed === before.malformed + 2);
  assert.deepEqual(contents(peer), state, 'state unchanged by garbage');
  assert.equal(peer.version('app/a'), versionA);
  // 3. A correctly sequenced KVPUB marked enc=msgpack whose body is not msgpack (a truncated
  //    string): it was sequenced, so it is applied, as its raw bytes, and counted (issue 7,
  //    item 1: an undecodable value is given as raw bytes).
  const badSeq = server.nextSeq();
  const badBody = Buffer.from([0xa5, 0x61]);
  server.publishRaw([Buffer.from('app/a'), seqFrame(badSeq), EMPTY, MSGPACK, badBody]);
  await waitFor('the bad msgpack body counted', () => peer.stats().undecodable === before.undecodable + 1);
  assert.equal(peer.version('app/a'), badSeq);
  assert.deepEqual(Buffer.from(peer.get('app/a') as Uint8Array), badBody);
  assert.ok(errors.includes('CLONEKV_MALFORMED'), `error events: ${errors.join(',')}`);

  // Later valid updates are applied, in order, without a resync.
  const s1 = server.apply('app/b', MSGPACK, msgpack.pack({ ok: true }));
  const s2 = server.apply('app/a', MSGPACK, msgpack.pack('two'));
  await waitFor('the valid updates after the garbage', () => peer.sequence === s2);
  assert.deepEqual(peer.get('app/b'), { ok: true });
  assert.equal(peer.version('app/b'), s1);
  assert.equal(peer.get('app/a'), 'two');
  assert.deepEqual(Buffer.from(peer.get('app/raw') as Uint8Array), Buffer.from('bytes'));
  const after = peer.stats();
  assert.equal(after.malformed, before.malformed + 2, 'exactly the two malformed messages');
  assert.equal(after.resyncs, before.resyncs, 'no resync');
  assert.equal(after.gaps, before.gaps, 'no gap');
  assert.ok(after.updates >= before.updates + 2);
});
