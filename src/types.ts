/**
 * Public shapes of clonekv: options, entries, watch events and counters.
 *
 * @module
 */
import type { Identity } from './security/identity.ts';
import type { Policy } from './security/policy.ts';

/** Why a key disappeared. */
export type DeleteReason = 'deleted' | 'expired' | 'purged';

/** A key with its value and version, as held in a peer's local snapshot. */
export interface Entry<V = unknown> {
  /** The key (UTF-8). */
  readonly key: string;
  /**
   * The value. Values written by clonekv are decoded with msgpackr; a body written by a plain
   * CHP peer (no encoding mark) is given as a `Uint8Array` of its raw bytes.
   */
  readonly value: V;
  /** The forwarder sequence number of the key's last update. */
  readonly version: number;
}

/** One item of a {@link Peer.watch} iterator. */
export interface WatchEntry<V = unknown> {
  /** The key. */
  readonly key: string;
  /** `put` for a new or changed value, `delete` when the key is gone. */
  readonly operation: 'put' | 'delete';
  /** The new value; `undefined` for a delete. */
  readonly value: V | undefined;
  /** The value before this change; `undefined` if the key was absent (or while replaying). */
  readonly previous: V | undefined;
  /** Sequence number of this change (for a delete: the sequence of the delete, or of the resync). */
  readonly version: number;
  /** `false` while the current entries are replayed at the start of a watch, `true` afterwards. */
  readonly isUpdate: boolean;
  /** For a delete: why the key is gone. */
  readonly reason?: DeleteReason;
  /** `true` when the change was found by a resync (the map was replaced from a new snapshot). */
  readonly fromResync: boolean;
}

/** Options of {@link Peer.watch}. */
export interface WatchOptions {
  /** Stop the watch when this signal aborts (the iterator then ends without error). */
  signal?: AbortSignal;
  /** Skip the replay of current entries; yield only changes. Default `false`. */
  updatesOnly?: boolean;
  /**
   * Most changes buffered for a consumer that is not reading; past it the iterator throws a
   * `CLONEKV_WATCH_OVERFLOW` error rather than grow without bound. Default 100,000.
   */
  maxPending?: number;
  /**
   * Replay the retained updates after this sequence (instead of the current entries), oldest
   * first, then go live: every change after `since` is yielded once, none is missed at the
   * seam. Needs a clonekv forwarder (`CLONEKV_UNSUPPORTED` otherwise); if the forwarder no
   * longer holds every update after `since`, the iterator throws `CLONEKV_COMPACTED` (a
   * {@link CompactedError} with `oldest`). Replayed entries have `isUpdate: true`; their
   * `previous` is known only from earlier updates of the same replay.
   */
  since?: number;
}

/** Options of {@link Peer.history}. */
export interface HistoryOptions {
  /** Most versions returned, newest first. Default 100, at most 10,000. */
  limit?: number;
  /** How long to wait for the forwarder's answer, ms. Default the peer's `writeTimeout`. */
  timeout?: number;
}

/** One retained version of a key ({@link Peer.history}). */
export interface HistoryEntry<V = unknown> {
  readonly key: string;
  /** `put`, or `delete` (with `reason`). */
  readonly operation: 'put' | 'delete';
  /** The value written; `undefined` for a delete. */
  readonly value: V | undefined;
  /** The sequence of this update. */
  readonly version: number;
  /** For a delete: why. */
  readonly reason?: DeleteReason;
}

/** Options of {@link Peer.set}. */
export interface SetOptions {
  /**
   * Time to live in seconds (positive, at most one year); the forwarder deletes the key (reason
   * `expired`) when it runs out.
   */
  ttl?: number;
  /** Write only if the key's current version equals this (0 = only if the key is absent). */
  ifVersion?: number;
  /**
   * Override the peer's `writeTimeout` for this write: a whole number of milliseconds from 1 to
   * 2^31−1. It bounds the wait for the forwarder's acknowledgement, not what follows it.
   */
  timeout?: number;
  /**
   * Owned by this peer: the forwarder deletes the key (reason `purged`) when the peer closes or
   * stops heartbeating (after the forwarder's `peerTimeout`). A later plain write by anyone
   * ends the ownership. Needs a clonekv forwarder.
   */
  ephemeral?: boolean;
  /**
   * Signed receipts (README, "Signed receipts"): resolve only once each identity named here (by
   * its `name` in this peer's policy) has applied this exact write and sent back a receipt it
   * signed. Needs `identity` and `policy`. `timeout` then bounds the whole wait (default
   * `writeTimeout`); a recipient missing at its end rejects with `CLONEKV_UNCONFIRMED` naming it.
   */
  confirmBy?: readonly string[];
}

