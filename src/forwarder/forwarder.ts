/**
 * The forwarder: the one sequencer. It receives writes (KVSET on the collector from plain CHP
 * peers, or on the snapshot ROUTER from clonekv peers, which get an acknowledgement back),
 * stamps each with the next sequence number, republishes it, answers snapshot requests,
 * heartbeats and expires ttl values.
 *
 * Topology (P = base port):
 * ```
 *   peers' DEALER ──► ROUTER :P    ICANHAZ? → KVSYNC or KVBATCH..., KTHXBAI; KVSET → KVACK
 *   peers' SUB    ◄── XPUB   :P+1  KVPUB, HUGZ (XPUB: subscriptions are seen, for gap detection)
 *   plain PUB     ──► SUB    :P+2  KVSET (plain CHP writers)
 * ```
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { ClosedError } from '../errors.ts';
import { DeadlineTimer } from '../deadline-timer.ts';
import { durationOption, intOption, MAX_TTL_SECONDS, rejectUnknown, stringOption } from '../options.ts';
import { BatchError, contiguousEntrySize, entrySize, packBatch, packContiguous, unpackBatch, type WireEntry } from '../protocol/batch.ts';
import { Command, isReservedKey, JOIN_TOPIC_PREFIX, MAX_KEY_BYTES, PEER_ID_PREFIX, PRESENCE_PREFIX, Prop, PROTOCOL_VERSION } from '../protocol/commands.ts';
import { SnapshotDigest } from '../protocol/digest.ts';
import { addPrevious, encodeHeads } from '../protocol/gaps.ts';
import { decodeMessage, type ChpMessage, type MalformedReason } from '../protocol/message.ts';
import { appendProperty, encodeProperties, PropertiesError, PropertyView, type PropertyReader } from '../protocol/properties.ts';
import { encodeSequence } from '../protocol/sequence.ts';
import { encodeValue } from '../protocol/values.ts';
import { SequencedMap } from '../store/sequenced-map.ts';
import { PresenceTable, type PeerInfo } from './presence.ts';
import { RouterOutbox } from '../transport/router-outbox.ts';
import { SendQueue } from '../transport/send-queue.ts';
import { bindForwarderSockets, receiveLoop, type ForwarderSockets } from '../transport/sockets.ts';
import type { Endpoints, ForwarderOptions, ForwarderStats } from '../types.ts';

const EMPTY = Buffer.alloc(0);
const KTHXBAI = Buffer.from(Command.SnapshotEnd);
const KVBATCH = Buffer.from(Command.SnapshotBatch);
const KVACK = Buffer.from(Command.WriteAck);
const HUGZ = Buffer.from(Command.Heartbeat);
const ICANHAZ = Command.SnapshotRequest;
const ZERO_SEQ = Buffer.alloc(8);
const EXPIRED_PROPS = encodeProperties([[Prop.Reason, 'expired']]);
const PURGED_PROPS = encodeProperties([[Prop.Reason, 'purged']]);
const KVSTATS = Buffer.from(Command.Stats);
const NEWLINE = Buffer.from('\n');
const BATCH_BYTES = 256 * 1024;

/** Options with defaults applied. */
interface Settings {
  bind: string;
  port: number;
  heartbeatInterval: number;
  maxValueBytes: number;
  dedupWindow: number;
  snapshotBatch: number;
  joinWait: number;
  peerTimeout: number;
  publisherHwm: { send: number; receive: number };
  snapshotHwm: { send: number; receive: number };
  collectorHwm: { send: number; receive: number };
}

const KNOWN_OPTIONS = [
  'bind',
  'port',
  'heartbeatInterval',
  'maxValueBytes',
  'dedupWindow',
  'snapshotBatch',
  'publisherHwm',
  'snapshotHwm',
  'collectorHwm',
  'joinWait',
  'peerTimeout',
] as const;

function hwmOption(name: string, value: ForwarderOptions['publisherHwm'], send: number, receive: number) {
  return {
    send: intOption(`${name}.send`, value?.send, send, 0),
    receive: intOption(`${name}.receive`, value?.receive, receive, 0),
  };
}

