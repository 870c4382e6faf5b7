/**
 * The peer: a local, always-readable copy of a forwarder's map (or of one subtree of it),
 * kept exactly in sync: snapshot first, then live updates in sequence order, each applied
 * once; any doubt (silence, a new epoch, a sequence going backwards, a gap, an incomplete
 * snapshot) leads to a resync that replaces the map.
 *
 * This module wires the parts and decides nothing about sync: {@link SyncMachine} makes the
 * decisions and this facade carries out its commands on the {@link Link} (sockets), the
 * {@link LocalMap}, the {@link Watchers} and the {@link PendingWrites}.
 *
 * @module
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { ClonekvError, ClosedError, CompactedError, ErrorCode, InvalidOptionError } from '../errors.ts';
import { Lifecycle } from '../lifecycle.ts';
import { clientCurveOption } from '../security/curve.ts';
import { Sealer, sealedOption } from '../security/sealed.ts';
import { curveKeyPair, type ClientCurve } from '../transport/sockets.ts';
import { booleanOption, durationOption, intOption, rejectUnknown, MAX_DURATION_MS, stringOption } from '../options.ts';
import { BatchError, scanBatch } from '../protocol/batch.ts';
import { bodyEncoding, Command, MAX_KEY_BYTES, MSGPACK_ENCODING, PRESENCE_PREFIX, Prop, SEALED_ENCODING, type BodyEncoding } from '../protocol/commands.ts';
import { decodeMessage, EMPTY_FRAME, snapshotRequestFrames, type ChpMessage } from '../protocol/message.ts';
import { encodeProperties, PropertyView, type PropertyReader } from '../protocol/properties.ts';
import { readSequence, ZERO_SEQUENCE } from '../protocol/sequence.ts';
import { decodeBody, encodeValue } from '../protocol/values.ts';
import type {
  DeleteOptions,
  DeleteReason,
  Endpoints,
  Entry,
  FailoverInfo,
  HistoryEntry,
  HistoryOptions,
  MalformedReason,
  OwnershipLostInfo,
  PeerOptions,
  PeerStats,
  PeerStatus,
  ResyncReason,
  ServerStats,
  SetOptions,
  WatchEntry,
  WatchOptions,
} from '../types.ts';
import { Link } from './link.ts';
import { LocalMap } from './local-map.ts';
import { Registration } from './ownership.ts';
import { checkKey, checkWriteOptions, PendingWrites } from './pending-writes.ts';
import { resolveServers, serverName } from './servers.ts';
import { emptyPeerStats } from './stats.ts';
import { SyncMachine, type SyncCommand } from './sync-machine.ts';
import { Watchers } from './watchers.ts';
import { loadIdentity, type Identity } from '../security/identity.ts';
import { policyOption, type Policy } from '../security/policy.ts';
import { checkUpdate, signWrite } from '../security/signature.ts';
import { receiptSubtree, RECEIPT_TTL_SECONDS } from '../security/receipt.ts';
import { confirmProperty, confirmWrite, recipientsOf, ReceiptSender, type ReceiptSource } from './receipts.ts';
import { VerifyAhead, type AddCheck } from '../security/verify-ahead.ts';

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
  /**
   * A problem the peer recovered from, never fatal: `CLONEKV_MALFORMED` for bad input (an
   * incomplete snapshot, a value marked msgpack that does not decode, naming its key and
   * sequence, a snapshot abandoned for its size, naming the option to raise),
   * `CLONEKV_TRANSPORT` for a socket error.
   */
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
  /**
   * The peer left the server in use for the next one in its list (only with several servers):
   * `from` and `to` are their base endpoints, `reason` what made it move (`silence`,
   * `disconnected`, `no-answer`). A resync there follows (by delta when it can). Counted in
   * `stats().failovers`.
   */
  failover: [info: FailoverInfo];
}

interface Settings {
  /** The servers, in the order they are tried (one, or the members of a failover pair). */
  servers: Endpoints[];
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
  maxSnapshotEntries: number;
  maxSnapshotBytes: number;
  heartbeatInterval: number;
  presence: boolean;
  /** Answers receipt requests (with an identity). */
  receipts: boolean;
  /** Signs every write, when given. */
  identity: Identity | undefined;
  /** Verifies every update end to end, when given. */
  policy: Policy | undefined;
  /** CURVE towards the server (with this peer's keypair); `undefined`: none. */
  curve: ClientCurve | undefined;
  /** The sealed subtrees' secrets (none given: every sealed value is a `SealedValue`). */
  sealer: Sealer;
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
  'maxSnapshotEntries',
  'maxSnapshotBytes',
  'heartbeatInterval',
  'presence',
  'receipts',
  'identity',
  'policy',
  'curve',
  'sealed',
] as const;

/** Largest `maxSnapshotBytes` accepted (1 TiB). */
const MAX_SNAPSHOT_BYTES = 2 ** 40;

export { resolveEndpoints } from './servers.ts';

/** The `curve` option checked, with a keypair generated for this peer if none was given. */
function peerCurve(value: unknown): ClientCurve | undefined {
  const c = clientCurveOption(value);
  if (c === undefined) return undefined;
  const pair = c.publicKey !== undefined && c.secretKey !== undefined ? { publicKey: c.publicKey, secretKey: c.secretKey } : curveKeyPair();
  return { serverKey: c.serverKey, ...pair };
}

function peerSettings(options: PeerOptions): Settings {
  rejectUnknown(options, KNOWN_OPTIONS);
  const subtree = stringOption('subtree', options.subtree, '');
  if (Buffer.byteLength(subtree) > MAX_KEY_BYTES) throw new InvalidOptionError('subtree', 'longer than 255 bytes');
  const snapshotRetryDelay = durationOption('snapshotRetryDelay', options.snapshotRetryDelay, 1000, 10);
  return {
    servers: resolveServers(options.server),
    subtree,
    name: stringOption('name', options.name, 'peer'),
    silenceTimeout: durationOption('silenceTimeout', options.silenceTimeout, 3000, 50),
    writeTimeout: durationOption('writeTimeout', options.writeTimeout, 5000, 1),
    writeRetryInterval: durationOption('writeRetryInterval', options.writeRetryInterval, 1000, 10),
    snapshotRetryDelay,
    maxRetryDelay: durationOption('maxRetryDelay', options.maxRetryDelay, Math.max(10_000, snapshotRetryDelay), snapshotRetryDelay),
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
    maxSnapshotEntries: intOption('maxSnapshotEntries', options.maxSnapshotEntries, 10_000_000, 1),
    maxSnapshotBytes: intOption('maxSnapshotBytes', options.maxSnapshotBytes, 2 ** 30, 1, MAX_SNAPSHOT_BYTES),
    heartbeatInterval: durationOption('heartbeatInterval', options.heartbeatInterval, 1000, 10),
    presence: booleanOption('presence', options.presence, true),
    receipts: booleanOption('receipts', options.receipts, true),
    identity: identityOption(options.identity),
    policy: policyOption(options.policy),
    curve: peerCurve(options.curve),
    sealer: sealedOption(options.sealed) ?? new Sealer([]),
  };
}