/** Options of {@link Peer.delete}. */
export interface DeleteOptions {
  /** Delete only if the key's current version equals this. */
  ifVersion?: number;
  /** Override the peer's `writeTimeout` for this write, in milliseconds. */
  timeout?: number;
}

/** The three socket endpoints of a forwarder. */
export interface Endpoints {
  /** ROUTER: snapshot requests, and acknowledged writes from clonekv peers (port P). */
  readonly snapshot: string;
  /** PUB/XPUB: updates and heartbeats (port P+1). */
  readonly publisher: string;
  /** SUB: writes from plain CHP peers (port P+2). */
  readonly collector: string;
}

/** High-water marks (messages queued per connection) of one socket. */
export interface HighWaterMarks {
  /** Outgoing messages queued per connection before sending blocks or drops. */
  send?: number;
  /** Incoming messages queued per connection before the sender is pushed back or drops. */
  receive?: number;
}

/** How a durable forwarder acknowledges: `sync` once a write is on disk, `async` before (see {@link ForwarderOptions.durability}). */
export type Durability = 'sync' | 'async';

/** Options of {@link Forwarder}. All are optional. */
export interface ForwarderOptions {
  /** Address to bind, default `127.0.0.1`. */
  bind?: string;
  /**
   * Makes this forwarder a member of a primary/backup pair (absent: standalone). `primary` and
   * `backup` are only start-up preferences: at start the primary becomes active unless its
   * partner already is; the backup follows the active and takes over only when it has been
   * silent for `partnerTimeout` and a peer asks for a snapshot. Requires `partner`.
   */
  role?: 'primary' | 'backup';
  /** The partner's state endpoint, `tcp://HOST:PORT` (its `statePort`). Required with `role`. */
  partner?: string;
  /**
   * Port of the state channel this member binds (its partner connects there). Default 5003 for
   * the primary, 5004 for the backup; 0 picks a free one (read `stateEndpoint`).
   */
  statePort?: number;
  /** Partner silence after which it is taken as gone, ms. Default 2000. */
  partnerTimeout?: number;
  /**
   * CURVE on all three sockets (README, "Security"): this server's z85 keypair, or the path of
   * a key file written by `clonekv keygen --curve`. Peers then need `curve.serverKey` (the
   * public key); plain (non-CURVE) clients cannot connect. Both members of a pair use the same
   * key file: their state channel is then CURVE too, admitting only that key.
   */
  curve?: { publicKey: string; secretKey: string } | string;
  /**
   * With `curve`: the z85 public keys of the clients allowed to connect (or the path of a file
   * of them, one a line). A client with another key is refused by a ZAP handler: it cannot read
   * or write (counted in `stats().curve.refused`). Without it, any client that knows the
   * server's public key may connect.
   */
  curveAllow?: readonly string[] | string;
  /** Base port P: ROUTER on P, PUB on P+1, SUB on P+2. Default 5556; 0 picks a free triple. */
  port?: number;
  /** Heartbeat (HUGZ) interval in milliseconds. Default 1000. */
  heartbeatInterval?: number;
  /** Largest accepted value body in bytes. Default 1 MiB. */
  maxValueBytes?: number;
  /**
   * How long the outcome of a write is remembered by its uuid, in ms, so that a retry (same
   * uuid) is answered with it instead of being applied again. Keep it at least as long as the
   * longest `writeTimeout` your peers use. Default 60,000; at most 3,600,000.
   */
  dedupTtl?: number;
  /**
   * Most write outcomes remembered at once: a memory cap (about 40 bytes each are reserved up
   * front, and the uuids take about as much again once held). When it forces out an outcome
   * younger than `dedupTtl`, `dedupEvictions` counts it: a retry of that write would be applied
   * twice. Default 500,000 (about 6 s of writes at 80,000 a second, more than the peers'
   * default 5 s write timeout).
   */
  dedupMax?: number;
  /** Keys per snapshot batch message sent to clonekv peers. Default 512. */
  snapshotBatch?: number;
  /** High-water marks of the publisher socket (per subscriber). Default send 10,000, receive 1,000. */
  publisherHwm?: HighWaterMarks;
  /** High-water marks of the snapshot ROUTER socket. Default send 1,000, receive 10,000. */
  snapshotHwm?: HighWaterMarks;
  /** High-water marks of the collector SUB socket. Default receive 10,000. */
  collectorHwm?: HighWaterMarks;
  /**
   * A clonekv peer silent (no heartbeat) for this long, in ms, is purged: its presence key and
   * its ephemeral keys are deleted. Default 3000 (3 missed beats at the peers' default 1 s).
   */
  peerTimeout?: number;
  /** How long to wait for a clonekv peer's subscription before answering its snapshot request, ms. Default 2000. */
  joinWait?: number;
  /**
   * Refuse a write whose body is marked `enc=msgpack` but is not exactly one valid msgpack
   * value (see the README's Forwarder section): a clonekv writer gets `CLONEKV_REJECTED`, a
   * plain CHP write is dropped; both are counted in `malformedBy['value-encoding']`. Default `true`.
   */
  checkValues?: boolean;
  /**
   * A write policy (a YAML/JSON file path, or a `Policy`): which identities may write which key
   * prefixes. With one, every write must be signed by an identity allowed to write its key, with
   * a signed timestamp within the replay window (see the README's Security section); any other
   * write is refused with `CLONEKV_UNAUTHORIZED`, counted in `stats().unauthorized`, and never
   * published. Reload with `fwd.reloadPolicy()` (`clonekv serve --policy FILE`: SIGHUP).
   */
  policy?: string | Policy;
  /**
   * Most updates kept in the retained history, from which peers catch up by difference (a
   * delta instead of a full snapshot), `watch({ since })` replays and `history()` reads; older
   * ones are compacted away (a durable forwarder keeps the same on disk). Default 1,000,000 (over ten seconds of writes at full speed, hours
   * at a configuration cache's pace). At least 1.
   */
  historyMax?: number;
  /**
   * Most bytes the retained history holds (keys, uuids, properties and values, plus 48
   * bytes per update); the oldest updates go first past it. Default 256 MiB, at least 1,024.
   */
  historyBytes?: number;
  /**
   * Directory where the forwarder keeps its map, sequence, epoch, recent write outcomes, the
   * owners of ephemeral keys and the retained history (created if missing). A restarted
   * forwarder recovers all of it and keeps its epoch, so peers resume instead of resyncing.
   * Default: none, the forwarder keeps everything in memory and starts empty.
   */
  dataDir?: string;
  /**
   * With `dataDir`: `sync` (default) acknowledges and publishes a write only once it is on disk
   * (writes of one event-loop turn are committed together); `async` acknowledges and publishes
   * first and writes within milliseconds: a crash may lose the last few milliseconds of writes
   * (at most 10,000 updates), and the restarted forwarder then takes a new epoch (peers resync).
   */
  durability?: Durability;
}