/** Checks options and fills in defaults. Throws `CLONEKV_INVALID_OPTION` naming a bad one. */
function forwarderSettings(options: ForwarderOptions = {}): Settings {
  rejectUnknown(options, KNOWN_OPTIONS);
  return {
    bind: stringOption('bind', options.bind, '127.0.0.1'),
    port: intOption('port', options.port, 5556, 0, 65533),
    heartbeatInterval: durationOption('heartbeatInterval', options.heartbeatInterval, 1000, 10),
    maxValueBytes: intOption('maxValueBytes', options.maxValueBytes, 1024 * 1024, 1, 256 * 1024 * 1024),
    dedupWindow: intOption('dedupWindow', options.dedupWindow, 100_000, 1),
    snapshotBatch: intOption('snapshotBatch', options.snapshotBatch, 512, 1, 65_536),
    joinWait: durationOption('joinWait', options.joinWait, 2000, 0),
    peerTimeout: durationOption('peerTimeout', options.peerTimeout, 3000, 10),
    publisherHwm: hwmOption('publisherHwm', options.publisherHwm, 10_000, 1000),
    snapshotHwm: hwmOption('snapshotHwm', options.snapshotHwm, 1000, 10_000),
    collectorHwm: hwmOption('collectorHwm', options.collectorHwm, 1000, 10_000),
  };
}

/** Outcome of a write, remembered per uuid so a retry gets the same answer. */
type WriteOutcome = { status: 'ok'; seq: number } | { status: 'conflict'; current: number } | { status: 'rejected'; detail: string };

/** Counters of malformed input, by reason. */
export type MalformedCounts = Record<MalformedReason | 'snapshot-request' | 'subscription' | 'batch', number>;

/**
 * A CHP forwarder with clonekv's extensions. Start one with {@link Forwarder.start}.
 *
 * @example
 * ```ts
 * await using fwd = await Forwarder.start({ port: 0 });
 * console.log(fwd.endpoint); // tcp://127.0.0.1:41235
 * ```
 */
