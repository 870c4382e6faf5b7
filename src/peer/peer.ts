/**
 * The peer: a local, always-readable copy of a forwarder's map (or of one subtree of it),
 * kept exactly in sync: snapshot first, then live updates in sequence order, each applied
 * once; any doubt (silence, a new epoch, a sequence going backwards, a gap, an incomplete
 * snapshot) leads to a resync that replaces the map.
 *
 * Topology:
 * ```
 *   SUB    ◄── forwarder XPUB :P+1   subtree + HUGZ + join topic
 *   DEALER ◄─► forwarder ROUTER :P   ICANHAZ? / snapshot; KVSET → KVACK (clonekv forwarder)
 *   PUB    ──► forwarder SUB :P+2    KVSET (plain CHP server only)
 * ```
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { ClonekvError, ClosedError, ConflictError, ErrorCode, InvalidOptionError, TimeoutError } from '../errors.ts';
import { DeadlineTimer } from '../deadline-timer.ts';
import { booleanOption, intOption, rejectUnknown, stringOption } from '../options.ts';
import { BatchError, entrySize, packBatch, scanBatch, unpackBatch, type WireEntry } from '../protocol/batch.ts';
import { Command, isReservedKey, JOIN_TOPIC_PREFIX, MAX_KEY_BYTES, MSGPACK_ENCODING, PEER_ID_PREFIX, PRESENCE_PREFIX, Prop } from '../protocol/commands.ts';
import { SnapshotDigest } from '../protocol/digest.ts';
import { headFor, previousFor } from '../protocol/gaps.ts';
import { decodeMessage, snapshotRequestFrames } from '../protocol/message.ts';
import { encodeProperties, PropertiesError, PropertyView, type PropertyReader } from '../protocol/properties.ts';
import { readSequence, ZERO_SEQUENCE } from '../protocol/sequence.ts';
import { decodeBody, encodeValue } from '../protocol/values.ts';
import { SendQueue } from '../transport/send-queue.ts';
import { connectDealer, connectPublisher, connectSubscriber, receiveLoop, type zmq } from '../transport/sockets.ts';
import type {
  DeleteOptions,
  DeleteReason,
  Endpoints,
  Entry,
  PeerOptions,
  PeerStats,
  PeerStatus,
  ResyncReason,
  SetOptions,
  WatchEntry,
  WatchOptions,
} from '../types.ts';
import { WatchQueue } from './watch-queue.ts';

const EMPTY = Buffer.alloc(0);
const HUGZ = Command.Heartbeat;
const PRESENCE = Buffer.from(PRESENCE_PREFIX);

/** Events of a {@link Peer}. */
export interface PeerEvents {
  /** Every applied change (live or found by a resync), after the map was updated. */
  update: [entry: WatchEntry];
  /** A complete snapshot was applied; `reason` is absent for the first join. */
  synced: [info: { sequence: number; keys: number; reason?: ResyncReason }];
  /** A resync started; reads keep serving the last known state meanwhile. */
  resync: [info: { reason: ResyncReason }];
  /** Snapshot loading progress: entries received so far (about every 65,536 entries). */
  progress: [info: { received: number }];
  /** A problem the peer recovered from (malformed input, transport error). Never fatal. */
  error: [error: ClonekvError];
}

interface Settings {
  endpoints: Endpoints;
  subtree: string;
  name: string;
  silenceTimeout: number;
  writeTimeout: number;
  writeRetryInterval: number;
  snapshotRetryDelay: number;
  maxRetryDelay: number;
  maxValueBytes: number;
  subscriberHwm: { send: number; receive: number };
  requestHwm: { send: number; receive: number };
  publisherHwm: { send: number; receive: number };
  maxBufferedUpdates: number;
  heartbeatInterval: number;
  presence: boolean;
}

const KNOWN_OPTIONS = [
  'server',
  'subtree',
  'name',
  'silenceTimeout',
  'writeTimeout',
  'writeRetryInterval',
  'snapshotRetryDelay',
  'maxRetryDelay',
  'maxValueBytes',
  'subscriberHwm',
  'requestHwm',
  'publisherHwm',
  'maxBufferedUpdates',
  'heartbeatInterval',
  'presence',
] as const;

/** Turns `tcp://HOST:P` into the three endpoints P, P+1, P+2. */
export function resolveEndpoints(server: string | Endpoints): Endpoints {
  if (typeof server !== 'string') {
    for (const k of ['snapshot', 'publisher', 'collector'] as const) {
      if (typeof server[k] !== 'string') throw new InvalidOptionError(`server.${k}`, 'expected an endpoint string');
    }
    return server;
  }
  const m = /^(tcp:\/\/(?:\[[^\]]+\]|[^:/]+)):(\d+)$/.exec(server);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < 1 || port > 65533) {
    throw new InvalidOptionError('server', `expected tcp://HOST:PORT (PORT from 1 to 65533), got ${JSON.stringify(server)}`);
  }
  return { snapshot: `${m[1]}:${port}`, publisher: `${m[1]}:${port + 1}`, collector: `${m[1]}:${port + 2}` };
}

function peerSettings(options: PeerOptions): Settings {
  rejectUnknown(options, KNOWN_OPTIONS);
  const subtree = stringOption('subtree', options.subtree, '');
  if (Buffer.byteLength(subtree) > MAX_KEY_BYTES) throw new InvalidOptionError('subtree', 'longer than 255 bytes');
  return {
    endpoints: resolveEndpoints(options.server ?? 'tcp://127.0.0.1:5556'),
    subtree,
    name: stringOption('name', options.name, 'peer'),
    silenceTimeout: intOption('silenceTimeout', options.silenceTimeout, 3000, 50),
    writeTimeout: intOption('writeTimeout', options.writeTimeout, 5000, 1),
    writeRetryInterval: intOption('writeRetryInterval', options.writeRetryInterval, 1000, 10),
    snapshotRetryDelay: intOption('snapshotRetryDelay', options.snapshotRetryDelay, 1000, 10),
    maxRetryDelay: intOption('maxRetryDelay', options.maxRetryDelay, 10_000, 10),
    maxValueBytes: intOption('maxValueBytes', options.maxValueBytes, 1024 * 1024, 1),
    subscriberHwm: {
      send: intOption('subscriberHwm.send', options.subscriberHwm?.send, 1000, 0),
      receive: intOption('subscriberHwm.receive', options.subscriberHwm?.receive, 10_000, 0),
    },
    requestHwm: {
      send: intOption('requestHwm.send', options.requestHwm?.send, 10_000, 0),
      receive: intOption('requestHwm.receive', options.requestHwm?.receive, 10_000, 0),
    },
    publisherHwm: {
      send: intOption('publisherHwm.send', options.publisherHwm?.send, 10_000, 0),
      receive: 0,
    },
    maxBufferedUpdates: intOption('maxBufferedUpdates', options.maxBufferedUpdates, 1_000_000, 1),
    heartbeatInterval: intOption('heartbeatInterval', options.heartbeatInterval, 1000, 10),
    presence: booleanOption('presence', options.presence, true),
  };
}