/** What a durable forwarder recovered from its data directory at start ({@link Forwarder.recovery}). */
export interface ForwarderRecovery {
  /** Keys loaded. */
  keys: number;
  /** The sequence recovered (the next write takes the one after). */
  sequence: number;
  /** Whether the previous run's epoch was kept (peers resume rather than resync). */
  epochKept: boolean;
  /** Whether the directory was new (nothing recovered). */
  newDirectory: boolean;
  /** Whether the previous run shut down cleanly. */
  previousRunClean: boolean;
  /** Ephemeral keys whose owner was recovered (purged unless the owner beats within `peerTimeout`). */
  ownedKeys: number;
  /** Write outcomes recovered into the de-duplication window. */
  writeOutcomes: number;
  /** The oldest sequence of the retained history on disk. */
  historyFrom: number;
  /** What was dropped or rebuilt to repair damage (empty if nothing). */
  repairs: string[];
  /** Time the recovery took, ms. */
  durationMs: number;
}

/** Options of {@link Peer}. All are optional. */
export interface PeerOptions {
  /**
   * The forwarder: `tcp://HOST:P` (P, P+1 and P+2 are used) or explicit endpoints; or several
   * servers (the members of a failover pair), as an array of either, or as one string of base
   * endpoints separated by commas (`tcp://a:5556,tcp://b:5566`). With several, the peer uses
   * one at a time, starting with the first, and moves to the next when the one in use goes
   * silent, drops the connection, or leaves a snapshot request unanswered (see the README,
   * "Several servers (failover)"). Each server is given once. Default `tcp://127.0.0.1:5556`.
   */
  server?: string | Endpoints | ReadonlyArray<string | Endpoints>;
  /** Only keys starting with this prefix are held and watched. Default `''` (everything). */
  subtree?: string;
  /**
   * CURVE towards a forwarder started with `curve`: its z85 public key (`serverKey`) and this
   * peer's keypair (generated for this peer if not given; give one the forwarder's allow-list
   * holds). Every socket of the peer uses it.
   */
  curve?: { serverKey: string; publicKey?: string; secretKey?: string };
  /**
   * Sealed subtrees (README, "Sealed subtrees"): values this peer writes under `prefix` are
   * encrypted with `secret` (32 bytes, or their base64) and read back with it; the forwarder
   * holds only ciphertext. A sealed value this peer cannot open reads as a `SealedValue`.
   */
  sealed?: ReadonlyArray<{ prefix: string; secret: string | Uint8Array }>;
  /** A name for this peer, shown in logs and presence. Default `peer`. */
  name?: string;
  /**
   * With an `identity`: answer writes that ask this identity for a receipt (`confirmBy` naming
   * it) with a signed receipt once the write is in this peer's map. Default `true`.
   */
  receipts?: boolean;
  /**
   * Time without any message on the subscriber (updates, heartbeats) before the peer resyncs,
   * ms. Replies on the request socket (acknowledgements) do not count. Default 3000.
   */
  silenceTimeout?: number;
  /** How long a write may stay unsequenced before it rejects with `CLONEKV_TIMEOUT`, ms. Default 5000. */
  writeTimeout?: number;
  /** Interval between retries of a pending write (same uuid), ms. Default 1000. */
  writeRetryInterval?: number;
  /**
   * First delay before a snapshot is asked for again, ms: after an attempt with no answer, after
   * a refused snapshot, and before a resync that follows another one. It doubles up to
   * `maxRetryDelay`, and starts afresh once a sync has stayed live for `maxRetryDelay`. Default 1000.
   */
  snapshotRetryDelay?: number;
  /** Upper bound of the snapshot retry delay, ms. Default 10,000. */
  maxRetryDelay?: number;
  /** Largest value body accepted locally before sending, bytes. Default 1 MiB. */
  maxValueBytes?: number;
  /**
   * High-water marks of the update subscriber. Default receive 10,000. Only `receive` applies:
   * what a SUB sends is its subscriptions, which are never dropped (a dropped one would leave the
   * forwarder's view of the subscriptions wrong), so `send` is accepted and ignored.
   */
  subscriberHwm?: HighWaterMarks;
  /** High-water marks of the DEALER to the snapshot socket (requests, writes). Default 10,000 each way. */
  requestHwm?: HighWaterMarks;
  /** Send high-water mark of the PUB used only with plain CHP servers. Default 10,000. */
  publisherHwm?: HighWaterMarks;
  /** Live updates buffered while a snapshot is loading before the sync restarts. Default 1,000,000. */
  maxBufferedUpdates?: number;
  /**
   * Most entries a snapshot being loaded may hold. Past it the attempt is abandoned (its memory
   * given back), counted in `stats().snapshotAborted`, reported by an `error` event, and retried
   * after a backoff. Default 10,000,000.
   */
  maxSnapshotEntries?: number;
  /**
   * Most bytes (keys and bodies) a snapshot being loaded may hold, as `maxSnapshotEntries`.
   * Default 1 GiB; at most 2^40.
   */
  maxSnapshotBytes?: number;
  /** Interval of this peer's heartbeats to the forwarder (presence, ownership), ms. Default 1000. */
  heartbeatInterval?: number;
  /**
   * Announce this peer in the forwarder's presence table (`$peers/<id>`). Default `true`.
   * Short-lived tools turn it off; a peer that does not announce itself cannot own ephemeral keys.
   */
  presence?: boolean;
  /**
   * Sign every write with this Ed25519 identity (an {@link Identity}, or the path of a key file
   * written by `clonekv keygen`): the signature covers the key, the value, the uuid, the ttl and
   * owner properties and a timestamp, and travels in properties (`signer`, `sig`, `ts`).
   */
  identity?: Identity | string;
  /**
   * Verify end to end with this write policy (a YAML/JSON file path, or a `Policy`): a live
   * update, snapshot entry or delta entry that is unsigned, badly signed, or signed by an
   * identity the policy does not allow for its key is not applied, even if the forwarder
   * publishes it (counted in `stats().unauthorized`, reported as a `CLONEKV_UNAUTHORIZED` error
   * event). The forwarder's own entries (`$peers/`, and unsigned deletes marked expired or
   * purged) are exempt: see the README's threat model.
   */
  policy?: string | Policy;
}

