/**
 * The one path of every sequenced update: it takes the next sequence, stores the update,
 * advances the subscription heads, and publishes the KVPUB with its gap-detection `prev`. Writes,
 * presence keys, purges and expiries all go through {@link UpdateLog.append}. Heartbeats (HUGZ,
 * with the heads) are built here too, since they describe the same log. No sockets: messages go
 * out through the `send` callback.
 *
 * With a {@link Journal} (a durable forwarder), updates are also written to disk in groups: every
 * update appended during one event-loop turn goes into one commit, and while a commit is in
 * flight the next group collects. In `sync` mode an update is published (and its writer told,
 * see {@link UpdateLog.whenPublished}) only once its group is on disk, so no peer ever holds an
 * update the disk lacks; if the commit fails, the group (and what was appended after it) is
 * undone in memory and its writers are told. In `async` mode updates are published at once and
 * written just after; the window of loss is bounded by {@link ASYNC_WINDOW}.
 *
 * @module
 */
import { StorageError } from '../errors.ts';
import { Command, Prop, PROTOCOL_VERSION } from '../protocol/commands.ts';
import { EMPTY_FRAME } from '../protocol/message.ts';
import { appendProperty, encodeProperties } from '../protocol/properties.ts';
import { encodeSequence } from '../protocol/sequence.ts';
import { UpdateHistory, type HistoryBounds } from '../store/history.ts';
import type { Durability, RecoveredEntry, StoredOutcome } from '../store/durable-store.ts';
import type { TimedRecord } from '../store/record-codec.ts';
import { SequencedMap, StoredEntry } from '../store/sequenced-map.ts';
import type { UpdateRecord } from '../store/update-record.ts';
import type { Counters } from './counters.ts';
import { SubscriptionHeads } from './heads.ts';

const HUGZ = Buffer.from(Command.Heartbeat);

/** The failure given to the writers of updates undone when this server lost the active role. */
const FENCED = new StorageError('', 'this server is no longer the active one: the write was not applied here');

/** Unsubscribed prefixes whose heads are kept, so a resubscription cannot hide a miss. */
const RETAINED_HEADS = 10_000;

/**
 * In `async` mode, most updates published but not yet on disk: past it, updates wait for the
 * disk as in `sync` mode until the backlog clears. What a crash can lose is at most this many
 * updates (and in practice what one commit, a few milliseconds, holds).
 */
export const ASYNC_WINDOW = 10_000;

/** After a failed commit, how long before a failed expiry is tried again, or (async) the commit, ms. */
const RETRY_MS = 1000;

/** Where groups of updates go to disk (the durable store). */
export interface Journal {
  /** Writes a group of updates and write outcomes in one transaction; throws `CLONEKV_STORAGE` if it could not. */
  commit(records: readonly TimedRecord[], outcomes: ReadonlyArray<readonly [uuid: string, at: number, outcome: StoredOutcome]>): void;
  /**
   * Replaces everything held by `entries` at `sequence` (a backup loading its active's full
   * copy), with the write outcomes to remember; throws `CLONEKV_STORAGE` if it could not.
   */
  replace?(entries: readonly TimedRecord[], sequence: number, outcomes: ReadonlyArray<readonly [uuid: string, at: number, outcome: StoredOutcome]>): void;
}

/**
 * Why updates were not stored: those from sequence `fromSeq` on were undone. `fenced`: undone
 * because this server lost the active role; their writers get no answer (they retry at the new
 * active, which applies each write once).
 */
export interface StoreFailure {
  readonly fromSeq: number;
  readonly error: StorageError;
  readonly fenced?: boolean;
}