/** A value held locally. */
interface LocalEntry {
  readonly value: unknown;
  readonly version: number;
}

/** A live update as received, before it is applied. */
interface Update {
  readonly key: Buffer;
  readonly seq: number;
  readonly uuid: Buffer;
  readonly props: PropertyReader;
  readonly body: Buffer;
}

/** A snapshot being received. */
interface SyncAttempt {
  readonly reason: ResyncReason | undefined;
  readonly entries: Map<string, LocalEntry>;
  readonly digest: SnapshotDigest;
  readonly subLiveAtRequest: boolean;
  buffered: Update[];
  malformed: boolean;
  timer: NodeJS.Timeout | undefined;
}

/** A write waiting for the forwarder. */
interface PendingWrite {
  readonly key: string;
  readonly keyBytes: Buffer;
  /** The uuid as a map key. */
  readonly uuidKey: string;
  readonly frames: Buffer[];
  /** The expected version of a conditional write. */
  readonly ifVersion: number | undefined;
  /** Whether the write is owned by this peer (ephemeral). */
  readonly ephemeral: boolean;
  readonly inSubtree: boolean;
  readonly resolve: (seq: number) => void;
  readonly reject: (err: Error) => void;
  /** When it times out (Date.now clock), and the timeout it was given (ms). */
  readonly deadline: number;
  readonly timeout: number;
  sent: boolean;
  /** When it was last handed to a socket (ms). */
  sentAt: number;
  /** The sequence the forwarder assigned (once acknowledged). */
  seq: number;
}

type ServerKind = 'unknown' | 'clonekv' | 'plain';

/**
 * A clonekv peer. Reads are local and synchronous; writes resolve once the forwarder has
 * sequenced them.
 *
 * @example
 * ```ts
 * await using peer = new Peer({ server: 'tcp://127.0.0.1:5556', subtree: 'config/' });
 * await peer.ready();
 * const version = await peer.set('config/db/url', 'postgres://db:5432/app');
 * for await (const change of peer.watch('config/db/')) console.log(change.key, change.value);
 * ```
 */