/** Where a peer stands. */
export type PeerStatus =
  /** Waiting for the first complete snapshot. */
  | 'syncing'
  /** Up to date: snapshot applied, live updates flowing, forwarder heard from. */
  | 'live'
  /** Serving the last known state while it resyncs (forwarder silent, gap, new epoch). */
  | 'stale'
  /** Closed. */
  | 'closed';

/** Why a peer resynced. */
export type ResyncReason =
  /** Nothing from the server's publisher for `silenceTimeout`. */
  | 'silence'
  /** The forwarder restarted (a new epoch). */
  | 'epoch'
  /** A sequence went backwards on the subscriber stream (the server restarted). */
  | 'sequence'
  /** An update was missed (or the subscription was not proven live when the snapshot was taken). */
  | 'gap'
  /** More live updates arrived during a snapshot than `maxBufferedUpdates`. */
  | 'overflow'
  /** A snapshot did not add up (count, digest, malformed message) and was refused. */
  | 'incomplete'
  /** A snapshot outgrew `maxSnapshotEntries` or `maxSnapshotBytes` and was abandoned. */
  | 'limit';

/** Why a peer left a server for another (see the `failover` event). */
export type FailoverReason =
  /** Nothing on the subscriber for `silenceTimeout` while live. */
  | 'silence'
  /** The server asked is the passive member of a pair whose partner is active: go there. */
  | 'passive'
  /** The subscriber connection dropped (the server died or was cut off). */
  | 'disconnected'
  /** A snapshot request got no answer within the attempt timeout. */
  | 'no-answer'
  /**
   * Nothing listens at the server's address (its connections are refused) and the attempt there
   * went unanswered for `snapshotRetryDelay`: no need to wait `silenceTimeout` for a dead server.
   */
  | 'refused';

