/**
 * Interoperability with plain CHP (ZeroMQ RFC 12, the Clone pattern), both ways. The plain
 * client and the plain server below are written here from the protocol description
 * (/work/shared/protocol.md) with raw zeromq sockets; nothing from clonekv is used by them.
 * clonekv itself (Forwarder, Peer) comes in only through the test helpers.
 *
 * Every message is five frames: key, sequence (8 bytes, signed, big-endian), uuid (0 or 16
 * bytes), properties (`name=value\n` lines), body. The snapshot request is two frames:
 * `ICANHAZ?` and the subtree.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test, type TestContext } from 'node:test';
import { Packr } from 'msgpackr';
import * as zmq from 'zeromq';
import type { ResyncReason } from '../src/index.ts';
import { contents, forwarder, readyPeer, waitFor, within, Inbox } from './helpers.ts';
import { PlainServer, type Item } from './plain-server.ts';
import { EMPTY, ZERO_SEQ } from './raw-sockets.ts';

const HUGZ = 'HUGZ';
const msgpack = new Packr({ useRecords: false });

// ---- frame helpers (the plain implementations' own, from the spec) --------------------------

function seqOf(frame: Buffer): number {
  assert.equal(frame.length, 8, 'a sequence frame is 8 bytes');
  return Number(frame.readBigInt64BE(0));
}

/** Splits a properties frame into its lines; asserts each line ends in `\n`. */
function propLines(frame: Buffer): string[] {
  const text = frame.toString('utf8');
  if (text === '') return [];
  assert.ok(text.endsWith('\n'), `every property line ends in \\n: ${JSON.stringify(text)}`);
  return text.slice(0, -1).split('\n');
}

/** Name → value, split at the first `=` (a value may contain `=`). */
function propMap(frame: Buffer): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of propLines(frame)) {
    const eq = line.indexOf('=');
    assert.ok(eq > 0, `property line ${JSON.stringify(line)} has a name and "="`);
    m.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return m;
}


// ---- a plain CHP client ---------------------------------------------------------------------

/**
 * The spec's client: SUB on P+1 (subtree + HUGZ), DEALER on P (ICANHAZ?), PUB on P+2 (KVSET).
 * It stores KVSYNCs, takes the KTHXBAI sequence as `last`, then applies KVPUBs with a higher
 * sequence. It knows nothing of clonekv's extensions.
 */
class PlainClient {
  readonly sub = new zmq.Subscriber({ linger: 0 });
  readonly dealer = new zmq.Dealer({ linger: 0 });
  readonly pub = new zmq.Publisher({ linger: 0 });
  readonly subInbox: Inbox;
  readonly dealerInbox: Inbox;
  /** Resolves once the PUB's connection to the collector has completed its handshake. */
  readonly pubConnected: Promise<void>;
  readonly map = new Map<string, Item>();
  /** Every KVPUB applied (after the snapshot), in order. */
  readonly applied: Array<{ key: string } & Item> = [];
  /** Every key seen on the SUB, to check filtering. */
  readonly seenKeys = new Set<string>();
  last = -1;
  heartbeats = 0;

  constructor(
    base: number,
    readonly subtree: string,
  ) {
    this.pubConnected = new Promise((resolve) => this.pub.events.on('handshake', () => resolve()));
    this.sub.subscribe(subtree);
    this.sub.subscribe(HUGZ);
    this.sub.connect(`tcp://127.0.0.1:${base + 1}`);
    this.dealer.connect(`tcp://127.0.0.1:${base}`);
    this.pub.connect(`tcp://127.0.0.1:${base + 2}`);
    this.subInbox = new Inbox(this.sub);
    this.dealerInbox = new Inbox(this.dealer);
  }

  /** Waits until something (a HUGZ at least) has arrived on the SUB: the subscription is live. */
  async waitForSubscriber(): Promise<void> {
    await waitFor('a first message on the plain client SUB', () => this.subInbox.all.length > 0, 5000);
  }