export class Peer extends EventEmitter<PeerEvents> implements AsyncDisposable {
  readonly #s: Settings;
  readonly #subtreeBytes: Buffer;
  readonly #sub: zmq.Subscriber;
  #pub: { socket: zmq.Publisher; sends: SendQueue } | undefined;
  #map = new Map<string, LocalEntry>();
  #status: PeerStatus = 'syncing';
  #kind: ServerKind = 'unknown';
  #epoch: string | undefined;
  /** Last applied sequence. */
  #last = 0;
  /** Sequence of the last update under the subtree that was applied (or of the snapshot). */
  #subtreeLast = 0;
  /**
   * Sequence of the last message read from the subscriber (KVPUB or HUGZ). The subscriber is one
   * ordered stream, so a sequence below it means the forwarder restarted; a sequence below
   * `#last` alone does not: an update published before the snapshot may be read after it.
   */
  #lastFromSub = 0;
  #sync: SyncAttempt | undefined;
  #retryDelay: number;
  #subLive = false;
  #resyncWhenSubLive = false;
  #lastHeard = Date.now();
  #silenceTimer: NodeJS.Timeout;
  #retryTimer: NodeJS.Timeout;
  #beatTimer: NodeJS.Timeout;
  /** Stable id: the owner of this peer's ephemeral keys and its presence entry. */
  readonly #id = randomBytes(8).toString('hex');
  #pending = new Map<string, PendingWrite>();
  #watchers = new Set<{ push: (e: WatchEntry) => void; end: () => void }>();
  #readyPromise: Promise<void>;
  #readyResolve!: () => void;
  #readyReject!: (e: Error) => void;
  #closing: Promise<void> | undefined;
  #closedResolve!: () => void;
  readonly #closedPromise = new Promise<void>((resolve) => {
    this.#closedResolve = resolve;
  });
  /** Receive loops still running (a loop removes itself when its socket closes). */
  readonly #loops = new Set<Promise<void>>();
  readonly #stats: PeerStats = {
    updates: 0,
    snapshots: 0,
    snapshotRequests: 0,
    resyncs: 0,
    gaps: 0,
    malformed: 0,
    duplicates: 0,
    writes: 0,
    writeRetries: 0,
    sequence: 0,
  };

  /**
   * Creates a peer and starts joining at once. Options are checked here.
   *
   * @throws `CLONEKV_INVALID_OPTION` naming a bad option
   */
  constructor(options: PeerOptions = {}) {
    super();
    this.#s = peerSettings(options);
    this.#subtreeBytes = Buffer.from(this.#s.subtree, 'utf8');
    this.#retryDelay = this.#s.snapshotRetryDelay;
    this.#readyPromise = new Promise<void>((resolve, reject) => {
      this.#readyResolve = resolve;
      this.#readyReject = reject;
    });
    this.#readyPromise.catch(() => {});
    this.#sub = connectSubscriber(this.#s.endpoints.publisher, this.#s.subscriberHwm);
    // Order matters: the join topic (subscribed in #startSync) goes last, so once the forwarder
    // sees it, these are live too.
    this.#sub.subscribe(this.#subtreeBytes);
    if (!HUGZ.startsWith(this.#s.subtree)) this.#sub.subscribe(HUGZ);
    this.#track(receiveLoop(this.#sub, (f) => this.#onPublished(f), (e) => this.#report(ErrorCode.Transport, 'subscriber', e)));
    this.#silenceTimer = setInterval(() => this.#checkSilence(), Math.max(10, Math.floor(this.#s.silenceTimeout / 4)));
    this.#retryTimer = setInterval(() => this.#retryWrites(), this.#s.writeRetryInterval);
    this.#beatTimer = setInterval(() => this.#sendBeat(), this.#s.heartbeatInterval);
    this.#startSync(undefined);
  }

  // ---- reads ---------------------------------------------------------------------------------

  /** Where the peer stands: `syncing` until the first snapshot, then `live`, or `stale` while resyncing. */
  get status(): PeerStatus {
    return this.#status;
  }

  /** This peer's stable id: its presence key is `$peers/<id>`, and it owns its ephemeral keys. */
  get id(): string {
    return this.#id;
  }

  /** The subtree this peer holds (`''` = everything). */
  get subtree(): string {
    return this.#s.subtree;
  }

  /** The forwarder's endpoints. */
  get endpoints(): Endpoints {
    return this.#s.endpoints;
  }

  /** Number of keys held. */
  get size(): number {
    return this.#map.size;
  }

  /** The last applied sequence number. */
  get sequence(): number {
    return this.#last;
  }

  /** The forwarder's epoch, once known (a plain CHP server has none). */
  get epoch(): string | undefined {
    return this.#epoch;
  }

  /** The value of `key`, or `undefined`. Never blocks, never touches the network. */
  get<V = unknown>(key: string): V | undefined {
    return this.#map.get(key)?.value as V | undefined;
  }

  /** Whether `key` is held. */
  has(key: string): boolean {
    return this.#map.has(key);
  }

  /** The version (sequence of the last update) of `key`, or `undefined` if absent. */
  version(key: string): number | undefined {
    return this.#map.get(key)?.version;
  }

  /** Keys held, optionally only those starting with `prefix`, in insertion order. */
  *keys(prefix = ''): IterableIterator<string> {
    for (const k of this.#map.keys()) if (k.startsWith(prefix)) yield k;
  }

  /** Entries held, optionally only those starting with `prefix`. */
  *entries<V = unknown>(prefix = ''): IterableIterator<Entry<V>> {
    for (const [key, e] of this.#map) {
      if (key.startsWith(prefix)) yield { key, value: e.value as V, version: e.version };
    }
  }

  /** Counters (a copy). */
  stats(): PeerStats {
    return { ...this.#stats, sequence: this.#last };
  }

  /**
   * Resolves once the first complete snapshot has been applied (also when it is empty).
   * Rejects with `CLONEKV_CLOSED` if the peer is closed first.
   */
  ready(): Promise<void> {
    return this.#readyPromise;
  }

  // ---- writes --------------------------------------------------------------------------------

  /**
   * Writes `value` under `key`. Resolves with the sequence number the forwarder assigned, once it
   * has sequenced the write; if the key is under this peer's subtree, the local map already shows
   * the write (or a later one) by then.
   *
   * @throws `CLONEKV_INVALID_KEY`, `CLONEKV_INVALID_VALUE` at once; rejects with `CLONEKV_TIMEOUT`,
   *   `CLONEKV_CONFLICT` (for `ifVersion`), `CLONEKV_REJECTED`, or `CLONEKV_CLOSED`
   */
  set(key: string, value: unknown, options: SetOptions = {}): Promise<number> {
    let body: Buffer;
    try {
      body = encodeValue(value);
    } catch (err) {
      return Promise.reject(new ClonekvError(ErrorCode.InvalidValue, `value for "${key}" cannot be encoded: ${(err as Error).message}`, { cause: err }));
    }
    if (body.length > this.#s.maxValueBytes) {
      return Promise.reject(
        new ClonekvError(ErrorCode.InvalidValue, `value for "${key}" is ${body.length} bytes, over the limit of ${this.#s.maxValueBytes}`),
      );
    }
    const props: Array<[string, string]> = [[Prop.Encoding, MSGPACK_ENCODING]];
    if (options.ephemeral) {
      if (!this.#s.presence) {
        return Promise.reject(new InvalidOptionError('ephemeral', 'a peer created with presence: false cannot own keys'));
      }
      props.push([Prop.Owner, this.#id]);
    }
    if (options.ttl !== undefined) {
      if (typeof options.ttl !== 'number' || !Number.isFinite(options.ttl) || options.ttl <= 0) {
        return Promise.reject(new InvalidOptionError('ttl', `expected a positive number of seconds, got ${String(options.ttl)}`));
      }
      props.push([Prop.Ttl, String(options.ttl)]);
    }
    return this.#write(key, body, props, options.ifVersion, options.timeout);
  }

  /**
   * Deletes `key`. Resolves with the sequence of the delete once sequenced (a delete of an absent
   * key is sequenced too, unless `ifVersion` says otherwise).
   */
  delete(key: string, options: DeleteOptions = {}): Promise<number> {
    return this.#write(key, EMPTY, [], options.ifVersion, options.timeout);
  }

  #write(key: string, body: Buffer, props: Array<[string, string]>, ifVersion: number | undefined, timeout: number | undefined): Promise<number> {
    if (this.#closing) return Promise.reject(new ClosedError('peer'));
    const keyBytes = Buffer.from(key, 'utf8');
    if (typeof key !== 'string' || keyBytes.length === 0 || keyBytes.length > MAX_KEY_BYTES) {
      return Promise.reject(new ClonekvError(ErrorCode.InvalidKey, `invalid key ${JSON.stringify(key)}: keys are 1 to 255 bytes of UTF-8`));
    }
    if (isReservedKey(key)) {
      return Promise.reject(new ClonekvError(ErrorCode.InvalidKey, `key "${key}" is reserved by the protocol (commands and $peers/)`));
    }
    if (ifVersion !== undefined) {
      if (!Number.isSafeInteger(ifVersion) || ifVersion < 0) {
        return Promise.reject(new InvalidOptionError('ifVersion', `expected a version number (0 = absent), got ${String(ifVersion)}`));
      }
      props.push([Prop.IfVersion, String(ifVersion)]);
    }
    const ms = timeout ?? this.#s.writeTimeout;
    const uuid = this.#nextUuid();
    const uuidKey = uuid.toString('latin1');
    return new Promise<number>((resolve, reject) => {
      const pw: PendingWrite = {
        key,
        uuidKey,
        keyBytes,
        frames: [keyBytes, ZERO_SEQUENCE, uuid, encodeProperties(props), body],
        ifVersion,
        ephemeral: props.some(([name]) => name === Prop.Owner),
        inSubtree: this.#inSubtree(keyBytes),
        resolve: (seq) => {
          this.#pending.delete(uuidKey);
          resolve(seq);
        },
        reject: (err) => {
          this.#pending.delete(uuidKey);
          reject(err);
        },
        deadline: Date.now() + ms,
        timeout: ms,
        sent: false,
        sentAt: 0,
        seq: 0,
      };
      this.#pending.set(uuidKey, pw);
      this.#stats.writes++;
      this.#writeTimer.arm(pw.deadline);
      this.#sendWrite(pw);
    });
  }

  /**
   * One timer for every pending write's deadline (not one per write: at tens of thousands of
   * writes a second, per-write timers were a large share of the garbage), armed for the earliest.
   */
  readonly #writeTimer = new DeadlineTimer(() => this.#expireWrites());

  #expireWrites(): void {
    const now = Date.now();
    let next = Infinity;
    for (const pw of [...this.#pending.values()]) {
      if (pw.deadline <= now) pw.reject(new TimeoutError(pw.key, pw.timeout, this.#s.endpoints.snapshot));
      else next = Math.min(next, pw.deadline);
    }
    if (next < Infinity) this.#writeTimer.arm(next);
  }

  #sendWrite(pw: PendingWrite): void {
    if (pw.seq > 0) return; // acknowledged, waiting to be applied locally
    if (this.#kind === 'unknown') return; // sent once the forwarder has told what it is
    if (this.#kind === 'clonekv') {
      if (!this.#dealer) return;
      // Writes issued in the same turn of the event loop go out together in one KVWRITE
      // message (setImmediate rather than a microtask: a burst of incoming messages handled in
      // one turn, each releasing a write, then still makes one message).
      this.#outgoing.push(pw);
      if (this.#outgoing.length === 1) setImmediate(() => this.#flushWrites());
    } else {
      if (pw.ifVersion !== undefined || pw.ephemeral || !pw.inSubtree) {
        pw.reject(
          new ClonekvError(
            ErrorCode.Unsupported,
            `cannot confirm the write to "${pw.key}": the server at ${this.#s.endpoints.snapshot} is a plain CHP server, ` +
              (pw.ifVersion !== undefined
                ? 'which cannot check ifVersion'
                : pw.ephemeral
                  ? 'which has no ephemeral (owned) values'
                  : "and the key is outside this peer's subtree"),
          ),
        );
        return;
      }
      this.#publisher().sends.send(pw.frames);
    }
    if (pw.sent) this.#stats.writeRetries++;
    pw.sent = true;
    pw.sentAt = Date.now();
  }

  #outgoing: PendingWrite[] = [];
  readonly #uuidPrefix = randomBytes(8);
  #uuidCounter = 0;

  /**
   * A write's uuid: this peer's random 64-bit prefix and a counter. Unique across peers (random
   * prefix) and within one (counter), at a fraction of the cost of 16 fresh random bytes.
   */
  #nextUuid(): Buffer {
    const uuid = Buffer.allocUnsafe(16);
    this.#uuidPrefix.copy(uuid, 0);
    const n = ++this.#uuidCounter;
    uuid.writeUInt32BE(Math.floor(n / 0x1_0000_0000), 8);
    uuid.writeUInt32BE(n >>> 0, 12);
    return uuid;
  }

  #flushWrites(): void {
    const writes = this.#outgoing;
    this.#outgoing = [];
    const dealer = this.#dealer;
    if (!dealer || this.#closing) return;
    let batch: WireEntry[] = [];
    let bytes = 0;
    const flush = (): void => {
      dealer.sends.send([WRITE_BATCH, ZERO_SEQUENCE, EMPTY, EMPTY, packBatch(batch, bytes)]);
      batch = [];
      bytes = 0;
    };
    for (const pw of writes) {
      if (pw.seq > 0 || !this.#pending.has(pw.uuidKey)) continue; // settled meanwhile
      const [key, , uuid, properties, body] = pw.frames as [Buffer, Buffer, Buffer, Buffer, Buffer];
      const e: WireEntry = { key, sequence: 0, uuid, properties, body };
      const size = entrySize(e);
      if (batch.length > 0 && (batch.length >= WRITE_BATCH_MAX || bytes + size > WRITE_BATCH_BYTES)) flush();
      batch.push(e);
      bytes += size;
    }
    if (batch.length > 0) flush();
  }

  #retryWrites(): void {
    const due = Date.now() - this.#s.writeRetryInterval;
    for (const pw of this.#pending.values()) if (pw.sentAt <= due) this.#sendWrite(pw);
  }

  #publisher(): { socket: zmq.Publisher; sends: SendQueue } {
    if (!this.#pub) {
      const socket = connectPublisher(this.#s.endpoints.collector, this.#s.publisherHwm);
      this.#pub = { socket, sends: new SendQueue(socket, 10_000, () => {}, (e) => this.#report(ErrorCode.Transport, 'publisher', e)) };
    }
    return this.#pub;
  }

  #statsWaiters: Array<{ resolve: (v: Record<string, unknown>) => void; reject: (e: Error) => void }> = [];

  /**
   * Asks the forwarder for its counters and presence table (what `clonekv stats` prints).
   *
   * @param timeout - ms to wait for the answer, default the peer's `writeTimeout`
   * @throws `CLONEKV_UNSUPPORTED` against a plain CHP server, `CLONEKV_TIMEOUT` if no answer
   */
  async serverStats(timeout = this.#s.writeTimeout): Promise<Record<string, unknown>> {
    if (this.#closing) throw new ClosedError('peer');
    if (this.#status === 'syncing') await this.ready();
    if (this.#kind !== 'clonekv' || !this.#dealer) {
      throw new ClonekvError(ErrorCode.Unsupported, `the server at ${this.#s.endpoints.snapshot} is a plain CHP server: it has no counters to report`);
    }
    const dealer = this.#dealer;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#statsWaiters = this.#statsWaiters.filter((w) => w !== waiter);
        reject(new ClonekvError(ErrorCode.Timeout, `no stats from the forwarder at ${this.#s.endpoints.snapshot} within ${timeout} ms`));
      }, timeout);
      const waiter = {
        resolve: (v: Record<string, unknown>) => {
          clearTimeout(timer);
          resolve(v);
        },
        reject: (e: Error) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      this.#statsWaiters.push(waiter);
      dealer.sends.send([Buffer.from(Command.Stats), ZERO_SEQUENCE, EMPTY, EMPTY, EMPTY]);
    });
  }

  // ---- watch ---------------------------------------------------------------------------------

  /**
   * Watches keys starting with `prefix`: first yields the current entries (`isUpdate: false`,
   * once the peer is ready), then every change (`isUpdate: true`). Ends on `break`, on the
   * signal, or when the peer closes.
   *
   * @example
   * ```ts
   * for await (const e of peer.watch('config/', { signal })) {
   *   if (e.operation === 'delete') console.log(e.key, 'gone:', e.reason);
   *   else console.log(e.key, e.previous, '→', e.value);
   * }
   * ```
   */
  watch<V = unknown>(prefix = '', options: WatchOptions = {}): AsyncIterableIterator<WatchEntry<V>> {
    const max = intOption('maxPending', options.maxPending, 100_000, 1);
    const onAbort = (): void => queue.end();
    const watcher = {
      push: (e: WatchEntry): void => {
        if (e.key.startsWith(prefix)) queue.push(e as WatchEntry<V>);
      },
      end: (): void => queue.end(),
    };
    const queue = new WatchQueue<WatchEntry<V>>(max, () => {
      this.#watchers.delete(watcher);
      options.signal?.removeEventListener('abort', onAbort);
    });
    if (this.#closing || options.signal?.aborted) {
      queue.end();
      return queue;
    }
    options.signal?.addEventListener('abort', onAbort, { once: true });
    const start = (): void => {
      if (queue.done) return;
      if (!options.updatesOnly) {
        for (const [key, e] of this.#map) {
          if (key.startsWith(prefix)) {
            queue.push({ key, operation: 'put', value: e.value as V, previous: undefined, version: e.version, isUpdate: false, fromResync: false });
          }
        }
      }
      this.#watchers.add(watcher);
    };
    if (this.#status === 'syncing') this.#readyPromise.then(start, () => queue.end());
    else start();
    return queue;
  }

  #emitChange(e: WatchEntry): void {
    for (const w of this.#watchers) w.push(e);
    if (this.listenerCount('update') > 0) this.emit('update', e);
  }

  /** Whether anyone listens for changes (if not, no change object is built). */
  get #observed(): boolean {
    return this.#watchers.size > 0 || this.listenerCount('update') > 0;
  }

  // ---- lifecycle -----------------------------------------------------------------------------

  /** Closes sockets and timers, rejects pending writes and ends watches. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#status = 'closed';
      clearInterval(this.#silenceTimer);
      clearInterval(this.#retryTimer);
      clearInterval(this.#beatTimer);
      this.#writeTimer.stop();
      if (this.#kind === 'clonekv' && this.#dealer && this.#s.presence) {
        // Leave cleanly: the forwarder deletes our ephemeral keys at once instead of after the
        // peer timeout. Best effort: wait briefly for the message to go out.
        this.#dealer.sends.send(this.#beatFrames(Command.PeerBye));
        await Promise.race([this.#dealer.sends.drained(), new Promise((r) => setTimeout(r, 100).unref())]);
      }
      this.#readyReject(new ClosedError('peer'));
      for (const pw of [...this.#pending.values()]) pw.reject(new ClosedError('peer'));
      for (const w of this.#statsWaiters.splice(0)) w.reject(new ClosedError('peer'));
      this.#endSync();
      this.#closeDealer();
      for (const w of [...this.#watchers]) w.end();
      this.#sub.close();
      this.#pub?.socket.close();
      await Promise.allSettled([...this.#loops]);
      this.#closedResolve();
    })();
    return this.#closing;
  }

  #track(loop: Promise<void>): void {
    this.#loops.add(loop);
    void loop.finally(() => this.#loops.delete(loop));
  }

  /** Resolves once closed. Never rejects. */
  closed(): Promise<void> {
    return this.#closedPromise;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // ---- sync ----------------------------------------------------------------------------------

  /** The DEALER that carries writes once the snapshot is done (kept from the last sync). */
  #dealer: { socket: zmq.Dealer; sends: SendQueue; id: string } | undefined;

  #closeDealer(): void {
    if (this.#dealer) {
      this.#sub.unsubscribe(JOIN_TOPIC_PREFIX + this.#dealer.id);
      this.#dealer.socket.close();
      this.#dealer = undefined;
    }
  }

  /** Starts (or restarts) a snapshot request on a fresh DEALER. */
  #startSync(reason: ResyncReason | undefined): void {
    if (this.#closing) return;
    this.#endSync();
    this.#closeDealer();
    if (reason !== undefined) {
      this.#stats.resyncs++;
      if (this.#status === 'live') this.#status = 'stale';
      if (this.listenerCount('resync') > 0) this.emit('resync', { reason });
    }
    // A fresh routing id per attempt: a late answer to an abandoned request can never mix in.
    const id = PEER_ID_PREFIX + randomBytes(12).toString('hex');
    const dealer = connectDealer(this.#s.endpoints.snapshot, id, this.#s.requestHwm);
    const sends = new SendQueue(dealer, 100_000, () => {}, (e) => this.#report(ErrorCode.Transport, 'snapshot socket', e));
    this.#sub.subscribe(JOIN_TOPIC_PREFIX + id);
    if (this.#kind === 'clonekv' && this.#s.presence) sends.send(this.#beatFrames(Command.PeerBeat));
    const attempt: SyncAttempt = {
      reason,
      entries: new Map(),
      digest: new SnapshotDigest(),
      subLiveAtRequest: this.#subLive,
      buffered: [],
      malformed: false,
      timer: undefined,
    };
    this.#sync = attempt;
    this.#dealer = { socket: dealer, sends, id };
    this.#track(receiveLoop(dealer, (f) => this.#onDealer(attempt, f), (e) => this.#report(ErrorCode.Transport, 'snapshot socket', e)));
    sends.send(snapshotRequestFrames(this.#subtreeBytes));
    this.#stats.snapshotRequests++;
    this.#armSyncTimer(attempt);
    // Writes not yet acknowledged may have been lost with the previous DEALER.
    for (const pw of this.#pending.values()) this.#sendWrite(pw);
  }

  /** Retries the snapshot if it makes no progress for the current retry delay (backing off). */
  #armSyncTimer(attempt: SyncAttempt): void {
    if (attempt.timer) clearTimeout(attempt.timer);
    attempt.timer = setTimeout(() => {
      if (this.#sync !== attempt) return;
      this.#retryDelay = Math.min(this.#retryDelay * 2, this.#s.maxRetryDelay);
      this.#startSync(attempt.reason ?? (this.#status === 'syncing' ? undefined : 'silence'));
    }, this.#retryDelay);
  }

  #endSync(): void {
    if (this.#sync?.timer) clearTimeout(this.#sync.timer);
    this.#sync = undefined;
  }

  #onDealer(attempt: SyncAttempt, frames: Buffer[]): void {
    this.#lastHeard = Date.now();
    const command = frames[0]?.toString('latin1');
    if (command === Command.AckBatch) return this.#onAckBatch(frames);
    if (command === Command.WriteAck) return this.#onAck(frames);
    if (command === Command.Stats) {
      const waiter = this.#statsWaiters.shift();
      try {
        waiter?.resolve(JSON.parse(frames[4]?.toString('utf8') ?? 'null') as Record<string, unknown>);
      } catch (err) {
        waiter?.reject(new ClonekvError(ErrorCode.Malformed, 'unreadable stats reply', { cause: err }));
      }
      return;
    }
    if (this.#sync !== attempt) return; // an abandoned attempt
    this.#armSyncTimer(attempt);
    if (command === Command.SnapshotBatch && frames.length === 5) {
      try {
        scanBatch(frames[4]!, (b, s) =>
          this.#addSnapshotEntry(attempt, b, s.keyStart, s.keyLength, s.sequence, b, s.propertiesStart, s.propertiesLength, b, s.bodyStart, s.bodyLength),
        );
      } catch (err) {
        if (!(err instanceof BatchError)) throw err;
        attempt.malformed = true;
      }
      return;
    }
    const d = decodeMessage(frames, Number.MAX_SAFE_INTEGER);
    if (!d.ok) {
      this.#stats.malformed++;
      attempt.malformed = true;
      return;
    }
    const m = d.message;
    if (command === Command.SnapshotEnd) return this.#finishSync(attempt, m.sequence, m.properties);
    this.#addSnapshotEntry(attempt, m.key, 0, m.key.length, m.sequence, m.rawProperties, 0, m.rawProperties.length, m.body, 0, m.body.length);
  }

  /**
   * Adds one snapshot entry given as byte ranges (key, properties, body), so a packed batch is
   * read without a view per field: a large join is bound by allocations.
   */
  #addSnapshotEntry(
    attempt: SyncAttempt,
    kb: Buffer,
    ks: number,
    kl: number,
    seq: number,
    pb: Buffer,
    ps: number,
    pl: number,
    bb: Buffer,
    bs: number,
    bl: number,
  ): void {
    attempt.digest.addRange(kb, ks, ks + kl, seq);
    if ((attempt.digest.count & 0xffff) === 0 && this.listenerCount('progress') > 0) {
      this.emit('progress', { received: attempt.digest.count });
    }
    if (bl === 0 || !this.#inSubtree(kb, ks, kl) || this.#isHidden(kb, ks, kl)) return;
    try {
      const value = decodeBody(bb.subarray(bs, bs + bl), this.#isMsgpack(pb, ps, pl));
      attempt.entries.set(kb.toString('utf8', ks, ks + kl), { value, version: seq });
    } catch {
      this.#stats.malformed++;
      attempt.malformed = true;
    }
  }

  #lastProps: { raw: Buffer; msgpack: boolean } = { raw: EMPTY, msgpack: false };

  /**
   * Whether properties `buf[start, start + length)` mark a msgpack body; snapshots repeat the
   * same few frames, so the last answer is remembered.
   */
  #isMsgpack(buf: Buffer, start: number, length: number): boolean {
    if (length === 0) return false;
    const last = this.#lastProps;
    if (length === last.raw.length && buf.compare(last.raw, 0, length, start, start + length) === 0) return last.msgpack;
    const raw = Buffer.from(buf.subarray(start, start + length));
    const msgpack = new PropertyView(raw).get(Prop.Encoding) === MSGPACK_ENCODING;
    this.#lastProps = { raw, msgpack };
    return msgpack;
  }

  #finishSync(attempt: SyncAttempt, snapshotSeq: number, props: PropertyReader): void {
    this.#endSync();
    const count = props.get(Prop.Count);
    const digest = props.get(Prop.Digest);
    const isClonekv = props.has(Prop.Version);
    this.#kind = isClonekv ? 'clonekv' : 'plain';
    // A snapshot that does not add up is rejected, never applied (reference failure 2).
    if (
      attempt.malformed ||
      (count !== undefined && Number(count) !== attempt.digest.count) ||
      (digest !== undefined && digest !== attempt.digest.hex)
    ) {
      this.#stats.malformed++;
      this.#report(ErrorCode.Malformed, `incomplete snapshot from ${this.#s.endpoints.snapshot} (got ${attempt.digest.count} of ${count ?? '?'} entries)`);
      this.#startSync('incomplete');
      return;
    }
    const epoch = props.get(Prop.Epoch);
    if (epoch !== undefined && this.#epoch !== undefined && epoch !== this.#epoch) {
      // Writes the previous forwarder run sequenced but this peer had not applied yet can never
      // be applied now (that run's map is gone): they were sequenced, so they resolve.
      for (const pw of this.#awaitingApply.slice(this.#awaitingHead)) if (this.#pending.has(pw.uuidKey)) pw.resolve(pw.seq);
      this.#awaitingApply = [];
      this.#awaitingHead = 0;
    }
    if (epoch !== undefined) this.#epoch = epoch;
    this.#retryDelay = this.#s.snapshotRetryDelay;
    this.#stats.snapshots++;
    const first = this.#status === 'syncing';
    this.#replaceMap(attempt.entries, snapshotSeq, !first);
    this.#last = snapshotSeq;
    this.#subtreeLast = snapshotSeq;
    this.#status = 'live';
    this.#lastHeard = Date.now();
    // Without the forwarder's word that our subscription was live when it took the snapshot
    // (a plain CHP server, or a join that timed out), updates in between may be missing: take
    // another snapshot as soon as the subscription has proven live.
    this.#resyncWhenSubLive = props.get(Prop.Joined) !== '1' && !attempt.subLiveAtRequest;
    this.#lastFromSub = 0;
    for (const u of attempt.buffered) {
      if (u.seq <= this.#lastFromSub) {
        this.#startSync('sequence');
        break;
      }
      this.#lastFromSub = u.seq;
      if (u.seq > this.#last) this.#applyUpdate(u);
      else this.#stats.duplicates++;
      if (this.#sync) break; // a gap in the buffered updates restarted the sync
    }
    if (this.#sync) return;
    this.#settleWrites();
    this.#sendBeat();
    for (const pw of this.#pending.values()) this.#sendWrite(pw);
    if (first) this.#readyResolve();
    if (this.listenerCount('synced') > 0) {
      this.emit('synced', { sequence: this.#last, keys: this.#map.size, ...(attempt.reason ? { reason: attempt.reason } : {}) });
    }
  }

  /** Replaces the map with a snapshot; watchers see the differences as ordinary changes. */
  #replaceMap(next: Map<string, LocalEntry>, seq: number, notify: boolean): void {
    const old = this.#map;
    this.#map = next;
    // The first snapshot is not a change: watches replay it as their initial entries instead.
    if (!notify) return;
    for (const [key, e] of next) {
      const before = old.get(key);
      if (before && before.version === e.version) continue;
      this.#emitChange({ key, operation: 'put', value: e.value, previous: before?.value, version: e.version, isUpdate: true, fromResync: notify });
    }
    for (const [key, before] of old) {
      if (!next.has(key)) {
        this.#emitChange({ key, operation: 'delete', value: undefined, previous: before.value, version: seq, isUpdate: true, reason: 'deleted', fromResync: notify });
      }
    }
  }

  // ---- live updates --------------------------------------------------------------------------

  #onPublished(frames: Buffer[]): void {
    this.#lastHeard = Date.now();
    this.#subLive = true;
    const d = decodeMessage(frames, Number.MAX_SAFE_INTEGER);
    if (!d.ok) {
      this.#stats.malformed++;
      return;
    }
    const m = d.message;
    if (m.key.length === HUGZ.length && m.key.toString('latin1') === HUGZ) return this.#onHeartbeat(m.sequence, m.properties);
    if (!this.#inSubtree(m.key)) return; // e.g. a key under the HUGZ topic
    const update: Update = { key: m.key, seq: m.sequence, uuid: m.uuid, props: m.properties, body: m.body };
    if (this.#sync) {
      if (this.#sync.buffered.length >= this.#s.maxBufferedUpdates) {
        this.#startSync('overflow');
        return;
      }
      this.#sync.buffered.push(update);
      return;
    }
    if (update.seq <= this.#lastFromSub) return this.#startSync('sequence');
    this.#lastFromSub = update.seq;
    if (update.seq <= this.#last) {
      this.#stats.duplicates++; // already in the snapshot
      return;
    }
    this.#applyUpdate(update);
    this.#settleWrites();
  }

  #onHeartbeat(seq: number, props: PropertyReader): void {
    if (props.has(Prop.Version) && this.#kind === 'unknown') {
      this.#kind = 'clonekv';
      this.#sendBeat();
      for (const pw of this.#pending.values()) this.#sendWrite(pw);
    }
    const epoch = props.get(Prop.Epoch);
    if (this.#resyncWhenSubLive && !this.#sync) {
      this.#resyncWhenSubLive = false;
      this.#startSync('gap');
      return;
    }
    if (this.#sync || this.#status !== 'live') return;
    if (epoch !== undefined && this.#epoch !== undefined && epoch !== this.#epoch) return this.#startSync('epoch');
    // A clonekv HUGZ always carries the current sequence; a plain server's may carry 0 (as
    // RFC 12 says) or its sequence (as the reference servers do): only a non-zero one counts.
    if (epoch !== undefined || seq > 0) {
      if (seq < this.#lastFromSub) return this.#startSync('sequence');
      this.#lastFromSub = seq;
    }
    const heads = props.get(Prop.Heads);
    if (heads !== undefined) {
      const head = headFor(heads, this.#subtreeBytes);
      if (head !== undefined && head > this.#subtreeLast) {
        this.#stats.gaps++;
        this.#startSync('gap');
      }
    }
  }

  #applyUpdate(u: Update): void {
    if (this.#resyncWhenSubLive) {
      this.#resyncWhenSubLive = false;
      this.#startSync('gap');
      return;
    }
    const prevProp = u.props.get(Prop.Previous);
    const previous = prevProp === undefined ? undefined : previousFor(prevProp, this.#subtreeBytes.length);
    const missed = previous !== undefined ? previous > this.#subtreeLast : this.#s.subtree === '' && u.seq !== this.#last + 1;
    if (missed) {
      this.#stats.gaps++;
      this.#startSync('gap');
      return;
    }
    this.#last = u.seq;
    this.#subtreeLast = u.seq;
    if (u.uuid.length === 16 && this.#pending.size > 0) {
      // Our own write coming back is its acknowledgement (the only one a plain CHP server gives).
      const pw = this.#pending.get(u.uuid.toString('latin1'));
      if (pw && pw.seq === 0) {
        pw.seq = u.seq;
        this.#awaitApply(pw);
      }
    }
    if (this.#isHidden(u.key)) return;
    const key = u.key.toString('utf8');
    const before = this.#map.get(key);
    if (u.body.length === 0) {
      if (!before) return;
      this.#map.delete(key);
      this.#stats.updates++;
      const why = u.props.get(Prop.Reason);
      const reason: DeleteReason = why === 'expired' || why === 'purged' ? why : 'deleted';
      if (this.#observed) this.#emitChange({ key, operation: 'delete', value: undefined, previous: before.value, version: u.seq, isUpdate: true, reason, fromResync: false });
      return;
    }
    let value: unknown;
    try {
      value = decodeBody(u.body, u.props.get(Prop.Encoding) === MSGPACK_ENCODING);
    } catch (err) {
      // Sequenced but undecodable: keep the old value rather than store garbage, and say so.
      this.#stats.malformed++;
      this.#report(ErrorCode.Malformed, `value of "${key}" at sequence ${u.seq} is not valid msgpack`, err);
      return;
    }
    this.#stats.updates++;
    this.#map.set(key, { value, version: u.seq });
    if (this.#observed) this.#emitChange({ key, operation: 'put', value, previous: before?.value, version: u.seq, isUpdate: true, fromResync: false });
  }

  // ---- acknowledgements ----------------------------------------------------------------------

  #onAck(frames: Buffer[]): void {
    if (frames.length !== 5 || frames[2]!.length !== 16 || frames[1]!.length !== 8) {
      this.#stats.malformed++;
      return;
    }
    this.#settleAck(frames[2]!, readSequence(frames[1]!), frames[3]!);
  }

  #onAckBatch(frames: Buffer[]): void {
    try {
      unpackBatch(frames[4] ?? EMPTY, (a) => this.#settleAck(a.uuid, a.sequence, a.properties));
    } catch (err) {
      if (!(err instanceof BatchError)) throw err;
      this.#stats.malformed++;
    }
  }

  /** Applies one acknowledgement: resolves (once applied locally) or rejects the pending write. */
  #settleAck(uuid: Buffer, seq: number, rawProps: Buffer): void {
    const pw = uuid.length === 16 ? this.#pending.get(uuid.toString('latin1')) : undefined;
    if (!pw) return; // a duplicate ack for a write already settled
    let props: PropertyReader;
    try {
      props = rawProps.equals(ACK_OK) ? ACK_OK_PROPS : new PropertyView(rawProps);
    } catch (err) {
      if (!(err instanceof PropertiesError)) throw err;
      this.#stats.malformed++;
      return;
    }
    const status = props.get(Prop.Status);
    if (status === 'ok') {
      if (seq <= 0) return;
      // Read-your-writes: resolve only once the local map has caught up with the write.
      if (!pw.inSubtree || (this.#last >= seq && !this.#sync)) pw.resolve(seq);
      else if (pw.seq === 0) {
        pw.seq = seq;
        this.#awaitApply(pw);
      }
    } else if (status === 'conflict') {
      pw.reject(new ConflictError(pw.key, pw.ifVersion ?? 0, Number(props.get(Prop.Current) ?? 0)));
    } else {
      pw.reject(new ClonekvError(ErrorCode.Rejected, `forwarder at ${this.#s.endpoints.snapshot} refused the write to "${pw.key}": ${props.get(Prop.Detail) ?? 'no reason given'}`));
    }
  }

  /**
   * Acknowledged writes under the subtree, waiting for the local map to reach them, in sequence
   * order (acknowledgements mostly arrive in order, so insertion is almost always an append).
   */
  #awaitingApply: PendingWrite[] = [];
  #awaitingHead = 0;

  #awaitApply(pw: PendingWrite): void {
    const a = this.#awaitingApply;
    let i = a.length;
    while (i > this.#awaitingHead && a[i - 1]!.seq > pw.seq) i--;
    if (i === a.length) a.push(pw);
    else a.splice(i, 0, pw);
  }

  /** Resolves writes whose sequence the local map has reached. */
  #settleWrites(): void {
    const a = this.#awaitingApply;
    if (this.#awaitingHead === a.length || this.#sync) return;
    while (this.#awaitingHead < a.length && a[this.#awaitingHead]!.seq <= this.#last) {
      const pw = a[this.#awaitingHead++]!;
      if (this.#pending.has(pw.uuidKey)) pw.resolve(pw.seq);
    }
    if (this.#awaitingHead === a.length) {
      this.#awaitingApply = [];
      this.#awaitingHead = 0;
    } else if (this.#awaitingHead > 1024) {
      this.#awaitingApply = a.slice(this.#awaitingHead);
      this.#awaitingHead = 0;
    }
  }

  // ---- health --------------------------------------------------------------------------------

  #beatFrames(command: string): Buffer[] {
    const props = encodeProperties([
      [Prop.Owner, this.#id],
      [Prop.Name, this.#s.name.replace(/[=\n]/g, '_')],
      [Prop.Subtree, this.#subtreeBytes.toString('base64url')],
      [Prop.Applied, String(this.#last)],
    ]);
    return [Buffer.from(command), ZERO_SEQUENCE, EMPTY, props, EMPTY];
  }

  /** Tells the forwarder this peer is alive (clonekv forwarders only; plain servers have no presence). */
  #sendBeat(): void {
    if (this.#kind === 'clonekv' && this.#dealer && this.#s.presence) this.#dealer.sends.send(this.#beatFrames(Command.PeerBeat));
  }

  #checkSilence(): void {
    if (this.#closing || this.#sync) return;
    if (Date.now() - this.#lastHeard > this.#s.silenceTimeout) {
      this.#lastHeard = Date.now();
      this.#startSync('silence');
    }
  }

  /**
   * The forwarder's presence keys (`$peers/...`) are metadata: a full-tree peer applies their
   * sequence numbers but does not hold them; a peer whose subtree names them does.
   */
  #isHidden(key: Buffer, start = 0, length = key.length): boolean {
    return (
      this.#subtreeBytes.length === 0 &&
      length > PRESENCE.length &&
      key[start] === PRESENCE[0] && // '$': most keys are ruled out without a compare
      key.compare(PRESENCE, 0, PRESENCE.length, start, start + PRESENCE.length) === 0
    );
  }

  /** Whether the key `key[start, start + length)` is under this peer's subtree. */
  #inSubtree(key: Buffer, start = 0, length = key.length): boolean {
    const p = this.#subtreeBytes;
    return p.length === 0 || (length >= p.length && key.compare(p, 0, p.length, start, start + p.length) === 0);
  }

  #report(code: ErrorCode, what: string, cause?: unknown): void {
    if (this.listenerCount('error') === 0) return;
    const detail = cause instanceof Error ? `: ${cause.message}` : '';
    this.emit('error', new ClonekvError(code, `${what}${detail}`, cause === undefined ? undefined : { cause }));
  }
}

const ACK_OK = encodeProperties([[Prop.Status, 'ok']]);
const ACK_OK_PROPS: Map<string, string> = new Map([[Prop.Status, 'ok']]);
const WRITE_BATCH = Buffer.from(Command.WriteBatch);
/** Most writes packed in one KVWRITE message, and most bytes. */
const WRITE_BATCH_MAX = 512;
const WRITE_BATCH_BYTES = 256 * 1024;
