/**
 * The peer: a local, always-readable copy of a forwarder's map (or of one subtree of it),
 * kept exactly in sync: snapshot first, then live updates in sequence order, each applied
 * once; any doubt (silence, a new epoch, a sequence going backwards, a gap, an incomplete
 * snapshot) leads to a resync that replaces the map.
 *
 * This module wires the parts: {@link Link} (sockets), {@link LocalMap}, {@link Watchers} and
 * {@link PendingWrites}; it holds the sync decisions.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { ClonekvError, ClosedError, ErrorCode, InvalidOptionError } from '../errors.ts';
import { Lifecycle } from '../lifecycle.ts';
import { booleanOption, intOption, rejectUnknown, stringOption } from '../options.ts';
import { BatchError, scanBatch } from '../protocol/batch.ts';
import { Command, MAX_KEY_BYTES, MSGPACK_ENCODING, PRESENCE_PREFIX, Prop } from '../protocol/commands.ts';
import { SnapshotDigest } from '../protocol/digest.ts';
import { headFor, previousFor } from '../protocol/gaps.ts';
import { decodeMessage, EMPTY_FRAME, snapshotRequestFrames } from '../protocol/message.ts';
import { PropertyView, type PropertyReader } from '../protocol/properties.ts';
import { ZERO_SEQUENCE } from '../protocol/sequence.ts';
import { decodeBody, encodeValue } from '../protocol/values.ts';
import type {
  DeleteOptions,
  DeleteReason,
  Endpoints,
  Entry,
  OwnershipLostInfo,
  PeerOptions,
  PeerStats,
  PeerStatus,
  ResyncReason,
  SetOptions,
  WatchEntry,
  WatchOptions,
} from '../types.ts';
import { Link } from './link.ts';
import { LocalMap, type LocalEntry } from './local-map.ts';
import { Registration } from './ownership.ts';
import { checkKey, checkWriteOptions, PendingWrites, type ServerKind } from './pending-writes.ts';
import { Watchers } from './watchers.ts';

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
  /**
   * The forwarder had purged this peer (no beat for longer than its `peerTimeout`: the process
   * was paused, or the network cut) and has now registered it again: every key this peer owned
   * (`ephemeral: true`) was deleted, reason `purged`, and may have been taken by another peer
   * since. To take a key back, write it again with `{ ifVersion: 0, ephemeral: true }`: it wins
   * only if the key is still absent, else it rejects with `CLONEKV_CONFLICT`. Needs a clonekv
   * forwarder that sends KVPRESENT.
   *
   * @example
   * ```ts
   * peer.on('ownershipLost', () => {
   *   peer.set('locks/job-42', peer.id, { ifVersion: 0, ephemeral: true }).catch(() => {});
   * });
   * ```
   */
  ownershipLost: [info: OwnershipLostInfo];
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
  /** The DEALER this attempt asked on (its replies carry that number). */
  readonly dealer: number;
  readonly entries: Map<string, LocalEntry>;
  readonly digest: SnapshotDigest;
  readonly subLiveAtRequest: boolean;
  buffered: Update[];
  malformed: boolean;
  timer: NodeJS.Timeout | undefined;
}

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
  readonly #link: Link;
  readonly #map = new LocalMap();
  readonly #watchers: Watchers;
  readonly #writes: PendingWrites;
  readonly #life = new Lifecycle();
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
  readonly #silenceTimer: NodeJS.Timeout;
  readonly #beatTimer: NodeJS.Timeout;
  /** Stable id: the owner of this peer's ephemeral keys and its presence entry. */
  readonly #id = randomBytes(8).toString('hex');
  /** What the forwarder told of this peer's registration (KVPRESENT): a new one means it was purged. */
  readonly #registration = new Registration(this.#id);
  #readyPromise: Promise<void>;
  #readyResolve!: () => void;
  #readyReject!: (e: Error) => void;
  #statsWaiters: Array<{ resolve: (v: Record<string, unknown>) => void; reject: (e: Error) => void }> = [];
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
    this.#watchers = new Watchers(
      () => this.listenerCount('update') > 0,
      (e) => this.emit('update', e),
    );
    this.#link = new Link(
      {
        endpoints: this.#s.endpoints,
        subtree: this.#subtreeBytes,
        id: this.#id,
        name: this.#s.name,
        subscriberHwm: this.#s.subscriberHwm,
        requestHwm: this.#s.requestHwm,
        publisherHwm: this.#s.publisherHwm,
      },
      {
        onPublished: (f) => this.#onPublished(f),
        onReply: (n, f) => this.#onDealer(n, f),
        onError: (what, e) => this.#report(ErrorCode.Transport, what, e),
      },
    );
    const link = this.#link;
    const self = this; // eslint-disable-line @typescript-eslint/no-this-alias -- getters below read the peer's state
    this.#writes = new PendingWrites(
      { endpoint: this.#s.endpoints.snapshot, retryInterval: this.#s.writeRetryInterval },
      {
        get kind() {
          return self.#kind;
        },
        get hasDealer() {
          return link.hasDealer;
        },
        request: (frames) => link.request(frames),
        publish: (frames) => link.publish(frames),
        get applied() {
          return self.#last;
        },
        get epoch() {
          return self.#epoch;
        },
        get syncing() {
          return self.#sync !== undefined;
        },
        get closing() {
          return self.#life.closing;
        },
      },
      this.#stats,
    );
    this.#silenceTimer = setInterval(() => this.#checkSilence(), Math.max(10, Math.floor(this.#s.silenceTimeout / 4)));
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
    for (const [k] of this.#map) if (k.startsWith(prefix)) yield k;
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
    const keyBytes = checkKey(key);
    if (keyBytes instanceof ClonekvError) return Promise.reject(keyBytes);
    let timeout: number;
    try {
      timeout = checkWriteOptions(options.timeout, options.ttl, this.#s.writeTimeout);
    } catch (err) {
      return Promise.reject(err);
    }
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
    if (options.ttl !== undefined) props.push([Prop.Ttl, String(options.ttl)]);
    return this.#write(key, keyBytes, body, props, options.ifVersion, timeout);
  }

  /**
   * Deletes `key`. Resolves with the sequence of the delete once sequenced (a delete of an absent
   * key is sequenced too, unless `ifVersion` says otherwise).
   */
  delete(key: string, options: DeleteOptions = {}): Promise<number> {
    const keyBytes = checkKey(key);
    if (keyBytes instanceof ClonekvError) return Promise.reject(keyBytes);
    let timeout: number;
    try {
      timeout = checkWriteOptions(options.timeout, undefined, this.#s.writeTimeout);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#write(key, keyBytes, EMPTY_FRAME, [], options.ifVersion, timeout);
  }

  #write(key: string, keyBytes: Buffer, body: Buffer, props: Array<[string, string]>, ifVersion: number | undefined, timeout: number): Promise<number> {
    if (this.#life.closing) return Promise.reject(new ClosedError('peer'));
    if (ifVersion !== undefined) {
      if (!Number.isSafeInteger(ifVersion) || ifVersion < 0) {
        return Promise.reject(new InvalidOptionError('ifVersion', `expected a version number (0 = absent), got ${String(ifVersion)}`));
      }
      props.push([Prop.IfVersion, String(ifVersion)]);
    }
    return this.#writes.add(key, keyBytes, this.#inSubtree(keyBytes), props, body, ifVersion, timeout);
  }

  /**
   * Asks the forwarder for its counters and presence table (what `clonekv stats` prints).
   *
   * @param timeout - ms to wait for the answer, default the peer's `writeTimeout`
   * @throws `CLONEKV_UNSUPPORTED` against a plain CHP server, `CLONEKV_TIMEOUT` if no answer
   */
  async serverStats(timeout = this.#s.writeTimeout): Promise<Record<string, unknown>> {
    if (this.#life.closing) throw new ClosedError('peer');
    if (this.#status === 'syncing') await this.ready();
    if (this.#kind !== 'clonekv' || !this.#link.hasDealer) {
      throw new ClonekvError(ErrorCode.Unsupported, `the server at ${this.#s.endpoints.snapshot} is a plain CHP server: it has no counters to report`);
    }
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
      this.#link.request([STATS, ZERO_SEQUENCE, EMPTY_FRAME, EMPTY_FRAME, EMPTY_FRAME]);
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
    const map = this.#map;
    const self = this; // eslint-disable-line @typescript-eslint/no-this-alias -- the source reads the peer's state when the watch starts
    return this.#watchers.watch<V>(
      {
        get closing() {
          return self.#life.closing;
        },
        get syncing() {
          return self.#status === 'syncing';
        },
        ready: this.#readyPromise,
        entries: () => map,
        get sequence() {
          return self.#last;
        },
      },
      prefix,
      options,
    );
  }

  // ---- lifecycle -----------------------------------------------------------------------------

  /** Closes sockets and timers, rejects pending writes and ends watches. Idempotent. */
  close(): Promise<void> {
    return this.#life.close(async () => {
      this.#status = 'closed';
      clearInterval(this.#silenceTimer);
      clearInterval(this.#beatTimer);
      if (this.#kind === 'clonekv' && this.#s.presence) {
        // Leave cleanly: the forwarder deletes our ephemeral keys at once instead of after the
        // peer timeout.
        await this.#link.bye(this.#last);
      }
      this.#readyReject(new ClosedError('peer'));
      this.#writes.close(new ClosedError('peer'));
      for (const w of this.#statsWaiters.splice(0)) w.reject(new ClosedError('peer'));
      this.#endSync();
      this.#watchers.endAll();
      await this.#link.close();
    });
  }

  /** Resolves once closed. Never rejects. */
  closed(): Promise<void> {
    return this.#life.closed();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // ---- sync ----------------------------------------------------------------------------------

  /** Starts (or restarts) a snapshot request on a fresh DEALER. */
  #startSync(reason: ResyncReason | undefined): void {
    if (this.#life.closing) return;
    this.#endSync();
    if (reason !== undefined) {
      this.#stats.resyncs++;
      if (this.#status === 'live') this.#status = 'stale';
      if (this.listenerCount('resync') > 0) this.emit('resync', { reason });
    }
    const dealer = this.#link.openDealer();
    if (this.#kind === 'clonekv' && this.#s.presence) this.#link.beat(Command.PeerBeat, this.#last);
    const attempt: SyncAttempt = {
      reason,
      dealer,
      entries: new Map(),
      digest: new SnapshotDigest(),
      subLiveAtRequest: this.#subLive,
      buffered: [],
      malformed: false,
      timer: undefined,
    };
    this.#sync = attempt;
    this.#link.request(snapshotRequestFrames(this.#subtreeBytes));
    this.#stats.snapshotRequests++;
    this.#armSyncTimer(attempt);
    // Writes not yet acknowledged may have been lost with the previous DEALER.
    this.#writes.resendAll();
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

  #onDealer(dealer: number, frames: Buffer[]): void {
    this.#lastHeard = Date.now();
    const command = frames[0]?.toString('latin1');
    if (command === Command.AckBatch) return this.#writes.onAckBatch(frames);
    if (command === Command.WriteAck) return this.#writes.onAck(frames);
    if (command === Command.PeerPresent) return this.#onPresent(frames);
    if (command === Command.Stats) {
      const waiter = this.#statsWaiters.shift();
      try {
        waiter?.resolve(JSON.parse(frames[4]?.toString('utf8') ?? 'null') as Record<string, unknown>);
      } catch (err) {
        waiter?.reject(new ClonekvError(ErrorCode.Malformed, 'unreadable stats reply', { cause: err }));
      }
      return;
    }
    const attempt = this.#sync;
    if (!attempt || attempt.dealer !== dealer) return; // an abandoned attempt
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

  #lastProps: { raw: Buffer; msgpack: boolean } = { raw: EMPTY_FRAME, msgpack: false };

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
    const epochChanged = epoch !== undefined && this.#epoch !== undefined && epoch !== this.#epoch;
    if (epoch !== undefined) this.#epoch = epoch;
    // Acknowledged writes now wait for this run's map, or resolve if another run sequenced them.
    this.#writes.snapshotApplied(this.#epoch, epochChanged);
    this.#retryDelay = this.#s.snapshotRetryDelay;
    this.#stats.snapshots++;
    const first = this.#status === 'syncing';
    this.#map.replace(attempt.entries, snapshotSeq, !first, (e) => this.#watchers.emit(e));
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
    this.#writes.settle();
    this.#sendBeat();
    this.#writes.resendAll();
    if (first) this.#readyResolve();
    if (this.listenerCount('synced') > 0) {
      this.emit('synced', { sequence: this.#last, keys: this.#map.size, ...(attempt.reason ? { reason: attempt.reason } : {}) });
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
    this.#writes.settle();
  }

  #onHeartbeat(seq: number, props: PropertyReader): void {
    if (props.has(Prop.Version) && this.#kind === 'unknown') {
      this.#kind = 'clonekv';
      this.#sendBeat();
      this.#writes.resendAll();
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
    // Our own write coming back is its acknowledgement (the only one a plain CHP server gives).
    this.#writes.onEcho(u.uuid, u.seq);
    if (this.#isHidden(u.key)) return;
    const key = u.key.toString('utf8');
    const before = this.#map.get(key);
    if (u.body.length === 0) {
      if (!before) return;
      this.#map.delete(key);
      this.#stats.updates++;
      const why = u.props.get(Prop.Reason);
      const reason: DeleteReason = why === 'expired' || why === 'purged' ? why : 'deleted';
      if (this.#watchers.observed) this.#watchers.emit({ key, operation: 'delete', value: undefined, previous: before.value, version: u.seq, isUpdate: true, reason, fromResync: false });
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
    if (this.#watchers.observed) this.#watchers.emit({ key, operation: 'put', value, previous: before?.value, version: u.seq, isUpdate: true, fromResync: false });
  }

  // ---- health --------------------------------------------------------------------------------

  #onPresent(frames: Buffer[]): void {
    const outcome = this.#registration.onPresent(frames);
    if (outcome.kind === 'malformed') this.#stats.malformed++;
    else if (outcome.kind === 'lost') this.emit('ownershipLost', outcome.info);
  }

  /** Tells the forwarder this peer is alive (clonekv forwarders only; plain servers have no presence). */
  #sendBeat(): void {
    if (this.#kind === 'clonekv' && this.#link.hasDealer && this.#s.presence) this.#link.beat(Command.PeerBeat, this.#last);
  }

  #checkSilence(): void {
    if (this.#life.closing || this.#sync) return;
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

const STATS = Buffer.from(Command.Stats);
