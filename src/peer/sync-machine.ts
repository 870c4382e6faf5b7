/**
 * The peer's sync decisions, without sockets and without timers: when to ask for a snapshot
 * (and how long to back off first), whether a snapshot is complete, whether a live update is
 * applied, dropped as a duplicate or reveals a gap, when the peer is ready, live or stale.
 *
 * Inputs are method calls (snapshot entries and ends, live updates, heartbeats, the
 * subscriber's connection dropping, ticks); time is always passed in. Outputs are
 * {@link SyncCommand}s handed to a sink, in order, which the peer executes on its sockets and
 * its map. Tested with tables of inputs and expected commands (test/peer-sync-machine.test.ts).
 *
 * Backoff: every resync that follows another one within `maxRetryDelay` of a successful sync
 * waits before asking (first `snapshotRetryDelay`, doubling up to `maxRetryDelay`); a snapshot
 * that was refused (incomplete, too large) always waits at least `snapshotRetryDelay`. A sync
 * that stayed live for `maxRetryDelay` resets the backoff, so an isolated gap is repaired at once.
 *
 * Failover (only with more than one server): the peer leaves the server in use for the next one
 * in the list (round robin) when that server is silent for `silenceTimeout` while the peer is
 * live, when the subscriber connection to it drops after it had delivered (a killed server drops
 * TCP at once: the fastest sign), or when a snapshot request gets no answer within the attempt
 * timeout. At the new server it asks at once, and keeps asking there (each unanswered attempt
 * asked again after the attempt timeout) for at least `silenceTimeout`: a backup takes over only
 * once its partner has been silent for a while AND a peer asks (a clonekv backup may hold the
 * request until then; a plain one ignores it, so asking again is what gets the answer). Only then
 * does it move on. The attempt timeout grows with each attempt that goes unanswered, up to
 * `maxRetryDelay`, and the peer never gives up. A new server
 * is a new subscriber stream: the sequence-going-backwards check starts afresh. The request
 * there asks to resume by delta when the servers announced they answer such requests (and
 * carries the epoch, so a server of another epoch answers with a full snapshot, which replaces
 * the map).
 *
 * @module
 */
import { bodyEncoding, Command, PRESENCE_PREFIX, Prop, type BodyEncoding } from '../protocol/commands.ts';
import { SnapshotDigest } from '../protocol/digest.ts';
import { headFor, previousFor } from '../protocol/gaps.ts';
import type { ChpMessage, ResumeRequest } from '../protocol/message.ts';
import type { PropertyReader } from '../protocol/properties.ts';
import { decodeBody } from '../protocol/values.ts';
import type { DeleteReason, FailoverReason, PeerStats, ResyncReason } from '../types.ts';
import type { LocalEntry } from './local-map.ts';

/** Settings of a {@link SyncMachine}: all durations in ms. */
export interface SyncSettings {
  /** The subtree held (empty: everything). */
  readonly subtree: Buffer;
  readonly silenceTimeout: number;
  readonly snapshotRetryDelay: number;
  readonly maxRetryDelay: number;
  readonly maxBufferedUpdates: number;
  readonly maxSnapshotEntries: number;
  readonly maxSnapshotBytes: number;
  /** How many servers the peer may use (default 1: no failover). */
  readonly servers?: number;
  /**
   * End-to-end verification (a peer given a `policy`): `undefined` when a live update may be
   * applied, else why not. A refused update still takes its place in the sequence (no gap,
   * no resync) but changes nothing in the map; it is counted (`unauthorized`) and reported.
   */
  readonly verify?: (m: ChpMessage) => string | undefined;
  /** The value of a body marked sealed (a `SealedValue` when it cannot be opened). */
  readonly unseal?: (key: string, body: Buffer) => unknown;
}


/** What the peer knows of the server: a clonekv forwarder, a plain CHP server, or not yet. */
export type ServerKind = 'unknown' | 'clonekv' | 'plain';

/** Where the sync stands (the peer's status, but for `closed`). */
export type SyncStatus = 'syncing' | 'live' | 'stale';

/** Which option bounded a snapshot that was abandoned. */
export type SnapshotLimit = 'maxSnapshotEntries' | 'maxSnapshotBytes';