export class Forwarder implements AsyncDisposable {
  readonly #settings: Settings;
  readonly #sockets: ForwarderSockets;
  readonly #store = new SequencedMap();
  readonly #epoch = randomBytes(8).toString('hex');
  /**
   * Header (frame 3) of every KVACKS: the epoch of this run, so a peer never takes a sequence of
   * this run for one of the run its map comes from (read-your-writes across a restart).
   */
  readonly #ackHeader = encodeProperties([[Prop.Epoch, this.#epoch]]);
  readonly #publish: SendQueue;
  readonly #outbox: RouterOutbox;
  /** Outcomes of recent writes by uuid: a sequence number for a success (no object to keep). */
  readonly #dedup: LRUCache<string, WriteOutcome | number>;
  /** Subscribed prefixes (latin1) → sequence of the last update under each (0 = none yet). */
  readonly #heads = new Map<string, number>();
  /** Distinct lengths of subscribed prefixes, for the `prev` lookup. */
  #prefixLengths: number[] = [];
  /** Routing ids (latin1) of clonekv peers whose join subscription has arrived. */
  readonly #joined = new Set<string>();
  /** Snapshot requests waiting for the requester's join subscription. */
  readonly #parked = new Map<string, { subtree: Buffer; timer: NodeJS.Timeout }>();
  readonly #presence = new PresenceTable();
  #purgeTimer: NodeJS.Timeout;
  readonly #stats: ForwarderStats = {
    sequence: 0,
    keys: 0,
    published: 0,
    duplicates: 0,
    conflicts: 0,
    rejected: 0,
    malformed: 0,
    expired: 0,
    purged: 0,
    peers: 0,
    snapshots: 0,
    dropped: 0,
    heartbeats: 0,
  };
  readonly #malformed: MalformedCounts = {
    'frame-count': 0,
    'empty-key': 0,
    'key-too-long': 0,
    'sequence-size': 0,
    'sequence-range': 0,
    'uuid-size': 0,
    properties: 0,
    'value-too-large': 0,
    'reserved-key': 0,
    batch: 0,
    'snapshot-request': 0,
    subscription: 0,
  };
  #heartbeat: NodeJS.Timeout;
  readonly #expiryTimer = new DeadlineTimer(() => this.#expire());
  #closing: Promise<void> | undefined;
  #closedResolve!: () => void;
  readonly #closedPromise = new Promise<void>((resolve) => {
    this.#closedResolve = resolve;
  });
  readonly #loops: Promise<void>[];

  private constructor(settings: Settings, sockets: ForwarderSockets) {
    this.#settings = settings;
    this.#sockets = sockets;
    this.#dedup = new LRUCache({ max: settings.dedupWindow });
    this.#publish = new SendQueue(
      sockets.publisher,
      1_000_000,
      (n) => (this.#stats.dropped += n),
      () => this.#stats.dropped++,
    );
    this.#outbox = new RouterOutbox(sockets.router, 100_000, (n) => (this.#stats.dropped += n));
    const ignore = (): void => {};
    this.#loops = [
      receiveLoop(sockets.router, (f) => this.#onRouter(f), ignore),
      receiveLoop(sockets.collector, (f) => this.#onCollector(f), ignore),
      receiveLoop(sockets.publisher, (f) => this.#onSubscription(f), ignore),
    ];
    this.#heartbeat = setInterval(() => this.#sendHeartbeat(), settings.heartbeatInterval);
    this.#purgeTimer = setInterval(() => this.#purgeSilentPeers(), Math.max(5, Math.floor(settings.peerTimeout / 4)));
  }

  /**
   * Binds the three sockets and starts serving.
   *
   * @throws `CLONEKV_INVALID_OPTION` for a bad option, `CLONEKV_TRANSPORT` if a port is taken
   */
  static async start(options: ForwarderOptions = {}): Promise<Forwarder> {
    const settings = forwarderSettings(options);
    const sockets = await bindForwarderSockets(settings.bind, settings.port, {
      router: settings.snapshotHwm,
      publisher: settings.publisherHwm,
      collector: settings.collectorHwm,
    });
    return new Forwarder(settings, sockets);
  }

  /** `tcp://ADDRESS:P`: what peers and `--server` take. */
  get endpoint(): string {
    return `tcp://${this.#settings.bind}:${this.#sockets.port}`;
  }

  /** The three bound endpoints. */
  get endpoints(): Endpoints {
    const base = `tcp://${this.#settings.bind}:`;
    const p = this.#sockets.port;
    return { snapshot: `${base}${p}`, publisher: `${base}${p + 1}`, collector: `${base}${p + 2}` };
  }

  /** The base port P actually bound. */
  get port(): number {
    return this.#sockets.port;
  }

  /** This run's id, announced in HUGZ and KTHXBAI; a peer that sees it change resyncs. */
  get epoch(): string {
    return this.#epoch;
  }

  /** The last assigned sequence number. */
  get sequence(): number {
    return this.#store.sequence;
  }

  /** Keys held. */
  get size(): number {
    return this.#store.size;
  }

  /** Counters (a copy). */
  stats(): ForwarderStats & { malformedBy: MalformedCounts; subscriptions: number; epoch: string } {
    return {
      ...this.#stats,
      sequence: this.#store.sequence,
      keys: this.#store.size,
      peers: this.#presence.size,
      malformedBy: { ...this.#malformed },
      subscriptions: this.#heads.size,
      epoch: this.#epoch,
    };
  }

  /** Live clonekv peers (those whose heartbeats arrive), with the number of keys each owns. */
  peers(): Array<PeerInfo & { since: number; lastSeen: number; owned: number }> {
    return this.#presence.list();
  }

  /**
   * Sequences and publishes values in-process, as if written by a peer: for seeding a forwarder
   * from a file or a test. Yields to the event loop between chunks so a large load does not
   * stall serving.
   *
   * @param onProgress - called with the number loaded so far after each chunk
   * @returns the number of entries loaded
   */
  async load(
    entries: Iterable<readonly [string, unknown]>,
    onProgress?: (loaded: number) => void,
  ): Promise<number> {
    this.#assertOpen();
    let n = 0;
    const now = Date.now();
    for (const [key, value] of entries) {
      const keyBytes = Buffer.from(key, 'utf8');
      if (keyBytes.length === 0 || keyBytes.length > MAX_KEY_BYTES) throw new RangeError(`invalid key ${JSON.stringify(key)}`);
      const body = encodeValue(value);
      this.#applyAndPublish(keyBytes, keyBytes.toString('latin1'), EMPTY, LOADED_PROPS, body, 0, now);
      if (++n % 65_536 === 0) {
        onProgress?.(n);
        await new Promise((r) => setImmediate(r));
        this.#assertOpen();
      }
    }
    onProgress?.(n);
    return n;
  }

  /** Stops serving and closes every socket and timer. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      clearInterval(this.#heartbeat);
      clearInterval(this.#purgeTimer);
      this.#expiryTimer.stop();
      for (const p of this.#parked.values()) clearTimeout(p.timer);
      this.#parked.clear();
      this.#outbox.close();
      this.#publish.clear();
      // Unbind first and wait for it: close() alone releases the ports later, in the background,
      // and a forwarder started again on the same ports at once would find them taken.
      const e = this.endpoints;
      await Promise.allSettled([
        this.#sockets.router.unbind(e.snapshot),
        this.#sockets.publisher.unbind(e.publisher),
        this.#sockets.collector.unbind(e.collector),
      ]);
      this.#sockets.router.close();
      this.#sockets.publisher.close();
      this.#sockets.collector.close();
      await Promise.allSettled(this.#loops);
      this.#closedResolve();
    })();
    return this.#closing;
  }

  /** Resolves once the forwarder is closed. Never rejects. */
  closed(): Promise<void> {
    return this.#closedPromise;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #assertOpen(): void {
    if (this.#closing) throw new ClosedError('forwarder');
  }

  #countMalformed(reason: keyof MalformedCounts): void {
    this.#malformed[reason]++;
    this.#stats.malformed++;
  }

  // ---- input ------------------------------------------------------------------------------

  #onCollector(frames: Buffer[]): void {
    const d = decodeMessage(frames, Number.MAX_SAFE_INTEGER);
    if (!d.ok) return this.#countMalformed(d.reason);
    this.#write(d.message);
  }

  #onRouter(frames: Buffer[]): void {
    const id = frames[0]!;
    const command = frames[1];
    if (command !== undefined && command.length === ICANHAZ.length && command.toString('latin1') === ICANHAZ) {
      if (frames.length !== 3) return this.#countMalformed('snapshot-request');
      return this.#onSnapshotRequest(id, frames[2]!);
    }
    const d = decodeMessage(frames.slice(1), Number.MAX_SAFE_INTEGER);
    if (d.ok && d.message.key.length === WRITE_BATCH.length && d.message.key.equals(WRITE_BATCH)) return this.#onWriteBatch(id, d.message.body);
    if (d.ok && this.#onPeerCommand(id, d.message)) return;
    if (!d.ok) {
      this.#countMalformed(d.reason);
      // A clonekv writer is told, so it fails fast instead of timing out.
      if (d.reason !== 'frame-count' && frames[3]?.length === 16) {
        this.#ack(id, frames[3], { status: 'rejected', detail: d.reason });
      }
      return;
    }
    this.#ack(id, d.message.uuid, this.#write(d.message));
  }

  /** A burst of writes from one clonekv peer, answered with one packed acknowledgement. */
  #onWriteBatch(from: Buffer, body: Buffer): void {
    const acks: WireEntry[] = [];
    let bytes = 0;
    try {
      unpackBatch(body, (w) => {
        let outcome: WriteOutcome;
        let properties: PropertyReader | undefined;
        try {
          properties = new PropertyView(w.properties);
        } catch (err) {
          if (!(err instanceof PropertiesError)) throw err;
        }
        if (w.key.length === 0 || properties === undefined || (w.uuid.length !== 0 && w.uuid.length !== 16)) {
          this.#countMalformed(w.key.length === 0 ? 'empty-key' : properties === undefined ? 'properties' : 'uuid-size');
          outcome = { status: 'rejected', detail: 'malformed write' };
        } else {
          outcome = this.#write({ key: w.key, sequence: 0, uuid: w.uuid, rawProperties: w.properties, properties, body: w.body });
        }
        const ack: WireEntry = { key: w.key.length > 0 ? w.key : KVACK, sequence: outcome.status === 'ok' ? outcome.seq : 0, uuid: w.uuid, properties: ackProperties(outcome), body: EMPTY };
        bytes += entrySize(ack);
        acks.push(ack);
      });
    } catch (err) {
      if (!(err instanceof BatchError)) throw err;
      this.#countMalformed('batch');
    }
    if (acks.length > 0) this.#outbox.send(from, [ACK_BATCH, ZERO_SEQ, EMPTY, this.#ackHeader, packBatch(acks, bytes)]);
  }

  #onSubscription(frames: Buffer[]): void {
    const f = frames[0];
    if (!f || f.length === 0 || (f[0] !== 0 && f[0] !== 1)) return this.#countMalformed('subscription');
    const topic = f.subarray(1).toString('latin1');
    const subscribe = f[0] === 1;
    if (topic.startsWith(JOIN_TOPIC_PREFIX)) {
      const id = topic.slice(JOIN_TOPIC_PREFIX.length);
      if (!subscribe) {
        this.#joined.delete(id);
        return;
      }
      this.#joined.add(id);
      const parked = this.#parked.get(id);
      if (parked) {
        clearTimeout(parked.timer);
        this.#parked.delete(id);
        this.#serveSnapshot(Buffer.from(id, 'latin1'), parked.subtree, true);
      }
      return;
    }
    if (subscribe) {
      if (!this.#heads.has(topic)) this.#heads.set(topic, 0);
    } else {
      this.#heads.delete(topic);
    }
    this.#prefixLengths = [...new Set([...this.#heads.keys()].map((p) => p.length))].sort((a, b) => a - b);
  }

  // ---- presence -----------------------------------------------------------------------------

  /** Handles KVBEAT, KVBYE and KVSTATS from clonekv peers; false if `msg` is not one of them. */
  #onPeerCommand(from: Buffer, msg: ChpMessage): boolean {
    if (msg.key.length < 5 || msg.key[0] !== 0x4b /* K */ || msg.key[1] !== 0x56 /* V */) return false;
    const command = msg.key.toString('latin1');
    if (command === Command.Stats) {
      const body = Buffer.from(JSON.stringify({ ...this.stats(), peerList: this.peers() }));
      this.#outbox.send(from, [KVSTATS, encodeSequence(this.#store.sequence), EMPTY, EMPTY, body]);
      return true;
    }
    if (command !== Command.PeerBeat && command !== Command.PeerBye) return false;
    const id = msg.properties.get(Prop.Owner);
    if (id === undefined || !/^[0-9a-f]{1,64}$/.test(id)) {
      this.#countMalformed('properties');
      return true;
    }
    if (command === Command.PeerBye) {
      this.#removePeer(id);
      return true;
    }
    const subtreeProp = msg.properties.get(Prop.Subtree) ?? '';
    const info: PeerInfo = {
      id,
      name: msg.properties.get(Prop.Name) ?? 'peer',
      subtree: Buffer.from(subtreeProp, 'base64url').toString('utf8'),
      version: Number(msg.properties.get(Prop.Applied) ?? 0) || 0,
    };
    this.#registerPeer(info);
    return true;
  }

  /** Records a beat; a new peer gets its presence key `$peers/<id>`. */
  #registerPeer(info: PeerInfo): void {
    const now = Date.now();
    if (!this.#presence.beat(info, now)) return;
    const key = PRESENCE_PREFIX + info.id;
    const body = encodeValue({ id: info.id, name: info.name, subtree: info.subtree, since: new Date(now).toISOString() });
    this.#applyAndPublish(Buffer.from(key, 'latin1'), key, EMPTY, LOADED_PROPS, body, 0, now);
    this.#presence.written(key, info.id);
  }

  /** Forgets a peer and deletes what it owned (and its presence key), reason `purged`. */
  #removePeer(id: string): void {
    const now = Date.now();
    for (const key of this.#presence.remove(id)) {
      if (this.#store.get(key) === undefined) continue;
      this.#stats.purged++;
      this.#applyAndPublish(Buffer.from(key, 'latin1'), key, EMPTY, PURGED_PROPS, EMPTY, 0, now);
    }
  }

  #purgeSilentPeers(): void {
    for (const id of this.#presence.expired(Date.now(), this.#settings.peerTimeout)) this.#removePeer(id);
  }

  // ---- writes -----------------------------------------------------------------------------

  /** Applies a write once per uuid: a retry gets the outcome of the first attempt. */
  #write(msg: ChpMessage): WriteOutcome {
    const uuidKey = msg.uuid.length === 16 ? msg.uuid.toString('latin1') : undefined;
    if (uuidKey !== undefined) {
      const earlier = this.#dedup.get(uuidKey);
      if (earlier !== undefined) {
        this.#stats.duplicates++;
        return typeof earlier === 'number' ? { status: 'ok', seq: earlier } : earlier;
      }
    }
    const outcome = this.#decide(msg);
    if (uuidKey !== undefined) this.#dedup.set(uuidKey, outcome.status === 'ok' ? outcome.seq : outcome);
    return outcome;
  }

  #decide(msg: ChpMessage): WriteOutcome {
    if (msg.body.length > this.#settings.maxValueBytes) {
      this.#countMalformed('value-too-large');
      this.#stats.rejected++;
      return { status: 'rejected', detail: `value of ${msg.body.length} bytes is over the limit of ${this.#settings.maxValueBytes}` };
    }
    const key = msg.key.toString('latin1');
    if (isReservedKey(key)) {
      // Stored, a key such as KTHXBAI would end a plain client's snapshot early; $peers/ is the
      // forwarder's own.
      this.#countMalformed('reserved-key');
      this.#stats.rejected++;
      return { status: 'rejected', detail: `key ${JSON.stringify(key)} is reserved (protocol commands and $peers/)` };
    }
    let ttlMs = 0;
    const ttl = msg.properties.get(Prop.Ttl);
    if (ttl !== undefined && msg.body.length > 0) {
      const seconds = Number(ttl);
      if (!Number.isFinite(seconds) || seconds < 0 || ttl.trim() === '' || seconds > MAX_TTL_SECONDS) {
        this.#countMalformed('properties');
        this.#stats.rejected++;
        return { status: 'rejected', detail: `ttl ${ttl} of ${JSON.stringify(key)} is not a number of seconds from 0 to ${MAX_TTL_SECONDS}` };
      }
      ttlMs = Math.ceil(seconds * 1000);
    }
    const ifVersion = msg.properties.get(Prop.IfVersion);
    if (ifVersion !== undefined) {
      const expected = Number(ifVersion);
      if (!Number.isSafeInteger(expected) || expected < 0) {
        this.#countMalformed('properties');
        this.#stats.rejected++;
        return { status: 'rejected', detail: `if-version ${ifVersion} is not a version number` };
      }
      const current = this.#store.version(key);
      if (current !== expected) {
        this.#stats.conflicts++;
        return { status: 'conflict', current };
      }
    }
    const owner = msg.body.length > 0 ? msg.properties.get(Prop.Owner) : undefined;
    if (owner !== undefined && !this.#presence.has(owner)) {
      // An owner the forwarder has not heard from: present from now on, purged if it never beats.
      this.#registerPeer({ id: owner, name: 'unknown', subtree: '', version: 0 });
    }
    // Every property line must end in a newline (RFC 12); a writer that left the last one bare is
    // fixed here, once, so snapshots and live updates carry the same well-formed frame.
    const props = msg.rawProperties.length > 0 && msg.rawProperties[msg.rawProperties.length - 1] !== 0x0a
      ? Buffer.concat([msg.rawProperties, NEWLINE])
      : msg.rawProperties;
    const seq = this.#applyAndPublish(msg.key, key, msg.uuid, props, msg.body, ttlMs, Date.now());
    this.#presence.written(key, owner);
    return { status: 'ok', seq };
  }

  /** Assigns the next sequence, stores, publishes (with gap-detection `prev`), updates heads. */
  #applyAndPublish(keyBytes: Buffer, key: string, uuid: Buffer, props: Buffer, body: Buffer, ttlMs: number, now: number): number {
    const seq = this.#store.apply(key, uuid, props, body, ttlMs, now);
    this.#stats.published++;
    if (ttlMs > 0) this.#expiryTimer.arm(now + ttlMs);
    const lengths = this.#prefixLengths;
    if (lengths.length === 0) return seq; // nobody subscribed: XPUB would drop it anyway
    // The `prev` list (see protocol/gaps.ts), built as a string directly: this runs per write.
    let prev = '';
    for (const len of lengths) {
      if (len > key.length) break;
      const prefix = len === key.length ? key : key.slice(0, len);
      const last = this.#heads.get(prefix);
      if (last === undefined) continue;
      prev = addPrevious(prev, len, last);
      this.#heads.set(prefix, seq);
    }
    if (prev.length === 0) return seq;
    this.#publish.send([keyBytes, encodeSequence(seq), uuid, appendProperty(props, Prop.Previous, prev), body]);
    return seq;
  }

  #ack(to: Buffer, uuid: Buffer, outcome: WriteOutcome): void {
    const seq = outcome.status === 'ok' ? encodeSequence(outcome.seq) : ZERO_SEQ;
    this.#outbox.send(to, [KVACK, seq, uuid, ackProperties(outcome), EMPTY]);
  }

  // ---- snapshots ----------------------------------------------------------------------------

  #onSnapshotRequest(id: Buffer, subtree: Buffer): void {
    const idKey = id.toString('latin1');
    const isClonekv = idKey.startsWith(PEER_ID_PREFIX);
    if (!isClonekv || this.#joined.has(idKey) || this.#settings.joinWait === 0) {
      this.#serveSnapshot(id, subtree, isClonekv && this.#joined.has(idKey));
      return;
    }
    // Take the snapshot only once the peer's subscription is live, or updates in between
    // would be lost (reference failure 3). The join subscription proves it.
    const old = this.#parked.get(idKey);
    if (old) clearTimeout(old.timer);
    const timer = setTimeout(() => {
      this.#parked.delete(idKey);
      this.#serveSnapshot(id, subtree, false);
    }, this.#settings.joinWait);
    this.#parked.set(idKey, { subtree, timer });
  }

  #serveSnapshot(id: Buffer, subtreeBytes: Buffer, joined: boolean): void {
    if (this.#closing) return;
    this.#stats.snapshots++;
    const entries = this.#store.snapshot(subtreeBytes.toString('latin1'));
    const sequence = this.#store.sequence;
    const batched = id.toString('latin1').startsWith(PEER_ID_PREFIX);
    const digest = new SnapshotDigest();
    const batchMax = this.#settings.snapshotBatch;
    let i = 0;
    let ended = false;
    const next = (): Buffer[] | undefined => {
      if (i < entries.length) {
        if (!batched) {
          const [key, e] = entries[i++]!;
          const keyBytes = Buffer.from(key, 'latin1');
          digest.add(keyBytes, e.seq);
          return [keyBytes, encodeSequence(e.seq), e.uuid, e.properties, e.body];
        }
        const from = i;
        let bytes = 0;
        while (i < entries.length && i - from < batchMax && bytes < BATCH_BYTES) {
          const [key, e] = entries[i++]!;
          digest.add(key, e.seq);
          bytes += contiguousEntrySize(key, e);
        }
        return [KVBATCH, ZERO_SEQ, EMPTY, encodeProperties([[Prop.Count, String(i - from)]]), packContiguous(entries, from, i, bytes)];
      }
      if (ended) return undefined;
      ended = true;
      const props = encodeProperties([
        [Prop.Version, PROTOCOL_VERSION],
        [Prop.Epoch, this.#epoch],
        [Prop.Count, String(entries.length)],
        [Prop.Digest, digest.hex],
        [Prop.Joined, joined ? '1' : '0'],
      ]);
      return [KTHXBAI, encodeSequence(sequence), EMPTY, props, subtreeBytes];
    };
    this.#outbox.stream(id, next, () => {});
  }

  // ---- heartbeats and expiry ----------------------------------------------------------------

  #sendHeartbeat(): void {
    this.#stats.heartbeats++;
    const props = encodeProperties([
      [Prop.Version, PROTOCOL_VERSION],
      [Prop.Epoch, this.#epoch],
      [Prop.Heads, encodeHeads(this.#heads)],
    ]);
    this.#publish.send([HUGZ, encodeSequence(this.#store.sequence), EMPTY, props, EMPTY]);
  }

  #expire(): void {
    const now = Date.now();
    for (const key of this.#store.dueForExpiry(now)) {
      this.#stats.expired++;
      this.#applyAndPublish(Buffer.from(key, 'latin1'), key, EMPTY, EXPIRED_PROPS, EMPTY, 0, now);
      this.#presence.written(key, undefined);
    }
    const next = this.#store.nextExpiry();
    if (next !== undefined) this.#expiryTimer.arm(next);
  }
}

const ACK_OK = encodeProperties([[Prop.Status, 'ok']]);
const WRITE_BATCH = Buffer.from(Command.WriteBatch);
const ACK_BATCH = Buffer.from(Command.AckBatch);

/** The properties of an acknowledgement: `status`, and `current` or `detail`. */
function ackProperties(outcome: WriteOutcome): Buffer {
  if (outcome.status === 'ok') return ACK_OK;
  if (outcome.status === 'conflict') {
    return encodeProperties([
      [Prop.Status, 'conflict'],
      [Prop.Current, String(outcome.current)],
    ]);
  }
  return encodeProperties([
    [Prop.Status, 'rejected'],
    [Prop.Detail, outcome.detail.replace(/[=\n]/g, ' ')],
  ]);
}
const LOADED_PROPS = encodeProperties([[Prop.Encoding, 'msgpack']]);
