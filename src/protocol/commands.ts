/**
 * Command keys (frame 0 of control messages), the property names clonekv uses, and reserved
 * subscription topics.
 *
 * @module
 */

/** Frame-0 values with a protocol meaning. */
export const Command = {
  /** Snapshot request (two frames: command, subtree). */
  SnapshotRequest: 'ICANHAZ?',
  /** End of a snapshot. */
  SnapshotEnd: 'KTHXBAI',
  /** Heartbeat on the publisher. */
  Heartbeat: 'HUGZ',
  /** clonekv extension: many snapshot entries packed in one body (sent only to clonekv peers). */
  SnapshotBatch: 'KVBATCH',
  /** clonekv extension: the forwarder's answer to a write sent on the snapshot socket. */
  WriteAck: 'KVACK',
  /**
   * clonekv extension: many KVSETs packed in one body (KVBATCH layout), sent by clonekv peers on
   * the snapshot socket: one zeromq message for a burst of writes instead of one each.
   */
  WriteBatch: 'KVWRITE',
  /** clonekv extension: the answers to a KVWRITE, packed the same way (sequence, uuid, status). */
  AckBatch: 'KVACKS',
  /** clonekv extension: a peer's heartbeat to the forwarder (presence). */
  PeerBeat: 'KVBEAT',
  /** clonekv extension: a peer leaving cleanly; its owned keys are deleted at once. */
  PeerBye: 'KVBYE',
  /** clonekv extension: a request for the forwarder's counters, answered with a JSON body. */
  Stats: 'KVSTATS',
  /**
   * clonekv extension: the forwarder's answer to the first beat of a registration (a new peer
   * id, or one purged before): sequence = that of the presence key written at registration,
   * properties `owner` and `since` (ms since epoch). A peer that sees `since` change knows it
   * was purged meanwhile, and with it the ephemeral keys it owned. Sent after any snapshot
   * being served to (or waiting for) that routing id, never in the middle of one.
   */
  PeerPresent: 'KVPRESENT',
  /**
   * clonekv extension: a request for retained history, and its answer (same uuid). Request body:
   * a key (properties `limit`: its versions, newest first) or a prefix (properties `since` and
   * `limit`: the updates after `since` under it, oldest first). Answer: properties `status`
   * (`ok` or `compacted`), `oldest` and `count`; body: the updates, packed as in KVBATCH.
   */
  History: 'KVHISTORY',
  /**
   * clonekv extension: the passive member of a pair answers a clonekv peer's snapshot request
   * with this (sequence 0, properties `role=passive` and `term`) while its partner is active and
   * alive: the peer goes to the other server at once instead of waiting for an answer that only
   * a takeover would bring. Sent only to clonekv peers (their routing ids start with
   * {@link PEER_ID_PREFIX}); a plain client's request is only held.
   */
  Passive: 'KVPASSIVE',
} as const;

/** Keys a clonekv peer may not write: commands, and the forwarder's presence subtree. */
export function isReservedKey(key: string): boolean {
  return (
    key === Command.Heartbeat ||
    key === Command.SnapshotEnd ||
    key === Command.SnapshotRequest ||
    key === Command.SnapshotBatch ||
    key === Command.WriteAck ||
    key === Command.WriteBatch ||
    key === Command.AckBatch ||
    key === Command.PeerBeat ||
    key === Command.PeerBye ||
    key === Command.Stats ||
    key === Command.PeerPresent ||
    key === Command.History ||
    key === Command.Passive ||
    key.startsWith(PRESENCE_PREFIX) ||
    key.startsWith(JOIN_TOPIC_PREFIX)
  );
}

/**
 * The forwarder publishes one key per live clonekv peer under this subtree (value: name, id,
 * subtree, since) and deletes it (reason `purged`) when the peer leaves or stops beating.
 */
export const PRESENCE_PREFIX = '$peers/';