/** What the log needs from the rest of the forwarder. */
export interface UpdateLogHooks {
  /** Hands a message to the publisher. */
  readonly send: (frames: Buffer[]) => void;
  /** Asks for an expiry pass at `at` (ms). */
  readonly onDeadline: (at: number) => void;
  /** Tells who owns `key` after an update (`undefined`: nobody). */
  readonly onOwner: (key: string, owner: string | undefined) => void;
  /** Who owns `key` now (to undo an update that could not be stored). */
  readonly ownerOf?: (key: string) => string | undefined;
  /** Puts back the owner of `key` after an update was undone (registering it if it left meanwhile). */
  readonly restoreOwner?: (key: string, owner: string | undefined) => void;
  /** An update was undone (never stored, never published): its write outcome must be forgotten. */
  readonly onUndone?: (record: UpdateRecord) => void;
  /** An update was published (the place for the retained history). */
  readonly onPublish?: (record: UpdateRecord) => void;
  /**
   * An update was sequenced and stored (in memory; the disk write runs in parallel): what is
   * sent to a following backup, in sequence order. The backup writes it to its own disk while
   * this one commits, and the update is published once both hold it.
   */
  readonly onLocal?: (timed: TimedRecord) => void;
  /**
   * Updates already sent to the backup were undone (the disk refused them): the backup must
   * start over (it then holds more than this log, and gets a full copy).
   */
  readonly onReplicaBroken?: () => void;
  /** A group is about to be written to disk: what goes to the backup goes now, so both disks write at once. */
  readonly beforeCommit?: () => void;
  readonly counters: Counters;
  /** Bounds of the retained history (default: the forwarder's defaults). */
  readonly history?: HistoryBounds;
  /** The disk, for a durable forwarder. */
  readonly journal?: Journal;
  /** Default `sync`; only used with a journal. */
  readonly durability?: Durability;
}

/** An update not yet published, and what it replaced (to undo it if it cannot be stored). */
interface Unpublished {
  readonly record: UpdateRecord;
  readonly keyBytes: Buffer;
  readonly prev: StoredEntry | undefined;
  readonly prevOwner: string | undefined;
  /** When it was sequenced (ms). */
  readonly at: number;
  /** It is published only once on disk (`sync`, or an `async` backlog or failure). */
  readonly needsDisk: boolean;
}

/** Called once everything appended before is published, or undone (`failure`). */
type Settled = (failure: StoreFailure | undefined) => void;

/** The sequenced, published log of updates. */
export class UpdateLog {
  readonly store = new SequencedMap();
  readonly heads = new SubscriptionHeads({ retain: RETAINED_HEADS });
  /** The last updates, for deltas, `watch({ since })` and `history()`. */
  readonly history: UpdateHistory;
  readonly #hooks: UpdateLogHooks;
  readonly #sync: boolean;
  /** The last published sequence (what peers may hold). */
  #published = 0;
  /** The last sequence on disk. */
  #committed = 0;
  /** Updates waiting for the next commit, and outcomes to remember with them. */
  #toCommit: TimedRecord[] = [];
  #outcomes: Array<readonly [string, number, StoredOutcome]> = [];
  #scheduled = false;
  readonly #unpublished: Unpublished[] = [];
  readonly #waiters: Array<{ upTo: number; settled: Settled }> = [];
  /** Async mode: the last commit failed and is being retried; new writes are refused meanwhile. */
  #failure: StorageError | undefined;
  #retry: NodeJS.Timeout | undefined;
  #stopped = false;
  /**
   * While a backup follows this log: the last sequence it acknowledged. Every update after it
   * waits (unpublished, its writer unanswered) until the backup has it.
   */
  #replica: { acked: number } | undefined;

  constructor(hooks: UpdateLogHooks) {
    this.#hooks = hooks;
    this.history = new UpdateHistory(hooks.history ?? { maxEntries: 1_000_000, maxBytes: 256 * 1024 * 1024 });
    this.#sync = (hooks.durability ?? 'sync') === 'sync';
  }

  /** The last published sequence: what snapshots and heartbeats announce. */
  get publishedSequence(): number {
    return this.#published;
  }

  /** Whether updates wait for a backup's acknowledgement before they are published. */
  get replicating(): boolean {
    return this.#replica !== undefined;
  }

  /** When the oldest update still waiting to be published was sequenced (ms), if any. */
  get oldestUnpublishedAt(): number | undefined {
    return this.#unpublished[0]?.at;
  }