  /** ICANHAZ? → KVSYNC* → KTHXBAI. Returns the snapshot messages and the KTHXBAI. */
  async snapshot(): Promise<{ syncs: Buffer[][]; end: Buffer[] }> {
    await this.dealer.send([Buffer.from('ICANHAZ?'), Buffer.from(this.subtree)]);
    const syncs: Buffer[][] = [];
    for (;;) {
      const m = await this.dealerInbox.next('a snapshot message');
      assert.equal(m.length, 5, `snapshot message has 5 frames, got ${m.length}`);
      const [key, seq, uuid, props, body] = m as [Buffer, Buffer, Buffer, Buffer, Buffer];
      if (key.toString() === 'KTHXBAI') {
        this.map.clear();
        for (const s of syncs) {
          const [k, sq, u, p, b] = s as [Buffer, Buffer, Buffer, Buffer, Buffer];
          this.map.set(k.toString(), { seq: seqOf(sq), uuid: u, props: p, body: b });
        }
        this.last = seqOf(seq);
        return { syncs, end: m };
      }
      assert.ok(key.toString().startsWith(this.subtree), `KVSYNC key ${key.toString()} is under ${this.subtree}`);
      assert.ok(uuid.length === 0 || uuid.length === 16);
      propLines(props);
      assert.ok(body.length > 0, 'a KVSYNC carries a value');
      syncs.push(m);
    }
  }

  /** Applies the KVPUBs received so far (sequence > last), skipping HUGZ. */
  pump(): void {
    for (const m of this.subInbox.drain()) {
      assert.equal(m.length, 5, `published message has 5 frames, got ${m.length}`);
      const [key, seq, uuid, props, body] = m as [Buffer, Buffer, Buffer, Buffer, Buffer];
      const k = key.toString();
      this.seenKeys.add(k);
      const s = seqOf(seq);
      if (k === HUGZ) {
        this.heartbeats++;
        continue;
      }
      if (this.last < 0 || s <= this.last) continue;
      this.last = s;
      const item = { seq: s, uuid, props, body };
      this.applied.push({ key: k, ...item });
      if (body.length === 0) this.map.delete(k);
      else this.map.set(k, item);
    }
  }

  /** Sends one KVSET to the collector: sequence 0, the uuid, raw properties, body. */
  async kvset(key: string, uuid: Buffer, props: Buffer, body: Buffer): Promise<void> {
    await this.pub.send([Buffer.from(key), ZERO_SEQ, uuid, props, body]);
  }

  close(): void {
    this.sub.close();
    this.dealer.close();
    this.pub.close();
  }
}

function plainClient(t: TestContext, base: number, subtree: string): PlainClient {
  const c = new PlainClient(base, subtree);
  t.after(async () => {
    c.close();
    await Promise.all([c.subInbox.done, c.dealerInbox.done]);
  });
  return c;
}

// ---- a plain CHP client against the clonekv forwarder ---------------------------------------