/** Property names clonekv reads or writes. Values never contain `=` or `\n`. */
export const Prop = {
  /** Time to live in seconds (decimal, may have a fraction). RFC 12. */
  Ttl: 'ttl',
  /** Value encoding mark; `msgpack` for values written by clonekv. */
  Encoding: 'enc',
  /** Forwarder run id (hex) in HUGZ and KTHXBAI. */
  Epoch: 'epoch',
  /** clonekv protocol version in HUGZ and KTHXBAI; its presence announces the extensions. */
  Version: 'clonekv',
  /** Number of entries in a snapshot (KTHXBAI) or a batch (KVBATCH). */
  Count: 'count',
  /** Order-independent digest of a snapshot's (key, sequence) pairs, hex (KTHXBAI). */
  Digest: 'digest',
  /** Gap detection on KVPUB: for each subscribed prefix of the key, `length:previous-sequence`. */
  Previous: 'prev',
  /** Gap detection in HUGZ: for each subscribed prefix, `id:last-sequence` (see protocol/gaps.ts for the id). */
  Heads: 'heads',
  /** Conditional write: expected current version (0 = absent). */
  IfVersion: 'if-version',
  /** Why a key was deleted by the forwarder: `expired`. */
  Reason: 'reason',
  /** KVACK outcome: `ok`, `conflict`, `rejected`. */
  Status: 'status',
  /** KVACK for a conflict: the key's current version. */
  Current: 'current',
  /** KVACK for a rejection: a short explanation (no `=` or newline). */
  Detail: 'detail',
  /** KVSET: the stable id of the peer that owns an ephemeral value; KVBEAT/KVBYE: the peer's id. */
  Owner: 'owner',
  /** KVBEAT: the peer's name. */
  Name: 'name',
  /** KVBEAT: the peer's subtree, base64url. */
  Subtree: 'subtree',
  /** KVBEAT: the last sequence the peer applied. */
  Applied: 'applied',
  /** KTHXBAI: `1` when the forwarder saw the peer's subscription before taking the snapshot. */
  Joined: 'joined',
  /**
   * KVPRESENT: when the peer's registration began, ms since epoch (decimal). ICANHAZ?'s third
   * frame and KVHISTORY: the sequence after which updates are wanted.
   */
  Since: 'since',
  /**
   * KTHXBAI: `1` when the forwarder answers a resume request (ICANHAZ?'s third frame) by a delta
   * when it can: a peer sends that request only to a server that announced it.
   */
  Resume: 'resume',
  /** KTHXBAI: `1` when the answer is a delta (the updates after the requested `since`), not a snapshot. */
  Delta: 'delta',
  /** KVHISTORY: most versions wanted (request); the oldest sequence the history holds (answer). */
  Limit: 'limit',
  /** KVHISTORY answer: every update after this sequence is held (the history's `oldest`). */
  Oldest: 'oldest',
  /**
   * HUGZ and KTHXBAI from a member of a primary/backup pair: the active's term (decimal), which
   * grows at every takeover. ICANHAZ?'s third frame: the term the peer last knew (see
   * forwarder/pair/lineage.ts for how it decides between a delta and a snapshot).
   */
  Term: 'term',
  /** KVPASSIVE: `passive`, the role of the member that answers. */
  Role: 'role',
  /** A signed write: the writer's Ed25519 public key, base64url (see security/signature.ts). */
  Signer: 'signer',
  /** A signed write: the Ed25519 signature, base64url. */
  Signature: 'sig',
  /** A signed write: when it was signed, ms since the Unix epoch (covered by the signature). */
  SignedAt: 'ts',
  /**
   * A write that asks for signed receipts: the recipients' public keys (base64url), separated
   * by commas (see security/receipt.ts). Plain CHP peers ignore it.
   */
  Confirm: 'confirm',
} as const;

/** The value of {@link Prop.Encoding} for msgpackr-encoded values. */
export const MSGPACK_ENCODING = 'msgpack';

/**
 * The value of {@link Prop.Encoding} for a sealed value (src/security/sealed.ts): a nonce and a
 * secretbox of the msgpack body. The forwarder stores it as it is (it checks only msgpack ones).
 */
export const SEALED_ENCODING = 'sealed';

/**
 * How a body is to be read, from its {@link Prop.Encoding}: `true` msgpack, `'sealed'` sealed,
 * `false` raw bytes (unmarked, or a mark clonekv does not know).
 */
export type BodyEncoding = boolean | 'sealed';

/** The {@link BodyEncoding} of a body whose `enc` property is `enc`. */
export function bodyEncoding(enc: string | undefined): BodyEncoding {
  return enc === MSGPACK_ENCODING ? true : enc === SEALED_ENCODING ? 'sealed' : false;
}

/** The clonekv protocol version announced in {@link Prop.Version}. */
export const PROTOCOL_VERSION = '1';

/**
 * Routing ids of clonekv peers' snapshot sockets start with these bytes, so the forwarder knows
 * which requesters understand the extensions (batched snapshots, write acknowledgements).
 * Generated zeromq routing ids start with a zero byte and never match.
 */
export const PEER_ID_PREFIX = 'ckv1';

/**
 * A clonekv peer also subscribes to this topic followed by its routing id. The forwarder (which
 * publishes through XPUB) sees that subscription arrive after the peer's other subscriptions on
 * the same connection, so once it has arrived the peer's subtree subscription is live and a
 * snapshot can be taken without racing the live updates. Nothing is ever published on it.
 */
export const JOIN_TOPIC_PREFIX = '\u0000clonekv-join\u0000';

/** Longest key, in bytes (RFC 12). */
export const MAX_KEY_BYTES = 255;