/** What a peer's `failover` event tells: it left server `from` for server `to` (base endpoints). */
export interface FailoverInfo {
  readonly from: string;
  readonly to: string;
  readonly reason: FailoverReason;
}

/**
 * What a peer's `ownershipLost` event tells: the forwarder purged this peer (it heard no beat
 * for longer than its `peerTimeout`: a paused process, a cut network) and later registered it
 * again. Every key the peer owned (`ephemeral: true`) was deleted with reason `purged`.
 */
export interface OwnershipLostInfo {
  /** When the forwarder registered the peer again (ms since 1970, the forwarder's clock). */
  readonly since: number;
  /** When it had registered the peer before (same clock). */
  readonly previousSince: number;
}

/** Counters of a peer. */
export interface PeerStats {
  /** Live updates applied. */
  updates: number;
  /** Full snapshots applied (the first join plus every resync not answered by a delta). */
  snapshots: number;
  /**
   * Resyncs answered by a delta: a clonekv forwarder that still held every update after this
   * peer's sequence, in the same epoch, sent only those (see the README's Guarantees).
   */
  deltaSyncs: number;
  /** Snapshot requests sent, retries included (a peer retries with backoff for as long as it is open). */
  snapshotRequests: number;
  /** Resyncs started, by any reason. */
  resyncs: number;
  /** Gaps detected (missed updates). */
  gaps: number;
  /** Malformed messages dropped (an incomplete snapshot counts once). */
  malformed: number;
  /**
   * Values marked `enc=msgpack` that did not decode (in snapshots and live updates): each is
   * held as its raw bytes (a `Uint8Array`) and reported by an `error` event.
   */
  undecodable: number;
  /**
   * Sealed values under a subtree this peer holds the secret of that did not open (a wrong
   * secret, or a body altered on the way): each is held as a `SealedValue`.
   */
  sealedUnopened: number;
  /** Snapshots abandoned because they outgrew `maxSnapshotEntries` or `maxSnapshotBytes`. */
  snapshotAborted: number;
  /** Entries held by the snapshot being loaded now (0 when none): never above `maxSnapshotEntries`. */
  snapshotEntries: number;
  /** Updates dropped as duplicates or older than the snapshot. */
  duplicates: number;
  /** Writes sent (not counting retries). */
  writes: number;
  /** Write retries sent. */
  writeRetries: number;
  /** Times the peer left the server in use for another (only with several servers). */
  failovers: number;
  /**
   * Updates not applied because they failed end-to-end verification (a peer given a `policy`):
   * unsigned, a bad signature, or a signer the policy does not allow for that key; live, in a
   * snapshot or in a delta. Each is also reported by an `error` event (`CLONEKV_UNAUTHORIZED`).
   */
  unauthorized: number;
  /** The last applied sequence number. */
  sequence: number;
}