test('a plain CHP client syncs from the forwarder, and its KVSETs are republished intact and seen by clonekv peers', async (t) => {
  // Topology: Forwarder (ROUTER P, XPUB P+1, SUB P+2); a clonekv writer Peer (full tree) and a
  // clonekv reader Peer (subtree app/); a plain client: SUB→P+1 (app/ + HUGZ), DEALER→P, PUB→P+2.
  const fwd = await forwarder(t, { heartbeatInterval: 100 });
  const writer = await readyPeer(t, fwd.endpoint, { name: 'writer' });
  await writer.set('app/a', { x: 1, list: [1, 2] });
  await writer.set('app/b', 'hello');
  await writer.set('app/gone', 1);
  await writer.delete('app/gone');
  await writer.set('other/c', 3);

  const plain = plainClient(t, fwd.port, 'app/');
  // As the spec's client does, subscribe first and wait for the subscription to be live (a
  // first HUGZ) before asking for the snapshot, so no update falls in between.
  await plain.waitForSubscriber();
  const hugz = plain.subInbox.all[0]!;
  assert.equal(hugz.length, 5);
  assert.equal(hugz[0]!.toString(), HUGZ);
  assert.equal(hugz[1]!.length, 8);
  assert.equal(hugz[4]!.length, 0, 'HUGZ has an empty body');

  const seqBefore = fwd.sequence;
  const { syncs, end } = await plain.snapshot();
  const seqAfter = fwd.sequence;
  // Plain KVSYNCs, never clonekv's packed batches, and only the subtree.
  assert.deepEqual(syncs.map((m) => m[0]!.toString()).sort(), ['app/a', 'app/b']);
  // KTHXBAI carries the forwarder sequence at the snapshot (which may move on its own, e.g.
  // for clonekv peers' presence keys, hence a range).
  assert.ok(seqOf(end[1]!) >= seqBefore && seqOf(end[1]!) <= seqAfter, `KTHXBAI sequence ${seqOf(end[1]!)} in [${seqBefore}, ${seqAfter}]`);
  assert.equal(end[4]!.toString(), 'app/', 'KTHXBAI body is the subtree');
  // Values written by clonekv are msgpack bytes, marked enc=msgpack.
  for (const [key, value] of [['app/a', { x: 1, list: [1, 2] }], ['app/b', 'hello']] as const) {
    const item = plain.map.get(key);
    assert.ok(item, key);
    assert.equal(propMap(item.props).get('enc'), 'msgpack');
    assert.equal(item.uuid.length, 16);
    assert.deepEqual(msgpack.unpack(item.body), value);
    assert.equal(item.seq, writer.version(key));
  }

  // Live updates from a clonekv writer reach the plain client in order.
  await writer.set('app/a', 2);
  await writer.delete('app/b');
  await writer.set('other/d', 4);
  const lastLive = await writer.set('app/c', [3]);
  await waitFor('the plain client to apply the live updates', () => (plain.pump(), plain.last >= lastLive));
  assert.deepEqual([...plain.map.keys()].sort(), ['app/a', 'app/c']);
  assert.deepEqual(msgpack.unpack(plain.map.get('app/a')!.body), 2);
  assert.deepEqual(msgpack.unpack(plain.map.get('app/c')!.body), [3]);
  assert.deepEqual(plain.applied.map((u) => u.key), ['app/a', 'app/b', 'app/c']);
  assert.equal(plain.applied[1]!.body.length, 0, 'a delete is an empty body');
  assert.ok(![...plain.seenKeys].some((k) => k.startsWith('other/')), 'nothing outside the subscription');

  // The plain client's own KVSET, sent once, right after connecting (its SUB has heard from
  // the forwarder, its PUB has completed its handshake): nothing else retries it.
  const reader = await readyPeer(t, fwd.endpoint, { name: 'reader', subtree: 'app/' });
  const writerSaw: string[] = [];
  writer.on('update', (e) => writerSaw.push(e.key));
  await within('the plain PUB handshake', plain.pubConnected);
  const before = fwd.stats();
  const uuid = randomBytes(16);
  const props = Buffer.from('color=blue\nexpr=a=b\n');
  const body = Buffer.from([0x00, 0x01, 0xfe, 0xff, 0x80, 0x0a]);
  await plain.kvset('app/plain', uuid, props, body);
  const echo = await waitFor('the plain KVSET republished', () => {
    plain.pump();
    return plain.applied.find((u) => u.key === 'app/plain');
  });
  assert.deepEqual(echo.uuid, uuid, 'same uuid');
  assert.deepEqual(echo.body, body, 'body unchanged');
  const lines = propLines(echo.props);
  assert.deepEqual(lines.slice(0, 2), ['color=blue', 'expr=a=b'], 'original property lines first, in order');
  assert.equal(propMap(echo.props).get('expr'), 'a=b');
  for (const line of lines.slice(2)) assert.match(line, /^[^=\n]+=[^\n]*$/);
  // clonekv peers expose an unmarked body as raw bytes.
  for (const p of [writer, reader]) {
    await waitFor('app/plain at a clonekv peer', () => p.version('app/plain') === echo.seq);
    const v = p.get('app/plain');
    assert.ok(v instanceof Uint8Array, `a raw Uint8Array, got ${typeof v}`);
    assert.deepEqual(Buffer.from(v), body);
  }
  // Sequenced once, from the one send: no retry, no duplicate, nothing refused.
  const after = fwd.stats();
  assert.equal(after.duplicates, before.duplicates);
  assert.equal(after.malformed, before.malformed);
  assert.equal(after.rejected, before.rejected);
  assert.equal(plain.applied.filter((u) => u.key === 'app/plain').length, 1);
  assert.deepEqual(writerSaw.filter((k) => k === 'app/plain'), ['app/plain']);

  // A later plain snapshot returns the plain write with its uuid and properties.
  const late = plainClient(t, fwd.port, 'app/');
  await late.waitForSubscriber();
  await late.snapshot();
  const stored = late.map.get('app/plain');
  assert.ok(stored);
  assert.deepEqual(stored.uuid, uuid);
  assert.deepEqual(propLines(stored.props).slice(0, 2), ['color=blue', 'expr=a=b']);
  assert.deepEqual(stored.body, body);
  assert.equal(stored.seq, echo.seq);
  assert.ok(late.last >= echo.seq);
  assert.deepEqual([...late.map.keys()].sort(), ['app/a', 'app/c', 'app/plain']);
});