  /** Updates stored but not yet published (waiting for the disk or for a backup). */
  get unpublishedCount(): number {
    return this.#unpublished.length;
  }

  /**
   * From now on, every update waits for {@link replicated} before it is published (and its
   * writer answered), as it waits for the disk in `sync` mode. Updates already waiting wait too.
   */
  attachReplica(): void {
    this.#replica = { acked: this.#published };
  }

  /** The backup acknowledged every update up to `seq`: those are published. */
  replicated(seq: number): void {
    const r = this.#replica;
    if (r === undefined || seq <= r.acked) return;
    r.acked = Math.min(seq, this.store.sequence);
    this.#release();
  }

  /** No backup any more: updates wait for the disk only (what waited for the backup goes out now). */
  detachReplica(): void {
    if (this.#replica === undefined) return;
    this.#replica = undefined;
    this.#release();
  }

  /** Updates stored but not yet published, after `after`, in order (a backup that just attached needs them). */
  unpublishedAfter(after: number): TimedRecord[] {
    const out: TimedRecord[] = [];
    for (const u of this.#unpublished) if (u.record.seq > after) out.push({ record: u.record, at: u.at });
    return out;
  }

  /** Set while writes to disk fail in `async` mode (they are retried); writes are refused meanwhile. */
  get failure(): StorageError | undefined {
    return this.#failure;
  }

  /**
   * Loads a recovered map and sequence (a durable forwarder's restart), before serving.
   *
   * @returns the number of keys loaded
   */
  recover(entries: Iterable<RecoveredEntry>, sequence: number): number {
    let n = 0;
    for (const [key, entry] of entries) {
      this.store.restore(key, entry);
      n++;
    }
    this.store.resetSequence(sequence);
    this.#published = this.#committed = sequence;
    const next = this.store.nextExpiry();
    if (next !== undefined) this.#hooks.onDeadline(next);
    return n;
  }

  /**
   * Sequences, stores and publishes one update.
   *
   * @param key - the key as a latin1 string of its bytes (`keyBytes`)
   * @param ttlMs - time to live in ms (0 = none)
   * @param owner - the peer that owns the key from now on (`undefined`: nobody)
   * @returns the sequence assigned
   */
  append(keyBytes: Buffer, key: string, uuid: Buffer, props: Buffer, body: Buffer, ttlMs: number, now: number, owner: string | undefined): number {
    return this.#append(keyBytes, key, uuid, props, body, ttlMs > 0 ? now + ttlMs : 0, now, owner, false);
  }

  /**
   * A backup applies one of its active's updates: stored at exactly `record.seq` (the caller
   * checks it is the next one), with the active's absolute expiry and owner, then on disk and
   * published as any update.
   */
  applyReplicated(t: TimedRecord): void {
    const { record, at } = t;
    if (record.seq !== this.store.sequence + 1) throw new RangeError(`replicated update ${record.seq} is not the next one (${this.store.sequence + 1})`);
    this.#append(Buffer.from(record.key, 'latin1'), record.key, record.uuid, record.properties, record.body, record.expiresAt, at, record.owner, true, t.encoded);
  }

  /** `encoded`: the record's bytes as the active encoded them (stored on disk as they are). */
  #append(keyBytes: Buffer, key: string, uuid: Buffer, props: Buffer, body: Buffer, expiresAt: number, now: number, owner: string | undefined, replicated: boolean, encoded?: Buffer): number {
    const hooks = this.#hooks;
    const journal = hooks.journal;
    const gated = journal !== undefined || this.#replica !== undefined;
    const prev = gated ? this.store.get(key) : undefined;
    const prevOwner = gated ? hooks.ownerOf?.(key) : undefined;
    const seq = this.store.applyUntil(key, uuid, props, body, body.length > 0 ? expiresAt : 0);
    hooks.counters.events.published++;
    // A replicated owner may not have beaten here yet: registered as heard from now.
    if (replicated) (hooks.restoreOwner ?? hooks.onOwner)(key, body.length > 0 ? owner : undefined);
    else hooks.onOwner(key, owner);
    if (expiresAt > 0 && body.length > 0) hooks.onDeadline(expiresAt);
    const recordExpiry = body.length > 0 ? expiresAt : 0;
    const recordOwner = body.length > 0 ? owner : undefined;
    const record: UpdateRecord = recordOwner === undefined ? { seq, key, uuid, properties: props, body, expiresAt: recordExpiry } : { seq, key, uuid, properties: props, body, expiresAt: recordExpiry, owner: recordOwner };
    if (!journal) {
      hooks.onLocal?.({ record, at: now });
      if (this.#replica === undefined && this.#unpublished.length === 0) this.#publish(record, keyBytes);
      else this.#unpublished.push({ record, keyBytes, prev, prevOwner, at: now, needsDisk: false });
      return seq;
    }
    // One object for the disk and the backup: the record is encoded once for both.
    const timed: TimedRecord = encoded === undefined ? { record, at: now } : { record, at: now, encoded };
    this.#toCommit.push(timed);
    this.#schedule();
    hooks.onLocal?.(timed);
    const needsDisk = this.#sync || this.#failure !== undefined || this.#toCommit.length > ASYNC_WINDOW;
    if (needsDisk || this.#replica !== undefined || this.#unpublished.length > 0) {
      this.#unpublished.push({ record, keyBytes, prev, prevOwner, at: now, needsDisk });
    } else {
      this.#publish(record, keyBytes);
    }
    return seq;
  }

  /**
   * A backup loads its active's full copy: everything held is replaced by `entries` at
   * `sequence` (on disk first, if durable), the history starts after `sequence`, and `onReset`
   * runs before the owners are registered again.
   *
   * @throws `CLONEKV_STORAGE` if the disk refused it (nothing changed in memory then)
   */
  replaceAll(entries: readonly TimedRecord[], sequence: number, outcomes: ReadonlyArray<readonly [string, number, StoredOutcome]>, onReset: () => void): void {
    this.flush();
    this.#journalReplace(entries, sequence, outcomes);
    this.#unpublished.length = 0;
    this.#toCommit = [];
    this.#outcomes = [];
    this.store.clear(0);
    onReset();
    const hooks = this.#hooks;
    for (const { record } of entries) {
      this.store.restore(record.key, new StoredEntry(record.seq, record.uuid, record.properties, record.body, record.expiresAt));
      if (record.owner !== undefined) (hooks.restoreOwner ?? hooks.onOwner)(record.key, record.owner);
    }
    this.store.resetSequence(sequence);
    this.#published = this.#committed = sequence;
    this.history.reset(sequence);
    const next = this.store.nextExpiry();
    if (next !== undefined) hooks.onDeadline(next);
    this.#settle(undefined);
  }

  #journalReplace(entries: readonly TimedRecord[], sequence: number, outcomes: ReadonlyArray<readonly [string, number, StoredOutcome]>): void {
    const journal = this.#hooks.journal;
    if (!journal?.replace) return;
    journal.replace(entries, sequence, outcomes);
    this.#failure = undefined;
  }

  /**
   * This server lost the active role: every update not yet published is undone (the store put
   * back, the owners, the write outcomes forgotten) and its writers get no answer: they retry
   * at the new active, which applies each write once.
   *
   * @returns whether the disk holds updates past what was published (the backup must then load
   *   a full copy, which replaces them)
   */
  fence(): boolean {
    // What waits for the disk goes there now (an `async` log has published some of it), but
    // nothing more is published: the gate stays shut at what is published already, or the
    // flush would publish (and answer) updates the new active never had.
    this.#replica = { acked: this.#published };
    this.flush();
    this.#replica = undefined;
    const diskAhead = this.#hooks.journal !== undefined && this.#committed > this.#published;
    this.#undoAfter(this.#published);
    this.#toCommit = [];
    this.#outcomes = [];
    this.#committed = Math.min(this.#committed, this.#published);
    this.#settle({ fromSeq: this.#published + 1, error: FENCED, fenced: true });
    return diskAhead;
  }

  /** Undoes, newest first, the unpublished updates after `seq`, and takes the sequence back to it. */
  #undoAfter(seq: number): void {
    const now = Date.now();
    const hooks = this.#hooks;
    let i = this.#unpublished.length - 1;
    for (; i >= 0 && this.#unpublished[i]!.record.seq > seq; i--) {
      const u = this.#unpublished[i]!;
      this.store.restore(u.record.key, u.prev);
      (hooks.restoreOwner ?? hooks.onOwner)(u.record.key, u.prevOwner);
      hooks.onUndone?.(u.record);
      hooks.counters.events.published--;
      // An expiry that could not be stored is tried again later, not in a tight loop.
      if (u.prev !== undefined && u.prev.expiresAt > 0) hooks.onDeadline(Math.max(u.prev.expiresAt, now + RETRY_MS));
    }
    this.#unpublished.length = i + 1;
    this.store.resetSequence(seq);
  }