/** Counters of a forwarder. */
export interface ForwarderStats {
  /** The current (last assigned) sequence number. */
  sequence: number;
  /** Keys held. */
  keys: number;
  /** Writes sequenced and published. */
  published: number;
  /** Writes recognised as retries and acknowledged again without republishing. */
  duplicates: number;
  /** Conditional writes that lost. */
  conflicts: number;
  /** Writes refused (value too large, invalid). */
  rejected: number;
  /** Malformed messages dropped, all reasons. */
  malformed: number;
  /** Keys expired by ttl. */
  expired: number;
  /** Ephemeral keys deleted because their owner left or stopped beating. */
  purged: number;
  /** Live clonekv peers in the presence table. */
  peers: number;
  /** Full snapshots served. */
  snapshots: number;
  /** Snapshot requests answered by a delta (only the updates after the requester's sequence). */
  deltas: number;
  /** The retained history: every update after this sequence is held (see `historyMax`). */
  historyOldest: number;
  /** Updates held in the retained history. */
  historySize: number;
  /** Replies dropped because a peer was gone or hopelessly behind. */
  dropped: number;
  /** Heartbeats sent. */
  heartbeats: number;
  /** Write outcomes forced out of the de-duplication memory (`dedupMax`) before `dedupTtl` ran out. */
  dedupEvictions: number;
  /** Malformed or refused input, by reason (their sum is `malformed`). */
  malformedBy: MalformedCounts;
  /** Prefixes subscribed on the publisher (each counted once however many subscribers hold it). */
  subscriptions: number;
  /** This forwarder run's id (hex), as announced in HUGZ and KTHXBAI. */
  epoch: string;
  /** Writes and peer beats dropped because this pair member was passive (never applied). */
  passiveDrops: number;
  /** Snapshot requests from clonekv peers that this passive member sent on to its active partner (KVPASSIVE). */
  passiveNotices: number;
  /**
   * Writes refused by the write policy (unsigned, a signer not allowed that key, a bad signature,
   * a replayed or out-of-window timestamp): never published. Also counted in `rejected`.
   */
  unauthorized: number;
  /** A pair member's role, term, partner and replication; `undefined` standalone. */
  pair?: PairStats;
  /** CURVE, when the forwarder has it; `undefined` otherwise. */
  curve?: CurveStats;
}

