/**
 * The snapshot server: answers ICANHAZ? with the entries under the requested subtree (one
 * message each for plain CHP clients, packed KVBATCHes for clonekv peers) and a KTHXBAI that
 * carries what the peer needs to check completeness (count, digest, epoch).
 *
 * A clonekv peer's request is answered only once its join subscription has reached the
 * publisher (or after `joinWait`): a snapshot taken before its subscription is live would miss
 * the updates in between (reference failure 3). No sockets: replies go through a
 * {@link SnapshotOutbox}, which streams them lazily.
 *
 * @module
 */
import { contiguousEntrySize, entrySize, packBatch, packContiguous, type WireEntry } from '../protocol/batch.ts';
import { Command, PEER_ID_PREFIX, Prop, PROTOCOL_VERSION } from '../protocol/commands.ts';
import { SnapshotDigest } from '../protocol/digest.ts';
import { EMPTY_FRAME, type ResumeRequest } from '../protocol/message.ts';
import { encodeProperties } from '../protocol/properties.ts';
import { encodeSequence, ZERO_SEQUENCE } from '../protocol/sequence.ts';
import type { UpdateHistory } from '../store/history.ts';
import type { SequencedMap } from '../store/sequenced-map.ts';
import type { UpdateRecord } from '../store/update-record.ts';
import type { Counters } from './counters.ts';
import { agreesUpTo, type Lineage } from './pair/lineage.ts';

const KTHXBAI = Buffer.from(Command.SnapshotEnd);
const KVBATCH = Buffer.from(Command.SnapshotBatch);
/** Most bytes packed in one KVBATCH (besides the `snapshotBatch` entry count). */
const BATCH_BYTES = 256 * 1024;

/** Where snapshot messages go: pulled one by one, so a slow peer holds a cursor, not a copy. */
export interface SnapshotOutbox {
  stream(id: Buffer, next: () => Buffer[] | undefined, done: (ok: boolean) => void): void;
}

/** What the snapshot server needs from the rest of the forwarder. */
export interface SnapshotHooks {
  readonly store: Pick<SequencedMap, 'snapshot' | 'sequence' | 'entries' | 'size'>;
  /** The retained updates a delta is made of. */
  readonly history: UpdateHistory;
  readonly outbox: SnapshotOutbox;
  readonly counters: Counters;
  readonly epoch: string;
  /** How long a clonekv peer's request waits for its join subscription, ms (0: never). */
  readonly joinWait: number;
  /** Most entries per KVBATCH. */
  readonly snapshotBatch: number;
  /**
   * A pair member's term and lineage (read at each answer); `undefined` standalone. KTHXBAI
   * then carries `term=`, and a delta is given only to a peer whose log agrees with this one
   * (see {@link agreesUpTo}).
   */
  readonly pair?: () => { term: number; lineage: Lineage } | undefined;
}

/** A delta this short is sent without counting the subtree's keys. */
const SMALL_DELTA = 1024;

/** Keys of `store` under `prefix` (latin1). */
function countUnder(store: Pick<SequencedMap, 'entries'>, prefix: string): number {
  let n = 0;
  for (const [key] of store.entries()) if (key.startsWith(prefix)) n++;
  return n;
}

/** Snapshot requests, and the join subscriptions they wait for. */
export class SnapshotServer {
  readonly #hooks: SnapshotHooks;
  /** Routing ids (latin1) of clonekv peers whose join subscription has arrived. */
  readonly #joined = new Set<string>();
  /** Requests waiting for the requester's join subscription, and replies to send after them. */
  readonly #parked = new Map<string, { subtree: Buffer; resume: ResumeRequest | undefined; timer: NodeJS.Timeout; after: Buffer[][] }>();
  #closed = false;

  constructor(hooks: SnapshotHooks) {
    this.#hooks = hooks;
  }