test('a plain KVSET whose last property lacks its "\\n" keeps that property, live and in snapshots', async (t) => {
  // Topology: Forwarder (ROUTER P, XPUB P+1, SUB P+2); a clonekv reader Peer (subtree app/);
  // two plain clients: SUB→P+1 (app/ + HUGZ), DEALER→P, PUB→P+2. The C reference client drops
  // a last property with no "\n" (protocol.md, failure 9), so what the forwarder sends plain
  // clients must have every line terminated, in KVPUB and in KVSYNC alike.
  const fwd = await forwarder(t, { heartbeatInterval: 100 });
  const reader = await readyPeer(t, fwd.endpoint, { name: 'reader', subtree: 'app/' });
  const plain = plainClient(t, fwd.port, 'app/');
  await plain.waitForSubscriber();
  await plain.snapshot();
  await within('the plain PUB handshake', plain.pubConnected);
  const uuid = randomBytes(16);
  await plain.kvset('app/plain2', uuid, Buffer.from('color=green\nnote=x=y'), Buffer.from('raw'));
  const echo = await waitFor('the plain KVSET republished', () => {
    plain.pump();
    return plain.applied.find((u) => u.key === 'app/plain2');
  });
  assert.deepEqual(echo.uuid, uuid);
  assert.deepEqual(propLines(echo.props).slice(0, 2), ['color=green', 'note=x=y']);
  await waitFor('app/plain2 at the reader', () => reader.version('app/plain2') === echo.seq);
  assert.deepEqual(Buffer.from(reader.get('app/plain2') as Uint8Array), Buffer.from('raw'));

  const late = plainClient(t, fwd.port, 'app/');
  await late.waitForSubscriber();
  await late.snapshot();
  const stored = late.map.get('app/plain2');
  assert.ok(stored);
  assert.deepEqual(stored.uuid, uuid);
  assert.ok(stored.props.toString().endsWith('\n'), `KVSYNC properties ${JSON.stringify(stored.props.toString())} end every line in \\n`);
  assert.deepEqual(propLines(stored.props).slice(0, 2), ['color=green', 'note=x=y']);
});

// ---- a clonekv peer against a plain CHP server ----------------------------------------------