/** What the machine asks the peer to do. */
export type SyncCommand =
  /**
   * Leave server `from` (indexes in the peer's list of servers) for server `to`: close the
   * sockets of the one and open them on the other. A `request` follows.
   */
  | { readonly type: 'failover'; readonly from: number; readonly to: number; readonly reason: FailoverReason }
  /**
   * Open a fresh DEALER tagged `attempt` (closing the previous one) and send a snapshot request
   * on it; with `resume`, the three-frame request that asks a clonekv forwarder for a delta.
   */
  | { readonly type: 'request'; readonly attempt: number; readonly resume: ResumeRequest | undefined }
  /** A resync begins (the `resync` event); reads keep serving the last known state. */
  | { readonly type: 'resync'; readonly reason: ResyncReason }
  /**
   * Apply a live update at `seq`: `key` undefined is a key the peer does not hold (presence
   * metadata), `value` undefined is a delete (with `reason`). `uuid` may acknowledge a write.
   * `fromResync`: the update came in a delta (a resync), not live.
   */
  | {
      readonly type: 'apply';
      readonly seq: number;
      readonly uuid: Buffer;
      readonly key: string | undefined;
      readonly value: unknown;
      readonly reason: DeleteReason | undefined;
      readonly fromResync: boolean;
    }
  /** Replace the map with a complete snapshot (watchers see the differences unless `first`). */
  | { readonly type: 'replace'; readonly entries: Map<string, LocalEntry>; readonly sequence: number; readonly first: boolean; readonly epochChanged: boolean }
  /** The first snapshot is applied: resolve `ready()`. Emitted exactly once. */
  | { readonly type: 'ready' }
  /** A sync finished and the peer is live (the `synced` event). */
  | { readonly type: 'synced'; readonly sequence: number; readonly reason: ResyncReason | undefined }
  /**
   * An update at `seq` carrying `uuid` is not applied now (already in the snapshot, or left to
   * the next one): if it is one of our writes, it still acknowledges it (a plain server gives no
   * other acknowledgement).
   */
  | { readonly type: 'echo'; readonly seq: number; readonly uuid: Buffer }
  /** The local map moved on: writes waiting for it may resolve. */
  | { readonly type: 'settle' }
  /** Writes not yet acknowledged may go (again) on the current DEALER. */
  | { readonly type: 'resendWrites' }
  /** Send this peer's beat now. */
  | { readonly type: 'beat' }
  /** The server turned out to be `kind`. */
  | { readonly type: 'kind'; readonly kind: 'clonekv' | 'plain' }
  /** Close the DEALER of an abandoned attempt (its answer is no longer wanted). */
  | { readonly type: 'abandon'; readonly limit: SnapshotLimit; readonly value: number }
  /** Snapshot loading progress. */
  | { readonly type: 'progress'; readonly received: number }
  /** Report a problem the peer recovered from, as a `CLONEKV_MALFORMED` error event. */
  | { readonly type: 'report'; readonly message: string; readonly cause?: unknown; readonly unauthorized?: boolean };

/** Entries between two `progress` commands. */
const PROGRESS_EVERY = 0x10000;
const PRESENCE = Buffer.from(PRESENCE_PREFIX);
const HUGZ = Command.Heartbeat;
const EMPTY = Buffer.alloc(0);
/** Marks "no value decoded" (`undefined` is not a value a peer holds, but stays unambiguous). */
const NOT_DECODED: unique symbol = Symbol('not decoded');

/** One update of a delta, held until its KTHXBAI says the delta is complete. */
interface DeltaEntry {
  readonly seq: number;
  readonly uuid: Buffer;
  /** `undefined`: a key this peer does not hold (presence metadata). */
  readonly key: string | undefined;
  /** `undefined`: a delete. */
  readonly value: unknown;
  readonly reason: DeleteReason | undefined;
}

interface Attempt {
  readonly n: number;
  readonly reason: ResyncReason | undefined;
  /** What the request asked to resume from (`undefined`: a plain snapshot request). */
  readonly resume: ResumeRequest | undefined;
  /**
   * While the answer may be a delta: every entry in order, deletes included. Dropped as soon as
   * an entry at or below `resume.since` shows the answer is a full snapshot after all.
   */
  log: DeltaEntry[] | undefined;
  /** Entries received; dropped (never kept) when the attempt is abandoned. */
  readonly entries: Map<string, LocalEntry>;
  readonly digest: SnapshotDigest;
  /** Key and body bytes held. */
  bytes: number;
  readonly subLiveAtRequest: boolean;
  readonly buffered: ChpMessage[];
  malformed: boolean;
  /** When the attempt last made progress. */
  lastProgress: number;
}