  /** Remembers a refused or conflicting write outcome on disk with the next group (durable only). */
  rememberOutcome(uuid: string, outcome: StoredOutcome, now: number): void {
    if (!this.#hooks.journal) return;
    this.#outcomes.push([uuid, now, outcome]);
    this.#schedule();
  }

  /**
   * Calls `settled` once every update appended so far is published (at once if it is), or with
   * the failure if they were undone because the disk refused them.
   */
  whenPublished(settled: Settled): void {
    if (this.store.sequence <= this.#published) settled(undefined);
    else this.#waiters.push({ upTo: this.store.sequence, settled });
  }

  /**
   * The published state under `prefix`: the map without the updates that still wait for the
   * disk (a snapshot must never give a peer what a crash could take back).
   */
  snapshot(prefix: string): Array<[string, StoredEntry]> {
    const entries = this.store.snapshot(prefix);
    if (this.#unpublished.length === 0) return entries;
    const before = new Map<string, StoredEntry | undefined>();
    for (const u of this.#unpublished) if (!before.has(u.record.key) && u.record.key.startsWith(prefix)) before.set(u.record.key, u.prev);
    const out = entries.filter(([k]) => !before.has(k));
    for (const [k, e] of before) if (e !== undefined) out.push([k, e]);
    return out;
  }

  /**
   * Writes what is pending to disk now.
   *
   * @returns whether everything appended is on disk
   */
  flush(): boolean {
    if (!this.#hooks.journal) return true;
    this.#commit();
    return this.#failure === undefined && this.#toCommit.length === 0;
  }

  /** Stops retrying (at close). */
  stop(): void {
    this.#stopped = true;
    clearTimeout(this.#retry);
  }

  /** One heartbeat: as many HUGZ as the `heads` of every subscribed prefix need (see protocol/gaps.ts). */
  heartbeat(epoch: string, term?: number): void {
    this.#hooks.counters.events.heartbeats++;
    const seq = encodeSequence(this.#published);
    for (const heads of this.heads.headLists()) {
      const list: Array<[string, string]> = [
        [Prop.Version, PROTOCOL_VERSION],
        [Prop.Epoch, epoch],
        [Prop.Heads, heads],
      ];
      if (term !== undefined) list.push([Prop.Term, String(term)]);
      const props = encodeProperties(list);
      this.#hooks.send([HUGZ, seq, EMPTY_FRAME, props, EMPTY_FRAME]);
    }
  }

  #publish(record: UpdateRecord, keyBytes: Buffer): void {
    const { seq } = record;
    this.#published = seq;
    // Only what is published enters the history: deltas and `watch({ since })` must never give a
    // peer an update that a failed commit could still take back.
    this.history.appendParts(seq, keyBytes, record.uuid, record.properties, record.body, record.expiresAt, record.owner);
    this.#hooks.onPublish?.(record);
    const prev = this.heads.advance(record.key, seq);
    if (prev.length === 0) return; // nobody subscribed: XPUB would drop it anyway
    this.#hooks.send([keyBytes, encodeSequence(seq), record.uuid, appendProperty(record.properties, Prop.Previous, prev), record.body]);
  }

  /**
   * Commits at the end of this turn. While a failed async commit waits for its retry, only the
   * retry timer commits (`retrying`): updates appended meanwhile (expiries, presence) join it.
   */
  #schedule(retrying = false): void {
    if (this.#scheduled || this.#stopped || (this.#failure !== undefined && !retrying)) return;
    this.#scheduled = true;
    // After this turn's I/O: every update of the turn goes into one commit.
    setImmediate(() => {
      this.#scheduled = false;
      this.#commit();
    });
  }

  /** Commits what collected (synchronously: the disk write blocks this turn, and the next group collects meanwhile). */
  #commit(): void {
    const journal = this.#hooks.journal;
    if (!journal || (this.#toCommit.length === 0 && this.#outcomes.length === 0)) return;
    const batch = this.#toCommit;
    const outcomes = this.#outcomes;
    this.#toCommit = [];
    this.#outcomes = [];
    this.#hooks.beforeCommit?.();
    try {
      journal.commit(batch, outcomes);
    } catch (err) {
      this.#failedGroup(batch, outcomes, err as StorageError);
      return;
    }
    this.#committedGroup(batch);
  }

  #committedGroup(batch: TimedRecord[]): void {
    this.#failure = undefined;
    const last = batch[batch.length - 1]?.record.seq;
    if (last !== undefined) this.#committed = last;
    this.#release();
    this.#afterCommit();
  }

  /** Publishes, in order, the waiting updates that are on disk (if they must be) and with the backup (if one follows). */
  #release(): void {
    const replica = this.#replica;
    let n = 0;
    while (n < this.#unpublished.length) {
      const u = this.#unpublished[n]!;
      if (u.needsDisk && u.record.seq > this.#committed) break;
      if (replica !== undefined && u.record.seq > replica.acked) break;
      this.#publish(u.record, u.keyBytes);
      n++;
    }
    if (n > 0) this.#unpublished.splice(0, n);
    this.#settle(undefined);
  }

  #failedGroup(batch: TimedRecord[], outcomes: Array<readonly [string, number, StoredOutcome]>, error: StorageError): void {
    if (!this.#sync) {
      // Already published: it cannot be taken back, so it is kept and written again later;
      // writes are refused until then (the sequencer reads `failure`).
      this.#failure = error;
      this.#toCommit = batch.concat(this.#toCommit);
      this.#outcomes = outcomes.concat(this.#outcomes);
      clearTimeout(this.#retry);
      if (!this.#stopped) this.#retry = setTimeout(() => this.#schedule(true), RETRY_MS);
      this.#afterCommit();
      return;
    }
    // Sync: nothing of it was published. Undo, newest first, everything not on disk (what is
    // on disk and waits for the backup stays).
    const fromSeq = this.#committed + 1;
    this.#undoAfter(this.#committed);
    this.#toCommit = [];
    this.#outcomes = [];
    // The backup was sent what was just undone: it starts over (what waited for it goes out).
    if (this.#replica !== undefined) {
      this.#replica = undefined;
      this.#hooks.onReplicaBroken?.();
      this.#release();
    }
    this.#settle({ fromSeq, error });
    this.#afterCommit();
  }

  /** Tells the waiters whose updates are now published (or, with `failure`, all of them). */
  #settle(failure: StoreFailure | undefined): void {
    if (this.#waiters.length === 0) return;
    // Waiters are in order of `upTo`: those published first, then (with a failure) those whose
    // updates reach into what was undone; the rest keep waiting (for the backup).
    const waiters = this.#waiters.splice(0);
    for (const w of waiters) {
      if (w.upTo <= this.#published) w.settled(undefined);
      else if (failure !== undefined && w.upTo >= failure.fromSeq) w.settled(failure);
      else this.#waiters.push(w);
    }
  }

  #afterCommit(): void {
    if (this.#failure === undefined && (this.#toCommit.length > 0 || this.#outcomes.length > 0)) this.#schedule();
  }
}