  /**
   * An ICANHAZ? from routing id `id` for `subtree`; `resume` (a clonekv peer that holds the map
   * at some sequence) asks for a delta, answered as one only when this run still holds every
   * update after it. The join wait applies either way.
   */
  request(id: Buffer, subtree: Buffer, resume?: ResumeRequest): void {
    const idKey = id.toString('latin1');
    const isClonekv = idKey.startsWith(PEER_ID_PREFIX);
    if (!isClonekv || this.#joined.has(idKey) || this.#hooks.joinWait === 0) {
      this.#serve(id, subtree, isClonekv && this.#joined.has(idKey), resume);
      return;
    }
    const old = this.#parked.get(idKey);
    if (old) clearTimeout(old.timer);
    const timer = setTimeout(() => this.#unpark(idKey, false), this.#hooks.joinWait);
    this.#parked.set(idKey, { subtree, resume, timer, after: old?.after ?? [] });
  }

  /**
   * Sends `frames` to routing id `id` after any snapshot being served to it or waiting for its
   * join subscription: never inside a snapshot stream, where a peer would take it for an entry.
   */
  sendAfterSnapshot(id: Buffer, frames: Buffer[]): void {
    const parked = this.#parked.get(id.toString('latin1'));
    if (parked) parked.after.push(frames);
    else this.#sendAfter(id, [frames]);
  }

  /** The join subscription of routing id `idKey` (latin1) arrived (`true`) or went (`false`). */
  joined(idKey: string, subscribed: boolean): void {
    if (!subscribed) {
      this.#joined.delete(idKey);
      return;
    }
    this.#joined.add(idKey);
    this.#unpark(idKey, true);
  }

  /** Serves a parked request (if any), then what waited for it. */
  #unpark(idKey: string, joined: boolean): void {
    const parked = this.#parked.get(idKey);
    if (!parked) return;
    clearTimeout(parked.timer);
    this.#parked.delete(idKey);
    const id = Buffer.from(idKey, 'latin1');
    this.#serve(id, parked.subtree, joined, parked.resume);
    if (parked.after.length > 0) this.#sendAfter(id, parked.after);
  }