/** The sync state machine of one peer. */
export class SyncMachine {
  readonly #s: SyncSettings;
  readonly #out: (c: SyncCommand) => void;
  readonly #stats: PeerStats;
  #status: SyncStatus = 'syncing';
  #kind: ServerKind = 'unknown';
  #epoch: string | undefined;
  /** Last applied sequence. */
  #last = 0;
  /** Sequence of the last update under the subtree that was applied (or of the snapshot). */
  #subtreeLast = 0;
  /**
   * Sequence of the last message read from the subscriber (KVPUB or HUGZ). The subscriber is one
   * ordered stream, so a sequence below it means the server restarted; a sequence below `#last`
   * alone does not: an update published before the snapshot may be read after it.
   */
  #lastFromSub = 0;
  #attempts = 0;
  #attempt: Attempt | undefined;
  /** A resync decided but not asked for yet (backing off). */
  #waiting: { at: number; reason: ResyncReason | undefined } | undefined;
  /** Delay before the next resync's request (0: at once). */
  #backoff = 0;
  /** How long an attempt may go without progress before it is asked for again. */
  #attemptTimeout: number;
  #syncedAt = -Infinity;
  /** Whether the subscriber has delivered anything since its connection last dropped. */
  #subLive = false;
  /** The last snapshot was not proven to follow the subscription: take another once it is live. */
  #resyncWhenSubLive = false;
  #lastHeard: number;
  #readySent = false;
  /** Whether the last KTHXBAI (from any server) announced that it answers resume requests (`resume=1`). */
  #serverResumes = false;
  /** The server in use (index in the peer's list), and since when (ms). */
  #server = 0;
  #serverSince: number;
  /** Per server: whether its last KTHXBAI announced `resume=1` (`undefined`: never heard from it). */
  readonly #announcedResume: Array<boolean | undefined> = [];
  /** Whether a connection attempt to the server in use was refused since the peer moved there. */
  #refused = false;
  /** The last term a pair member announced (KTHXBAI, HUGZ), sent back in resume requests. */
  #term: number | undefined;

  /**
   * @param out - receives every command, synchronously, in order
   * @param stats - the peer's counters, updated in place (gaps, duplicates, resyncs, snapshots…)
   */
  constructor(settings: SyncSettings, out: (c: SyncCommand) => void, stats: PeerStats, now: number) {
    this.#s = settings;
    this.#out = out;
    this.#stats = stats;
    this.#attemptTimeout = settings.snapshotRetryDelay;
    this.#lastHeard = now;
    this.#serverSince = now;
  }

  get status(): SyncStatus {
    return this.#status;
  }

  get kind(): ServerKind {
    return this.#kind;
  }

  get epoch(): string | undefined {
    return this.#epoch;
  }

  /** The server in use (index in the peer's list of servers). */
  get server(): number {
    return this.#server;
  }

  /** The last term a member of a failover pair announced, if any. */
  get term(): number | undefined {
    return this.#term;
  }

  /** The last applied sequence. */
  get applied(): number {
    return this.#last;
  }

  /** Whether a resync is under way (waiting to ask, or loading): the map may be replaced soon. */
  get resyncing(): boolean {
    return this.#attempt !== undefined || this.#waiting !== undefined;
  }

  /** Entries held by the snapshot in progress (0 when none). */
  get snapshotEntries(): number {
    return this.#attempt?.entries.size ?? 0;
  }

  /**
   * Whether entries of attempt `attempt` may be a delta's, so {@link snapshotEntry} wants their
   * uuid and delete reason (not worth reading for a full snapshot).
   */
  wantsDeltaDetail(attempt: number): boolean {
    return this.#attempt?.n === attempt && this.#attempt.log !== undefined;
  }

  /** The first join: ask at once. */
  start(now: number): void {
    this.#request(now, undefined);
  }