/** The `identity` option: an {@link Identity} or a key file path. */
function identityOption(value: unknown): Identity | undefined {
  if (value === undefined) return undefined;
  if (typeof value === 'string' && value.length > 0) return loadIdentity(value);
  const v = value as Partial<Identity>;
  if (typeof value === 'object' && value !== null && typeof v.signer === 'string' && v.privateKeyObject !== undefined) return value as Identity;
  throw new InvalidOptionError('identity', 'expected a key file path (clonekv keygen) or an Identity (generateIdentity, loadIdentity)');
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
  readonly #sync: SyncMachine;
  readonly #life = new Lifecycle();
  /** Per server: whether that plain server's collector has subscribed to our collector socket. */
  readonly #collectorReady: boolean[] = [];
  /** The one timer of the sync machine, armed for its next wake-up. */
  #wake: NodeJS.Timeout | undefined;
  #wakeAt = Infinity;
  readonly #beatTimer: NodeJS.Timeout;
  /** Stable id: the owner of this peer's ephemeral keys and its presence entry. */
  readonly #id = randomBytes(8).toString('hex');
  /** What the forwarder told of this peer's registration (KVPRESENT): a new one means it was purged. */
  readonly #registration = new Registration(this.#id);
  #readyPromise: Promise<void>;
  #readyResolve!: () => void;
  #readyReject!: (e: Error) => void;
  /**
   * Control requests (KVSTATS, KVHISTORY) waiting for their answer, by uuid (latin1). The
   * forwarder answers the socket that asked, and a resync replaces that socket: so every new
   * request socket sends them all again.
   */
  readonly #control = new Map<string, { frames: Buffer[]; answer: (frames: Buffer[]) => void; fail: (e: Error) => void }>();
  readonly #stats: PeerStats = emptyPeerStats();
  /** The policy updates are verified with (a peer given one); replaced whole by {@link reloadPolicy}. */
  #policy: Policy | undefined;
  /** The options as given (the peer that holds this writer's receipts is made from them). */
  readonly #options: PeerOptions;
  /** Sends the receipts this peer owes (a peer with an identity that answers receipts). */
  readonly #receipts: ReceiptSender | undefined;
  /** The peer holding `$receipts/<this writer>/`, made at the first `confirmBy`. */
  #receiptInbox: Promise<ReceiptSource> | undefined;
  /**
   * What the forwarder sends waits here, in arrival order, while the signatures in it are
   * checked on the threadpool (a peer given a policy); each message is then handled as before,
   * so sequence order and gap detection are unchanged (security/verify-ahead.ts).
   */
  readonly #ahead = new VerifyAhead((signer, key) => {
    const writer = this.#policy?.writer(signer);
    return writer !== undefined && writer.mayWrite(key) ? writer.keyObject : undefined;
  }, (err) => this.#report(ErrorCode.Transport, 'update handling', err));

  /**
   * Creates a peer and starts joining at once. Options are checked here.
   *
   * @throws `CLONEKV_INVALID_OPTION` naming a bad option; `CLONEKV_TRANSPORT` if zeromq refuses
   *   an endpoint. Either way nothing is left open (no socket, no timer).
   */
  constructor(options: PeerOptions = {}) {
    super();
    this.#s = peerSettings(options);
    this.#options = options;
    this.#policy = this.#s.policy;
    const identity = this.#s.identity;
    this.#receipts =
      identity === undefined || !this.#s.receipts
        ? undefined
        : new ReceiptSender(identity, (key, value) => {
            this.set(key, value, { ttl: RECEIPT_TTL_SECONDS }).catch((err: unknown) => {
              if (!this.#life.closing) this.#report(ErrorCode.Rejected, `receipt ${key} not written: ${(err as Error).message}`, err);
            });
          });
    this.#subtreeBytes = Buffer.from(this.#s.subtree, 'utf8');
    this.#readyPromise = new Promise<void>((resolve, reject) => {
      this.#readyResolve = resolve;
      this.#readyReject = reject;
    });
    this.#readyPromise.catch(() => {});
    this.#watchers = new Watchers(
      () => this.listenerCount('update') > 0,
      (e) => this.emit('update', e),
    );
    this.#sync = new SyncMachine(
      {
        subtree: this.#subtreeBytes,
        silenceTimeout: this.#s.silenceTimeout,
        snapshotRetryDelay: this.#s.snapshotRetryDelay,
        maxRetryDelay: this.#s.maxRetryDelay,
        maxBufferedUpdates: this.#s.maxBufferedUpdates,
        maxSnapshotEntries: this.#s.maxSnapshotEntries,
        maxSnapshotBytes: this.#s.maxSnapshotBytes,
        servers: this.#s.servers.length,
        ...(this.#s.policy ? { verify: (m: ChpMessage) => this.#verify(m.key, m.uuid, m.body, m.properties) } : {}),
        unseal: (key, body) => this.#unseal(key, body),
      },
      (c) => this.#execute(c),
      this.#stats,
      Date.now(),
    );
    this.#link = new Link(
      {
        servers: this.#s.servers,
        server: 0,
        subtree: this.#subtreeBytes,
        id: this.#id,
        name: this.#s.name,
        subscriberHwm: this.#s.subscriberHwm,
        requestHwm: this.#s.requestHwm,
        publisherHwm: this.#s.publisherHwm,
        curve: this.#s.curve,
      },
      {
        onPublished: (f) => this.#ahead.schedule(() => this.#onPublished(f), this.#policy === undefined ? undefined : (add) => checkAheadMessage(f, add)),
        onSubscriberDown: () =>
          this.#ahead.schedule(() => {
            if (this.#life.closing) return;
            this.#sync.subscriberDown(Date.now());
            this.#armWake();
          }),
        onSubscriberRefused: () =>
          this.#ahead.schedule(() => {
            if (this.#life.closing) return;
            this.#sync.subscriberRefused();
          }),
        onReply: (attempt, f) => this.#ahead.schedule(() => this.#onReply(attempt, f), this.#policy === undefined ? undefined : (add) => checkAheadReply(f, add)),
        onCollector: (server, up) => this.#onCollector(server, up),
        onError: (what, e) => this.#report(ErrorCode.Transport, what, e),
      },
    );
    const link = this.#link;
    const self = this; // eslint-disable-line @typescript-eslint/no-this-alias -- getters below read the peer's state
    this.#writes = new PendingWrites(
      {
        get endpoint() {
          return self.server;
        },
        retryInterval: this.#s.writeRetryInterval,
      },
      {
        get kind() {
          return self.#sync.kind;
        },
        get hasDealer() {
          return link.hasDealer;
        },
        request: (frames) => link.request(frames),
        servers: this.#s.servers.length,
        get server() {
          return self.#sync.server;
        },
        publish: (server, frames) => link.publish(server, frames),
        collectorReady: (server) => self.#collectorReady[server] === true,
        get applied() {
          return self.#sync.applied;
        },
        get epoch() {
          return self.#sync.epoch;
        },
        get syncing() {
          return self.#sync.resyncing;
        },
        get closing() {
          return self.#life.closing;
        },
      },
      this.#stats,
    );
    this.#beatTimer = setInterval(() => this.#sendBeat(), this.#s.heartbeatInterval);
    try {
      this.#sync.start(Date.now());
    } catch (err) {
      // The first DEALER was refused: leave nothing behind that would keep the process alive.
      this.#abort();
      throw err;
    }
    this.#armWake();
  }

  /** Undoes a constructor that failed half-way. */
  #abort(): void {
    this.#ahead.close();
    clearInterval(this.#beatTimer);
    this.#writes.close(new ClosedError('peer'));
    void this.#link.close();
  }

  // ---- reads ---------------------------------------------------------------------------------

  /** Where the peer stands: `syncing` until the first snapshot, then `live`, or `stale` while resyncing. */
  get status(): PeerStatus {
    return this.#life.closing ? 'closed' : this.#sync.status;
  }

  /** This peer's stable id: its presence key is `$peers/<id>`, and it owns its ephemeral keys. */
  get id(): string {
    return this.#id;
  }

  /** The subtree this peer holds (`''` = everything). */
  get subtree(): string {
    return this.#s.subtree;
  }

  /** The endpoints of the server in use. */
  get endpoints(): Endpoints {
    return this.#s.servers[this.#sync.server]!;
  }

  /**
   * The server in use: its base endpoint `tcp://HOST:P` (with several servers, the one the peer
   * syncs from now; see the `failover` event).
   */
  get server(): string {
    return serverName(this.endpoints);
  }

  /** Number of keys held. */
  get size(): number {
    return this.#map.size;
  }

  /** The last applied sequence number. */
  get sequence(): number {
    return this.#sync.applied;
  }

  /** The forwarder's epoch, once known (a plain CHP server has none). */
  get epoch(): string | undefined {
    return this.#sync.epoch;
  }

  /**
   * Replaces the policy this peer verifies updates with (a peer created with a `policy`): read
   * again from its file (no argument), or from `source` (a file path or a `Policy`). Updates
   * from then on are checked against the new one; what the map holds stays. All or nothing: a
   * bad file throws `CLONEKV_INVALID_OPTION` naming it, and the policy in force stays.
   *
   * @returns the policy now in force
   */
  reloadPolicy(source?: string | Policy): Policy {
    if (this.#policy === undefined) throw new InvalidOptionError('policy', 'this peer verifies nothing: create it with a policy to reload one');
    const from = source ?? this.#policy.file;
    if (from === undefined) throw new InvalidOptionError('policy', 'this peer has no policy file to reload; give one');
    this.#policy = policyOption(from)!;
    return this.#policy;
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
    return { ...this.#stats, sequence: this.#sync.applied, snapshotEntries: this.#sync.snapshotEntries };
  }

  /**
   * Resolves once the first complete snapshot has been applied (also when it is empty, and also
   * when updates that arrived meanwhile start another resync at once). Rejects with
   * `CLONEKV_CLOSED` if the peer is closed first.
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
   * A write the forwarder has acknowledged never times out: it resolves once the local map
   * reaches it (however long a resync takes). A `TimeoutError` says with `maybeApplied` whether
   * the write may have been applied even so (sent, no answer) or surely was not (never sent).
   *
   * @throws nothing: every failure is a rejection. Rejects at once with `CLONEKV_INVALID_KEY`
   *   (not a string, empty, over 255 bytes, reserved), `CLONEKV_INVALID_VALUE`,
   *   `CLONEKV_INVALID_OPTION` (`timeout` not a whole number of ms from 1 to 2^31−1, `ttl` not a
   *   positive number of seconds up to a year, `ifVersion`); later with `CLONEKV_TIMEOUT`,
   *   `CLONEKV_CONFLICT` (for `ifVersion`), `CLONEKV_REJECTED`, or `CLONEKV_CLOSED`
   */
  set(key: string, value: unknown, options: SetOptions = {}): Promise<number> {
    const checked = this.#checkWrite(key, options);
    if (checked instanceof Error) return Promise.reject(checked);
    const { keyBytes, timeout } = checked;
    let body: Buffer;
    try {
      body = encodeValue(value);
    } catch (err) {
      return Promise.reject(new ClonekvError(ErrorCode.InvalidValue, `value for "${key}" cannot be encoded: ${(err as Error).message}`, { cause: err }));
    }
    // A value under a sealed subtree goes out sealed (README, "Sealed subtrees").
    const secret = this.#s.sealer.secretFor(key);
    if (secret !== undefined) body = Sealer.seal(body, secret);
    if (body.length > this.#s.maxValueBytes) {
      return Promise.reject(
        new ClonekvError(ErrorCode.InvalidValue, `value for "${key}" is ${body.length} bytes, over the limit of ${this.#s.maxValueBytes}`),
      );
    }
    const props: Array<[string, string]> = [[Prop.Encoding, secret === undefined ? MSGPACK_ENCODING : SEALED_ENCODING]];
    if (options.ephemeral) {
      if (!this.#s.presence) {
        return Promise.reject(new InvalidOptionError('ephemeral', 'a peer created with presence: false cannot own keys'));
      }
      props.push([Prop.Owner, this.#id]);
    }
    if (options.ttl !== undefined) props.push([Prop.Ttl, String(options.ttl)]);
    if (options.confirmBy !== undefined) return this.#confirmedWrite(key, keyBytes, body, props, options.ifVersion, timeout, options.confirmBy);
    return this.#write(key, keyBytes, body, props, options.ifVersion, timeout);
  }

  /** A write with `confirmBy`: see {@link confirmWrite}. */
  #confirmedWrite(key: string, keyBytes: Buffer, body: Buffer, props: Array<[string, string]>, ifVersion: number | undefined, timeout: number, confirmBy: readonly string[]): Promise<number> {
    let recipients;
    try {
      recipients = recipientsOf(confirmBy, this.#policy, this.#s.identity);
    } catch (err) {
      return Promise.reject(err as Error);
    }
    if (this.#life.closing) return Promise.reject(new ClosedError('peer'));
    const writer = this.#s.identity!.signer;
    // A peer that cannot be made (zeromq refuses) rejects this write, and the next one tries again.
    this.#receiptInbox ??= new Promise<ReceiptSource>((resolve) => resolve(this.#openReceiptInbox(writer))).catch((err: unknown) => {
      this.#receiptInbox = undefined;
      throw err;
    });
    props.push([Prop.Confirm, confirmProperty(recipients)]);
    return confirmWrite(this.#receiptInbox, {
      key,
      keyBytes,
      body,
      writer,
      recipients,
      timeout,
      send: (remaining, onUuid) => this.#write(key, keyBytes, body, props, ifVersion, remaining, onUuid),
    });
  }

  /** A peer of the same server holding only this writer's receipts (no presence, no identity). */
  #openReceiptInbox(writer: string): ReceiptSource {
    const { identity: _i, policy: _p, sealed: _s, receipts: _r, ...rest } = this.#options;
    const inbox = new Peer({ ...rest, subtree: receiptSubtree(writer), presence: false, receipts: false, name: `${this.#s.name}-receipts` });
    inbox.setMaxListeners(0); // one `update` listener per confirmed write in flight
    return inbox;
  }

  /**
   * Deletes `key`. Resolves with the sequence of the delete once sequenced (a delete of an absent
   * key is sequenced too, unless `ifVersion` says otherwise).
   */
  delete(key: string, options: DeleteOptions = {}): Promise<number> {
    const checked = this.#checkWrite(key, options);
    if (checked instanceof Error) return Promise.reject(checked);
    return this.#write(key, checked.keyBytes, EMPTY_FRAME, [], options.ifVersion, checked.timeout);
  }

  /** The key's bytes and the write's timeout, or the error that refuses the write at once. */
  #checkWrite(key: string, options: SetOptions | DeleteOptions): { keyBytes: Buffer; timeout: number } | Error {
    const keyBytes = checkKey(key);
    if (keyBytes instanceof ClonekvError) return keyBytes;
    try {
      return { keyBytes, timeout: checkWriteOptions(options, this.#s.writeTimeout) };
    } catch (err) {
      return err as Error;
    }
  }

  #write(key: string, keyBytes: Buffer, body: Buffer, props: Array<[string, string]>, ifVersion: number | undefined, timeout: number, onUuid?: (uuid: Buffer) => void): Promise<number> {
    if (this.#life.closing) return Promise.reject(new ClosedError('peer'));
    if (ifVersion !== undefined) {
      if (!Number.isSafeInteger(ifVersion) || ifVersion < 0) {
        return Promise.reject(new InvalidOptionError('ifVersion', `expected a version number (0 = absent), got ${String(ifVersion)}`));
      }
      props.push([Prop.IfVersion, String(ifVersion)]);
    }
    const identity = this.#s.identity;
    const sign =
      identity === undefined
        ? undefined
        : (uuid: Buffer): void => {
            onUuid?.(uuid);
            signWrite(identity, keyBytes, uuid, body, props);
          };
    return this.#writes.add(key, keyBytes, this.#inSubtree(keyBytes), props, body, ifVersion, timeout, sign);
  }

  /**
   * Asks the forwarder for its counters and presence table (what `clonekv stats` prints): the
   * same shape as `Forwarder.stats()`, plus `peerList`.
   *
   * @param timeout - ms to wait in all, joining included: default the peer's `writeTimeout`
   * @throws `CLONEKV_INVALID_OPTION` for a bad timeout, `CLONEKV_UNSUPPORTED` against a plain
   *   CHP server, `CLONEKV_TIMEOUT` if no answer in time (also while the peer cannot join)
   */
  async serverStats(timeout?: number): Promise<ServerStats> {
    const frames = await this.#controlRequest(STATS, [], EMPTY_FRAME, timeout, 'stats', 'it has no counters to report');
    try {
      return JSON.parse(frames[4]?.toString('utf8') ?? 'null') as ServerStats;
    } catch (err) {
      throw new ClonekvError(ErrorCode.Malformed, `unreadable stats reply from the forwarder at ${this.server}`, { cause: err });
    }
  }

  // ---- history -------------------------------------------------------------------------------

  /**
   * The versions of `key` the forwarder still holds in its retained history, **newest first**
   * (at most `limit`, default 100): puts and deletes, each with its sequence. Older versions may
   * have been compacted away (the forwarder's `historyMax`/`historyBytes`); a key the forwarder
   * holds but none of whose versions is retained rejects with `CLONEKV_COMPACTED`
   * ({@link CompactedError}, `oldest`: every update after it is held). A key never written (or
   * deleted before the retained history) gives `[]`.
   *
   * @example
   * ```ts
   * for (const v of await peer.history('config/db/url', { limit: 5 })) console.log(v.version, v.value);
   * ```
   * @throws `CLONEKV_INVALID_KEY`, `CLONEKV_INVALID_OPTION`, `CLONEKV_UNSUPPORTED` against a plain
   *   CHP server, `CLONEKV_TIMEOUT`, `CLONEKV_COMPACTED`, `CLONEKV_CLOSED`
   */
  async history<V = unknown>(key: string, options: HistoryOptions = {}): Promise<Array<HistoryEntry<V>>> {
    const keyBytes = checkKey(key);
    if (keyBytes instanceof ClonekvError) throw keyBytes;
    const limit = intOption('limit', options.limit, 100, 1, 10_000);
    const frames = await this.#controlRequest(HISTORY, [[Prop.Limit, String(limit)]], keyBytes, options.timeout, `history of "${key}"`, 'which keeps no history');
    const { records, status, oldest } = readHistoryAnswer(frames);
    if (status === 'compacted') throw new CompactedError(`history of "${key}"`, oldest, this.server);
    return records.map((r) => historyEntry<V>(r, (k, b) => this.#unseal(k, b)));
  }

  /**
   * Sends one control request (`command` with a fresh uuid, `props`, `body`) and waits for the
   * answer with that uuid, within `timeout` ms in all, joining included. Re-sent on every new
   * request socket until answered (see {@link #control}).
   */
  async #controlRequest(command: Buffer, props: Array<[string, string]>, body: Buffer, timeout: number | undefined, what: string, unsupported: string): Promise<Buffer[]> {
    const ms = durationOption('timeout', timeout, this.#s.writeTimeout, 1);
    if (this.#life.closing) throw new ClosedError('peer');
    const deadline = Date.now() + ms;
    const noAnswer = (): ClonekvError => new ClonekvError(ErrorCode.Timeout, `${what}: no answer from the forwarder at ${this.server} within ${ms} ms`);
    if (this.#sync.status === 'syncing') {
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([this.ready(), new Promise<never>((_, reject) => (timer = setTimeout(() => reject(noAnswer()), ms)))]);
      } finally {
        clearTimeout(timer);
      }
    }
    if (this.#sync.kind !== 'clonekv') {
      throw new ClonekvError(ErrorCode.Unsupported, `${what}: the server at ${this.server} is a plain CHP server, ${unsupported}`);
    }
    const uuid = randomBytes(16);
    const id = uuid.toString('latin1');
    const frames = [command, ZERO_SEQUENCE, uuid, encodeProperties(props), body];
    return new Promise<Buffer[]>((resolve, reject) => {
      const timer = setTimeout(() => done(undefined, noAnswer()), Math.max(0, deadline - Date.now()));
      const done = (answer: Buffer[] | undefined, err?: Error): void => {
        clearTimeout(timer);
        this.#control.delete(id);
        if (answer) resolve(answer);
        else reject(err);
      };
      this.#control.set(id, { frames, answer: (f) => done(f), fail: (e) => done(undefined, e) });
      this.#link.request(frames); // dropped if no request socket is open: sent when one opens
    });
  }

  /**
   * `watch(prefix, { since })`: the retained updates after `since` (asked page by page), up to
   * what the local map held when the watch went live, then the live changes, which were queued
   * from that moment: so nothing is missed or yielded twice at the seam.
   */
  async *#watchSince<V>(prefix: string, since: number, options: WatchOptions): AsyncGenerator<WatchEntry<V>> {
    await this.ready();
    const { since: _since, ...rest } = options;
    // Registered at once (the peer is ready): every change from here on is queued in it.
    const live = this.watch<V>(prefix, { ...rest, updatesOnly: true });
    const upTo = this.#sync.applied;
    try {
      const scope = replayScope(prefix, this.#s.subtree);
      const hidePresence = this.#s.subtree === '';
      const previous = new Map<string, unknown>();
      let from = since;
      while (scope !== undefined && from < upTo && !options.signal?.aborted) {
        const before = from;
        const frames = await this.#controlRequest(HISTORY, [[Prop.Since, String(from)]], Buffer.from(scope, 'utf8'), undefined, `watch of "${prefix}" since ${since}`, 'which keeps no history');
        const { records, status, oldest } = readHistoryAnswer(frames);
        if (status === 'compacted') throw new CompactedError(`watch of "${prefix}" since ${since}`, oldest, this.server);
        for (const r of records) {
          if (r.version > upTo) {
            from = upTo; // the rest comes live
            break;
          }
          from = r.version;
          if (hidePresence && r.key.startsWith(PRESENCE_PREFIX)) continue;
          const e = historyEntry<V>(r, (k, b) => this.#unseal(k, b));
          yield {
            key: e.key,
            operation: e.operation,
            value: e.value,
            previous: previous.get(e.key) as V | undefined,
            version: e.version,
            isUpdate: true,
            ...(e.reason ? { reason: e.reason } : {}),
            fromResync: false,
          };
          previous.set(e.key, e.value);
        }
        // No progress (an empty page, or a server answering what was not asked): stop asking.
        if (records.length === 0 || from <= before) break;
      }
      for await (const e of live) {
        // Asked from a point this peer had not reached yet: what came before it is not wanted.
        if (since > upTo && !e.fromResync && e.version <= since) continue;
        yield e;
      }
    } finally {
      await live.return?.();
    }
  }

  // ---- watch ---------------------------------------------------------------------------------

  /**
   * Watches keys starting with `prefix`: first yields the current entries (`isUpdate: false`,
   * once the peer is ready), then every change (`isUpdate: true`). Ends on `break`, on the
   * signal, or when the peer closes. With `since`, it yields instead the updates after that
   * sequence still held in the forwarder's retained history, then the live changes, with none
   * missed or yielded twice at the seam; it throws `CLONEKV_COMPACTED` if that history is gone
   * and `CLONEKV_UNSUPPORTED` against a plain CHP server.
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
    if (options.since !== undefined) {
      const since = intOption('since', options.since, 0, 0);
      intOption('maxPending', options.maxPending, 100_000, 1);
      return this.#watchSince<V>(prefix, since, options);
    }
    const map = this.#map;
    const self = this; // eslint-disable-line @typescript-eslint/no-this-alias -- the source reads the peer's state when the watch starts
    return this.#watchers.watch<V>(
      {
        get closing() {
          return self.#life.closing;
        },
        get syncing() {
          return self.#sync.status === 'syncing';
        },
        ready: this.#readyPromise,
        entries: () => map,
        get sequence() {
          return self.#sync.applied;
        },
      },
      prefix,
      options,
    );
  }

  // ---- lifecycle -----------------------------------------------------------------------------

  /**
   * Closes sockets and timers, settles pending writes (one the forwarder already sequenced
   * resolves with its sequence, the others reject with `CLONEKV_CLOSED`) and ends watches.
   * Idempotent.
   */
  close(): Promise<void> {
    return this.#life.close(async () => {
      clearInterval(this.#beatTimer);
      clearTimeout(this.#wake);
      if (this.#sync.kind === 'clonekv' && this.#s.presence) {
        // Leave cleanly: the forwarder deletes our ephemeral keys at once instead of after the
        // peer timeout.
        await this.#link.bye(this.#sync.applied);
      }
      this.#ahead.close();
      this.#readyReject(new ClosedError('peer'));
      this.#writes.close(new ClosedError('peer'));
      for (const c of [...this.#control.values()]) c.fail(new ClosedError('peer'));
      this.#watchers.endAll();
      await Promise.all([this.#link.close(), this.#receiptInbox?.then((inbox) => inbox.close(), () => {})]);
    });
  }

  /** Resolves once closed. Never rejects. */
  closed(): Promise<void> {
    return this.#life.closed();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  // ---- carrying out the sync machine's commands ---------------------------------------------

  #execute(c: SyncCommand): void {
    switch (c.type) {
      case 'apply':
        return this.#apply(c.seq, c.uuid, c.key, c.value, c.reason, c.fromResync);
      case 'request':
        this.#link.openDealer(c.attempt);
        if (this.#sync.kind === 'clonekv' && this.#s.presence) this.#link.beat(Command.PeerBeat, this.#sync.applied);
        this.#link.request(snapshotRequestFrames(this.#subtreeBytes, c.resume));
        for (const pending of this.#control.values()) this.#link.request(pending.frames);
        return;
      case 'resync':
        if (this.listenerCount('resync') > 0) this.emit('resync', { reason: c.reason });
        return;
      case 'replace':
        // Acknowledged writes now wait for this run's map, or resolve if another run sequenced them.
        this.#writes.snapshotApplied(this.#sync.epoch, c.epochChanged);
        this.#map.replace(c.entries, c.sequence, !c.first, (e) => this.#watchers.emit(e));
        this.#writes.afterSnapshot();
        return;
      case 'ready':
        return this.#readyResolve();
      case 'synced':
        if (this.listenerCount('synced') > 0) {
          this.emit('synced', { sequence: c.sequence, keys: this.#map.size, ...(c.reason ? { reason: c.reason } : {}) });
        }
        return;
      case 'echo':
        return this.#writes.onEcho(c.uuid, c.seq);
      case 'settle':
        return this.#writes.settle();
      case 'resendWrites':
        return this.#writes.resendAll();
      case 'beat':
        return this.#sendBeat();
      case 'kind':
        if (c.kind === 'plain') this.#link.openCollectors();
        return;
      case 'failover': {
        this.#link.switchTo(c.to);
        const info: FailoverInfo = { from: serverName(this.#s.servers[c.from]!), to: serverName(this.#s.servers[c.to]!), reason: c.reason };
        if (this.listenerCount('failover') > 0) this.emit('failover', info);
        return;
      }
      case 'abandon':
        // Stop reading the rest of that snapshot at once: its DEALER goes.
        this.#link.closeDealer();
        this.#report(
          ErrorCode.Malformed,
          `snapshot from ${this.server} abandoned: it went past ${c.limit} (${c.value}); raise that option if the store is really that large`,
        );
        return;
      case 'progress':
        if (this.listenerCount('progress') > 0) this.emit('progress', { received: c.received });
        return;
      case 'report':
        return this.#report(c.unauthorized ? ErrorCode.Unauthorized : ErrorCode.Malformed, `${c.message} (from ${this.server})`, c.cause);
    }
  }

  /** Applies one live update to the map (`key` undefined: not held; `value` undefined: a delete). */
  #apply(seq: number, uuid: Buffer, key: string | undefined, value: unknown, reason: DeleteReason | undefined, fromResync: boolean): void {
    // Our own write coming back is its acknowledgement (the only one a plain CHP server gives).
    this.#writes.onEcho(uuid, seq);
    if (key === undefined) return;
    const before = this.#map.get(key);
    if (value === undefined) {
      if (!before) return;
      this.#map.delete(key);
      this.#stats.updates++;
      if (this.#watchers.observed) {
        this.#watchers.emit({ key, operation: 'delete', value: undefined, previous: before.value, version: seq, isUpdate: true, reason: reason ?? 'deleted', fromResync });
      }
      return;
    }
    this.#stats.updates++;
    this.#map.set(key, { value, version: seq });
    if (this.#watchers.observed) this.#watchers.emit({ key, operation: 'put', value, previous: before?.value, version: seq, isUpdate: true, fromResync });
  }

  /** Runs the sync machine's timer work, then re-arms for its next wake-up. */
  #armWake(): void {
    if (this.#life.closing) return;
    const at = this.#sync.nextWake();
    if (at >= this.#wakeAt) return;
    clearTimeout(this.#wake);
    this.#wakeAt = at;
    if (at === Infinity) return;
    this.#wake = setTimeout(() => {
      this.#wakeAt = Infinity;
      this.#wake = undefined;
      this.#sync.tick(Date.now());
      this.#armWake();
    }, Math.min(Math.max(0, at - Date.now()), MAX_DURATION_MS));
  }

  // ---- what the sockets deliver --------------------------------------------------------------

  #onPublished(frames: Buffer[]): void {
    const d = decodeMessage(frames, Number.MAX_SAFE_INTEGER);
    const receipts = this.#receipts;
    if (receipts !== undefined && d.ok) receipts.observe(d.message.key, d.message.uuid, d.message.body, d.message.properties, d.message.sequence);
    this.#sync.published(Date.now(), d.ok ? d.message : undefined);
    receipts?.flush((k) => this.#map.get(k)?.version);
    this.#armWake();
  }

  #onCollector(server: number, subscribed: boolean): void {
    this.#collectorReady[server] = subscribed;
    if (subscribed) this.#writes.resendAll();
    else this.#writes.collectorLost(server);
  }

  #onReply(attempt: number, frames: Buffer[]): void {
    const command = frames[0]?.toString('latin1');
    if (command === Command.AckBatch) return this.#writes.onAckBatch(frames);
    if (command === Command.WriteAck) return this.#writes.onAck(frames);
    if (command === Command.PeerPresent) return this.#onPresent(frames);
    if (command === Command.Passive) {
      // Sequence 0 and `role=passive`: never a snapshot entry that happens to bear that key.
      if (frames.length !== 5 || frames[1]?.length !== 8 || readSequence(frames[1]) !== 0 || !frames[3]?.includes('role=passive\n')) return void this.#stats.malformed++;
      this.#sync.passive(Date.now(), attempt);
      return this.#armWake();
    }
    if (command === Command.History || command === Command.Stats) {
      const uuid = frames[2];
      if (frames.length !== 5 || uuid?.length !== 16) return void this.#stats.malformed++;
      return this.#control.get(uuid.toString('latin1'))?.answer(frames);
    }
    // Any other control message (KVPRESENT…) is never a snapshot entry.
    if (command !== Command.SnapshotBatch && command !== Command.SnapshotEnd && COMMANDS.has(command ?? '')) return;
    const sync = this.#sync;
    const now = Date.now();
    sync.replied(now, attempt);
    if (command === Command.SnapshotBatch && frames.length === 5) {
      try {
        // A delta's entries (deletes among them) need their uuid and delete reason too.
        const detail = sync.wantsDeltaDetail(attempt);
        const policy = this.#policy;
        const receipts = this.#receipts;
        scanBatch(frames[4]!, (b, s) => {
          if (receipts !== undefined) {
            const raw = b.subarray(s.propertiesStart, s.propertiesStart + s.propertiesLength);
            if (ReceiptSender.mayAsk(raw)) {
              try {
                const key = b.subarray(s.keyStart, s.keyStart + s.keyLength);
                receipts.observe(key, b.subarray(s.uuidStart, s.uuidStart + s.uuidLength), b.subarray(s.bodyStart, s.bodyStart + s.bodyLength), new PropertyView(raw), s.sequence);
              } catch {
                // Unreadable properties ask for nothing.
              }
            }
          }
          if (policy !== undefined) {
            const key = b.subarray(s.keyStart, s.keyStart + s.keyLength);
            const refused = this.#verifyRaw(
              key,
              b.subarray(s.uuidStart, s.uuidStart + s.uuidLength),
              b.subarray(s.bodyStart, s.bodyStart + s.bodyLength),
              b.subarray(s.propertiesStart, s.propertiesStart + s.propertiesLength),
            );
            if (refused !== undefined) return sync.snapshotRefused(attempt, key, s.sequence, refused);
          }
          sync.snapshotEntry(
            attempt,
            b.subarray(s.keyStart, s.keyStart + s.keyLength),
            s.sequence,
            this.#isMsgpack(b, s.propertiesStart, s.propertiesLength),
            b.subarray(s.bodyStart, s.bodyStart + s.bodyLength),
            detail ? b.subarray(s.uuidStart, s.uuidStart + s.uuidLength) : undefined,
            detail && s.bodyLength === 0 ? deleteReason(b.subarray(s.propertiesStart, s.propertiesStart + s.propertiesLength)) : undefined,
          );
        });
      } catch (err) {
        if (!(err instanceof BatchError)) throw err;
        sync.snapshotMalformed(attempt);
      }
    } else {
      const d = decodeMessage(frames, Number.MAX_SAFE_INTEGER);
      if (!d.ok) {
        // A well-framed entry whose key or properties are bad is skipped, not fatal to the snapshot.
        const seq = frames.length === 5 && frames[1]!.length === 8 ? readSequence(frames[1]!) : -1;
        if (command !== Command.SnapshotEnd && seq >= 0 && SKIPPABLE.has(d.reason)) sync.snapshotSkipped(attempt, frames[0]!, seq, d.reason);
        else sync.snapshotMalformed(attempt);
      } else {
        const m = d.message;
        if (command === Command.SnapshotEnd) sync.snapshotEnd(now, attempt, m.sequence, m.properties);
        else {
          // A plain server's snapshot may hold a write of ours whose fate was in doubt.
          if (this.#writes.unechoed) this.#writes.seenInSnapshot(m.uuid, m.sequence);
          this.#receipts?.observe(m.key, m.uuid, m.body, m.properties, m.sequence);
          const refused = this.#policy === undefined ? undefined : this.#verify(m.key, m.uuid, m.body, m.properties);
          if (refused !== undefined) sync.snapshotRefused(attempt, m.key, m.sequence, refused);
          else sync.snapshotEntry(attempt, m.key, m.sequence, this.#isMsgpack(m.rawProperties, 0, m.rawProperties.length), m.body);
        }
      }
    }
    this.#receipts?.flush((k) => this.#map.get(k)?.version);
    this.#armWake();
  }

  /** End-to-end verification of one update (a peer given a policy): why it is refused, or `undefined`. */
  #verify(key: Buffer, uuid: Buffer, body: Buffer, props: PropertyReader): string | undefined {
    return checkUpdate(this.#policy!, key, uuid, body, props, this.#ahead)?.message;
  }

  /** {@link #verify} for an entry whose properties are still raw bytes (unreadable: refused). */
  #verifyRaw(key: Buffer, uuid: Buffer, body: Buffer, rawProps: Buffer): string | undefined {
    let props: PropertyView;
    try {
      props = new PropertyView(rawProps);
    } catch {
      return `entry for ${JSON.stringify(key.toString('utf8'))} has unreadable properties, so no signature to check`;
    }
    return this.#verify(key, uuid, body, props);
  }

  #lastProps: { raw: Buffer; msgpack: BodyEncoding } = { raw: EMPTY_FRAME, msgpack: false };

  /**
   * Whether properties `buf[start, start + length)` mark a msgpack body; snapshots repeat the
   * same few frames, so the last answer is remembered.
   */
  #isMsgpack(buf: Buffer, start: number, length: number): BodyEncoding {
    if (length === 0) return false;
    const last = this.#lastProps;
    if (length === last.raw.length && buf.compare(last.raw, 0, length, start, start + length) === 0) return last.msgpack;
    const raw = Buffer.from(buf.subarray(start, start + length));
    let msgpack: BodyEncoding = false;
    try {
      msgpack = bodyEncoding(new PropertyView(raw).get(Prop.Encoding));
    } catch {
      // Unreadable properties: the body is given as raw bytes.
    }
    this.#lastProps = { raw, msgpack };
    return msgpack;
  }

  // ---- health --------------------------------------------------------------------------------

  #onPresent(frames: Buffer[]): void {
    const outcome = this.#registration.onPresent(frames);
    if (outcome.kind === 'malformed') this.#stats.malformed++;
    else if (outcome.kind === 'lost') this.emit('ownershipLost', outcome.info);
  }

  /** Tells the forwarder this peer is alive (clonekv forwarders only; plain servers have no presence). */
  #sendBeat(): void {
    if (this.#sync.kind === 'clonekv' && this.#link.hasDealer && this.#s.presence) this.#link.beat(Command.PeerBeat, this.#sync.applied);
  }

  /** Whether the key is under this peer's subtree. */
  #inSubtree(key: Buffer): boolean {
    const p = this.#subtreeBytes;
    return p.length === 0 || (key.length >= p.length && key.compare(p, 0, p.length, 0, p.length) === 0);
  }

  /** A sealed body's value, or a `SealedValue` (counted when a secret was there but it did not open). */
  #unseal(key: string, body: Buffer): unknown {
    const { value, failed } = this.#s.sealer.open(key, body);
    if (failed) this.#stats.sealedUnopened++;
    return value;
  }

  #report(code: ErrorCode, what: string, cause?: unknown): void {
    if (this.listenerCount('error') === 0) return;
    const detail = cause instanceof Error ? `: ${cause.message}` : '';
    this.emit('error', new ClonekvError(code, `${what}${detail}`, cause === undefined ? undefined : { cause }));
  }
}

const STATS = Buffer.from(Command.Stats);
const HISTORY = Buffer.from(Command.History);

/** One update of a KVHISTORY answer. */
interface HistoryRecord {
  readonly key: string;
  readonly version: number;
  readonly body: Buffer;
  readonly msgpack: BodyEncoding;
  readonly reason: DeleteReason;
}

/** Reads a KVHISTORY answer; throws `CLONEKV_MALFORMED` for one that does not read. */
function readHistoryAnswer(frames: Buffer[]): { records: HistoryRecord[]; status: string; oldest: number } {
  try {
    const props = new PropertyView(frames[3]!);
    const records: HistoryRecord[] = [];
    scanBatch(frames[4]!, (b, e) => {
      const raw = b.subarray(e.propertiesStart, e.propertiesStart + e.propertiesLength);
      records.push({
        key: b.toString('utf8', e.keyStart, e.keyStart + e.keyLength),
        version: e.sequence,
        body: b.subarray(e.bodyStart, e.bodyStart + e.bodyLength),
        msgpack: e.propertiesLength > 0 && bodyEncoding(new PropertyView(raw).get(Prop.Encoding)),
        reason: e.bodyLength === 0 ? deleteReason(raw) : 'deleted',
      });
    });
    const oldest = Number(props.get(Prop.Oldest) ?? '0');
    return { records, status: props.get(Prop.Status) ?? 'ok', oldest: Number.isSafeInteger(oldest) ? oldest : 0 };
  } catch (err) {
    throw new ClonekvError(ErrorCode.Malformed, 'unreadable history answer from the forwarder', { cause: err });
  }
}

/** A history record as returned to the caller; a value marked msgpack that does not decode is given as raw bytes. */
function historyEntry<V>(r: HistoryRecord, unseal: (key: string, body: Buffer) => unknown): HistoryEntry<V> {
  if (r.body.length === 0) return { key: r.key, operation: 'delete', value: undefined, version: r.version, reason: r.reason };
  if (r.msgpack === 'sealed') return { key: r.key, operation: 'put', value: unseal(r.key, r.body) as V, version: r.version };
  let value: unknown;
  try {
    value = decodeBody(r.body, r.msgpack);
  } catch {
    value = decodeBody(r.body, false);
  }
  return { key: r.key, operation: 'put', value: value as V, version: r.version };
}

/**
 * The prefix whose updates a watch of `prefix` on a peer holding `subtree` sees: the longer of
 * the two when one contains the other, `undefined` when they are disjoint (nothing to replay).
 */
function replayScope(prefix: string, subtree: string): string | undefined {
  if (prefix.startsWith(subtree)) return prefix;
  if (subtree.startsWith(prefix)) return subtree;
  return undefined;
}

/** Why a delete in a delta happened, from its properties (`reason`); unreadable: `deleted`. */
function deleteReason(props: Buffer): DeleteReason {
  try {
    const why = new PropertyView(props).get(Prop.Reason);
    return why === 'expired' || why === 'purged' ? why : 'deleted';
  } catch {
    return 'deleted';
  }
}
const COMMANDS: ReadonlySet<string> = new Set(Object.values(Command));
/** Why a snapshot entry may be bad without the snapshot being incomplete. */
const SKIPPABLE: ReadonlySet<MalformedReason> = new Set<MalformedReason>(['empty-key', 'key-too-long', 'uuid-size', 'properties']);

/** Starts the signature check of one published update or snapshot entry (five frames). */
function checkAheadMessage(frames: Buffer[], add: AddCheck): void {
  const d = decodeMessage(frames, Number.MAX_SAFE_INTEGER);
  if (d.ok) add(d.message.key, d.message.uuid, d.message.body, d.message.properties);
}

/** Starts the signature checks of a snapshot or delta reply (a batch, or one entry). */
function checkAheadReply(frames: Buffer[], add: AddCheck): void {
  const command = frames[0]?.toString('latin1');
  if (command === Command.SnapshotBatch && frames.length === 5) {
    scanBatch(frames[4]!, (b, s) => {
      let props: PropertyView;
      try {
        props = new PropertyView(b.subarray(s.propertiesStart, s.propertiesStart + s.propertiesLength));
      } catch {
        return; // refused at the decision, which says why
      }
      // Not kept: the check copies what it needs (the signed payload) at once.
      add(b.subarray(s.keyStart, s.keyStart + s.keyLength), b.subarray(s.uuidStart, s.uuidStart + s.uuidLength), b.subarray(s.bodyStart, s.bodyStart + s.bodyLength), props);
    });
  } else if (command !== undefined && !COMMANDS.has(command) && frames.length === 5) {
    checkAheadMessage(frames, add);
  }
}