  /** Queues messages behind whatever is being streamed to `id` (the outbox streams in order). */
  #sendAfter(id: Buffer, messages: Buffer[][]): void {
    let i = 0;
    this.#hooks.outbox.stream(id, () => messages[i++], () => {});
  }

  /** Drops waiting requests and their timers; serves nothing more. */
  close(): void {
    this.#closed = true;
    for (const p of this.#parked.values()) clearTimeout(p.timer);
    this.#parked.clear();
  }

  /**
   * The updates under `subtree` after `resume.since`, if a delta can answer the request: the
   * requester is a clonekv peer (delta batches are an extension), in this run's epoch, every
   * update after `since` is still held, and they are fewer than the keys a snapshot would carry
   * (a peer that missed 300,000 rewrites of 10,000 keys is better served by those 10,000);
   * otherwise `undefined` (a full snapshot).
   */
  #delta(batched: boolean, subtree: string, resume: ResumeRequest | undefined): UpdateRecord[] | undefined {
    if (!resume || !batched) return undefined;
    const { history, store, epoch } = this.#hooks;
    if (resume.epoch !== epoch || resume.since < history.oldest || resume.since > store.sequence) return undefined;
    // The history must reach the map's sequence (it always does when every update goes through
    // UpdateLog.append; anything else gets a snapshot rather than a delta that misses updates).
    if (history.newest !== store.sequence) return undefined;
    const pair = this.#hooks.pair?.();
    if (pair !== undefined && !agreesUpTo(pair.lineage, pair.term, resume.since, resume.term)) return undefined;
    // Taken at once: the answer is a point in time, like a snapshot. The whole map's size bounds
    // any snapshot: past it, stop collecting.
    const records: UpdateRecord[] = [];
    for (const r of history.since(resume.since, subtree)) {
      if (records.length >= store.size) return undefined;
      records.push(r);
    }
    // A subtree's snapshot may be much smaller than the map: count it when it could matter.
    if (subtree.length > 0 && records.length > SMALL_DELTA && records.length > countUnder(store, subtree)) return undefined;
    return records;
  }

  #serve(id: Buffer, subtreeBytes: Buffer, joined: boolean, resume?: ResumeRequest): void {
    if (this.#closed) return;
    const { store, counters, epoch, snapshotBatch: batchMax } = this.#hooks;
    const batched = id.toString('latin1').startsWith(PEER_ID_PREFIX);
    const delta = this.#delta(batched, subtreeBytes.toString('latin1'), resume);
    if (delta) return this.#serveDelta(id, subtreeBytes, joined, delta);
    counters.events.snapshots++;
    const entries = store.snapshot(subtreeBytes.toString('latin1'));
    const sequence = store.sequence;
    const digest = new SnapshotDigest();
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
        return [KVBATCH, ZERO_SEQUENCE, EMPTY_FRAME, encodeProperties([[Prop.Count, String(i - from)]]), packContiguous(entries, from, i, bytes)];
      }
      if (ended) return undefined;
      ended = true;
      return snapshotEnd({ epoch, sequence, count: entries.length, digest, joined, delta: false, subtree: subtreeBytes, term: this.#hooks.pair?.()?.term });
    };
    this.#hooks.outbox.stream(id, next, () => {});
  }

  /**
   * A delta: the retained updates (puts and deletes, in sequence order) packed in KVBATCHes as
   * a snapshot's entries are, then a KTHXBAI with `delta=1` whose count and digest cover what
   * was sent and whose sequence is the forwarder's now.
   */
  #serveDelta(id: Buffer, subtreeBytes: Buffer, joined: boolean, records: readonly UpdateRecord[]): void {
    const { store, counters, epoch, snapshotBatch: batchMax } = this.#hooks;
    counters.events.deltas++;
    const sequence = store.sequence;
    const digest = new SnapshotDigest();
    let i = 0;
    let ended = false;
    const next = (): Buffer[] | undefined => {
      if (i < records.length) {
        const batch: WireEntry[] = [];
        let bytes = 0;
        while (i < records.length && batch.length < batchMax && bytes < BATCH_BYTES) {
          const r = records[i++]!;
          const e: WireEntry = { key: r.key, sequence: r.seq, uuid: r.uuid, properties: r.properties, body: r.body };
          digest.add(r.key, r.seq);
          bytes += entrySize(e);
          batch.push(e);
        }
        return [KVBATCH, ZERO_SEQUENCE, EMPTY_FRAME, encodeProperties([[Prop.Count, String(batch.length)]]), packBatch(batch, bytes)];
      }
      if (ended) return undefined;
      ended = true;
      return snapshotEnd({ epoch, sequence, count: records.length, digest, joined, delta: true, subtree: subtreeBytes, term: this.#hooks.pair?.()?.term });
    };
    this.#hooks.outbox.stream(id, next, () => {});
  }
}

/**
 * The KTHXBAI that ends a snapshot or a delta: the forwarder's sequence, and in its properties
 * what the peer checks (count and digest of what was sent), the epoch, whether the join was
 * confirmed, that resume requests are understood, and `delta=1` for a delta.
 */
function snapshotEnd(end: { epoch: string; sequence: number; count: number; digest: SnapshotDigest; joined: boolean; delta: boolean; subtree: Buffer; term: number | undefined }): Buffer[] {
  const props: Array<[string, string]> = [
    [Prop.Version, PROTOCOL_VERSION],
    [Prop.Epoch, end.epoch],
    [Prop.Count, String(end.count)],
    [Prop.Digest, end.digest.hex],
    [Prop.Joined, end.joined ? '1' : '0'],
    [Prop.Resume, '1'],
  ];
  if (end.delta) props.push([Prop.Delta, '1']);
  if (end.term !== undefined) props.push([Prop.Term, String(end.term)]);
  return [KTHXBAI, encodeSequence(end.sequence), EMPTY_FRAME, encodeProperties(props), end.subtree];
}