  /** When {@link tick} next has something to do (ms, Date.now clock). */
  nextWake(): number {
    if (this.#waiting) return this.#waiting.at;
    if (this.#attempt) return this.#attempt.lastProgress + this.#attemptTimeout;
    if (this.#status === 'live') return this.#lastHeard + this.#s.silenceTimeout + 1;
    return Infinity;
  }

  /** Time passed: a backed-off request is due, an attempt stalled, or the server fell silent. */
  tick(now: number): void {
    if (this.#waiting) {
      if (now >= this.#waiting.at) this.#request(now, this.#waiting.reason);
      return;
    }
    const a = this.#attempt;
    if (a) {
      if (now - a.lastProgress >= this.#attemptTimeout) {
        // No answer (the server is down, or the request was lost): ask again, waiting longer next
        // time. With several servers, the server in use is asked again until it has had
        // silenceTimeout (a backup answers only once it has taken over, which a request may
        // trigger), then the next one is.
        this.#attemptTimeout = Math.min(this.#attemptTimeout * 2, this.#s.maxRetryDelay);
        const reason = a.reason ?? (this.#status === 'syncing' ? undefined : 'silence');
        // A server whose address refuses connections is dead (or not started): it gets
        // snapshotRetryDelay, not silenceTimeout — the wait is for a backup about to take over.
        const refused = this.#refused && now - this.#serverSince >= this.#s.snapshotRetryDelay;
        if (this.#failsOver && (refused || now - this.#serverSince >= this.#s.silenceTimeout)) {
          // A server that never announced what it answers, and left a resume request
          // unanswered, may be a plain server that ignores three-frame requests: ask it plainly.
          if (!refused && a.resume && this.#announcedResume[this.#server] === undefined) this.#announcedResume[this.#server] = false;
          this.#failover(now, refused ? 'refused' : 'no-answer');
        }
        if (reason !== undefined) this.#announce(reason);
        this.#request(now, reason);
      }
      return;
    }
    if (this.#status === 'live' && now - this.#lastHeard > this.#s.silenceTimeout) {
      this.#lastHeard = now;
      if (!this.#failsOver) return this.#resync(now, 'silence');
      this.#failover(now, 'silence');
      this.#announce('silence');
      this.#request(now, 'silence');
    }
  }

  /**
   * The subscriber's connection dropped: until it delivers again, a snapshot may miss updates.
   * With several servers, a connection that had delivered something dropping means the server
   * died or was cut off: the peer moves to the next one at once. (One that never delivered is
   * left to the attempt timeout: a server refusing connections would otherwise be left and
   * come back to in a tight loop.)
   */
  subscriberDown(now = 0): void {
    const wasLive = this.#subLive;
    this.#subLive = false;
    if (!this.#failsOver || !wasLive) return;
    const reason = this.#attempt?.reason ?? this.#waiting?.reason ?? (this.#status === 'syncing' ? undefined : 'silence');
    this.#failover(now, 'disconnected');
    if (reason !== undefined) this.#announce(reason);
    this.#request(now, reason);
  }

  /**
   * The server asked in attempt `attempt` is the passive member of a pair whose partner is
   * active and alive (KVPASSIVE): with several servers, move on at once (it would answer only by
   * taking over, which it will not while its partner serves). The resync under way goes on
   * there; one server: nothing to do but wait.
   */
  passive(now: number, attempt: number): void {
    const a = this.#attempt;
    if (a?.n !== attempt || !this.#failsOver) return;
    this.#failover(now, 'passive');
    this.#request(now, a.reason);
  }

  /**
   * A connection attempt of the subscriber to the server in use failed: nothing listens there.
   * With several servers, an attempt there that goes unanswered then moves on after
   * `snapshotRetryDelay` instead of `silenceTimeout` (see {@link tick}).
   */
  subscriberRefused(): void {
    this.#refused = true;
  }

  /** Whether the peer has more than one server to move between. */
  get #failsOver(): boolean {
    return (this.#s.servers ?? 1) > 1;
  }

  /**
   * Leaves the server in use for the next one: what was under way there is dropped (its answer
   * is not wanted), and the new server's subscriber is a new stream (its sequences are not
   * compared with the old one's). The caller asks for a snapshot next.
   */
  #failover(now: number, reason: FailoverReason): void {
    const from = this.#server;
    const to = (from + 1) % (this.#s.servers ?? 1);
    this.#server = to;
    this.#serverSince = now;
    this.#refused = false;
    this.#attempt = undefined;
    this.#waiting = undefined;
    this.#lastFromSub = 0;
    this.#subLive = false;
    this.#lastHeard = now;
    this.#stats.failovers++;
    this.#out({ type: 'failover', from, to, reason });
  }

  /**
   * A message from the subscriber (`undefined`: malformed). Only the subscriber's stream proves
   * the server alive: traffic on the DEALER does not.
   */
  published(now: number, m: ChpMessage | undefined): void {
    this.#lastHeard = now;
    this.#subLive = true;
    this.#refused = false;
    if (!m) {
      this.#stats.malformed++;
      return;
    }
    if (m.key.length === HUGZ.length && m.key.toString('latin1') === HUGZ) return this.#heartbeat(now, m.sequence, m.properties);
    if (!this.#inSubtree(m.key)) return; // e.g. a key under the HUGZ topic
    const a = this.#attempt;
    if (a) {
      if (a.buffered.length >= this.#s.maxBufferedUpdates) {
        this.#echo(m);
        return this.#resync(now, 'overflow');
      }
      a.buffered.push(m);
      return;
    }
    // The snapshot about to be asked for covers it.
    if (this.#waiting) return this.#echo(m);
    if (m.sequence <= this.#lastFromSub) {
      this.#echo(m);
      return this.#resync(now, 'sequence');
    }
    this.#lastFromSub = m.sequence;
    if (m.sequence <= this.#last) return this.#duplicate(m); // already in the snapshot
    this.#apply(now, m);
    if (!this.resyncing) this.#out({ type: 'settle' });
  }

  /** A message of attempt `attempt` arrived: it makes progress (resets its stall timer). */
  replied(now: number, attempt: number): void {
    if (this.#attempt?.n === attempt) this.#attempt.lastProgress = now;
  }

  /** A snapshot message of attempt `attempt` was malformed: the snapshot cannot be complete. */
  snapshotMalformed(attempt: number): void {
    if (this.#attempt?.n !== attempt) return;
    this.#stats.malformed++;
    this.#attempt.malformed = true;
  }

  /**
   * A snapshot or delta entry of attempt `attempt` that failed end-to-end verification: not
   * held (a snapshot then lacks the key; a delta leaves its earlier value), counted
   * (`unauthorized`) and reported, and still counted toward the count and digest, so the rest
   * of the answer is applied.
   */
  snapshotRefused(attempt: number, key: Buffer, seq: number, why: string): void {
    const a = this.#attempt;
    if (a?.n !== attempt) return;
    a.digest.addRange(key, 0, key.length, seq);
    this.#stats.unauthorized++;
    this.#out({ type: 'report', message: `snapshot entry at sequence ${seq} not applied: ${why}`, unauthorized: true });
  }

  /**
   * A snapshot entry of attempt `attempt` that cannot be held (an empty key or one over 255
   * bytes, unreadable properties…): counted and reported, and still counted toward the
   * snapshot's count and digest, so one bad entry (any writer to a plain server can store one)
   * does not make every snapshot incomplete.
   */
  snapshotSkipped(attempt: number, key: Buffer, seq: number, why: string): void {
    const a = this.#attempt;
    if (a?.n !== attempt) return;
    a.digest.addRange(key, 0, key.length, seq);
    this.#stats.malformed++;
    this.#out({ type: 'report', message: `snapshot entry at sequence ${seq} skipped (${why})` });
  }

  /**
   * One snapshot entry of attempt `attempt` (an empty body is counted, not held). A body marked
   * msgpack that does not decode is held as its raw bytes, counted and reported: one bad value
   * must not stop anyone from syncing. While the answer may be a delta
   * ({@link wantsDeltaDetail}), `uuid` and `reason` (of a delete) are kept with it.
   */
  snapshotEntry(attempt: number, key: Buffer, seq: number, msgpack: BodyEncoding, body: Buffer, uuid?: Buffer, reason?: DeleteReason): void {
    const a = this.#attempt;
    if (a?.n !== attempt) return;
    a.digest.addRange(key, 0, key.length, seq);
    const count = a.digest.count;
    if ((count & (PROGRESS_EVERY - 1)) === 0) this.#out({ type: 'progress', received: count });
    const logged = a.log ? this.#logDeltaEntry(a, key, seq, msgpack, body, uuid, reason) : NOT_DECODED;
    if (body.length === 0 || !this.#inSubtree(key) || this.#isHidden(key)) return;
    if (a.entries.size >= this.#s.maxSnapshotEntries) return this.#abandon(a, 'maxSnapshotEntries', this.#s.maxSnapshotEntries);
    a.bytes += key.length + body.length;
    if (a.bytes > this.#s.maxSnapshotBytes) return this.#abandon(a, 'maxSnapshotBytes', this.#s.maxSnapshotBytes);
    const k = key.toString('utf8');
    // A value decoded for the delta's log is not decoded (nor reported as undecodable) twice.
    a.entries.set(k, { value: logged !== NOT_DECODED ? logged : this.#decode(k, seq, msgpack, body), version: seq });
  }

  /**
   * Keeps an entry of an answer that may be a delta (see {@link Attempt.log}); returns the value
   * it decoded, or {@link NOT_DECODED}.
   */
  #logDeltaEntry(a: Attempt, key: Buffer, seq: number, msgpack: BodyEncoding, body: Buffer, uuid: Buffer | undefined, reason: DeleteReason | undefined): unknown {
    const log = a.log!;
    if (seq <= a.resume!.since || log.length >= this.#s.maxSnapshotEntries) {
      // A delta holds only updates after `since`: this is a full snapshot (or one too large to
      // be held twice; its map still bounds it).
      a.log = undefined;
      return NOT_DECODED;
    }
    if (!this.#inSubtree(key)) return NOT_DECODED;
    if (this.#isHidden(key)) {
      log.push({ seq, uuid: uuid ?? EMPTY, key: undefined, value: undefined, reason: undefined });
      return NOT_DECODED;
    }
    const k = key.toString('utf8');
    if (body.length === 0) {
      log.push({ seq, uuid: uuid ?? EMPTY, key: k, value: undefined, reason: reason ?? 'deleted' });
      return NOT_DECODED;
    }
    const value = this.#decode(k, seq, msgpack, body);
    log.push({ seq, uuid: uuid ?? EMPTY, key: k, value, reason: undefined });
    return value;
  }

  /** The end of a snapshot (KTHXBAI) of attempt `attempt`, with its sequence and properties. */
  snapshotEnd(now: number, attempt: number, seq: number, props: PropertyReader): void {
    const a = this.#attempt;
    if (a?.n !== attempt) return;
    this.#attempt = undefined;
    const kind = props.has(Prop.Version) ? 'clonekv' : 'plain';
    if (kind !== this.#kind) {
      this.#kind = kind;
      this.#out({ type: 'kind', kind });
    }
    this.#serverResumes = kind === 'clonekv' && props.get(Prop.Resume) === '1';
    this.#announcedResume[this.#server] = this.#serverResumes;
    const count = props.get(Prop.Count);
    const digest = props.get(Prop.Digest);
    const isDelta = props.get(Prop.Delta) === '1';
    // A snapshot that does not add up is refused, never applied (reference failure 2); so is a
    // delta that was not asked for, is not one, or is not in order after what was asked.
    const badDelta = isDelta && !this.#deltaFits(a, seq, props.get(Prop.Epoch));
    if (badDelta || a.malformed || (count !== undefined && Number(count) !== a.digest.count) || (digest !== undefined && digest !== a.digest.hex)) {
      this.#stats.malformed++;
      this.#out({ type: 'report', message: `incomplete ${isDelta ? 'delta' : 'snapshot'} (got ${a.digest.count} of ${count ?? '?'} entries${badDelta ? ', not the updates asked for' : ''})` });
      return this.#resync(now, 'incomplete');
    }
    if (isDelta) return this.#applyDelta(now, a, seq, props);
    const epoch = props.get(Prop.Epoch);
    const epochChanged = epoch !== undefined && this.#epoch !== undefined && epoch !== this.#epoch;
    if (epoch !== undefined) this.#epoch = epoch;
    this.#attemptTimeout = this.#s.snapshotRetryDelay;
    this.#stats.snapshots++;
    const first = this.#status === 'syncing';
    this.#status = 'live';
    this.#syncedAt = now;
    this.#lastHeard = now;
    this.#out({ type: 'replace', entries: a.entries, sequence: seq, first, epochChanged });
    this.#synced(now, a, seq, props);
  }

  /**
   * Whether a KTHXBAI saying `delta=1` ends a delta this attempt asked for: same epoch, every
   * entry after the requested sequence, in order, none after the KTHXBAI's sequence.
   */
  #deltaFits(a: Attempt, seq: number, epoch: string | undefined): boolean {
    if (!a.resume || !a.log || epoch !== a.resume.epoch || epoch !== this.#epoch || a.resume.since !== this.#last || seq < a.resume.since) return false;
    let prev = a.resume.since;
    for (const e of a.log) {
      if (e.seq <= prev) return false;
      prev = e.seq;
    }
    return prev <= seq;
  }

  /**
   * A delta: its updates are applied in order, as live ones are (watchers see each as a change,
   * `fromResync`), then the peer goes on exactly as after a snapshot at the KTHXBAI's sequence.
   */
  #applyDelta(now: number, a: Attempt, seq: number, props: PropertyReader): void {
    this.#attemptTimeout = this.#s.snapshotRetryDelay;
    this.#stats.deltaSyncs++;
    this.#status = 'live';
    this.#syncedAt = now;
    this.#lastHeard = now;
    for (const e of a.log!) {
      this.#out({ type: 'apply', seq: e.seq, uuid: e.uuid, key: e.key, value: e.value, reason: e.reason, fromResync: true });
    }
    this.#synced(now, a, seq, props);
  }

  /** After a snapshot or a delta brought the map to `seq`: the buffered updates, then live. */
  #synced(now: number, a: Attempt, seq: number, props: PropertyReader): void {
    this.#noteTerm(props, true);
    this.#last = seq;
    this.#subtreeLast = seq;
    // Every path that reaches live the first time resolves ready(), even if the updates buffered
    // meanwhile start another resync at once.
    if (!this.#readySent) {
      this.#readySent = true;
      this.#out({ type: 'ready' });
    }
    // Without the server's word that our subscription was live when it took the snapshot (a
    // plain CHP server, or a join that timed out), updates in between may be missing: take
    // another snapshot as soon as the subscription has proven live.
    this.#resyncWhenSubLive = props.get(Prop.Joined) !== '1' && !a.subLiveAtRequest;
    this.#lastFromSub = 0;
    for (let i = 0; i < a.buffered.length; i++) {
      const u = a.buffered[i]!;
      if (u.sequence <= this.#lastFromSub) this.#resync(now, 'sequence');
      else {
        this.#lastFromSub = u.sequence;
        if (u.sequence > this.#last) this.#apply(now, u);
        else this.#duplicate(u);
      }
      if (this.resyncing) {
        // A gap or a restart: the rest is left to the next snapshot, but still acknowledges.
        for (let j = i; j < a.buffered.length; j++) this.#echo(a.buffered[j]!);
        return;
      }
    }
    this.#out({ type: 'settle' });
    this.#out({ type: 'beat' });
    this.#out({ type: 'resendWrites' });
    this.#out({ type: 'synced', sequence: this.#last, reason: a.reason });
  }

  /**
   * The term of the lineage the map now comes from (a valid decimal a pair member announced; none
   * from a standalone or plain server), sent back when resuming. Taken only from an answer that
   * was applied, or a heartbeat of the server the map is live from: a term heard from a server
   * whose answer is still awaited would claim updates the map does not hold.
   */
  #noteTerm(props: PropertyReader, fromSnapshot: boolean): void {
    const term = props.get(Prop.Term);
    if (term !== undefined && /^(0|[1-9][0-9]{0,15})$/.test(term)) this.#term = Number(term);
    else if (fromSnapshot) this.#term = undefined;
  }

  #heartbeat(now: number, seq: number, props: PropertyReader): void {
    if (this.#status === 'live' && !this.resyncing) this.#noteTerm(props, false);
    if (this.#kind === 'unknown' && props.has(Prop.Version)) {
      this.#kind = 'clonekv';
      this.#out({ type: 'kind', kind: 'clonekv' });
      this.#out({ type: 'beat' });
      this.#out({ type: 'resendWrites' });
    }
    if (this.#resyncWhenSubLive && !this.resyncing) {
      this.#resyncWhenSubLive = false;
      return this.#resync(now, 'gap');
    }
    if (this.resyncing || this.#status !== 'live') return;
    const epoch = props.get(Prop.Epoch);
    if (epoch !== undefined && this.#epoch !== undefined && epoch !== this.#epoch) return this.#resync(now, 'epoch');
    // A clonekv HUGZ always carries the current sequence; a plain server's may carry 0 (as
    // RFC 12 says) or its sequence (as the reference servers do): only a non-zero one counts.
    if (epoch !== undefined || seq > 0) {
      if (seq < this.#lastFromSub) return this.#resync(now, 'sequence');
      this.#lastFromSub = seq;
    }
    const heads = props.get(Prop.Heads);
    if (heads !== undefined) {
      const head = headFor(heads, this.#s.subtree);
      if (head !== undefined && head > this.#subtreeLast) {
        this.#stats.gaps++;
        this.#resync(now, 'gap');
      }
    }
  }

  #apply(now: number, u: ChpMessage): void {
    if (this.#resyncWhenSubLive) {
      this.#resyncWhenSubLive = false;
      this.#echo(u);
      return this.#resync(now, 'gap');
    }
    const prevProp = u.properties.get(Prop.Previous);
    const previous = prevProp === undefined ? undefined : previousFor(prevProp, this.#s.subtree.length);
    const missed = previous !== undefined ? previous > this.#subtreeLast : this.#s.subtree.length === 0 && u.sequence !== this.#last + 1;
    if (missed) {
      this.#stats.gaps++;
      this.#echo(u);
      return this.#resync(now, 'gap');
    }
    this.#last = u.sequence;
    this.#subtreeLast = u.sequence;
    if (this.#isHidden(u.key)) {
      this.#out({ type: 'apply', seq: u.sequence, uuid: u.uuid, key: undefined, value: undefined, reason: undefined, fromResync: false });
      return;
    }
    const refused = this.#s.verify?.(u);
    if (refused !== undefined) {
      this.#stats.unauthorized++;
      this.#out({ type: 'report', message: `update at sequence ${u.sequence} not applied: ${refused}`, unauthorized: true });
      this.#out({ type: 'apply', seq: u.sequence, uuid: u.uuid, key: undefined, value: undefined, reason: undefined, fromResync: false });
      return;
    }
    const key = u.key.toString('utf8');
    if (u.body.length === 0) {
      const why = u.properties.get(Prop.Reason);
      const reason: DeleteReason = why === 'expired' || why === 'purged' ? why : 'deleted';
      this.#out({ type: 'apply', seq: u.sequence, uuid: u.uuid, key, value: undefined, reason, fromResync: false });
      return;
    }
    const value = this.#decode(key, u.sequence, bodyEncoding(u.properties.get(Prop.Encoding)), u.body);
    this.#out({ type: 'apply', seq: u.sequence, uuid: u.uuid, key, value, reason: undefined, fromResync: false });
  }

  #duplicate(u: ChpMessage): void {
    this.#stats.duplicates++;
    this.#echo(u);
  }

  /**
   * An update that is not applied now (already in the snapshot, or left to the next one) was
   * still sequenced: if it carries one of our writes' uuids, that acknowledges the write.
   */
  #echo(u: ChpMessage): void {
    if (u.uuid.length === 16) this.#out({ type: 'echo', seq: u.sequence, uuid: u.uuid });
  }

  /** A body's value; one marked msgpack that does not decode is given as raw bytes, and reported. */
  #decode(key: string, seq: number, msgpack: BodyEncoding, body: Buffer): unknown {
    if (msgpack === 'sealed') return this.#s.unseal ? this.#s.unseal(key, body) : decodeBody(body, false);
    try {
      return decodeBody(body, msgpack);
    } catch (err) {
      this.#stats.undecodable++;
      this.#out({ type: 'report', message: `value of "${key}" at sequence ${seq} is marked msgpack but does not decode; it is given as raw bytes`, cause: err });
      return decodeBody(body, false);
    }
  }

  /** Drops a snapshot that outgrew a bound (its entries with it) and tries again later. */
  #abandon(a: Attempt, limit: SnapshotLimit, value: number): void {
    this.#attempt = undefined;
    a.entries.clear();
    this.#stats.snapshotAborted++;
    this.#out({ type: 'abandon', limit, value });
    // Entries come in replies, each of which moved lastProgress to the time it arrived: now.
    this.#resync(a.lastProgress, 'limit');
  }

  /** Counts and announces a resync (the status turns stale once live). */
  #announce(reason: ResyncReason): void {
    this.#stats.resyncs++;
    if (this.#status === 'live') this.#status = 'stale';
    this.#out({ type: 'resync', reason });
  }

  /** Starts a resync: at once after a sync that lasted, later (backing off) when they repeat. */
  #resync(now: number, reason: ResyncReason): void {
    this.#attempt = undefined;
    // Only a resync that interrupts a sync which lasted starts afresh; one that follows a
    // failed attempt (status stale or still syncing) keeps backing off.
    if (this.#status === 'live' && now - this.#syncedAt >= this.#s.maxRetryDelay) this.#backoff = 0;
    this.#announce(reason);
    // A refused snapshot is never asked for again at once: the server would refuse the same.
    if ((reason === 'incomplete' || reason === 'limit') && this.#backoff === 0) this.#backoff = this.#s.snapshotRetryDelay;
    const delay = this.#backoff;
    this.#backoff = delay === 0 ? this.#s.snapshotRetryDelay : Math.min(delay * 2, this.#s.maxRetryDelay);
    if (delay === 0) this.#request(now, reason);
    else this.#waiting = { at: now + delay, reason };
  }

  #request(now: number, reason: ResyncReason | undefined): void {
    this.#waiting = undefined;
    const n = ++this.#attempts;
    const resume = this.#resumeFrom(reason);
    this.#attempt = {
      n,
      reason,
      resume,
      log: resume ? [] : undefined,
      entries: new Map(),
      digest: new SnapshotDigest(),
      bytes: 0,
      subLiveAtRequest: this.#subLive,
      buffered: [],
      malformed: false,
      lastProgress: now,
    };
    this.#stats.snapshotRequests++;
    this.#out({ type: 'request', attempt: n, resume });
    // Writes not yet acknowledged may have been lost with the previous DEALER.
    this.#out({ type: 'resendWrites' });
  }

  /**
   * What a resync may ask to resume from: the map this peer holds, at the last applied sequence
   * (every update up to it is applied and none after it: a missed update is always found above
   * it), in the epoch it came from. Only to a server whose last KTHXBAI announced that it
   * answers them (`resume=1`: a plain server, or an older clonekv forwarder, never sees the
   * three-frame request), and not after a refused answer (an incomplete
   * delta is followed by a full snapshot) or once the epoch is known to have changed.
   */
  #resumeFrom(reason: ResyncReason | undefined): ResumeRequest | undefined {
    // A server not heard from yet is taken to be like the last one that answered (the members of
    // a pair are the same kind of server).
    const resumes = this.#announcedResume[this.#server] ?? this.#serverResumes;
    if (!resumes || this.#epoch === undefined || !this.#readySent) return undefined;
    // The first join has no map; after a refused answer, or a new epoch, only a snapshot will do.
    if (reason === undefined || reason === 'incomplete' || reason === 'limit' || reason === 'epoch') return undefined;
    return this.#term === undefined ? { since: this.#last, epoch: this.#epoch } : { since: this.#last, epoch: this.#epoch, term: this.#term };
  }

  /**
   * The forwarder's presence keys (`$peers/...`) are metadata: a full-tree peer applies their
   * sequence numbers but does not hold them; a peer whose subtree names them does.
   */
  #isHidden(key: Buffer): boolean {
    return this.#s.subtree.length === 0 && key.length > PRESENCE.length && key[0] === PRESENCE[0] && key.compare(PRESENCE, 0, PRESENCE.length, 0, PRESENCE.length) === 0;
  }

  #inSubtree(key: Buffer): boolean {
    const p = this.#s.subtree;
    return p.length === 0 || (key.length >= p.length && key.compare(p, 0, p.length, 0, p.length) === 0);
  }
}