test('a clonekv peer syncs from a plain CHP server, writes through it, and resyncs when it restarts', async (t) => {
  // Topology: PlainServer (ROUTER P, XPUB P+1, SUB P+2, HUGZ every 100 ms, no clonekv
  // properties); one clonekv Peer (subtree app/): SUB→P+1, DEALER→P, PUB→P+2 (plain fallback).
  const server = await PlainServer.start(t, {
    'app/x': Buffer.from('hello'),
    'app/y': Buffer.from([1, 2, 3]),
    'other/z': Buffer.from('nope'),
  });
  const peer = await readyPeer(t, server.endpoint, { subtree: 'app/', writeRetryInterval: 200 });
  const resyncs: ResyncReason[] = [];
  peer.on('resync', (e) => resyncs.push(e.reason));
  // Initial keys with raw bodies are exposed as Uint8Array.
  const x = peer.get('app/x');
  assert.ok(x instanceof Uint8Array);
  assert.deepEqual(Buffer.from(x), Buffer.from('hello'));
  assert.deepEqual(Buffer.from(peer.get('app/y') as Uint8Array), Buffer.from([1, 2, 3]));
  assert.equal(peer.has('other/z'), false);
  assert.equal(peer.epoch, undefined, 'a plain server has no epoch');

  // Live updates.
  await waitFor('the peer subscription at the plain server', () => server.subscriptions.includes('app/'));
  const liveSeq = server.apply('app/live', EMPTY, Buffer.from('live!'));
  server.apply('other/ignored', EMPTY, Buffer.from('no'));
  await waitFor('the live update at the peer', () => peer.version('app/live') === liveSeq);
  assert.deepEqual(Buffer.from(peer.get('app/live') as Uint8Array), Buffer.from('live!'));
  server.apply('app/y', EMPTY, EMPTY);
  await waitFor('the live delete at the peer', () => !peer.has('app/y'));

  // A write under the subtree goes to the collector and is done once it comes back.
  const seq = await within('peer.set through a plain server', peer.set('app/k', { hello: 'world' }));
  const first = server.sequenced.find((s) => s.key === 'app/k');
  assert.ok(first, 'the plain server received the KVSET');
  assert.equal(seq, first.seq, 'resolves with the sequence the server assigned');
  assert.equal(first.uuid.length, 16);
  assert.equal(first.kvsetSeq, 0, 'a KVSET carries sequence 0');
  assert.equal(propMap(first.props).get('enc'), 'msgpack');
  assert.deepEqual(msgpack.unpack(first.body), { hello: 'world' });
  assert.deepEqual(peer.get('app/k'), { hello: 'world' });
  assert.ok(peer.version('app/k')! >= seq);

  // What a plain server cannot confirm is refused at once.
  const received = server.sequenced.length;
  await within(
    'a write outside the subtree to be refused',
    assert.rejects(peer.set('other/q', 1), { code: 'CLONEKV_UNSUPPORTED' }),
    2000,
  );
  await within(
    'a conditional write to be refused',
    assert.rejects(peer.set('app/k', 2, { ifVersion: peer.version('app/k')! }), { code: 'CLONEKV_UNSUPPORTED' }),
    2000,
  );
  assert.equal(server.sequenced.length, received, 'neither write reached the server');
  assert.deepEqual(peer.get('app/k'), { hello: 'world' });

  // Restart: the sequence goes back to 0 with new data. Once the peer is subscribed to the new
  // server, the next KVPUB has a sequence at or below the peer's: the peer resyncs and replaces
  // its map (keys of the old run are gone).
  const lastBefore = peer.sequence;
  await server.restart({ 'app/new': Buffer.from('fresh') });
  await waitFor('the peer to resubscribe to the restarted server', () => server.subscriptions.includes('app/'));
  const afterSeq = server.apply('app/after', EMPTY, Buffer.from('after'));
  assert.ok(afterSeq <= lastBefore, `restarted sequence ${afterSeq} is not above the old ${lastBefore}`);
  await waitFor('the peer to resync to the restarted server', () => peer.sequence === afterSeq && peer.has('app/after') && peer.status === 'live');
  assert.ok(resyncs.includes('sequence'), `resync reasons: ${resyncs.join(',')}`);
  assert.deepEqual(Object.keys(contents(peer)).sort(), ['app/after', 'app/new']);
  assert.deepEqual(Buffer.from(peer.get('app/new') as Uint8Array), Buffer.from('fresh'));
  assert.equal(peer.version('app/after'), afterSeq);

  // And it keeps working against the new run.
  const seq2 = await within('peer.set after the restart', peer.set('app/k2', 'v2'));
  assert.equal(seq2, server.sequenced.find((s) => s.key === 'app/k2')?.seq);
  assert.equal(peer.get('app/k2'), 'v2');
});