/** `stats().curve`: the forwarder's CURVE and allow-list. */
export interface CurveStats {
  /** The server's public key (z85): what peers give as `curve.serverKey`. */
  publicKey: string;
  /** Client keys on the allow-list; `null` without one (any client knowing the server key may connect). */
  allowList: number | null;
  /** Connections whose client key the ZAP handler admitted. */
  accepted: number;
  /** Connections refused by the ZAP handler (unknown client key, or not CURVE). */
  refused: number;
  /** Connections to a pair member's state port refused (a client key other than the pair's own). */
  stateRefused: number;
}

/** `stats().pair`: a member of a primary/backup pair. */
export interface PairStats {
  /** The role it was started with (a start-up preference only). */
  configured: 'primary' | 'backup';
  /** What it is now: only the active serves snapshots and applies writes. */
  role: 'active' | 'passive';
  /** The active's term (grows at every takeover). */
  term: number;
  /** The partner's state endpoint; `connected` while it is heard; how long it has been silent. */
  partner: { endpoint: string; connected: boolean; silentMs: number };
  /**
   * The active: `replicating` (writes are acknowledged once the backup has them), `catching-up`
   * (a backup is loading), `absent` (writes are acknowledged without replication). The passive:
   * `following` (live) or `catching-up`. `sequence`: acknowledged by the backup (active) or
   * applied (passive); `lag`: updates behind; `lagMs`: age of the oldest update not yet there.
   */
  replication: { state: 'replicating' | 'catching-up' | 'absent' | 'following'; sequence: number; lag: number; lagMs: number };
  /** State-channel messages refused (malformed, or not from the partner's current run). */
  refused: number;
  /** Catch-ups this member served as the active: by its retained history (`delta`) or by a full copy. */
  syncs: { delta: number; full: number };
}

/**
 * Why one CHP message was refused as it stands (its frames, or a limit); the first reasons of
 * {@link MalformedCounts}.
 */
export type MalformedReason =
  | 'frame-count'
  | 'empty-key'
  | 'key-too-long'
  | 'sequence-size'
  | 'sequence-range'
  | 'uuid-size'
  | 'properties'
  | 'value-too-large'
  | 'reserved-key';

/**
 * Counters of malformed or refused input at the forwarder, by reason:
 * - `frame-count`, `empty-key`, `key-too-long`, `sequence-size`, `sequence-range`, `uuid-size`,
 *   `properties` (a bad property frame, or a bad `ttl`/`if-version`), `value-too-large`: a
 *   message that breaks the wire format or a limit;
 * - `reserved-key`: a write to a protocol command or to `$peers/`;
 * - `value-encoding`: a body marked `enc=msgpack` that is not one valid msgpack value (with
 *   the `checkValues` option);
 * - `owner`: an `owner` property that is not a peer id (1 to 64 lowercase hex digits);
 * - `batch`: an unreadable KVWRITE; `snapshot-request`: an ICANHAZ? that is neither two frames nor
 *   three with valid `since` and `epoch` properties;
 *   `subscription`: an unreadable subscription message.
 */
export type MalformedCounts = Record<
  | MalformedReason
  | 'value-encoding'
  | 'owner'
  | 'batch'
  | 'snapshot-request'
  | 'subscription',
  number
>;

/** A live clonekv peer in the forwarder's presence table ({@link Forwarder.peers}). */
export interface ForwarderPeer {
  /** Stable id of the peer (hex), also the `owner` of its ephemeral keys. */
  readonly id: string;
  /** The name it gives in its beats (`unknown` until its first beat, if first seen in a write). */
  readonly name: string;
  /** The subtree it holds. */
  readonly subtree: string;
  /** The last sequence it said it applied. */
  readonly version: number;
  /** When this registration began, ms since epoch. */
  readonly since: number;
  /** When it was last heard, ms since epoch. */
  readonly lastSeen: number;
  /** Keys it owns (its ephemeral keys and its presence key). */
  readonly owned: number;
}

/**
 * What {@link Peer.serverStats} returns: what `Forwarder.stats()` returns, and the presence
 * table (`Forwarder.peers()`).
 */
export type ServerStats = ForwarderStats & {
  /** The clonekv peers alive. */
  peerList: ForwarderPeer[];
};
